import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { decodeFrame, encodeFrame, isUnknown, peekKind, Kind, ProtocolError, closeAction, errorCloseCode, type Frame } from "../src/protocol.ts";
import { keyHex, OpKind, ROOT } from "../src/crdt.ts";

const GOLDEN = resolve(import.meta.dirname, "../../protocol/testdata/golden");
const hex = (s: string) => Uint8Array.from((s.replace(/\s+/g, "").match(/../g) ?? []).map((b) => parseInt(b, 16)));
const A = hex("01934a1e7c00700080000000000000aa");
const B = hex("01934a1e7c00700080000000000000bb");
const S1 = hex("01934a1f000070008000000000000001");
const S2 = hex("01934a1f000070008000000000000002");
const S3 = hex("01934a1f000070008000000000000003");

// What each golden file holds, from docs/protocol.md §12.2.
const expected: Record<string, Frame> = {
  hello: { kind: Kind.Hello, client: "weft-ts/0.1.0", token: "tok", agent: A, user: { name: "Ada", color: "#e4572e" } },
  join: { kind: Kind.Join, docs: [{ doc: "notes", version: new Map([[keyHex(A), 5], [keyHex(B), 3]]) }, { doc: "todo", version: new Map() }] },
  leave: { kind: Kind.Leave, docs: ["todo"] },
  delta: {
    kind: Kind.Delta, doc: "notes", clientSeq: 1,
    delta: { agents: [A, B], ops: [
      { kind: OpKind.Insert, agent: 0, seq: 5, lamport: 8, len: 2, origin: { agent: 1, seq: 2 }, text: "hé" },
      { kind: OpKind.Delete, agent: 0, seq: 7, lamport: 10, len: 1, target: { agent: 1, seq: 0 } },
    ] },
  },
  presence: {
    kind: Kind.Presence, doc: "notes", clock: 7, user: { name: "Ada", color: "#e4572e" },
    cursor: { edge: 0, assoc: -1, id: { agent: A, seq: 6 } },
    selections: [{ anchor: { edge: -1, assoc: 0, id: null }, head: { edge: 0, assoc: -1, id: { agent: A, seq: 6 } } }],
  },
  refresh: { kind: Kind.Refresh, token: "tok2" },
  ping: { kind: Kind.Ping, nonce: 42 },
  pong: { kind: Kind.Pong, nonce: 42 },
  welcome: {
    kind: Kind.Welcome, server: "weft/0.1.0", session: S1, expiresAt: 1767225600000,
    limits: { maxFrameBytes: 1048576, maxOpsPerFrame: 16384, maxDocsPerSocket: 256, opsPerSecond: 0, bytesPerSecond: 0, presenceMs: 50, presenceTtlMs: 30000 },
  },
  sync: {
    kind: Kind.Sync, doc: "notes", seq: 12, version: new Map([[keyHex(A), 7], [keyHex(B), 3]]),
    delta: { agents: [B], ops: [{ kind: OpKind.Insert, agent: 0, seq: 0, lamport: 1, len: 3, origin: { agent: ROOT, seq: 0 }, text: "abc" }] },
    more: false,
  },
  ack: { kind: Kind.Ack, doc: "notes", clientSeq: 1, seq: 13 },
  update: {
    kind: Kind.Update, doc: "notes", seq: 14, author: B,
    delta: { agents: [B], ops: [{ kind: OpKind.Insert, agent: 0, seq: 3, lamport: 11, len: 1, origin: { agent: 0, seq: 2 }, text: "!" }] },
  },
  presence_update: {
    kind: Kind.PresenceUpdate, doc: "notes",
    peers: [{ session: S2, agent: B, user: { name: "Grace", color: "#17bebb" }, clock: 3, cursor: { edge: 1, assoc: 0, id: null }, selections: [] }],
    gone: [S3],
  },
  refreshed: { kind: Kind.Refreshed, expiresAt: 1767229200000 },
  error: { kind: Kind.Error, code: 18, message: "slow down", doc: "notes", clientSeq: 2, retryAfterMs: 1500 },
  going_away: { kind: Kind.GoingAway, reason: "restart", retryAfterMs: 5000 },
};

const files = readdirSync(GOLDEN).filter((f) => f.endsWith(".bin")).sort();

test("every golden file has an expectation here, and every kind a file", () => {
  assert.ok(files.length >= 16, `found ${files.length} golden files`);
  assert.deepEqual(files.map((f) => f.replace(/\.bin$/, "")).sort(), Object.keys(expected).sort());
});

for (const f of files) {
  const name = f.replace(/\.bin$/, "");
  test(`golden ${name}: decodes to the documented values and re-encodes byte for byte`, () => {
    const bytes = new Uint8Array(readFileSync(join(GOLDEN, f)));
    const frame = decodeFrame(bytes);
    assert.ok(!isUnknown(frame));
    assert.equal(peekKind(bytes), frame.kind);
    assert.deepEqual(frame, expected[name]);
    assert.deepEqual(Buffer.from(encodeFrame(frame as Frame)).toString("hex"), Buffer.from(bytes).toString("hex"));
    // Encoding the documented values gives the same bytes too.
    assert.deepEqual(Buffer.from(encodeFrame(expected[name]!)).toString("hex"), Buffer.from(bytes).toString("hex"));
  });
}

test("the golden files match the hex examples in docs/protocol.md", () => {
  const md = readFileSync(resolve(import.meta.dirname, "../../docs/protocol.md"), "utf8");
  const re = /<!-- golden:(\w+) -->\s*```\s*([\s\S]*?)```/g;
  let n = 0;
  for (const m of md.matchAll(re)) {
    const bytes = readFileSync(join(GOLDEN, `${m[1]}.bin`));
    assert.equal(Buffer.from(bytes).toString("hex"), m[2]!.replace(/\s+/g, ""), m[1]);
    n++;
  }
  assert.equal(n, files.length);
});

function rejects(bytes: Uint8Array | string, code: "malformed" | "too_large" | "unsupported_version", why: string) {
  const b = typeof bytes === "string" ? hex(bytes) : bytes;
  assert.throws(() => decodeFrame(b), (e: unknown) => e instanceof ProtocolError && e.code === code, why);
}

test("bounded and strict decoding", () => {
  rejects("", "malformed", "empty");
  rejects("c0", "malformed", "not an array");
  rejects("90", "malformed", "no kind");
  rejects("92 cc 10 2a", "malformed", "kind not a fixint");
  rejects("92 10 cb 40 45 00 00 00 00 00 00", "malformed", "float where an integer is expected");
  rejects("92 10 c0", "malformed", "nil where an integer is expected");
  rejects("92 10 2a 00", "malformed", "bytes after the frame");
  rejects("dd ff ff ff ff 10", "too_large", "array header claims 2^32-1 elements");
  rejects("92 02 dd ff ff ff ff", "too_large", "join docs over the limit");
  rejects("92 02 dc 00 ff", "malformed", "join docs beyond the frame");
  rejects("dd 00 00 ff ff 10", "malformed", "frame array beyond the frame");
  rejects("92 06 db ff ff ff ff", "too_large", "token str header over the limit");
  rejects("92 06 d9 10 61", "malformed", "str longer than the frame");
  rejects("92 06 c4 03 61 62 63", "malformed", "bin where a str is expected");
  rejects("92 06 a2 c3 28", "malformed", "invalid UTF-8");
  rejects("92 10 cf 00 20 00 00 00 00 00 00", "too_large", "counter over 2^53-1");
  rejects("92 10 d0 ff", "malformed", "negative counter");
  rejects("96 01 02 a0 a0 c4 10 01934a1e7c00700080000000000000aa 92 a0 a0", "unsupported_version", "hello version 2");
  rejects("92 03 91 a0", "malformed", "empty doc id");
  rejects("92 03 92 a1 78 a1 78", "malformed", "doc named twice");
  rejects("92 03 91 a1 01", "malformed", "control character in doc id");
  // A delta whose agents table names a key twice.
  rejects("94 04 a1 64 01 92 92 c4 10 01934a1e7c00700080000000000000aa c4 10 01934a1e7c00700080000000000000aa 90", "malformed", "agent twice");
  // Op text with the wrong code point count.
  rejects("94 04 a1 64 01 92 91 c4 10 01934a1e7c00700080000000000000aa 91 98 01 00 00 01 02 ff 00 a1 61", "malformed", "text length");
  // Root origin with a seq.
  rejects("94 04 a1 64 01 92 91 c4 10 01934a1e7c00700080000000000000aa 91 98 01 00 00 01 01 ff 01 a1 61", "malformed", "root with seq");
  // Agent index outside the table.
  rejects("94 04 a1 64 01 92 91 c4 10 01934a1e7c00700080000000000000aa 91 98 01 01 00 01 01 ff 00 a1 61", "malformed", "agent index");
  // A key of 15 bytes.
  rejects("92 23 a1 64 01 c4 0f 01934a1e7c00700080000000000000", "malformed", "short key");
});

test("extra fields are ignored, unknown kinds reported as unknown", () => {
  // Ping with two extra fields of any type, including a map and a float.
  const f = decodeFrame(hex("94 10 2a 81 a1 61 c3 cb 3f f0 00 00 00 00 00 00"));
  assert.deepEqual(f, { kind: Kind.Ping, nonce: 42 });
  // User record with an extra element.
  const g = decodeFrame(hex("92 06 a1 74"));
  assert.deepEqual(g, { kind: Kind.Refresh, token: "t" });
  const u = decodeFrame(hex("93 7f 01 92 01 02"));
  assert.ok(isUnknown(u));
  assert.equal(u.kind, 0x7f);
  // A record with fewer fields than v1 defines is rejected.
  rejects("91 10", "malformed", "ping without nonce");
  // Non-shortest integer encodings are accepted.
  assert.deepEqual(decodeFrame(hex("92 10 cf 00 00 00 00 00 00 00 2a")), { kind: Kind.Ping, nonce: 42 });
  assert.deepEqual(decodeFrame(hex("92 10 d3 00 00 00 00 00 00 00 2a")), { kind: Kind.Ping, nonce: 42 });
  assert.deepEqual(decodeFrame(hex("dc 00 02 10 2a")), { kind: Kind.Ping, nonce: 42 });
});

test("encoders refuse what decoders reject", () => {
  assert.throws(() => encodeFrame({ kind: Kind.Leave, docs: [] }), ProtocolError);
  assert.throws(() => encodeFrame({ kind: Kind.Refresh, token: "" }), ProtocolError);
  assert.throws(() => encodeFrame({ kind: Kind.Hello, client: "x".repeat(129), token: "", agent: A, user: { name: "", color: "" } }), ProtocolError);
  assert.throws(() => encodeFrame({ kind: Kind.Ping, nonce: 2 ** 53 }), ProtocolError);
  assert.throws(() => encodeFrame({ kind: Kind.Delta, doc: "d", clientSeq: 1, delta: { agents: [A, A], ops: [] } }), ProtocolError);
});

test("close codes and error codes map to the actions of §9", () => {
  for (const c of [1001, 1006, 1009, 1011, 1012, 1013, 4008, 4010, 4013, 4999]) assert.equal(closeAction(c), "reconnect", String(c));
  for (const c of [1008, 4001]) assert.equal(closeAction(c), "new-token", String(c));
  for (const c of [1000, 4002, 4003, 4004, 4005, 4006, 4007, 4009, 4011, 4012, 4014]) assert.equal(closeAction(c), "stop", String(c));
  assert.equal(errorCloseCode(1), 4001);
  assert.equal(errorCloseCode(15), 1008);
  assert.equal(errorCloseCode(18), 1013);
  assert.equal(errorCloseCode(99), 1011);
});

test("round trip of random deltas", () => {
  let seed = 1;
  const r = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  for (let i = 0; i < 200; i++) {
    const ops = Array.from({ length: 1 + Math.floor(r() * 5) }, () =>
      r() < 0.5
        ? { kind: OpKind.Insert as const, agent: Math.floor(r() * 2), seq: Math.floor(r() * 2 ** 40), lamport: 1 + Math.floor(r() * 2 ** 50), len: 2, origin: r() < 0.3 ? { agent: ROOT, seq: 0 } : { agent: 1, seq: Math.floor(r() * 1e6) }, text: r() < 0.5 ? "😀é" : "" }
        : { kind: OpKind.Delete as const, agent: 1, seq: Math.floor(r() * 300), lamport: 1 + Math.floor(r() * 70000), len: 1 + Math.floor(r() * 5), target: { agent: 0, seq: Math.floor(r() * 2 ** 33) } },
    );
    const f: Frame = { kind: Kind.Delta, doc: "döc/" + i, clientSeq: i + 1, delta: { agents: [A, B], ops } };
    const b = encodeFrame(f);
    assert.deepEqual(decodeFrame(b), f);
    assert.deepEqual(encodeFrame(decodeFrame(b) as Frame), b);
  }
});
