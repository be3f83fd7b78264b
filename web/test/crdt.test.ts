import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Text, keyHex, OpKind, ROOT, MissingError, InvalidError, ASSOC_LEFT, ASSOC_RIGHT, cpLen,
  type Delta, type Change, versionEqual, splitLongInserts, splitDelta, utf8Len,
} from "../src/crdt.ts";
import { NaiveRGA, rng, keyFor, randomText } from "./reference.ts";

const A = keyFor(0xaa), B = keyFor(0xbb), C = keyFor(0xcc);

function replicas(n: number): Text[] {
  return Array.from({ length: n }, (_, i) => new Text(keyFor(i + 1)));
}

test("table: local edits produce the expected text and ops", () => {
  const cases: { name: string; steps: (t: Text) => Delta[]; text: string; ops?: Partial<Delta["ops"][number]>[] }[] = [
    { name: "insert into empty", steps: (t) => [t.insert(0, "abc")], text: "abc", ops: [{ kind: OpKind.Insert, seq: 0, lamport: 1, len: 3, origin: { agent: ROOT, seq: 0 }, text: "abc" } as never] },
    { name: "append extends", steps: (t) => [t.insert(0, "ab"), t.insert(2, "cd")], text: "abcd" },
    { name: "insert in the middle", steps: (t) => [t.insert(0, "ad"), t.insert(1, "bc")], text: "abcd" },
    { name: "insert at start", steps: (t) => [t.insert(0, "bc"), t.insert(0, "a")], text: "abc" },
    { name: "delete middle", steps: (t) => [t.insert(0, "abcdef"), t.delete(2, 2)], text: "abef" },
    { name: "delete all", steps: (t) => [t.insert(0, "abc"), t.delete(0, 3)], text: "" },
    { name: "replace", steps: (t) => [t.insert(0, "hello world"), t.replace(6, 5, "there")], text: "hello there" },
    { name: "backspaces", steps: (t) => [t.insert(0, "hello"), t.delete(4, 1), t.delete(3, 1), t.delete(2, 1)], text: "he" },
    { name: "insert after tombstones", steps: (t) => [t.insert(0, "abc"), t.delete(1, 1), t.insert(1, "X")], text: "aXc" },
    { name: "astral", steps: (t) => [t.insert(0, "a😀b"), t.insert(2, "🎉")], text: "a😀🎉b" },
  ];
  for (const c of cases) {
    const t = new Text(A);
    const ds = c.steps(t);
    t.check();
    assert.equal(t.toString(), c.text, c.name);
    assert.equal(t.length, cpLen(c.text), c.name);
    if (c.ops) for (const [i, want] of c.ops.entries()) for (const [k, v] of Object.entries(want)) assert.deepEqual((ds[0]!.ops[i] as unknown as Record<string, unknown>)[k], v, `${c.name}: op ${i}.${k}`);
    // A fresh replica fed the deltas reaches the same text.
    const r = new Text(B);
    for (const d of ds) r.apply(d);
    r.check();
    assert.equal(r.toString(), c.text, c.name + " (remote)");
    assert.ok(versionEqual(r.version(), t.version()), c.name + " (version)");
  }
});

test("seqs and lamports: deletes consume both", () => {
  const t = new Text(A);
  t.insert(0, "abc"); // seqs 0..2, lamport 1..3
  const d = t.delete(0, 2); // seqs 3..4, lamport 4..5
  assert.deepEqual(d.ops, [{ kind: OpKind.Delete, agent: 0, seq: 3, lamport: 4, len: 2, target: { agent: 0, seq: 0 } }]);
  assert.equal(t.next(A), 5);
  assert.equal(t.lamport, 5);
  const i = t.insert(1, "z");
  assert.equal(i.ops[0]!.seq, 5);
  assert.equal(i.ops[0]!.lamport, 6);
});

test("the §12.1 example applies as described", () => {
  // B writes "abc"; A inserts "hé" after (B,2) and deletes (B,0).
  const b = new Text(B);
  b.insert(0, "abc");
  const a = b.fork(A);
  const d: Delta = {
    agents: [A, B],
    ops: [
      { kind: OpKind.Insert, agent: 0, seq: 0, lamport: 4, len: 2, origin: { agent: 1, seq: 2 }, text: "hé" },
      { kind: OpKind.Delete, agent: 0, seq: 2, lamport: 6, len: 1, target: { agent: 1, seq: 0 } },
    ],
  };
  b.apply(d);
  b.check();
  assert.equal(b.toString(), "bché");
  assert.equal(b.next(A), 3);
  assert.equal(a.toString(), "abc");
});

test("surrogate pairs: one ID per code point, positions in code points", () => {
  const t = new Text(A);
  t.insert(0, "𝒜b😀");
  assert.equal(t.length, 3);
  assert.equal(t.length16, 5);
  assert.equal(t.toUtf16(1), 2);
  assert.equal(t.toUtf16(2), 3);
  assert.equal(t.toUtf16(3), 5);
  assert.equal(t.fromUtf16(2), 1);
  assert.equal(t.fromUtf16(5), 3);
  const d = t.delete(2, 1);
  assert.equal(d.ops[0]!.len, 1);
  assert.equal(t.toString(), "𝒜b");
  const ins = t.insert(1, "🎉🎉");
  assert.equal(ins.ops[0]!.len, 2);
  assert.equal(t.toString(), "𝒜🎉🎉b");
  assert.equal(t.next(A), 6);
  // Lone surrogates become U+FFFD, as UTF-8 would make them.
  t.insert(0, "\ud800");
  assert.equal(t.toString()[0], "\ufffd");
  t.check();
  // Changes report UTF-16 offsets too.
  const r = new Text(B);
  const changes: Change[] = [];
  r.applyChanges(t.since(new Map()), (c) => changes.push(c));
  assert.equal(r.toString(), t.toString());
  const r2 = t.fork(C);
  const del = t.delete(2, 1); // the first 🎉, after "\ufffd𝒜"
  const seen: Change[] = [];
  r2.applyChanges(del, (c) => seen.push(c));
  assert.deepEqual(seen, [{ pos: 2, delete: 1, insert: "", pos16: 3, delete16: 2 }]);
});

test("concurrent inserts at one position order by (lamport, agent key)", () => {
  const [x, y, z] = [new Text(A), new Text(B), new Text(C)];
  const dx = x.insert(0, "x"), dy = y.insert(0, "y"), dz = z.insert(0, "z");
  for (const r of [x, y, z]) for (const d of [dx, dy, dz]) r.apply(d);
  // Equal lamports: the greater key goes first. keyFor puts byte 7 at
  // 146 for A, 7 for B and 124 for C, so A > C > B.
  for (const r of [x, y, z]) assert.equal(r.toString(), "xzy");
  // A later insert at the same origin goes before older siblings.
  const d2 = y.insert(0, "w");
  x.apply(d2);
  assert.equal(x.toString(), "wxzy");
  // Runs typed concurrently after one character do not interleave.
  const base = new Text(A);
  const seed = base.insert(0, "[]");
  const p = new Text(B), q = new Text(C);
  p.apply(seed); q.apply(seed);
  const dp = p.insert(1, "hello"), dq = q.insert(1, "world");
  p.apply(dq); q.apply(dp); base.apply(dq); base.apply(dp);
  assert.equal(p.toString(), q.toString());
  assert.equal(p.toString(), base.toString());
  assert.match(p.toString(), /^\[(helloworld|worldhello)\]$/);
});

test("apply is idempotent and skips known prefixes", () => {
  const a = new Text(A);
  const d1 = a.insert(0, "abc");
  const d2 = a.insert(3, "def");
  const b = new Text(B);
  b.apply(d1); b.apply(d1);
  // A merged op overlapping the known prefix.
  const all = a.since(new Map());
  assert.equal(all.ops.length, 1);
  b.apply(all); b.apply(d2); b.apply(all);
  b.check();
  assert.equal(b.toString(), "abcdef");
  assert.equal(b.next(A), 6);
});

test("missing dependencies are reported and the rest applied", () => {
  const a = new Text(A);
  const d1 = a.insert(0, "ab");
  const d2 = a.insert(1, "X");
  const b = new Text(B);
  const other = new Text(C).insert(0, "c");
  const both: Delta = { agents: [...d2.agents, C], ops: [...d2.ops, { ...other.ops[0]!, agent: d2.agents.length }] as Delta["ops"] };
  assert.throws(() => b.apply(both), (e: unknown) => e instanceof MissingError && e.pending.length === 1 && keyHex(e.id.agent) === keyHex(A) && e.id.seq === 0);
  assert.equal(b.toString(), "c");
  b.apply(d1); b.apply(d2);
  assert.equal(b.toString().replace("c", ""), "aXb");
  b.check();
});

test("invalid deltas are rejected whole", () => {
  const a = new Text(A);
  const d = a.insert(0, "ab");
  const b = new Text(B);
  b.apply(d);
  const bad: Delta[] = [
    { agents: [A], ops: [{ kind: OpKind.Insert, agent: 0, seq: 2, lamport: 2, len: 1, origin: { agent: 0, seq: 1 }, text: "x" }] }, // lamport not after origin
    { agents: [A], ops: [{ kind: OpKind.Insert, agent: 0, seq: 2, lamport: 0, len: 1, origin: { agent: ROOT, seq: 0 }, text: "x" }] },
    { agents: [A], ops: [{ kind: OpKind.Insert, agent: 0, seq: 2, lamport: 5, len: 2, origin: { agent: ROOT, seq: 0 }, text: "x" }] },
    { agents: [A], ops: [{ kind: OpKind.Insert, agent: 1, seq: 2, lamport: 5, len: 1, origin: { agent: ROOT, seq: 0 }, text: "x" }] },
    { agents: [A], ops: [{ kind: OpKind.Insert, agent: 0, seq: 2, lamport: 5, len: 1, origin: { agent: ROOT, seq: 3 }, text: "x" }] },
    { agents: [A, C], ops: [
      { kind: OpKind.Insert, agent: 1, seq: 0, lamport: 9, len: 1, origin: { agent: ROOT, seq: 0 }, text: "y" },
      { kind: OpKind.Delete, agent: 0, seq: 2, lamport: 9, len: 1, target: { agent: 0, seq: 2 } }, // a delete naming itself
    ] },
    { agents: [A], ops: [
      { kind: OpKind.Insert, agent: 0, seq: 2, lamport: 5, len: 2, origin: { agent: ROOT, seq: 0 }, text: "xy" },
      { kind: OpKind.Insert, agent: 0, seq: 3, lamport: 9, len: 1, origin: { agent: ROOT, seq: 0 }, text: "z" }, // overlap
    ] },
  ];
  for (const [i, d] of bad.entries()) {
    assert.throws(() => b.apply(d), InvalidError, `case ${i}`);
    assert.equal(b.toString(), "ab", `case ${i} changed nothing`);
    assert.equal(b.next(A), 2);
    assert.equal(b.next(C), 0);
  }
  // An insert after a delete's ID.
  a.delete(0, 1); // seq 2 is a delete
  b.apply(a.since(b.version()));
  const afterDel: Delta = { agents: [A, C], ops: [{ kind: OpKind.Insert, agent: 1, seq: 0, lamport: 9, len: 1, origin: { agent: 0, seq: 2 }, text: "q" }] };
  assert.throws(() => b.apply(afterDel), InvalidError);
});

test("since returns exactly what a version lacks, tombstones without text", () => {
  const a = new Text(A);
  a.insert(0, "hello world");
  const v1 = a.version();
  a.delete(0, 6);
  a.insert(5, "!");
  const b = new Text(B);
  b.apply(a.since(new Map()));
  assert.equal(b.toString(), "world!");
  const full = a.since(new Map());
  const ins = full.ops.filter((o) => o.kind === OpKind.Insert);
  assert.ok(ins.some((o) => o.kind === OpKind.Insert && o.text === "" && o.len === 6), "tombstones travel without text");
  const c = new Text(C);
  c.apply(a.since(new Map()));
  const part = a.since(v1);
  assert.ok(part.ops.every((o) => o.seq >= 11));
  const d = new Text(C);
  d.apply({ agents: full.agents, ops: full.ops.filter((o) => o.seq < 11) });
  d.apply(part);
  assert.equal(d.toString(), "world!");
  // Nothing lacking gives an empty delta.
  assert.equal(a.since(a.version()).ops.length, 0);
});

test("anchors follow their characters", () => {
  const a = new Text(A);
  a.insert(0, "abcdef");
  const right = a.anchorAt(3, ASSOC_RIGHT); // before "d"
  const left = a.anchorAt(3, ASSOC_LEFT); // after "c"
  const end = a.anchorAt(6, ASSOC_RIGHT);
  const start = a.anchorAt(0, ASSOC_LEFT);
  assert.equal(end.edge, 1);
  assert.equal(start.edge, -1);
  const b = a.fork(B);
  const d = b.insert(0, "XY");
  a.apply(d);
  assert.equal(a.resolve(right), 5);
  assert.equal(a.resolve(left), 5);
  // Insert at the anchored position: right anchor stays before "d", left after "c".
  a.apply(b.insert(5, "--"));
  assert.equal(a.toString(), "XYabc--def");
  assert.equal(a.resolve(right), 7);
  assert.equal(a.resolve(left), 5);
  // A deleted character resolves to where it stood.
  a.delete(7, 1);
  assert.equal(a.resolve(right), 7);
  assert.equal(a.resolve(end), a.length);
  assert.equal(a.resolve({ edge: 0, assoc: 0, id: { agent: C, seq: 0 } }), null);
});

test("snapshots keep tombstones, order and lamports", () => {
  const r = rng(7);
  const [a, b] = replicas(2) as [Text, Text];
  for (let i = 0; i < 200; i++) {
    const t = r() < 0.5 ? a : b;
    if (t.length > 0 && r() < 0.3) t.delete(Math.floor(r() * t.length), 1);
    else t.insert(Math.floor(r() * (t.length + 1)), randomText(r, 4));
    if (r() < 0.2) { a.apply(b.since(a.version())); b.apply(a.since(b.version())); }
  }
  const snap = JSON.parse(JSON.stringify(a.toSnapshot()));
  const a2 = Text.fromSnapshot(snap);
  a2.check();
  assert.equal(a2.toString(), a.toString());
  assert.ok(versionEqual(a2.version(), a.version()));
  assert.equal(keyHex(a2.agent), keyHex(a.agent));
  // Both merge b's state identically and answer since() the same way.
  const fromB = b.since(new Map());
  a.apply(fromB); a2.apply(fromB);
  assert.equal(a2.toString(), a.toString());
  const x1 = a.insert(3, "Q"), x2 = a2.insert(3, "Q");
  assert.deepEqual(x1, x2);
  const fresh = new Text(C);
  fresh.apply(a2.since(new Map()));
  assert.equal(fresh.toString(), a.toString());
});

test("long inserts split into continuing runs", () => {
  const a = new Text(A);
  const s = "😀é".repeat(5000);
  const d = splitLongInserts(a.insert(0, s), 1000);
  assert.ok(d.ops.length > 1);
  for (const o of d.ops) assert.ok(o.kind === OpKind.Insert && utf8Len(o.text) <= 1000);
  const parts = splitDelta(d, 3);
  const b = new Text(B);
  for (const p of parts.reverse()) { try { b.apply(p); } catch (e) { if (!(e instanceof MissingError)) throw e; } }
  for (const p of parts.reverse()) b.apply(p);
  assert.equal(b.toString(), s);
  b.check();
});

/** Delivers deltas between replicas in random order with duplicates. */
function converge(seed: number, n: number, steps: number, withNaive: boolean) {
  const r = rng(seed);
  const reps = replicas(n);
  const naive = reps.map((t) => new NaiveRGA(keyHex(t.agent)));
  const inbox: Delta[][] = reps.map(() => []);
  const deliver = (i: number, drain = false) => {
    const q = inbox[i]!;
    if (q.length === 0) return;
    // While editing: a random queued delta, sometimes kept for a duplicate
    // delivery later. While draining: a random one of the oldest few.
    const j = Math.floor(r() * (drain ? Math.min(3, q.length) : q.length));
    const d = q[j]!;
    if (drain || r() < 0.8) q.splice(j, 1);
    try {
      reps[i]!.apply(d);
    } catch (e) {
      if (!(e instanceof MissingError)) throw e;
      q.push(d); // park it
    }
    if (withNaive) naive[i]!.apply(d) || undefined;
  };
  for (let s = 0; s < steps; s++) {
    const i = Math.floor(r() * n);
    const t = reps[i]!;
    const x = r();
    let d: Delta | null = null;
    if (x < 0.55) {
      const pos = Math.floor(r() * (t.length + 1));
      const txt = randomText(r, 5);
      d = t.insert(pos, txt);
      if (withNaive) naive[i]!.localInsert(pos, txt);
    } else if (x < 0.8 && t.length > 0) {
      const pos = Math.floor(r() * t.length);
      const len = 1 + Math.floor(r() * Math.min(4, t.length - pos));
      d = t.delete(pos, len);
      if (withNaive) naive[i]!.localDelete(pos, len);
    } else {
      deliver(i);
    }
    if (d) for (let j = 0; j < n; j++) if (j !== i) inbox[j]!.push(d);
    if (withNaive) assert.equal(t.toString(), naive[i]!.text(), `seed ${seed} step ${s}: replica ${i} differs from the reference`);
    if (s % 50 === 0) t.check();
  }
  // Drain: every queued delta in random order, parked ones again later.
  for (let round = 0; round < 1000 && inbox.some((q) => q.length > 0); round++) {
    for (let i = 0; i < n; i++) {
      const q = inbox[i]!;
      for (let k = q.length; k > 0; k--) deliver(i, true);
    }
  }
  assert.ok(inbox.every((q) => q.length === 0), "inboxes drained");
  const text = reps[0]!.toString();
  for (const [i, t] of reps.entries()) {
    t.check();
    assert.equal(t.toString(), text, `seed ${seed}: replica ${i} diverged`);
    assert.ok(versionEqual(t.version(), reps[0]!.version()));
    if (withNaive) assert.equal(naive[i]!.text(), text, `seed ${seed}: reference ${i} diverged`);
  }
  // Anti-entropy finds nothing more to send.
  for (const t of reps) assert.equal(reps[0]!.since(t.version()).ops.length, 0);
  return text;
}

test("property: 5 replicas converge under random delivery order and duplicates", () => {
  for (let seed = 1; seed <= 30; seed++) converge(seed, 5, 400, false);
});

test("differential: every replica matches a naive reference RGA after every step", () => {
  for (let seed = 100; seed < 115; seed++) converge(seed, 5, 250, true);
});

test("resync by version vectors converges partitioned replicas", () => {
  const r = rng(99);
  const reps = replicas(6);
  for (let s = 0; s < 600; s++) {
    const t = reps[Math.floor(r() * reps.length)]!;
    if (t.length > 0 && r() < 0.35) {
      const pos = Math.floor(r() * t.length);
      t.delete(pos, 1 + Math.floor(r() * Math.min(3, t.length - pos)));
    }
    else t.insert(Math.floor(r() * (t.length + 1)), randomText(r, 6));
    if (r() < 0.1) {
      const [x, y] = [reps[Math.floor(r() * 3)]!, reps[Math.floor(r() * 3)]!]; // partition: only 0..2 talk
      y.apply(x.since(y.version()));
      x.apply(y.since(x.version()));
    }
  }
  for (let k = 0; k < 2; k++) for (const x of reps) for (const y of reps) y.apply(x.since(y.version()));
  const text = reps[0]!.toString();
  for (const t of reps) { t.check(); assert.equal(t.toString(), text); }
});

test("a 100k-character document stays fast to type into", () => {
  const a = new Text(A);
  const r = rng(5);
  let chunk = "";
  for (let i = 0; i < 100_000; i++) chunk += String.fromCharCode(97 + (i % 26));
  a.insert(0, chunk);
  const start = performance.now();
  // 20k keystrokes at random places and 5k backspaces.
  for (let i = 0; i < 20_000; i++) a.insert(Math.floor(r() * (a.length + 1)), "x");
  for (let i = 0; i < 5_000; i++) a.delete(Math.max(0, Math.floor(r() * a.length) - 1), 1);
  const ms = performance.now() - start;
  assert.equal(a.length, 115_000);
  a.check();
  // Generous: a quadratic implementation takes minutes here.
  assert.ok(ms < 20_000, `took ${ms} ms`);
  const b = new Text(B);
  const t0 = performance.now();
  b.apply(a.since(new Map()));
  assert.equal(b.toString(), a.toString());
  assert.ok(performance.now() - t0 < 10_000);
});
