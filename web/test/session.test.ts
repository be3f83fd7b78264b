// The connection manager's session rules against a scripted in-process
// WebSocket peer: backoff with full jitter and retry-after, close codes that
// must not be retried, token handling, ignored unknown kinds, Ack handling
// and the offline queue. (Behaviour against the real server is covered by
// client.test.ts, crossimpl.test.ts and e2e.test.ts.)
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket, { WebSocketServer } from "ws";
import type { IncomingMessage } from "node:http";
import { WeftClient, type WebSocketCtor, type ClientError } from "../src/client.ts";
import { MemoryStore } from "../src/store.ts";
import { decodeFrame, encodeFrame, Kind, DefaultLimits, type Frame } from "../src/protocol.ts";
import { keyHex, hexKey } from "../src/crdt.ts";
import { waitFor } from "./server.ts";

const SESSION = hexKey("01934a1f000070008000000000000001");

interface Conn {
  ws: WebSocket;
  req: IncomingMessage;
  frames: Frame[];
}

/** A scripted peer: each connection runs `script`. */
async function fake(script: (c: Conn, n: number) => void, verify?: (req: IncomingMessage) => number) {
  const conns: Conn[] = [];
  const wss = new WebSocketServer({
    host: "127.0.0.1",
    port: 0,
    handleProtocols: (p) => (p.has("weft.v1") ? "weft.v1" : false),
    verifyClient: verify ? (info, cb) => { const code = verify(info.req); code ? cb(false, code) : cb(true); } : undefined,
  });
  await new Promise<void>((r) => wss.on("listening", () => r()));
  wss.on("connection", (ws, req) => {
    const c: Conn = { ws, req, frames: [] };
    conns.push(c);
    ws.on("message", (b: Buffer) => c.frames.push(decodeFrame(new Uint8Array(b)) as Frame));
    script(c, conns.length);
  });
  const port = (wss.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}`, conns, close: () => new Promise<void>((r) => { for (const c of wss.clients) c.terminate(); wss.close(() => r()); }) };
}

const send = (c: Conn, f: Frame) => c.ws.send(encodeFrame(f));
const welcome = (c: Conn) => send(c, { kind: Kind.Welcome, server: "fake/0", session: SESSION, expiresAt: 0, limits: { ...DefaultLimits } });

function client(url: string, extra: Partial<ConstructorParameters<typeof WeftClient>[0]> = {}) {
  const errors: ClientError[] = [];
  const c = new WeftClient({ url, WebSocket: WebSocket as unknown as WebSocketCtor, store: new MemoryStore(), backoff: { baseMs: 50, capMs: 200 }, pingIntervalMs: 0, ...extra });
  c.on("error", (e) => errors.push(e));
  return { c, errors };
}

test("backoff: full jitter within the exponential cap, never below retry-after", () => {
  const seq = [1, 0.5, 0, 1, 1, 1, 1, 1, 1, 1, 1];
  let i = 0;
  const c = new WeftClient({ url: "http://127.0.0.1:1", autoConnect: false, random: () => seq[Math.min(i++, seq.length - 1)]!, backoff: { baseMs: 500, capMs: 30000 } });
  assert.equal(c.nextDelay(), 500); // attempt 0: [0, 500]
  assert.equal(c.nextDelay(), 500); // attempt 1: [0, 1000] × 0.5
  assert.equal(c.nextDelay(), 0); // attempt 2: jitter may give 0
  assert.equal(c.nextDelay(), 4000);
  for (let k = 0; k < 6; k++) c.nextDelay();
  assert.equal(c.nextDelay(), 30000); // capped
  (c as unknown as { retryAfterMs: number }).retryAfterMs = 45000;
  assert.equal(c.nextDelay(), 45000); // a retry-after hint wins
  assert.equal(c.nextDelay(), 30000); // and is used once
  void c.close();
});

test("hello, join, sync, delta, ack: subprotocol, token in the query, client seqs", async () => {
  const f = await fake((c) => {
    c.ws.on("message", () => {
      const last = c.frames[c.frames.length - 1]!;
      if (last.kind === Kind.Hello) welcome(c);
      if (last.kind === Kind.Join) {
        for (const d of last.docs) send(c, { kind: Kind.Sync, doc: d.doc, seq: 1, version: new Map(), delta: { agents: [], ops: [] }, more: false });
        // A frame of a kind this client does not know is ignored (§11).
        c.ws.send(Uint8Array.from([0x92, 0x7e, 0x01]));
      }
      if (last.kind === Kind.Delta) send(c, { kind: Kind.Ack, doc: last.doc, clientSeq: last.clientSeq, seq: 10 + last.clientSeq });
    });
  });
  const { c, errors } = client(f.url, { token: "s3cret" });
  try {
    const d = await c.open("notes");
    await d.whenSynced(5000);
    d.insert(0, "ab");
    await new Promise((r) => setTimeout(r, 60));
    d.insert(2, "c");
    await waitFor("acked", () => d.state === "synced" && d.queue.length === 0);
    const conn = f.conns[0]!;
    assert.equal(conn.req.headers["sec-websocket-protocol"], "weft.v1");
    assert.match(conn.req.url ?? "", /^\/v1\/ws\?token=s3cret$/);
    const kinds = conn.frames.map((x) => x.kind);
    assert.equal(kinds[0], Kind.Hello);
    assert.equal(kinds[1], Kind.Join);
    const deltas = conn.frames.filter((x) => x.kind === Kind.Delta);
    assert.deepEqual(deltas.map((x) => (x.kind === Kind.Delta ? x.clientSeq : 0)), deltas.map((_, i) => i + 1));
    assert.equal(conn.frames[0]!.kind === Kind.Hello && keyHex(conn.frames[0].agent), keyHex(c.agent!));
    assert.deepEqual(errors, []);
  } finally {
    await c.close();
    await f.close();
  }
});

for (const [code, action] of [[1008, "new-token"], [4001, "new-token"], [4003, "stop"], [4002, "stop"], [4009, "stop"]] as const) {
  test(`close ${code}: no automatic reconnect, the failure is reported`, async () => {
    const f = await fake((c) => {
      c.ws.on("message", () => {
        send(c, { kind: Kind.Error, code: code === 1008 ? 15 : code - 4000, message: "no", doc: "", clientSeq: 0, retryAfterMs: 0 });
        c.ws.close(code, "no");
      });
    });
    const { c, errors } = client(f.url);
    try {
      await waitFor("permanent failure", () => c.failure !== null, 5000);
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(f.conns.length, 1, `${action}: reconnected`);
      assert.equal(c.state, "offline");
      assert.ok(errors.some((e) => e.permanent && e.code === `close:${code}`));
    } finally {
      await c.close();
      await f.close();
    }
  });
}

test("HTTP 401 on the upgrade stops; a token provider gets a new token first", async () => {
  const seen: string[] = [];
  const f = await fake(
    (c) => c.ws.on("message", () => c.frames[c.frames.length - 1]!.kind === Kind.Hello && welcome(c)),
    (req) => {
      const t = new URL(req.url!, "http://x").searchParams.get("token") ?? "";
      seen.push(t);
      return t === "good" ? 0 : 401;
    },
  );
  const fixed = client(f.url, { token: "bad" });
  try {
    await waitFor("stopped", () => fixed.c.failure !== null, 5000);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(seen, ["bad"]);
  } finally {
    await fixed.c.close();
  }
  seen.length = 0;
  let calls = 0;
  const fresh = client(f.url, { token: () => (++calls === 1 ? "expired" : "good") });
  try {
    await waitFor("connected with a new token", () => fresh.c.live, 5000);
    assert.deepEqual(seen, ["expired", "good"]);
  } finally {
    await fresh.c.close();
    await f.close();
  }
});

test("going away and overload: reconnect no sooner than retry-after, then resync", async () => {
  const times: number[] = [];
  const f = await fake((c, n) => {
    times.push(Date.now());
    c.ws.on("message", () => {
      const last = c.frames[c.frames.length - 1]!;
      if (last.kind === Kind.Hello) {
        if (n === 1) {
          welcome(c);
          setTimeout(() => {
            send(c, { kind: Kind.GoingAway, reason: "restart", retryAfterMs: 600 });
            c.ws.close(1001, "restart");
          }, 50);
        } else if (n === 2) {
          send(c, { kind: Kind.Error, code: 19, message: "busy", doc: "", clientSeq: 0, retryAfterMs: 400 });
          c.ws.close(1013, "busy");
        } else welcome(c);
      }
      if (last.kind === Kind.Join) for (const d of last.docs) send(c, { kind: Kind.Sync, doc: d.doc, seq: 1, version: new Map(), delta: { agents: [], ops: [] }, more: false });
    });
  });
  const { c } = client(f.url);
  try {
    const d = await c.open("x");
    await waitFor("third connection synced", () => f.conns.length === 3 && d.state === "synced", 10_000);
    assert.ok(times[1]! - times[0]! >= 600, `reconnected after ${times[1]! - times[0]!} ms`);
    assert.ok(times[2]! - times[1]! >= 400, `reconnected after ${times[2]! - times[1]!} ms`);
    // Every new session joins again with the document's version vector.
    assert.ok(f.conns[2]!.frames.some((x) => x.kind === Kind.Join));
  } finally {
    await c.close();
    await f.close();
  }
});

test("edits made while the server never acks stay queued and are resent after a reconnect", async () => {
  let ack = false;
  const f = await fake((c) => {
    c.ws.on("message", () => {
      const last = c.frames[c.frames.length - 1]!;
      if (last.kind === Kind.Hello) welcome(c);
      if (last.kind === Kind.Join) for (const d of last.docs) send(c, { kind: Kind.Sync, doc: d.doc, seq: 1, version: new Map(), delta: { agents: [], ops: [] }, more: false });
      if (last.kind === Kind.Delta && ack) send(c, { kind: Kind.Ack, doc: last.doc, clientSeq: last.clientSeq, seq: 5 });
    });
  });
  const { c } = client(f.url);
  try {
    const d = await c.open("q");
    await d.whenSynced(5000);
    d.insert(0, "hello");
    await waitFor("sent", () => f.conns[0]!.frames.some((x) => x.kind === Kind.Delta));
    assert.equal(d.state, "pending");
    assert.equal(d.queue.length, 1);
    ack = true;
    f.conns[0]!.ws.close(1012, "restart");
    // The server's version (empty) shows it lacks everything: all of it is resent.
    await waitFor("resent and acked", () => d.state === "synced", 5000);
    const resent = f.conns[1]!.frames.filter((x) => x.kind === Kind.Delta);
    assert.equal(resent.length, 1);
    const r0 = resent[0]!;
    assert.ok(r0.kind === Kind.Delta);
    assert.equal(r0.clientSeq, 1);
    const op = r0.delta.ops[0]!;
    assert.ok(op.kind === 1);
    assert.equal(op.text, "hello");
  } finally {
    await c.close();
    await f.close();
  }
});
