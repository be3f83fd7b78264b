// The IndexedDB store (over fake-indexeddb in Node) and a client's offline
// persistence across a "reload": the replica and the unacked queue survive.
import "fake-indexeddb/auto";
import { test } from "node:test";
import assert from "node:assert/strict";
import { IndexedDBStore, MemoryStore } from "../src/store.ts";
import { WeftClient } from "../src/client.ts";
import { Text, keyHex } from "../src/crdt.ts";
import { encodeDelta, decodeDelta } from "../src/protocol.ts";

/** A Web Locks stand-in: a name is held until its callback's promise settles. */
function fakeLocks() {
  const held = new Set<string>();
  return {
    async request(name: string, opts: { ifAvailable: boolean }, cb: (lock: unknown) => Promise<void> | void) {
      if (held.has(name)) return cb(null);
      held.add(name);
      try {
        return await cb({ name });
      } finally {
        held.delete(name);
      }
    },
  };
}

test("IndexedDB store: snapshot, log and queue round trip", async () => {
  const s = new IndexedDBStore("t1", indexedDB, fakeLocks());
  const agent = await s.claimAgent();
  const t = new Text(agent);
  const d1 = t.insert(0, "hello 😀");
  await s.append(agent, "doc", encodeDelta(d1), [encodeDelta(d1)]);
  const snap = t.toSnapshot();
  await s.saveSnapshot(agent, "doc", snap, []);
  const d2 = t.insert(5, ",");
  await s.append(agent, "doc", encodeDelta(d2), [encodeDelta(d2)]);
  const rec = (await s.loadDoc(agent, "doc"))!;
  assert.equal(rec.log.length, 1);
  assert.equal(rec.queue.length, 1);
  const back = Text.fromSnapshot(rec.snapshot!);
  for (const b of rec.log) back.apply(decodeDelta(b));
  assert.equal(back.toString(), "hello, 😀");
  assert.equal(await s.loadDoc(agent, "other"), null);
  await s.dropDoc(agent, "doc");
  assert.equal(await s.loadDoc(agent, "doc"), null);
  s.close();
});

test("IndexedDB store: two live tabs never share an agent; a closed tab's agent is reused", async () => {
  const locks = fakeLocks();
  const a = new IndexedDBStore("t2", indexedDB, locks);
  const b = new IndexedDBStore("t2", indexedDB, locks);
  const ka = await a.claimAgent();
  const kb = await b.claimAgent();
  assert.notEqual(keyHex(ka), keyHex(kb));
  a.close();
  await new Promise((r) => setTimeout(r, 10));
  const c = new IndexedDBStore("t2", indexedDB, locks);
  assert.equal(keyHex(await c.claimAgent()), keyHex(ka));
  b.close();
  c.close();
});

test("a client reloaded from IndexedDB keeps its offline edits and queue", async () => {
  const locks = fakeLocks();
  const c1 = new WeftClient({ url: "http://127.0.0.1:1", autoConnect: false, store: new IndexedDBStore("t3", indexedDB, locks) });
  const d1 = await c1.open("notes");
  d1.insert(0, "written offline");
  d1.delete(0, 8);
  d1.insert(0, "kept ");
  assert.equal(d1.toString(), "kept offline");
  assert.equal(d1.state, "offline");
  await c1.close();
  const c2 = new WeftClient({ url: "http://127.0.0.1:1", autoConnect: false, store: new IndexedDBStore("t3", indexedDB, locks) });
  const d2 = await c2.open("notes");
  assert.equal(d2.toString(), "kept offline");
  assert.equal(keyHex(c2.agent!), keyHex(c1.agent!));
  assert.ok(d2.queue.length > 0, "the unsent edits are still queued");
  // Further edits continue the agent's seqs (no reuse).
  const more = d2.text.insert(0, "!");
  assert.equal(more.ops[0]!.seq, d1.text.next(c1.agent!));
  await c2.close();
});

test("memory store behaves the same", async () => {
  const s = new MemoryStore();
  const a = await s.claimAgent();
  const b = await s.claimAgent();
  assert.notEqual(keyHex(a), keyHex(b));
  s.release(a);
  assert.equal(keyHex(await s.claimAgent()), keyHex(a));
});

test("a store that cannot open falls back to memory, with a reported error", async () => {
  const broken = {
    claimAgent: () => Promise.reject(new Error("blocked")),
  } as unknown as IndexedDBStore;
  const c = new WeftClient({ url: "http://127.0.0.1:1", autoConnect: false, store: broken });
  const errors: string[] = [];
  c.on("error", (e) => errors.push(e.code));
  const d = await c.open("x");
  d.insert(0, "still editable");
  assert.equal(d.toString(), "still editable");
  assert.deepEqual(errors, ["storage"]);
  await c.close();
});
