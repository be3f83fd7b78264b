// Node clients (the TypeScript client over the `ws` package) against a real
// `weft serve`.
import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { WeftClient, type WebSocketCtor, type ClientOptions } from "../src/client.ts";
import { MemoryStore } from "../src/store.ts";
import { WeftServer, serverUnavailable, waitFor } from "./server.ts";
import { rng, randomText } from "./reference.ts";

const skip = serverUnavailable();
let server: WeftServer;

before(async () => {
  if (!skip) server = await WeftServer.start();
});
after(async () => {
  await server?.dispose();
});

function client(extra: Partial<ClientOptions> = {}): WeftClient {
  return new WeftClient({ url: server.url, WebSocket: WebSocket as unknown as WebSocketCtor, store: new MemoryStore(), pingIntervalMs: 2000, backoff: { baseMs: 100, capMs: 1000 }, ...extra });
}

test("two clients edit one document and converge", { skip: skip ?? false }, async () => {
  const a = client({ user: { name: "Ada", color: "#e4572e" } });
  const b = client({ user: { name: "Grace", color: "#17bebb" } });
  try {
    const da = await a.open("t-basic");
    const db = await b.open("t-basic");
    await da.whenSynced();
    await db.whenSynced();
    da.insert(0, "hello 😀");
    await waitFor("b sees a's text", () => db.toString() === "hello 😀");
    db.insert(db.text.length, " world");
    await waitFor("a sees b's text", () => da.toString() === "hello 😀 world");
    await da.whenSynced();
    await db.whenSynced();
    const http = await server.doc("t-basic");
    assert.equal(http.text, "hello 😀 world");
    // Presence: a's cursor shows up at b with a's name.
    da.setSelection([{ anchor: 2, head: 2 }]);
    await waitFor("b sees a's cursor", () => db.peers().some((p) => p.user.name === "Ada" && p.cursor === 2));
    db.setSelection([{ anchor: 0, head: 5 }]);
    await waitFor("a sees b's selection", () => da.peers().some((p) => p.user.name === "Grace" && p.selections[0]?.head === 5));
    // The cursor follows its character through a remote insert before it.
    db.insert(0, ">> ");
    await waitFor("cursor moved", () => db.peers().some((p) => p.user.name === "Ada" && p.cursor === 5));
  } finally {
    await a.close();
    await b.close();
  }
});

test("a joiner gets the text; many documents share one socket", { skip: skip ?? false }, async () => {
  const a = client();
  const b = client();
  try {
    const docs = await Promise.all(["m1", "m2", "m3"].map((id) => a.open(id)));
    docs.forEach((d, i) => d.insert(0, `doc ${i}`));
    await Promise.all(docs.map((d) => d.whenSynced()));
    const late = await Promise.all(["m1", "m2", "m3"].map((id) => b.open(id)));
    await Promise.all(late.map((d) => d.whenSynced()));
    late.forEach((d, i) => assert.equal(d.toString(), `doc ${i}`));
  } finally {
    await a.close();
    await b.close();
  }
});

test("offline edits on both sides converge on reconnect (two-way resync)", { skip: skip ?? false }, async () => {
  const store = new MemoryStore();
  const a = client({ store });
  const b = client();
  try {
    const da = await a.open("t-offline");
    const db = await b.open("t-offline");
    da.insert(0, "base text");
    await waitFor("b has base", () => db.toString() === "base text");
    await da.whenSynced();
    a.disconnect();
    assert.equal(a.state, "offline");
    da.insert(0, "A:");
    da.delete(da.text.length - 4, 4);
    db.insert(db.text.length, " +B");
    await db.whenSynced();
    assert.equal(da.state, "offline");
    a.connect();
    await waitFor("converged", () => da.toString() === db.toString() && da.state === "synced" && db.state === "synced");
    assert.equal(da.toString(), "A:base  +B");
    assert.equal((await server.doc("t-offline")).text, "A:base  +B");
  } finally {
    await a.close();
    await b.close();
  }
});

test("a reload keeps unsent edits (queue and replica persisted)", { skip: skip ?? false }, async () => {
  const store = new MemoryStore();
  const a = client({ store, autoConnect: false });
  const da = await a.open("t-reload");
  da.insert(0, "typed offline");
  assert.equal(da.state, "offline");
  await a.close(); // flushes to the store, like a page unload
  const agent = a.agent!;
  store.release(agent);
  const a2 = client({ store });
  try {
    const d2 = await a2.open("t-reload");
    assert.equal(d2.toString(), "typed offline");
    assert.equal(a2.agent && Buffer.from(a2.agent).toString("hex"), Buffer.from(agent).toString("hex"));
    await d2.whenSynced();
    assert.equal((await server.doc("t-reload")).text, "typed offline");
  } finally {
    await a2.close();
  }
});

test("server restart: clients reconnect and keep editing", { skip: skip ?? false }, async () => {
  const a = client();
  const b = client();
  try {
    const da = await a.open("t-restart");
    const db = await b.open("t-restart");
    da.insert(0, "before");
    await waitFor("b synced", () => db.toString() === "before");
    await da.whenSynced();
    await server.restart();
    da.insert(da.text.length, " after-a");
    db.insert(0, "b: ");
    await waitFor("converged after restart", () => da.toString() === db.toString() && da.state === "synced" && db.state === "synced", 30_000);
    assert.equal(da.toString(), "b: before after-a");
    assert.equal((await server.doc("t-restart")).text, da.toString());
  } finally {
    await a.close();
    await b.close();
  }
});

test("random concurrent editing by 4 Node clients converges with the server", { skip: skip ?? false }, async () => {
  const r = rng(42);
  const clients = Array.from({ length: 4 }, () => client());
  try {
    const docs = await Promise.all(clients.map((c) => c.open("t-random")));
    await Promise.all(docs.map((d) => d.whenSynced()));
    for (let i = 0; i < 400; i++) {
      const d = docs[Math.floor(r() * docs.length)]!;
      if (d.text.length > 0 && r() < 0.3) {
        const pos = Math.floor(r() * d.text.length);
        d.delete(pos, Math.min(1 + Math.floor(r() * 3), d.text.length - pos));
      } else d.insert(Math.floor(r() * (d.text.length + 1)), randomText(r, 4));
      if (i % 20 === 0) await new Promise((res) => setTimeout(res, 5));
    }
    await waitFor("all synced and equal", () => docs.every((d) => d.state === "synced" && d.toString() === docs[0]!.toString()), 30_000);
    assert.equal((await server.doc("t-random")).text, docs[0]!.toString());
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
});
