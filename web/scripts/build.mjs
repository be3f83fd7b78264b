// Builds the demo editor and dashboard into dist/ (embedded by the Go server
// through web/embed.go). The build is deterministic: same sources and
// lockfile, same bytes. `--check` builds into a temp dir and fails when the
// result differs from the committed dist/ (run it in CI).
import { build } from "esbuild";
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, copyFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const check = process.argv.includes("--check");
const out = check ? mkdtempSync(join(tmpdir(), "weft-dist-")) : join(root, "dist");

async function bundle(outdir) {
  if (!check) rmSync(outdir, { recursive: true, force: true });
  mkdirSync(outdir, { recursive: true });
  await build({
    absWorkingDir: root,
    entryPoints: { main: "demo/main.ts", dashboard: "demo/dashboard.ts" },
    outdir,
    bundle: true,
    format: "esm",
    splitting: false,
    target: ["es2022", "chrome110", "firefox115", "safari16"],
    minify: true,
    sourcemap: false,
    legalComments: "none",
    charset: "utf8",
    logLevel: "warning",
    metafile: false,
  });
  for (const f of ["index.html", "dashboard.html", "style.css"]) copyFileSync(join(root, "demo", f), join(outdir, f));
}

function files(dir) {
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

await bundle(out);
if (check) {
  const want = join(root, "dist");
  const a = files(want), b = files(out);
  const diffs = [];
  for (const f of new Set([...a, ...b])) {
    if (!a.includes(f)) diffs.push(`${f}: missing from dist/`);
    else if (!b.includes(f)) diffs.push(`${f}: in dist/ but not built`);
    else if (!readFileSync(join(want, f)).equals(readFileSync(join(out, f)))) diffs.push(`${f}: differs`);
  }
  rmSync(out, { recursive: true, force: true });
  if (diffs.length) {
    console.error("web/dist is out of date; run `npm run build` in web/ and commit dist/:\n  " + diffs.join("\n  "));
    process.exit(1);
  }
  console.log("web/dist is up to date");
} else {
  console.log(`built ${files(out).join(", ")} into dist/`);
}
