// Local persistence for offline editing: each replica's state and its
// queue of unacknowledged deltas survive a reload.
//
// A browser profile can hold several replica sets, one per agent key; a tab
// claims one with the Web Locks API so that two tabs never edit as the same
// agent (docs/protocol.md §3.1: two replicas must not share a key). For each
// (agent, document) the store keeps a snapshot of the replica, a log of the
// deltas applied since that snapshot (local and remote, written before a
// local delta is sent) and the queue of local deltas the server has not
// acknowledged yet. Loading replays the log over the snapshot.

import { newAgentKey, keyHex, hexKey, type AgentKey, type Snapshot } from "./crdt.ts";

export interface DocRecord {
  snapshot: Snapshot | null;
  /** Encoded deltas applied after the snapshot, in order. */
  log: Uint8Array[];
  /** Encoded local deltas not acknowledged by the server, in order. */
  queue: Uint8Array[];
}

export interface Store {
  /** Returns an agent key no other live tab is editing as (creating one if needed). */
  claimAgent(): Promise<AgentKey>;
  loadDoc(agent: AgentKey, doc: string): Promise<DocRecord | null>;
  /** Appends a delta to the log (and replaces the queue when given), durably. */
  append(agent: AgentKey, doc: string, delta: Uint8Array, queue?: Uint8Array[]): Promise<void>;
  /** Replaces the snapshot and clears the log. */
  saveSnapshot(agent: AgentKey, doc: string, snapshot: Snapshot, queue: Uint8Array[]): Promise<void>;
  saveQueue(agent: AgentKey, doc: string, queue: Uint8Array[]): Promise<void>;
  /** Forgets a document's local state. */
  dropDoc(agent: AgentKey, doc: string): Promise<void>;
  close(): void;
}

/** A store that keeps everything in memory (tests, or no IndexedDB). */
export class MemoryStore implements Store {
  private docs = new Map<string, DocRecord>();
  private agents: AgentKey[] = [];
  private claimed = new Set<string>();

  async claimAgent(): Promise<AgentKey> {
    for (const a of this.agents) {
      if (!this.claimed.has(keyHex(a))) {
        this.claimed.add(keyHex(a));
        return a;
      }
    }
    const a = newAgentKey();
    this.agents.push(a);
    this.claimed.add(keyHex(a));
    return a;
  }

  /** Lets another client claim the agent again, as a closed tab would. */
  release(agent: AgentKey): void {
    this.claimed.delete(keyHex(agent));
  }

  private rec(agent: AgentKey, doc: string): DocRecord {
    const k = keyHex(agent) + "/" + doc;
    let r = this.docs.get(k);
    if (!r) {
      r = { snapshot: null, log: [], queue: [] };
      this.docs.set(k, r);
    }
    return r;
  }

  async loadDoc(agent: AgentKey, doc: string): Promise<DocRecord | null> {
    const r = this.docs.get(keyHex(agent) + "/" + doc);
    return r ? { snapshot: structuredClone(r.snapshot), log: [...r.log], queue: [...r.queue] } : null;
  }

  async append(agent: AgentKey, doc: string, delta: Uint8Array, queue?: Uint8Array[]): Promise<void> {
    const r = this.rec(agent, doc);
    r.log.push(delta);
    if (queue) r.queue = [...queue];
  }

  async saveSnapshot(agent: AgentKey, doc: string, snapshot: Snapshot, queue: Uint8Array[]): Promise<void> {
    const r = this.rec(agent, doc);
    r.snapshot = structuredClone(snapshot);
    r.log = [];
    r.queue = [...queue];
  }

  async saveQueue(agent: AgentKey, doc: string, queue: Uint8Array[]): Promise<void> {
    this.rec(agent, doc).queue = [...queue];
  }

  async dropDoc(agent: AgentKey, doc: string): Promise<void> {
    this.docs.delete(keyHex(agent) + "/" + doc);
  }

  close(): void {}
}

const DB_VERSION = 1;

function req<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function done(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

interface LockManagerLike {
  request(name: string, opts: { ifAvailable: boolean }, cb: (lock: unknown) => Promise<void> | void): Promise<unknown>;
}

/**
 * IndexedDB-backed store. Object stores: "agents" (hex → created time),
 * "docs" ([agent, doc] → {snapshot, queue}), "log" (auto key → {agent, doc,
 * delta}, indexed by [agent, doc]).
 */
export class IndexedDBStore implements Store {
  private dbp: Promise<IDBDatabase>;
  private releases: (() => void)[] = [];

  constructor(
    private name = "weft",
    private idb: IDBFactory = globalThis.indexedDB,
    private locks: LockManagerLike | undefined = (globalThis.navigator as { locks?: LockManagerLike } | undefined)?.locks,
  ) {
    this.dbp = new Promise((resolve, reject) => {
      const r = this.idb.open(this.name, DB_VERSION);
      r.onupgradeneeded = () => {
        const db = r.result;
        if (!db.objectStoreNames.contains("agents")) db.createObjectStore("agents");
        if (!db.objectStoreNames.contains("docs")) db.createObjectStore("docs");
        if (!db.objectStoreNames.contains("log")) {
          const log = db.createObjectStore("log", { autoIncrement: true });
          log.createIndex("doc", ["agent", "doc"]);
        }
      };
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
  }

  static available(): boolean {
    return typeof globalThis.indexedDB !== "undefined";
  }

  private async tryLock(hex: string): Promise<boolean> {
    if (!this.locks) return true;
    return new Promise<boolean>((resolve) => {
      void this.locks!.request(`weft-agent-${this.name}-${hex}`, { ifAvailable: true }, (lock) => {
        if (!lock) {
          resolve(false);
          return;
        }
        resolve(true);
        // Hold the lock until this store is closed (or the tab goes away).
        return new Promise<void>((release) => this.releases.push(release));
      });
    });
  }

  async claimAgent(): Promise<AgentKey> {
    const db = await this.dbp;
    const keys = (await req(db.transaction("agents").objectStore("agents").getAllKeys())) as string[];
    for (const hex of keys) if (await this.tryLock(hex)) return hexKey(hex);
    const a = newAgentKey();
    const hex = keyHex(a);
    await this.tryLock(hex);
    const tx = db.transaction("agents", "readwrite");
    tx.objectStore("agents").put(Date.now(), hex);
    await done(tx);
    return a;
  }

  async loadDoc(agent: AgentKey, doc: string): Promise<DocRecord | null> {
    const db = await this.dbp;
    const hex = keyHex(agent);
    const tx = db.transaction(["docs", "log"]);
    const rec = (await req(tx.objectStore("docs").get([hex, doc]))) as { snapshot: Snapshot | null; queue: Uint8Array[] } | undefined;
    const log = (await req(tx.objectStore("log").index("doc").getAll([hex, doc]))) as { delta: Uint8Array }[];
    if (!rec && log.length === 0) return null;
    return { snapshot: rec?.snapshot ?? null, queue: (rec?.queue ?? []).map(u8), log: log.map((l) => u8(l.delta)) };
  }

  async append(agent: AgentKey, doc: string, delta: Uint8Array, queue?: Uint8Array[]): Promise<void> {
    const db = await this.dbp;
    const hex = keyHex(agent);
    const tx = db.transaction(["docs", "log"], "readwrite", { durability: "strict" } as IDBTransactionOptions);
    tx.objectStore("log").add({ agent: hex, doc, delta });
    if (queue) {
      const docs = tx.objectStore("docs");
      const cur = (await req(docs.get([hex, doc]))) as { snapshot: Snapshot | null; queue: Uint8Array[] } | undefined;
      docs.put({ snapshot: cur?.snapshot ?? null, queue }, [hex, doc]);
    }
    await done(tx);
  }

  async saveSnapshot(agent: AgentKey, doc: string, snapshot: Snapshot, queue: Uint8Array[]): Promise<void> {
    const db = await this.dbp;
    const hex = keyHex(agent);
    const tx = db.transaction(["docs", "log"], "readwrite");
    tx.objectStore("docs").put({ snapshot, queue }, [hex, doc]);
    const idx = tx.objectStore("log").index("doc");
    const keys = await req(idx.getAllKeys([hex, doc]));
    for (const k of keys) tx.objectStore("log").delete(k);
    await done(tx);
  }

  async saveQueue(agent: AgentKey, doc: string, queue: Uint8Array[]): Promise<void> {
    const db = await this.dbp;
    const hex = keyHex(agent);
    const tx = db.transaction("docs", "readwrite");
    const docs = tx.objectStore("docs");
    const cur = (await req(docs.get([hex, doc]))) as { snapshot: Snapshot | null; queue: Uint8Array[] } | undefined;
    docs.put({ snapshot: cur?.snapshot ?? null, queue }, [hex, doc]);
    await done(tx);
  }

  async dropDoc(agent: AgentKey, doc: string): Promise<void> {
    const db = await this.dbp;
    const hex = keyHex(agent);
    const tx = db.transaction(["docs", "log"], "readwrite");
    tx.objectStore("docs").delete([hex, doc]);
    for (const k of await req(tx.objectStore("log").index("doc").getAllKeys([hex, doc]))) tx.objectStore("log").delete(k);
    await done(tx);
  }

  close(): void {
    for (const r of this.releases.splice(0)) r();
    void this.dbp.then((db) => db.close());
  }
}

/** IndexedDB may hand back ArrayBuffers or other views; normalise to Uint8Array. */
function u8(x: unknown): Uint8Array {
  if (x instanceof Uint8Array) return x;
  if (x instanceof ArrayBuffer) return new Uint8Array(x);
  if (ArrayBuffer.isView(x)) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  throw new Error("stored delta is not bytes");
}
