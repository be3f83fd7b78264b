// Test harness: builds the real `weft` binary from this checkout and runs
// `weft serve` on a free 127.0.0.1 port with a temporary data directory.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const REPO = resolve(import.meta.dirname, "../..");

let built: string | null = null;

/** Why the server cannot be used here, or null when it can. */
export function serverUnavailable(): string | null {
  if (spawnSync("go", ["version"]).status !== 0) return "go toolchain not found";
  if (!existsSync(join(REPO, "cmd/weft"))) return "cmd/weft does not exist";
  return null;
}

/** Builds cmd/weft once per test process and returns the binary's path. */
export function buildWeft(): string {
  if (built) return built;
  const dir = mkdtempSync(join(tmpdir(), "weft-bin-"));
  const bin = join(dir, "weft");
  const r = spawnSync("go", ["build", "-o", bin, "./cmd/weft"], { cwd: REPO, encoding: "utf8", timeout: 300_000 });
  if (r.status !== 0) throw new Error(`go build ./cmd/weft failed:\n${r.stderr}`);
  const help = spawnSync(bin, ["serve", "--help"], { encoding: "utf8" });
  if (!/addr/.test(help.stdout + help.stderr)) throw new Error("weft serve is not available in this build");
  built = bin;
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  return bin;
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a ? a.port : 0;
      s.close(() => res(port));
    });
  });
}

export class WeftServer {
  proc: ChildProcess | null = null;
  log = "";
  readonly data: string;
  constructor(
    readonly bin: string,
    readonly port: number,
    readonly extra: string[] = [],
  ) {
    this.data = mkdtempSync(join(tmpdir(), "weft-data-"));
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  static async start(extra: string[] = []): Promise<WeftServer> {
    const s = new WeftServer(buildWeft(), await freePort(), extra);
    await s.start();
    return s;
  }

  /** Starts (or restarts) the server on the same port and data directory. */
  async start(): Promise<void> {
    const p = spawn(this.bin, ["serve", "--addr", `127.0.0.1:${this.port}`, "--data", this.data, ...this.extra], { stdio: ["ignore", "pipe", "pipe"] });
    this.proc = p;
    await new Promise<void>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`weft serve did not start:\n${this.log}`)), 20_000);
      const onData = (b: Buffer) => {
        this.log += b.toString();
        if (/msg=listening/.test(this.log.split("\n").slice(-5).join("\n")) || /"msg":"listening"/.test(this.log)) {
          clearTimeout(timer);
          res();
        }
      };
      p.stdout!.on("data", onData);
      p.stderr!.on("data", onData);
      p.on("exit", (code) => {
        clearTimeout(timer);
        rej(new Error(`weft serve exited with ${code}:\n${this.log}`));
      });
    }).catch(async (e) => {
      // The port may still be held by the previous process for a moment.
      if (/address already in use/.test(this.log)) {
        await new Promise((r) => setTimeout(r, 300));
        return this.start();
      }
      throw e;
    });
    p.removeAllListeners("exit");
  }

  /** Stops the server gracefully (SIGTERM) and waits for it to exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    this.proc = null;
    await new Promise<void>((res) => {
      const t = setTimeout(() => p.kill("SIGKILL"), 15_000);
      p.once("exit", () => {
        clearTimeout(t);
        res();
      });
      p.kill(signal);
    });
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async doc(id: string): Promise<{ id: string; text: string; version: unknown }> {
    const r = await fetch(`${this.url}/v1/docs/${encodeURIComponent(id)}`);
    if (!r.ok) throw new Error(`GET /v1/docs/${id}: ${r.status} ${await r.text()}`);
    return (await r.json()) as { id: string; text: string; version: unknown };
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.data, { recursive: true, force: true });
  }
}

export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 15_000, every = 50): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}
