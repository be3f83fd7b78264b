// The weft connection manager: one WebSocket per server carrying every open
// document (docs/protocol.md §6).
//
// - Hello → Welcome, then one Join with every document and its version
//   vector; after the last Sync part of a document the client sends, as
//   Delta frames, exactly what the server's version shows it lacks (a
//   two-way resync, the same whether new, reconnecting or back from offline).
// - Local edits apply to the replica at once, are batched for a few ms,
//   persisted, then sent as Delta frames numbered by a per-connection client
//   seq. They stay in the document's queue until Acked (the queue is stored
//   with the replica, so a reload loses no unsent edit).
// - Reconnects use exponential backoff with full jitter, never sooner than
//   the last retry-after hint; close codes that §9 says must not be retried
//   stop the client and are reported to the application.
// - Presence: cursor and selections as CRDT anchors, throttled to the
//   server's presence interval and refreshed before its TTL; peers' entries
//   expire client-side too.

import {
  Text,
  MissingError,
  InvalidError,
  keyHex,
  concatDeltas,
  splitDelta,
  splitLongInserts,
  ASSOC_LEFT,
  ASSOC_RIGHT,
  type AgentKey,
  type Anchor,
  type Change,
  type Delta,
  type Version,
} from "./crdt.ts";
import {
  decodeFrame,
  encodeFrame,
  encodeDelta,
  decodeDelta,
  isUnknown,
  closeAction,
  errorCloseCode,
  ErrorNames,
  ErrorCode,
  Kind,
  DefaultLimits,
  MaxOpTextBytes,
  MaxDocsPerFrame,
  ProtocolError,
  SUBPROTOCOL,
  type Frame,
  type Limits,
  type User,
  type PresenceUpdateFrame,
  type Selection,
} from "./protocol.ts";
import { MemoryStore, type Store } from "./store.ts";

export const CLIENT_NAME = "weft-ts/0.1.0";

/** The connection state an editor shows. */
export type ConnState = "connecting" | "synced" | "pending" | "offline";

/** A failure reported to the application. */
export interface ClientError {
  /** A protocol error name (§8), or "close:<code>", or "storage". */
  code: string;
  message: string;
  doc?: string;
  /** True when the client stopped and will not retry by itself. */
  permanent: boolean;
}

/** The subset of the WebSocket API the client uses (browser or `ws`). */
export interface WebSocketLike {
  binaryType: string;
  readyState: number;
  protocol: string;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type WebSocketCtor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ClientOptions {
  /** The server: "http://host:port", "ws://host:port" or the full ".../v1/ws" URL. */
  url: string;
  /** A bearer token, or a function that returns a fresh one (called before each connect and to refresh). */
  token?: string | (() => string | Promise<string>);
  user?: User;
  store?: Store;
  WebSocket?: WebSocketCtor;
  /** Backoff: delay before attempt n is uniform in [0, min(capMs, baseMs·2^n)]. */
  backoff?: { baseMs?: number; capMs?: number; resetAfterMs?: number };
  random?: () => number;
  /** Liveness: a Ping every pingIntervalMs; no frame for that long plus pingTimeoutMs drops the socket. */
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  /** Local edits are batched this long before they are sent. */
  flushMs?: number;
  /** The replica is snapshotted to the store this long after a change. */
  snapshotMs?: number;
  /** Connect as soon as constructed (default true). */
  autoConnect?: boolean;
  /** Listen to the browser's online/offline events (default: when window exists). */
  watchNetwork?: boolean;
}

type Listener<T> = (v: T) => void;

class Emitter<M> {
  private ls = new Map<keyof M, Set<Listener<never>>>();
  on<K extends keyof M>(k: K, f: Listener<M[K]>): () => void {
    let s = this.ls.get(k);
    if (!s) this.ls.set(k, (s = new Set()));
    s.add(f as Listener<never>);
    return () => s!.delete(f as Listener<never>);
  }
  protected emit<K extends keyof M>(k: K, v: M[K]): void {
    for (const f of [...(this.ls.get(k) ?? [])]) {
      try {
        (f as Listener<M[K]>)(v);
      } catch (e) {
        console.error("weft: listener failed", e);
      }
    }
  }
}

interface QueueEntry {
  delta: Delta;
  bytes: Uint8Array;
  /** The client seq of the Delta frame carrying it on this connection, or 0 while unsent. */
  clientSeq: number;
  /** Stored durably (sending before that could reuse seqs after a crash). */
  persisted: boolean;
}

/** A peer's presence with positions resolved against the local replica. */
export interface PeerView {
  session: string;
  agent: string;
  user: User;
  /** Caret position in code points, or null while its character is unknown here. */
  cursor: number | null;
  selections: { anchor: number; head: number }[];
}

interface PeerEntry {
  session: string;
  agent: string;
  user: User;
  clock: number;
  cursor: Anchor;
  selections: Selection[];
  seen: number;
}

interface DocEvents {
  /** Remote edits, as sequential position-based changes. */
  remote: Change[];
  /** Local edits (from this client's API). */
  local: Change[];
  peers: PeerView[];
  state: ConnState;
  /** The server acknowledged edits of this document (they are durable). */
  ack: number;
}

type DocPhase = "offline" | "joining" | "live" | "failed";

/** One open document: its replica, queue and presence. */
export class WeftDoc extends Emitter<DocEvents> {
  phase: DocPhase = "offline";
  readonly queue: QueueEntry[] = [];
  private outbox: Delta[] = [];
  private flushTimer: ReturnType<typeof setTimeout> | null = null;
  private snapTimer: ReturnType<typeof setTimeout> | null = null;
  private chain: Promise<void> = Promise.resolve();
  private logCount = 0;
  private peerMap = new Map<string, PeerEntry>();
  private presence: { cursor: Anchor; selections: Selection[] } | null = null;
  private presenceClock = 0;
  private presenceSentAt = 0;
  private presenceTimer: ReturnType<typeof setTimeout> | null = null;
  private presenceDirty = false;
  private lastState: ConnState | null = null;
  /** The server's op-log seq this replica is known to be at. */
  serverSeq = 0;
  error: ClientError | null = null;
  readOnly = false;

  constructor(
    readonly client: WeftClient,
    readonly id: string,
    readonly text: Text,
    queued: Delta[],
  ) {
    super();
    for (const d of queued) this.queue.push({ delta: d, bytes: encodeDelta(d), clientSeq: 0, persisted: true });
  }

  get state(): ConnState {
    const c = this.client;
    if (this.phase === "failed") return "offline";
    if (!c.live) return c.connecting ? "connecting" : "offline";
    if (this.phase !== "live") return "connecting";
    if (this.queue.length > 0 || this.outbox.length > 0) return "pending";
    return "synced";
  }

  /** Current text. */
  override toString(): string {
    return this.text.toString();
  }

  // --- local edits -------------------------------------------------------------

  insert(pos: number, s: string): Delta {
    return this.local(this.text.insert(pos, s), [{ pos, delete: 0, insert: s, pos16: -1, delete16: 0 }]);
  }

  delete(pos: number, n: number): Delta {
    return this.local(this.text.delete(pos, n), [{ pos, delete: n, insert: "", pos16: -1, delete16: -1 }]);
  }

  replace(pos: number, n: number, s: string): Delta {
    return this.local(this.text.replace(pos, n, s), [{ pos, delete: n, insert: s, pos16: -1, delete16: -1 }]);
  }

  private local(d: Delta, changes: Change[]): Delta {
    if (d.ops.length === 0) return d;
    this.outbox.push(d);
    this.emit("local", changes);
    this.scheduleFlush();
    this.scheduleSnapshot();
    this.client.refreshState();
    return d;
  }

  private scheduleFlush(): void {
    if (this.flushTimer) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      this.flush();
    }, this.client.opts.flushMs);
  }

  /** Moves batched local edits to the queue, persists them, then sends. */
  flush(): void {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    if (this.outbox.length === 0) return;
    const merged = concatDeltas(this.outbox);
    this.outbox = [];
    const entries = this.client.splitForSend(merged).map((delta) => ({ delta, bytes: encodeDelta(delta), clientSeq: 0, persisted: false }));
    this.queue.push(...entries);
    // The log keeps the delta in its wire form, so long runs are cut like on the wire.
    const bytes = encodeDelta(splitLongInserts(merged, MaxOpTextBytes));
    this.persist(async (s, a) => {
      await s.append(a, this.id, bytes, this.queueBytes());
      this.logCount++;
    }).then(() => {
      for (const e of entries) e.persisted = true;
      this.client.pump(this);
    });
  }

  private queueBytes(): Uint8Array[] {
    return this.queue.map((e) => e.bytes);
  }

  /** Runs store operations for this document one after another. */
  persist(fn: (s: Store, agent: AgentKey) => Promise<void>): Promise<void> {
    const store = this.client.store;
    const agent = this.text.agent;
    this.chain = this.chain
      .then(() => fn(store, agent))
      .catch((e: unknown) => this.client.report({ code: "storage", message: String(e), doc: this.id, permanent: false }));
    return this.chain;
  }

  private scheduleSnapshot(): void {
    if (this.logCount > 200) {
      this.snapshotNow();
      return;
    }
    if (this.snapTimer) return;
    this.snapTimer = setTimeout(() => {
      this.snapTimer = null;
      this.snapshotNow();
    }, this.client.opts.snapshotMs);
  }

  /** Stores a snapshot of the replica now (also on page hide). */
  snapshotNow(): Promise<void> {
    if (this.snapTimer) {
      clearTimeout(this.snapTimer);
      this.snapTimer = null;
    }
    this.flush();
    // The snapshot is taken when the step runs, so it includes every delta
    // whose log append ran before it: clearing the log loses nothing.
    return this.persist(async (s, a) => {
      this.logCount = 0;
      await s.saveSnapshot(a, this.id, this.text.toSnapshot(), this.queueBytes());
    });
  }

  // --- remote edits --------------------------------------------------------------

  /** Applies a delta from the server; returns false when a dependency is missing. */
  applyRemote(d: Delta): boolean {
    if (d.ops.length === 0) return true;
    const changes: Change[] = [];
    let ok = true;
    try {
      this.text.applyChanges(d, (c) => changes.push(c));
    } catch (e) {
      if (e instanceof MissingError) ok = false;
      else if (e instanceof InvalidError) {
        this.client.report({ code: "invalid_delta", message: `server sent an invalid delta: ${e.message}`, doc: this.id, permanent: false });
        return false;
      } else throw e;
    }
    const bytes = encodeDelta(d);
    void this.persist(async (s, a) => {
      await s.append(a, this.id, bytes);
      this.logCount++;
    });
    this.scheduleSnapshot();
    if (changes.length > 0) this.emit("remote", changes);
    if (this.peerMap.size > 0) this.emit("peers", this.peers());
    return ok;
  }

  /** The last Sync part arrived: send what the server lacks. */
  synced(server: Version): void {
    this.flush();
    const lacking = this.text.since(server);
    // Everything queued is in the replica, so the resync covers it: the
    // queue becomes exactly what the server lacks.
    this.queue.length = 0;
    for (const delta of lacking.ops.length ? this.client.splitForSend(lacking) : []) {
      this.queue.push({ delta, bytes: encodeDelta(delta), clientSeq: 0, persisted: false });
    }
    this.phase = "live";
    const entries = [...this.queue];
    // Wait for pending log writes (local edits must be durable before they leave).
    this.persist((s, a) => s.saveQueue(a, this.id, this.queueBytes())).then(() => {
      for (const e of entries) e.persisted = true;
      this.client.pump(this);
    });
    this.presenceDirty = this.presence !== null;
    this.schedulePresence();
    this.client.refreshState();
  }

  /** The server acknowledged the Delta frame carrying entry. */
  acked(entry: QueueEntry): void {
    const i = this.queue.indexOf(entry);
    if (i < 0) return; // superseded by a resync
    // Acks for one document arrive in client seq order.
    this.queue.splice(0, i + 1);
    void this.persist((s, a) => s.saveQueue(a, this.id, this.queueBytes()));
    this.emit("ack", this.queue.length);
    this.client.refreshState();
  }

  /** Pending entries become unsent (a new connection renumbers them). */
  resetSession(): void {
    for (const e of this.queue) e.clientSeq = 0;
    if (this.phase !== "failed") this.phase = "offline";
    this.peerMap.clear();
    this.emit("peers", []);
  }

  notifyState(): void {
    const s = this.state;
    if (s !== this.lastState) {
      this.lastState = s;
      this.emit("state", s);
    }
  }

  // --- presence ------------------------------------------------------------------

  /**
   * Publishes the local caret and selections, in code point positions. A
   * range with anchor ≠ head is a selection; the caret is the head of the
   * main (first) range.
   */
  setSelection(ranges: { anchor: number; head: number }[]): void {
    if (ranges.length === 0) return;
    const t = this.text;
    const clamp = (p: number) => Math.max(0, Math.min(t.length, p));
    const main = ranges[0]!;
    const cursor = t.anchorAt(clamp(main.head), ASSOC_LEFT);
    const selections: Selection[] = [];
    for (const r of ranges.slice(0, 32)) {
      if (r.anchor === r.head) continue;
      const a = clamp(r.anchor),
        h = clamp(r.head);
      // Ends stick inwards, so text typed at a boundary stays outside.
      selections.push({ anchor: t.anchorAt(a, a < h ? ASSOC_RIGHT : ASSOC_LEFT), head: t.anchorAt(h, h < a ? ASSOC_RIGHT : ASSOC_LEFT) });
    }
    this.presence = { cursor, selections };
    this.presenceDirty = true;
    this.schedulePresence();
  }

  /** Re-sends presence (after the user's name or colour changed). */
  touchPresence(): void {
    if (!this.presence) return; // the name travels with the first caret
    this.presenceDirty = true;
    this.schedulePresence();
  }

  schedulePresence(): void {
    if (this.presenceTimer) clearTimeout(this.presenceTimer);
    this.presenceTimer = null;
    if (!this.client.live || this.phase !== "live" || !this.presence) return;
    const l = this.client.limits;
    const now = Date.now();
    if (this.presenceDirty) {
      const wait = this.presenceSentAt + l.presenceMs - now;
      if (wait <= 0) {
        this.sendPresence();
        this.presenceTimer = setTimeout(() => this.schedulePresence(), Math.max(1000, l.presenceTtlMs / 2));
      } else this.presenceTimer = setTimeout(() => this.schedulePresence(), wait);
      return;
    }
    // Nothing new: refresh before the server's TTL expires it.
    const wait = this.presenceSentAt + Math.max(1000, l.presenceTtlMs / 2) - now;
    if (wait <= 0) {
      this.presenceDirty = true;
      this.schedulePresence();
    } else this.presenceTimer = setTimeout(() => this.schedulePresence(), wait);
  }

  private sendPresence(): void {
    if (!this.presence) return;
    this.presenceDirty = false;
    this.presenceSentAt = Date.now();
    this.client.send({ kind: Kind.Presence, doc: this.id, clock: ++this.presenceClock, user: this.client.user, cursor: this.presence.cursor, selections: this.presence.selections });
  }

  onPresence(f: PresenceUpdateFrame): void {
    const now = Date.now();
    for (const p of f.peers) {
      const session = keyHex(p.session);
      // Our own presence is not a peer (a server should not echo it, §7).
      if (session === this.client.session) continue;
      const cur = this.peerMap.get(session);
      if (cur && cur.clock >= p.clock) {
        cur.seen = now;
        continue;
      }
      this.peerMap.set(session, { session, agent: keyHex(p.agent), user: p.user, clock: p.clock, cursor: p.cursor, selections: p.selections, seen: now });
    }
    for (const g of f.gone) this.peerMap.delete(keyHex(g));
    this.emit("peers", this.peers());
  }

  /** Drops peers not refreshed within the TTL. */
  expirePeers(ttl: number): void {
    const now = Date.now();
    let changed = false;
    for (const [k, p] of this.peerMap) {
      if (now - p.seen > ttl) {
        this.peerMap.delete(k);
        changed = true;
      }
    }
    if (changed) this.emit("peers", this.peers());
  }

  /** Peers present in the document, with positions resolved now. */
  peers(): PeerView[] {
    const out: PeerView[] = [];
    for (const p of this.peerMap.values()) {
      const selections: PeerView["selections"] = [];
      for (const s of p.selections) {
        const a = this.text.resolve(s.anchor),
          h = this.text.resolve(s.head);
        if (a !== null && h !== null) selections.push({ anchor: a, head: h });
      }
      out.push({ session: p.session, agent: p.agent, user: p.user, cursor: this.text.resolve(p.cursor), selections });
    }
    return out.sort((a, b) => (a.session < b.session ? -1 : 1));
  }

  /** Resolves when the document is synced (everything acked), or rejects after ms. */
  whenSynced(ms = 10000): Promise<void> {
    if (this.state === "synced") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const off = this.on("state", (s) => {
        if (s === "synced") {
          clearTimeout(t);
          off();
          resolve();
        }
      });
      const t = setTimeout(() => {
        off();
        reject(new Error(`weft: ${this.id} not synced after ${ms} ms (state ${this.state})`));
      }, ms);
    });
  }

  /** @internal */
  stopTimers(): void {
    for (const t of [this.flushTimer, this.snapTimer, this.presenceTimer]) if (t) clearTimeout(t);
    this.flushTimer = this.snapTimer = this.presenceTimer = null;
  }
}

interface ClientEvents {
  state: ConnState;
  error: ClientError;
  /** A session started (Welcome received). */
  open: { session: string; server: string };
}

const defaults = {
  pingIntervalMs: 10000,
  pingTimeoutMs: 5000,
  flushMs: 20,
  snapshotMs: 2000,
};

/** The connection manager. */
export class WeftClient extends Emitter<ClientEvents> {
  readonly opts: ClientOptions & typeof defaults;
  store: Store;
  user: User;
  limits: Limits = { ...DefaultLimits };
  session = "";
  agent: AgentKey | null = null;
  /** Set when the client stopped for a reason §9 says not to retry. */
  failure: ClientError | null = null;
  readonly docs = new Map<string, WeftDoc>();

  private ws: WebSocketLike | null = null;
  private welcomed = false;
  private attempt = 0;
  private retryAfterMs = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private resetTimer: ReturnType<typeof setTimeout> | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private expiresAt = 0;
  private lastRecv = 0;
  private nonce = 0;
  private clientSeq = 0;
  private inflight = new Map<number, { doc: WeftDoc; entry: QueueEntry }>();
  private stopped = false;
  private wantConnection: boolean;
  private lastState: ConnState | null = null;
  private ready: Promise<void>;
  private opening = new Map<string, Promise<WeftDoc>>();
  private detach: (() => void)[] = [];
  private sendWindow: { at: number; ops: number; bytes: number } = { at: 0, ops: 0, bytes: 0 };
  private pumpTimer: ReturnType<typeof setTimeout> | null = null;
  connecting = false;

  constructor(opts: ClientOptions) {
    super();
    this.opts = { ...defaults, ...opts };
    this.store = opts.store ?? new MemoryStore();
    this.user = opts.user ?? { name: "anonymous", color: "#888888" };
    this.wantConnection = opts.autoConnect !== false;
    this.ready = this.store
      .claimAgent()
      .catch((e: unknown) => {
        // Storage refused (private mode, quota, blocked): keep working in memory.
        this.report({ code: "storage", message: `local storage unavailable, edits are kept in memory only: ${String(e)}`, permanent: false });
        this.store = new MemoryStore();
        return this.store.claimAgent();
      })
      .then((a) => {
        this.agent = a;
      });
    const w = globalThis as { addEventListener?: (t: string, f: () => void) => void; removeEventListener?: (t: string, f: () => void) => void };
    if ((opts.watchNetwork ?? typeof window !== "undefined") && w.addEventListener) {
      const online = () => this.onOnline();
      const offline = () => this.dropConnection("network offline");
      const hide = () => {
        for (const d of this.docs.values()) void d.snapshotNow();
      };
      w.addEventListener("online", online);
      w.addEventListener("offline", offline);
      w.addEventListener("pagehide", hide);
      this.detach.push(() => {
        w.removeEventListener!("online", online);
        w.removeEventListener!("offline", offline);
        w.removeEventListener!("pagehide", hide);
      });
    }
    const tick = setInterval(() => this.tick(), 1000);
    (tick as { unref?: () => void }).unref?.();
    this.detach.push(() => clearInterval(tick));
    if (this.wantConnection) void this.ready.then(() => this.connect());
  }

  /** True while a session is up (Welcome received on an open socket). */
  get live(): boolean {
    return this.welcomed && this.ws !== null;
  }

  get state(): ConnState {
    if (!this.live) return this.connecting ? "connecting" : "offline";
    let pending = false;
    for (const d of this.docs.values()) {
      const s = d.state;
      if (s === "connecting") return "connecting";
      if (s === "pending") pending = true;
    }
    return pending ? "pending" : "synced";
  }

  /** Re-evaluates and announces the connection state. */
  refreshState(): void {
    const s = this.state;
    if (s !== this.lastState) {
      this.lastState = s;
      this.emit("state", s);
    }
    for (const d of this.docs.values()) d.notifyState();
  }

  report(e: ClientError): void {
    if (e.permanent) this.failure = e;
    this.emit("error", e);
  }

  /** Changes the name and colour peers see. */
  setUser(u: User): void {
    this.user = { ...u };
    for (const d of this.docs.values()) d.touchPresence();
  }

  /** Opens (loading from the store) and joins a document. */
  open(id: string): Promise<WeftDoc> {
    const have = this.docs.get(id);
    if (have) return Promise.resolve(have);
    let p = this.opening.get(id);
    if (!p) {
      p = this.load(id);
      this.opening.set(id, p);
    }
    return p;
  }

  private async load(id: string): Promise<WeftDoc> {
    await this.ready;
    const agent = this.agent!;
    const rec = await this.store.loadDoc(agent, id);
    let text: Text;
    const queued: Delta[] = [];
    if (rec?.snapshot) text = Text.fromSnapshot(rec.snapshot);
    else text = new Text(agent);
    for (const b of rec?.log ?? []) {
      try {
        text.apply(decodeDelta(b));
      } catch (e) {
        if (!(e instanceof MissingError)) this.report({ code: "storage", message: `stored delta skipped: ${String(e)}`, doc: id, permanent: false });
      }
    }
    for (const b of rec?.queue ?? []) queued.push(decodeDelta(b));
    const doc = new WeftDoc(this, id, text, queued);
    this.docs.set(id, doc);
    this.opening.delete(id);
    if (this.live) this.join([doc]);
    this.refreshState();
    return doc;
  }

  /** Leaves a document and forgets it in this client (its stored state stays). */
  async closeDoc(id: string): Promise<void> {
    const d = this.docs.get(id);
    if (!d) return;
    d.flush();
    await d.snapshotNow();
    d.stopTimers();
    this.docs.delete(id);
    if (this.live) this.send({ kind: Kind.Leave, docs: [id] });
    this.refreshState();
  }

  // --- connection ----------------------------------------------------------------

  private wsURL(token: string): string {
    let u = this.opts.url.replace(/^http/, "ws");
    if (!/\/v1\/ws(\?|$)/.test(u)) u = u.replace(/\/+$/, "") + "/v1/ws";
    if (token) u += (u.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
    return u;
  }

  private async token(): Promise<string> {
    const t = this.opts.token;
    if (typeof t === "function") return await t();
    return t ?? "";
  }

  /** Starts connecting (again), e.g. after a permanent failure was fixed. */
  connect(): void {
    this.stopped = false;
    this.failure = null;
    this.wantConnection = true;
    if (this.ws || this.connecting) return;
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    this.connecting = true;
    this.refreshState();
    void this.ready
      .then(() => this.token())
      .then((token) => {
        if (this.stopped || this.ws) return;
        const Ctor = this.opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
        if (!Ctor) throw new Error("no WebSocket implementation");
        const ws = new Ctor(this.wsURL(token), SUBPROTOCOL);
        ws.binaryType = "arraybuffer";
        this.ws = ws;
        let opened = false;
        ws.onopen = () => {
          if (this.ws !== ws) return;
          opened = true;
          this.lastRecv = Date.now();
          this.clientSeq = 0;
          this.inflight.clear();
          // Hello, then one Join for every document, without waiting.
          this.send({ kind: Kind.Hello, client: CLIENT_NAME, token: "", agent: this.agent!, user: this.user });
          this.startPing();
        };
        ws.onmessage = (ev) => {
          if (this.ws !== ws) return;
          this.lastRecv = Date.now();
          this.onMessage(ev.data);
        };
        ws.onerror = (ev) => {
          if (this.ws !== ws || opened) return;
          // An upgrade refused with an HTTP status (visible in Node's ws).
          const m = /Unexpected server response: (\d+)/.exec(String((ev as { message?: string }).message ?? (ev as { error?: Error }).error?.message ?? ""));
          if (m) this.closed(m[1] === "401" ? 1008 : m[1] === "429" ? 1013 : 1006, `HTTP ${m[1]}`);
        };
        ws.onclose = (ev) => {
          if (this.ws !== ws) return;
          this.closed(ev.code, ev.reason);
        };
      })
      .catch((e: unknown) => {
        this.connecting = false;
        this.report({ code: "connect", message: String(e), permanent: false });
        this.scheduleReconnect();
      });
  }

  /** Closes the connection for good (until connect() is called). */
  disconnect(): void {
    this.stopped = true;
    this.wantConnection = false;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const ws = this.ws;
    this.teardown();
    try {
      ws?.close(1000, "client closed");
    } catch {
      /* already closed */
    }
    this.refreshState();
  }

  /** Disconnects, stores every document and releases the agent. */
  async close(): Promise<void> {
    this.disconnect();
    for (const d of this.docs.values()) {
      d.flush();
      await d.snapshotNow();
      d.stopTimers();
    }
    for (const f of this.detach.splice(0)) f();
    this.store.close();
  }

  /** Drops the socket without waiting for a close handshake (dead network). */
  dropConnection(why: string): void {
    const ws = this.ws;
    if (!ws) return;
    try {
      ws.close(4000, why.slice(0, 100));
    } catch {
      /* ignore */
    }
    this.closed(1006, why);
  }

  private onOnline(): void {
    if (this.stopped || this.failure || this.live) return;
    // An attempt started while offline may hang or fail slowly: start afresh.
    if (this.ws) {
      const ws = this.ws;
      this.teardown();
      try {
        ws.close(4000, "network back");
      } catch {
        /* ignore */
      }
    }
    this.attempt = 0;
    this.connect();
  }

  private teardown(): void {
    if (this.ws) {
      this.ws.onopen = this.ws.onmessage = this.ws.onclose = this.ws.onerror = null;
    }
    this.ws = null;
    this.welcomed = false;
    this.connecting = false;
    for (const t of [this.pingTimer, this.resetTimer, this.refreshTimer, this.pumpTimer]) if (t) clearTimeout(t);
    this.pingTimer = this.resetTimer = this.refreshTimer = this.pumpTimer = null;
    this.inflight.clear();
    for (const d of this.docs.values()) d.resetSession();
  }

  private closed(code: number, reason: string): void {
    this.teardown();
    const action = closeAction(code);
    if (this.stopped) {
      this.refreshState();
      return;
    }
    if (action === "reconnect") this.scheduleReconnect();
    else if (action === "new-token" && typeof this.opts.token === "function") {
      // A token provider can mint a new token: reconnect with it.
      this.scheduleReconnect();
    } else {
      this.stopped = true;
      this.report({
        code: `close:${code}`,
        message: action === "new-token" ? `unauthorized (${reason || code}): a new token is needed` : `connection closed for good: ${reason || code}`,
        permanent: true,
      });
    }
    this.refreshState();
  }

  /** Exponential backoff with full jitter, never sooner than retry-after. */
  nextDelay(): number {
    const base = this.opts.backoff?.baseMs ?? 500;
    const cap = this.opts.backoff?.capMs ?? 30000;
    const rnd = this.opts.random ?? Math.random;
    const d = Math.floor(rnd() * Math.min(cap, base * 2 ** Math.min(this.attempt, 30)));
    this.attempt++;
    const wait = Math.max(d, this.retryAfterMs);
    this.retryAfterMs = 0;
    return wait;
  }

  private scheduleReconnect(): void {
    if (this.stopped || !this.wantConnection || this.retryTimer) return;
    const delay = this.nextDelay();
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  private startPing(): void {
    const iv = this.opts.pingIntervalMs;
    if (iv <= 0) return;
    this.pingTimer = setInterval(() => {
      if (!this.ws) return;
      if (Date.now() - this.lastRecv > iv + this.opts.pingTimeoutMs) {
        this.dropConnection("no answer to pings");
        return;
      }
      this.send({ kind: Kind.Ping, nonce: ++this.nonce });
    }, Math.max(50, Math.min(iv, this.opts.pingTimeoutMs)));
  }

  /** @internal Sends a frame on the live socket; false when there is none. */
  send(f: Frame): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return false;
    try {
      ws.send(encodeFrame(f));
      return true;
    } catch (e) {
      if (e instanceof ProtocolError) {
        this.report({ code: e.code, message: `not sent: ${e.message}`, permanent: false });
        return false;
      }
      throw e;
    }
  }

  private join(docs: WeftDoc[]): void {
    for (let i = 0; i < docs.length; i += MaxDocsPerFrame) {
      const part = docs.slice(i, i + MaxDocsPerFrame).filter((d) => d.phase !== "failed");
      if (part.length === 0) continue;
      for (const d of part) {
        d.flush();
        d.phase = "joining";
      }
      this.send({ kind: Kind.Join, docs: part.map((d) => ({ doc: d.id, version: d.text.version() })) });
    }
    this.refreshState();
  }

  /** Joins a document again: the server answers with a fresh Sync (§6.2). */
  rejoin(doc: WeftDoc): void {
    if (this.live && this.docs.get(doc.id) === doc && doc.phase !== "joining") this.join([doc]);
  }

  /** Splits a delta so that each part fits one Delta frame. */
  splitForSend(d: Delta): Delta[] {
    const maxOps = Math.max(1, Math.min(this.limits.maxOpsPerFrame, 8192));
    const textBudget = Math.max(1024, Math.floor(this.limits.maxFrameBytes / 4));
    return splitDelta(splitLongInserts(d, Math.min(MaxOpTextBytes, textBudget)), maxOps, textBudget);
  }

  /** Sends a document's unsent, persisted queue entries, in order. */
  pump(doc: WeftDoc): void {
    if (!this.live || doc.phase !== "live" || doc.readOnly) {
      this.refreshState();
      return;
    }
    for (const e of doc.queue) {
      if (!e.persisted) break;
      if (e.clientSeq !== 0) continue;
      if (!this.admit(e)) {
        if (!this.pumpTimer) {
          this.pumpTimer = setTimeout(() => {
            this.pumpTimer = null;
            for (const d of this.docs.values()) this.pump(d);
          }, 100);
        }
        break;
      }
      const seq = this.clientSeq + 1;
      if (!this.send({ kind: Kind.Delta, doc: doc.id, clientSeq: seq, delta: e.delta })) break;
      this.clientSeq = seq;
      e.clientSeq = seq;
      this.inflight.set(seq, { doc, entry: e });
    }
    this.refreshState();
  }

  /** Client-side respect of the advertised ops/s and bytes/s (a 1 s window). */
  private admit(e: QueueEntry): boolean {
    const { opsPerSecond, bytesPerSecond } = this.limits;
    if (!opsPerSecond && !bytesPerSecond) return true;
    const now = Date.now();
    if (now - this.sendWindow.at >= 1000) this.sendWindow = { at: now, ops: 0, bytes: 0 };
    const ops = e.delta.ops.reduce((n, o) => n + o.len, 0);
    const w = this.sendWindow;
    const fresh = w.ops === 0 && w.bytes === 0;
    if (!fresh && ((opsPerSecond && w.ops + ops > opsPerSecond) || (bytesPerSecond && w.bytes + e.bytes.length > bytesPerSecond))) return false;
    w.ops += ops;
    w.bytes += e.bytes.length;
    return true;
  }

  // --- frames ------------------------------------------------------------------------

  private onMessage(data: unknown): void {
    let bytes: Uint8Array;
    if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else {
      // A text message is a protocol violation (§1.2).
      this.ws?.close(4006, "text message");
      this.closed(4006, "server sent a text message");
      return;
    }
    let f;
    try {
      f = decodeFrame(bytes);
    } catch (e) {
      this.report({ code: "malformed", message: `bad frame from server: ${String(e)}`, permanent: false });
      this.ws?.close(4005, "malformed");
      this.closed(1006, "malformed frame from server");
      return;
    }
    if (isUnknown(f)) return; // §11: ignore kinds we do not know
    this.onFrame(f);
  }

  private onFrame(f: Frame): void {
    switch (f.kind) {
      case Kind.Welcome: {
        this.welcomed = true;
        this.connecting = false;
        this.limits = { ...f.limits };
        if (!this.limits.maxFrameBytes) this.limits.maxFrameBytes = DefaultLimits.maxFrameBytes;
        if (!this.limits.maxOpsPerFrame) this.limits.maxOpsPerFrame = DefaultLimits.maxOpsPerFrame;
        if (!this.limits.presenceMs) this.limits.presenceMs = DefaultLimits.presenceMs;
        if (!this.limits.presenceTtlMs) this.limits.presenceTtlMs = DefaultLimits.presenceTtlMs;
        this.session = keyHex(f.session);
        this.expiresAt = f.expiresAt;
        this.resetTimer = setTimeout(() => (this.attempt = 0), this.opts.backoff?.resetAfterMs ?? 30000);
        this.scheduleRefresh();
        this.emit("open", { session: this.session, server: f.server });
        this.join([...this.docs.values()]);
        return;
      }
      case Kind.Sync: {
        const d = this.docs.get(f.doc);
        if (!d) return;
        const ok = d.applyRemote(f.delta);
        d.serverSeq = f.seq;
        if (!f.more) {
          if (ok) d.synced(f.version);
          else {
            d.phase = "live";
            this.rejoin(d);
          }
        }
        return;
      }
      case Kind.Update: {
        const d = this.docs.get(f.doc);
        if (!d || d.phase === "joining") return; // a Sync follows that covers it
        if (!d.applyRemote(f.delta)) this.rejoin(d);
        d.serverSeq = f.seq;
        return;
      }
      case Kind.Ack: {
        const x = this.inflight.get(f.clientSeq);
        if (!x) return;
        this.inflight.delete(f.clientSeq);
        x.doc.acked(x.entry);
        return;
      }
      case Kind.PresenceUpdate:
        this.docs.get(f.doc)?.onPresence(f);
        return;
      case Kind.Error:
        this.onError(f.code, f.message, f.doc, f.clientSeq, f.retryAfterMs);
        return;
      case Kind.GoingAway:
        this.retryAfterMs = Math.max(this.retryAfterMs, f.retryAfterMs);
        return;
      case Kind.Ping:
        this.send({ kind: Kind.Pong, nonce: f.nonce });
        return;
      case Kind.Pong:
        return;
      case Kind.Refreshed:
        this.expiresAt = f.expiresAt;
        this.scheduleRefresh();
        return;
      default:
        return; // client-only kinds from a server: ignore
    }
  }

  private onError(code: number, message: string, docId: string, clientSeq: number, retryAfterMs: number): void {
    const name = ErrorNames[code] ?? "internal";
    const doc = docId ? this.docs.get(docId) : undefined;
    if (retryAfterMs > 0) this.retryAfterMs = Math.max(this.retryAfterMs, retryAfterMs);
    if (doc && clientSeq > 0) {
      // A Delta failed; the connection stays open.
      const x = this.inflight.get(clientSeq);
      this.inflight.delete(clientSeq);
      switch (code) {
        case ErrorCode.RateLimited:
        case ErrorCode.Overloaded:
          if (x) x.entry.clientSeq = 0;
          // Later frames of the document may depend on this one: resync the
          // document after the hint rather than resend out of order.
          setTimeout(() => this.rejoin(doc), Math.max(retryAfterMs, 100));
          return;
        case ErrorCode.MissingDependency:
        case ErrorCode.NotJoined:
          this.rejoin(doc);
          return;
        case ErrorCode.Forbidden:
          doc.readOnly = true;
          break;
        default:
          break;
      }
      doc.error = { code: name, message, doc: docId, permanent: code === ErrorCode.InvalidDelta || code === ErrorCode.DocTooLarge };
      this.report(doc.error);
      return;
    }
    if (doc) {
      // A Join entry failed.
      if (code === ErrorCode.Overloaded || code === ErrorCode.Internal) {
        doc.phase = "offline";
        setTimeout(() => this.rejoin(doc), Math.max(retryAfterMs, 500));
        this.report({ code: name, message, doc: docId, permanent: false });
        return;
      }
      if (code === ErrorCode.Forbidden && doc.phase === "live") {
        doc.readOnly = true;
        this.report({ code: name, message, doc: docId, permanent: false });
        return;
      }
      doc.phase = "failed";
      doc.error = { code: name, message, doc: docId, permanent: true };
      this.report(doc.error);
      this.refreshState();
      return;
    }
    // A session error: the server closes with the matching code next.
    this.report({ code: name, message, permanent: closeAction(errorCloseCode(code)) !== "reconnect" });
  }

  private scheduleRefresh(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    if (!this.expiresAt || typeof this.opts.token !== "function") return;
    const left = this.expiresAt - Date.now();
    this.refreshTimer = setTimeout(
      () => {
        void this.token().then((t) => {
          if (t) this.send({ kind: Kind.Refresh, token: t });
        });
      },
      Math.max(1000, left * 0.8),
    );
  }

  /** Expires stale peers of every document (called on a timer). */
  tick(): void {
    for (const d of this.docs.values()) d.expirePeers(this.limits.presenceTtlMs);
  }
}
