// An RGA text CRDT with the semantics of the Go package crdt (docs/protocol.md
// §4): one ID per Unicode code point, IDs (agent, seq) with seqs contiguous
// per agent, Lamport times on every item, siblings ordered by the key
// (lamport, agent key bytes, seq), tombstones kept for ever.
//
// Positions at this API are code points. JavaScript strings are UTF-16, so
// every count here walks code points; the replica also keeps UTF-16 widths so
// that an editor binding can convert offsets without scanning the document.
//
// Layout: the document is a list of spans (runs of code points one agent
// inserted with contiguous seqs and Lamport times, each after the previous)
// kept in chunks of at most CHUNK_MAX spans, each chunk caching its live
// width in code points and in UTF-16 units. A per-agent index, sorted by
// seq, maps IDs to spans. A local or remote op costs a walk over the chunk
// list plus work inside one chunk, never a walk over every character.

/** A 16-byte agent key (a UUID's bytes). */
export type AgentKey = Uint8Array;

/** Origin agent index meaning the document start (the wire's −1). */
export const ROOT = -1;
/** Highest seq of one agent (the Go package's MaxSeq). */
export const MAX_SEQ = 2 ** 32 - 2;
/** Highest Lamport time: 2^53 − 1 keeps times exact in a JS number. */
export const MAX_LAMPORT = Number.MAX_SAFE_INTEGER;

export const enum OpKind {
  Insert = 1,
  Delete = 2,
}

/** Points at an ID inside a Delta: agent indexes Delta.agents, or is ROOT. */
export interface Ref {
  agent: number;
  seq: number;
}

export interface InsertOp {
  kind: OpKind.Insert;
  agent: number;
  seq: number;
  lamport: number;
  len: number;
  origin: Ref;
  /** The code points, or "" when they travel as tombstones. */
  text: string;
}

export interface DeleteOp {
  kind: OpKind.Delete;
  agent: number;
  seq: number;
  lamport: number;
  len: number;
  target: Ref;
}

export type Op = InsertOp | DeleteOp;

/** A batch of ops with its own agent table. */
export interface Delta {
  agents: AgentKey[];
  ops: Op[];
}

/** A version vector: agent key (lowercase hex) → seqs held. */
export type Version = Map<string, number>;

export interface ID {
  agent: AgentKey;
  seq: number;
}

/** Sticks to the character after the position. */
export const ASSOC_RIGHT = 0;
/** Sticks to the character before the position. */
export const ASSOC_LEFT = -1;
export type Assoc = typeof ASSOC_RIGHT | typeof ASSOC_LEFT;

/** A position that survives concurrent edits (docs/protocol.md §3.5). */
export interface Anchor {
  /** 0: the character `id`; −1: the document start; 1: the document end. */
  edge: -1 | 0 | 1;
  assoc: Assoc;
  id: ID | null;
}

/**
 * A position-based edit, what an editor speaks: delete `delete` code points
 * at `pos`, then insert `insert` there. from16/delete16 are the same edit in
 * UTF-16 units, for editors that count those.
 */
export interface Change {
  pos: number;
  delete: number;
  insert: string;
  pos16: number;
  delete16: number;
}

/** A delta that can never apply; the replica is unchanged. */
export class InvalidError extends Error {
  constructor(message: string) {
    super(`crdt: invalid op: ${message}`);
    this.name = "InvalidError";
  }
}

/** An op needs an ID this replica lacks; every other op was applied. */
export class MissingError extends Error {
  constructor(
    readonly id: ID,
    /** Indices into Delta.ops of the ops that had to wait. */
    readonly pending: number[],
  ) {
    super(`crdt: missing dependency ${keyHex(id.agent)}:${id.seq} (${pending.length} ops waiting)`);
    this.name = "MissingError";
  }
}

export class OutOfRangeError extends Error {
  constructor(message: string) {
    super(`crdt: position out of range: ${message}`);
    this.name = "OutOfRangeError";
  }
}

// --- keys and code points ----------------------------------------------------

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** Lowercase hex of a key; comparing two such strings compares the bytes. */
export function keyHex(k: Uint8Array): string {
  let s = "";
  for (let i = 0; i < k.length; i++) s += HEX[k[i]!];
  return s;
}

export function hexKey(h: string): AgentKey {
  if (!/^[0-9a-f]{32}$/.test(h)) throw new Error(`not a 16-byte hex key: ${h}`);
  const k = new Uint8Array(16);
  for (let i = 0; i < 16; i++) k[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return k;
}

/** A random (v4) UUID's bytes. */
export function newAgentKey(): AgentKey {
  const k = new Uint8Array(16);
  globalThis.crypto.getRandomValues(k);
  k[6] = (k[6]! & 0x0f) | 0x40;
  k[8] = (k[8]! & 0x3f) | 0x80;
  return k;
}

/** The number of code points in s (a surrogate pair counts once). */
export function cpLen(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n--;
        i++;
      }
    }
  }
  return n;
}

/** The UTF-16 offset of code point k of s (s.length when k = cpLen(s)). */
export function cpOffset(s: string, k: number, n = -1): number {
  if (n === s.length) return k; // no surrogate pairs
  let i = 0;
  for (; k > 0 && i < s.length; k--) {
    const c = s.charCodeAt(i);
    i += c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && isLow(s.charCodeAt(i + 1)) ? 2 : 1;
  }
  return i;
}

/** The number of code points in the first u UTF-16 units of s. */
export function cpCount16(s: string, u: number): number {
  let n = 0;
  for (let i = 0; i < u && i < s.length; n++) {
    const c = s.charCodeAt(i);
    i += c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && isLow(s.charCodeAt(i + 1)) ? 2 : 1;
  }
  return n;
}

function isLow(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}

/**
 * Replaces lone surrogates with U+FFFD, as UTF-8 encoding would, so that the
 * code points counted locally are the ones that travel.
 */
export function wellFormed(s: string): string {
  const f = (s as { toWellFormed?: () => string }).toWellFormed;
  if (f) return f.call(s);
  return s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd");
}

// --- the replica -------------------------------------------------------------

/** Most spans in one chunk before it splits. */
const CHUNK_MAX = 64;

interface Span {
  lamport: number; // Lamport time of the first code point
  agent: number; // interned author
  seq: number; // seq of the first code point
  oagent: number; // interned origin agent of the first code point, or ROOT
  oseq: number;
  n: number; // code points
  /** The code points, kept after deletion; null when never known (a tombstone received without text). */
  text: string | null;
  units: number; // UTF-16 length of text (0 when text is null)
  deleted: boolean;
  chunk: Chunk;
}

class Chunk {
  spans: Span[] = [];
  width = 0; // live code points
  units = 0; // live UTF-16 units
  idx = 0; // index in Text.chunks
}

interface DelRun {
  lamport: number;
  seq: number;
  n: number;
  tagent: number;
  tseq: number;
}

interface AgentState {
  key: AgentKey;
  hex: string;
  next: number; // version vector entry: seqs [0, next) are held
  ins: Span[]; // insert spans sorted by seq
  dels: DelRun[]; // delete runs sorted by seq
}

function continues(x: Span, y: Span): boolean {
  return (
    y.agent === x.agent &&
    y.seq === x.seq + x.n &&
    y.lamport === x.lamport + x.n &&
    y.oagent === x.agent &&
    y.oseq === y.seq - 1
  );
}

function liveW(s: Span): number {
  return s.deleted ? 0 : s.n;
}
function liveU(s: Span): number {
  return s.deleted ? 0 : s.units;
}

/** Index of the span of `ins` holding seq, or -1. */
function findIns(ins: Span[], seq: number): number {
  let lo = 0,
    hi = ins.length;
  while (lo < hi) {
    const m = (lo + hi) >>> 1;
    if (ins[m]!.seq <= seq) lo = m + 1;
    else hi = m;
  }
  const i = lo - 1;
  if (i < 0) return -1;
  const s = ins[i]!;
  return seq < s.seq + s.n ? i : -1;
}

class DeltaBuilder {
  d: Delta = { agents: [], ops: [] };
  private map = new Map<number, number>();
  constructor(private t: Text) {}
  ref(a: number): number {
    if (a === ROOT) return ROOT;
    let i = this.map.get(a);
    if (i === undefined) {
      i = this.d.agents.length;
      this.d.agents.push(this.t.agentKeyOf(a));
      this.map.set(a, i);
    }
    return i;
  }
}

/** One replica of a text document. */
export class Text {
  private chunks: Chunk[] = [new Chunk()];
  private agents: AgentState[] = [];
  private byKey = new Map<string, number>();
  private self: number;
  private clock = 0;

  constructor(agent: AgentKey) {
    if (agent.length !== 16) throw new Error("agent key must be 16 bytes");
    this.self = this.intern(agent);
  }

  private intern(k: AgentKey): number {
    const h = keyHex(k);
    let a = this.byKey.get(h);
    if (a === undefined) {
      a = this.agents.length;
      this.agents.push({ key: Uint8Array.from(k), hex: h, next: 0, ins: [], dels: [] });
      this.byKey.set(h, a);
    }
    return a;
  }

  /** @internal */
  agentKeyOf(a: number): AgentKey {
    return this.agents[a]!.key;
  }

  /** The key this replica edits as. */
  get agent(): AgentKey {
    return this.agents[this.self]!.key;
  }

  /** The highest Lamport time seen. */
  get lamport(): number {
    return this.clock;
  }

  /** The length of the text in code points. */
  get length(): number {
    let n = 0;
    for (const c of this.chunks) n += c.width;
    return n;
  }

  /** The length of the text in UTF-16 units. */
  get length16(): number {
    let n = 0;
    for (const c of this.chunks) n += c.units;
    return n;
  }

  toString(): string {
    const parts: string[] = [];
    for (const c of this.chunks) for (const s of c.spans) if (!s.deleted) parts.push(s.text!);
    return parts.join("");
  }

  /** Seqs of agent this replica holds (its version vector entry). */
  next(agent: AgentKey): number {
    const a = this.byKey.get(keyHex(agent));
    return a === undefined ? 0 : this.agents[a]!.next;
  }

  version(): Version {
    const v: Version = new Map();
    for (const a of this.agents) if (a.next > 0) v.set(a.hex, a.next);
    return v;
  }

  /** Number of spans, for tests and memory estimates. */
  get spanCount(): number {
    let n = 0;
    for (const c of this.chunks) n += c.spans.length;
    return n;
  }

  // --- structure -------------------------------------------------------------

  /** Finds live code point c: its span and offset in the span. */
  private locate(c: number): [Span, number] {
    for (const ch of this.chunks) {
      if (c >= ch.width) {
        c -= ch.width;
        continue;
      }
      for (const s of ch.spans) {
        if (s.deleted) continue;
        if (c < s.n) return [s, c];
        c -= s.n;
      }
    }
    throw new Error("crdt: chunk widths disagree with spans");
  }

  /** Live code points and UTF-16 units before offset k of span s. */
  private posOf(s: Span, k: number): [number, number] {
    const ch = s.chunk;
    let p = 0,
      u = 0;
    for (let i = 0; i < ch.idx; i++) {
      p += this.chunks[i]!.width;
      u += this.chunks[i]!.units;
    }
    for (const x of ch.spans) {
      if (x === s) break;
      if (!x.deleted) {
        p += x.n;
        u += x.units;
      }
    }
    if (!s.deleted && k > 0) {
      p += k;
      u += cpOffset(s.text!, k, s.n === s.units ? s.units : -1);
    }
    return [p, u];
  }

  private insertSpan(ch: Chunk, i: number, s: Span): void {
    ch.spans.splice(i, 0, s);
    s.chunk = ch;
    ch.width += liveW(s);
    ch.units += liveU(s);
    if (ch.spans.length > CHUNK_MAX) this.splitChunk(ch);
  }

  private splitChunk(ch: Chunk): void {
    const right = new Chunk();
    right.spans = ch.spans.splice(ch.spans.length >> 1);
    for (const s of right.spans) {
      s.chunk = right;
      right.width += liveW(s);
      right.units += liveU(s);
    }
    ch.width -= right.width;
    ch.units -= right.units;
    this.chunks.splice(ch.idx + 1, 0, right);
    for (let i = ch.idx + 1; i < this.chunks.length; i++) this.chunks[i]!.idx = i;
  }

  private removeSpan(s: Span): void {
    const ch = s.chunk;
    ch.spans.splice(ch.spans.indexOf(s), 1);
    ch.width -= liveW(s);
    ch.units -= liveU(s);
    if (ch.spans.length === 0 && this.chunks.length > 1) {
      this.chunks.splice(ch.idx, 1);
      for (let i = ch.idx; i < this.chunks.length; i++) this.chunks[i]!.idx = i;
    }
    const ins = this.agents[s.agent]!.ins;
    ins.splice(findIns(ins, s.seq), 1);
  }

  private nextSpan(s: Span): Span | undefined {
    const ch = s.chunk;
    const i = ch.spans.indexOf(s);
    if (i + 1 < ch.spans.length) return ch.spans[i + 1];
    for (let c = ch.idx + 1; c < this.chunks.length; c++) {
      const x = this.chunks[c]!.spans[0];
      if (x) return x;
    }
    return undefined;
  }

  private prevSpan(s: Span): Span | undefined {
    const ch = s.chunk;
    const i = ch.spans.indexOf(s);
    if (i > 0) return ch.spans[i - 1];
    for (let c = ch.idx - 1; c >= 0; c--) {
      const sp = this.chunks[c]!.spans;
      if (sp.length > 0) return sp[sp.length - 1];
    }
    return undefined;
  }

  /**
   * Cuts s so that its first k code points stay and the rest become a new
   * span right after it, which is returned. Widths do not change.
   */
  private split(s: Span, k: number): Span {
    let rtext: string | null = null;
    let runits = 0;
    if (s.text !== null) {
      const off = cpOffset(s.text, k, s.n === s.units ? s.units : -1);
      rtext = s.text.slice(off);
      runits = s.units - off;
      s.text = s.text.slice(0, off);
      s.units = off;
    }
    const r: Span = {
      lamport: s.lamport + k,
      agent: s.agent,
      seq: s.seq + k,
      oagent: s.agent,
      oseq: s.seq + k - 1,
      n: s.n - k,
      text: rtext,
      units: runits,
      deleted: s.deleted,
      chunk: s.chunk,
    };
    s.n = k;
    const ins = this.agents[s.agent]!.ins;
    ins.splice(findIns(ins, s.seq) + 1, 0, r);
    const ch = s.chunk;
    ch.spans.splice(ch.spans.indexOf(s) + 1, 0, r);
    if (ch.spans.length > CHUNK_MAX) this.splitChunk(ch);
    return r;
  }

  private markDead(s: Span): void {
    s.chunk.width -= s.n;
    s.chunk.units -= s.units;
    s.deleted = true;
  }

  /** Deletes code points [k, k+take) of live span s. */
  private kill(s: Span, k: number, take: number): void {
    let dead: Span;
    if (k === 0 && take === s.n) dead = s;
    else if (k + take === s.n) dead = this.split(s, k);
    else if (k === 0) {
      this.split(s, take);
      dead = s;
    } else {
      dead = this.split(s, k);
      this.split(dead, take);
    }
    this.markDead(dead);
    // Join the tombstone with tombstones it continues, or that continue it,
    // so that typing and deleting leave one span rather than one per key.
    const n = this.nextSpan(dead);
    if (n && this.canJoin(dead, n)) this.join(dead, n);
    const p = this.prevSpan(dead);
    if (p && this.canJoin(p, dead)) this.join(p, dead);
  }

  private canJoin(x: Span, y: Span): boolean {
    return (
      x.deleted && y.deleted && x.chunk === y.chunk && continues(x, y) && (x.text === null) === (y.text === null)
    );
  }

  /** Folds y (which continues x, both tombstones) into x. */
  private join(x: Span, y: Span): void {
    this.removeSpan(y);
    x.n += y.n;
    if (x.text !== null) {
      x.text += y.text!;
      x.units += y.units;
    }
  }

  /** Whether item key (al, aa, as) sorts before (bl, ba, bs). */
  private less(al: number, aa: number, as: number, bl: number, ba: number, bs: number): boolean {
    if (al !== bl) return al < bl;
    if (aa !== ba) return this.agents[aa]!.hex < this.agents[ba]!.hex;
    return as < bs;
  }

  private findID(a: number, seq: number): [Span, number] | null {
    const st = this.agents[a];
    if (!st) return null;
    const i = findIns(st.ins, seq);
    if (i < 0) return null;
    const s = st.ins[i]!;
    return [s, seq - s.seq];
  }

  // --- local edits -----------------------------------------------------------

  /** Inserts s at code point pos; returns the delta that carries the edit. */
  insert(pos: number, s: string): Delta {
    const b = new DeltaBuilder(this);
    this.localInsert(b, pos, s);
    return b.d;
  }

  /** Deletes n code points at pos; returns the delta that carries the edit. */
  delete(pos: number, n: number): Delta {
    const b = new DeltaBuilder(this);
    this.localDelete(b, pos, n);
    return b.d;
  }

  /** Deletes n code points at pos and inserts s there, as one delta. */
  replace(pos: number, n: number, s: string): Delta {
    const len = this.length;
    if (!(pos >= 0 && n >= 0 && pos + n <= len)) throw new OutOfRangeError(`replace ${pos}+${n} in text of ${len}`);
    const b = new DeltaBuilder(this);
    this.localDelete(b, pos, n);
    this.localInsert(b, pos, s);
    return b.d;
  }

  private localInsert(b: DeltaBuilder, pos: number, str: string): void {
    const len = this.length;
    if (!(Number.isInteger(pos) && pos >= 0 && pos <= len)) throw new OutOfRangeError(`insert at ${pos} in text of ${len}`);
    str = wellFormed(str);
    const n = cpLen(str);
    if (n === 0) return;
    const me = this.agents[this.self]!;
    if (me.next + n > MAX_SEQ || this.clock + n > MAX_LAMPORT) throw new InvalidError("document counters exhausted");
    const seq = me.next,
      lamport = this.clock + 1;
    let ch: Chunk, slot: number;
    let oagent = ROOT,
      oseq = 0;
    if (pos === 0) {
      ch = this.chunks[0]!;
      slot = 0;
    } else {
      const [x, k] = this.locate(pos - 1);
      oagent = x.agent;
      oseq = x.seq + k;
      if (k === x.n - 1 && x.agent === this.self && x.seq + x.n === seq && x.lamport + x.n === lamport) {
        // Typing at the end of our own latest run: grow it in place.
        x.n += n;
        x.text += str;
        x.units += str.length;
        x.chunk.width += n;
        x.chunk.units += str.length;
        this.commitInsert(b, seq, lamport, n, oagent, oseq, str);
        return;
      }
      if (k < x.n - 1) this.split(x, k + 1);
      ch = x.chunk;
      slot = ch.spans.indexOf(x) + 1;
    }
    const s: Span = { lamport, agent: this.self, seq, oagent, oseq, n, text: str, units: str.length, deleted: false, chunk: ch };
    this.insertSpan(ch, slot, s);
    me.ins.push(s); // our own seqs only grow
    this.commitInsert(b, seq, lamport, n, oagent, oseq, str);
  }

  private commitInsert(b: DeltaBuilder, seq: number, lamport: number, n: number, oagent: number, oseq: number, text: string) {
    this.agents[this.self]!.next += n;
    this.clock = lamport + n - 1;
    const agent = b.ref(this.self);
    b.d.ops.push({ kind: OpKind.Insert, agent, seq, lamport, len: n, origin: { agent: b.ref(oagent), seq: oagent === ROOT ? 0 : oseq }, text });
  }

  private localDelete(b: DeltaBuilder, pos: number, n: number): void {
    const len = this.length;
    if (!(Number.isInteger(pos) && Number.isInteger(n) && pos >= 0 && n >= 0 && pos + n <= len)) {
      throw new OutOfRangeError(`delete ${pos}+${n} in text of ${len}`);
    }
    if (n === 0) return;
    const me = this.agents[this.self]!;
    if (me.next + n > MAX_SEQ || this.clock + n > MAX_LAMPORT) throw new InvalidError("document counters exhausted");
    let left = n;
    while (left > 0) {
      // The deleted characters leave the live text, so pos stays put.
      const [x, k] = this.locate(pos);
      const take = Math.min(left, x.n - k);
      this.recordDelete(b, x.agent, x.seq + k, take);
      this.kill(x, k, take);
      left -= take;
    }
  }

  private recordDelete(b: DeltaBuilder, tagent: number, tseq: number, n: number): void {
    const me = this.agents[this.self]!;
    const r: DelRun = { lamport: this.clock + 1, seq: me.next, n, tagent, tseq };
    me.next += n;
    this.clock += n;
    appendDelRun(me.dels, r);
    const self = b.ref(this.self),
      tr = b.ref(tagent);
    const o = b.d.ops[b.d.ops.length - 1];
    if (
      o &&
      o.kind === OpKind.Delete &&
      o.target.agent === tr &&
      o.target.seq + o.len === tseq &&
      o.seq + o.len === r.seq &&
      o.lamport + o.len === r.lamport
    ) {
      o.len += n;
      return;
    }
    b.d.ops.push({ kind: OpKind.Delete, agent: self, seq: r.seq, lamport: r.lamport, len: n, target: { agent: tr, seq: tseq } });
  }

  // --- remote ops ------------------------------------------------------------

  /**
   * Merges a delta from another replica. Idempotent and commutative for any
   * causal order. An invalid delta throws InvalidError before anything
   * changes; ops that need IDs this replica lacks are left out and reported
   * by a thrown MissingError after every other op was applied.
   */
  apply(d: Delta): void {
    this.applyChanges(d);
  }

  /** apply that also reports every visible effect, in order, as a Change. */
  applyChanges(d: Delta, emit?: (c: Change) => void): void {
    validate(d);
    this.precheck(d);
    const ap = new Applier(this, d, emit);
    let pending: number[] = [];
    let missing: ID | null = null;
    for (let i = 0; i < d.ops.length; i++) {
      const id = ap.op(d.ops[i]!);
      if (id) {
        if (!missing) missing = id;
        pending.push(i);
      }
    }
    // A merged delete run can target text newer than its first Lamport
    // time, so ops of one delta may not be in causal order: retry the
    // waiting ones while that makes progress, a bounded number of times.
    for (let pass = 0; pass < 8 && pending.length > 0; pass++) {
      const still: number[] = [];
      let first: ID | null = null;
      for (const i of pending) {
        const id = ap.op(d.ops[i]!);
        if (id) {
          if (!first) first = id;
          still.push(i);
        }
      }
      missing = first ?? missing;
      if (still.length === pending.length) break;
      pending = still;
    }
    if (pending.length > 0) throw new MissingError(missing!, pending);
  }

  /** @internal Applies one op; returns the missing ID when it must wait. */
  applyOp(ap: Applier, o: Op): ID | null {
    const d = ap.d;
    const key = d.agents[o.agent]!;
    const a = ap.agent(o.agent);
    const st = this.agents[a]!;
    const end = o.seq + o.len;
    if (end <= st.next) return null; // already held
    if (o.seq > st.next) return { agent: key, seq: st.next };
    const skip = st.next - o.seq;
    const lamport = o.lamport + skip;
    const n = end - st.next;
    const seq = st.next;
    if (o.kind === OpKind.Delete) {
      const ta = ap.known(o.target.agent);
      if (ta < 0) return { agent: d.agents[o.target.agent]!, seq: o.target.seq + skip };
      return this.remoteDelete(ap, a, seq, lamport, n, ta, o.target.seq + skip);
    }
    let text = o.text;
    if (text !== "" && skip > 0) text = text.slice(cpOffset(text, skip));
    let oa = ROOT,
      oseq = 0;
    if (skip > 0) {
      oa = a;
      oseq = seq - 1;
    } else if (o.origin.agent !== ROOT) {
      oa = ap.known(o.origin.agent);
      if (oa < 0) return { agent: d.agents[o.origin.agent]!, seq: o.origin.seq };
      oseq = o.origin.seq;
    }
    return this.remoteInsert(ap, lamport, a, seq, oa, oseq, n, text);
  }

  private remoteInsert(ap: Applier, lamport: number, a: number, seq: number, oa: number, oseq: number, n: number, text: string): ID | null {
    let ch: Chunk, slot: number;
    if (oa === ROOT) {
      ch = this.chunks[0]!;
      slot = 0;
    } else {
      const f = this.findID(oa, oseq);
      if (!f) {
        if (oseq >= this.agents[oa]!.next) return { agent: this.agents[oa]!.key, seq: oseq };
        throw new InvalidError(`origin ${this.agents[oa]!.hex}:${oseq} is not a character`);
      }
      const [x, k] = f;
      if (x.lamport + k >= lamport) throw new InvalidError(`lamport ${lamport} not after its origin's ${x.lamport + k}`);
      if (k < x.n - 1) {
        // The next character is a sibling (its origin is ours too).
        if (this.less(x.lamport + k + 1, x.agent, x.seq + k + 1, lamport, a, seq)) {
          this.split(x, k + 1);
          return this.place(ap, lamport, a, seq, oa, oseq, n, text, x.chunk, x.chunk.spans.indexOf(x) + 1);
        }
      }
      ch = x.chunk;
      slot = ch.spans.indexOf(x) + 1;
    }
    // Skip every following span whose first character sorts after ours:
    // those are younger siblings and their subtrees (RGA ordering).
    for (;;) {
      if (slot >= ch.spans.length) {
        if (ch.idx + 1 >= this.chunks.length) break;
        ch = this.chunks[ch.idx + 1]!;
        slot = 0;
        continue;
      }
      const y = ch.spans[slot]!;
      if (!this.less(lamport, a, seq, y.lamport, y.agent, y.seq)) break;
      slot++;
    }
    return this.place(ap, lamport, a, seq, oa, oseq, n, text, ch, slot);
  }

  private place(ap: Applier, lamport: number, a: number, seq: number, oa: number, oseq: number, n: number, text: string, ch: Chunk, slot: number): ID | null {
    const st = this.agents[a]!;
    st.next = seq + n;
    this.clock = Math.max(this.clock, lamport + n - 1);
    const deleted = text === "";
    if (slot > 0) {
      const p = ch.spans[slot - 1]!;
      if (
        p.agent === a &&
        p.seq + p.n === seq &&
        p.lamport + p.n === lamport &&
        oa === a &&
        oseq === p.seq + p.n - 1 &&
        p.deleted === deleted &&
        (deleted ? p.text === null : true)
      ) {
        const before = this.emitPos(ap, p, p.n);
        p.n += n;
        if (!deleted) {
          p.text += text;
          p.units += text.length;
          ch.width += n;
          ch.units += text.length;
          if (before) ap.emit!({ pos: before[0], delete: 0, insert: text, pos16: before[1], delete16: 0 });
        }
        return null;
      }
    }
    const s: Span = { lamport, agent: a, seq, oagent: oa, oseq, n, text: deleted ? null : text, units: deleted ? 0 : text.length, deleted, chunk: ch };
    this.insertSpan(ch, slot, s);
    st.ins.push(s); // seqs of an agent arrive in order: always the last
    if (!deleted && ap.emit) {
      const [p, u] = this.posOf(s, 0);
      ap.emit({ pos: p, delete: 0, insert: text, pos16: u, delete16: 0 });
    }
    return null;
  }

  private emitPos(ap: Applier, s: Span, k: number): [number, number] | null {
    if (!ap.emit || s.deleted) return null;
    return this.posOf(s, k);
  }

  private remoteDelete(ap: Applier, a: number, seq: number, lamport: number, n: number, ta: number, tseq: number): ID | null {
    const end = tseq + n;
    for (let cur = tseq; cur < end; ) {
      const f = this.findID(ta, cur);
      if (!f) {
        if (cur >= this.agents[ta]!.next) return { agent: this.agents[ta]!.key, seq: cur };
        throw new InvalidError(`delete target ${this.agents[ta]!.hex}:${cur} is not a character`);
      }
      cur += Math.min(end - cur, f[0].n - f[1]);
    }
    for (let cur = tseq; cur < end; ) {
      const [x, k] = this.findID(ta, cur)!;
      const take = Math.min(end - cur, x.n - k);
      if (!x.deleted) {
        if (ap.emit) {
          const [p, u] = this.posOf(x, k);
          const off = cpOffset(x.text!, k, x.n === x.units ? x.units : -1);
          const offEnd = cpOffset(x.text!, k + take, x.n === x.units ? x.units : -1);
          ap.emit({ pos: p, delete: take, insert: "", pos16: u, delete16: offEnd - off });
        }
        this.kill(x, k, take);
      }
      cur += take;
    }
    const st = this.agents[a]!;
    st.next = seq + n;
    this.clock = Math.max(this.clock, lamport + n - 1);
    appendDelRun(st.dels, { lamport, seq, n, tagent: ta, tseq });
    return null;
  }

  /** @internal */
  internKey(k: AgentKey): number {
    return this.intern(k);
  }

  /** @internal */
  knownKey(k: AgentKey): number {
    const a = this.byKey.get(keyHex(k));
    return a === undefined ? -1 : a;
  }

  /**
   * Finds, without changing anything, every op that contradicts this
   * replica or the rest of its delta, so that apply is all-or-nothing for
   * invalid input. IDs neither side holds are left to the missing path.
   */
  private precheck(d: Delta): void {
    const na = d.agents.length;
    const canon = new Array<number>(na);
    const known = new Array<number>(na);
    const first = new Map<string, number>();
    for (let i = 0; i < na; i++) {
      const h = keyHex(d.agents[i]!);
      const j = first.get(h);
      if (j !== undefined) canon[i] = j;
      else {
        first.set(h, i);
        canon[i] = i;
      }
      const a = this.byKey.get(h);
      known[i] = a === undefined ? ROOT : a;
    }
    const runs: DeltaRun[][] = Array.from({ length: na }, () => []);
    for (const o of d.ops) runs[canon[o.agent]!]!.push({ seq: o.seq, n: o.len, lamport: o.lamport, insert: o.kind === OpKind.Insert });
    for (let a = 0; a < na; a++) {
      const rs = runs[a]!;
      let sorted = true;
      for (let i = 1; i < rs.length; i++) if (rs[i - 1]!.seq > rs[i]!.seq) sorted = false;
      if (!sorted) rs.sort((x, y) => x.seq - y.seq);
      for (let i = 1; i < rs.length; i++) {
        if (rs[i - 1]!.seq + rs[i - 1]!.n > rs[i]!.seq) throw new InvalidError(`ops of agent ${keyHex(d.agents[a]!)} overlap at seq ${rs[i]!.seq}`);
      }
    }
    const UNKNOWN = 0,
      CHAR = 1,
      DEL = 2;
    const lookup = (a: number, seq: number): [number, number] => {
      const ag = known[a]!;
      if (ag !== ROOT && seq <= MAX_SEQ) {
        const f = this.findID(ag, seq);
        if (f) return [CHAR, f[0].lamport + f[1]];
        if (seq < this.agents[ag]!.next) return [DEL, 0];
      }
      const rs = runs[canon[a]!]!;
      const i = searchRuns(rs, seq);
      if (i < rs.length && rs[i]!.seq <= seq) {
        return rs[i]!.insert ? [CHAR, rs[i]!.lamport + seq - rs[i]!.seq] : [DEL, 0];
      }
      return [UNKNOWN, 0];
    };
    for (let i = 0; i < d.ops.length; i++) {
      const o = d.ops[i]!;
      const ag = known[o.agent]!;
      if (ag !== ROOT && o.seq + o.len <= this.agents[ag]!.next) continue; // already held
      if (o.kind === OpKind.Delete) {
        for (let s = o.target.seq, end = o.target.seq + o.len; s < end; ) {
          if (lookup(o.target.agent, s)[0] === DEL) throw new InvalidError(`op ${i} (delete): target names a delete, not a character`);
          s = this.nextBoundary(runs[canon[o.target.agent]!]!, known[o.target.agent]!, s, end);
        }
        continue;
      }
      let oa = o.origin.agent,
        oseq = o.origin.seq,
        lam = o.lamport;
      if (ag !== ROOT) {
        const next = this.agents[ag]!.next;
        if (o.seq < next && next < o.seq + o.len) {
          oa = o.agent;
          oseq = next - 1;
          lam = o.lamport + next - o.seq;
        }
      }
      if (oa === ROOT) continue;
      const [what, ol] = lookup(oa, oseq);
      if (what === DEL) throw new InvalidError(`op ${i} (insert): origin names a delete, not a character`);
      if (what === CHAR && ol >= lam) throw new InvalidError(`op ${i} (insert): lamport ${lam} not after its origin's ${ol}`);
    }
  }

  private nextBoundary(rs: DeltaRun[], ag: number, s: number, end: number): number {
    let next = end;
    if (ag !== ROOT && s <= MAX_SEQ) {
      const f = this.findID(ag, s);
      if (f) next = Math.min(next, s + f[0].n - f[1]);
      else if (s < this.agents[ag]!.next) return s + 1;
    }
    const i = searchRuns(rs, s);
    if (i < rs.length) {
      const r = rs[i]!;
      next = Math.min(next, r.seq <= s ? r.seq + r.n : r.seq);
    }
    return Math.max(next, s + 1);
  }

  // --- resync ----------------------------------------------------------------

  /**
   * The ops this replica holds and a replica at version v lacks, in an
   * order the receiver can apply in one pass (ascending Lamport time).
   * Deleted characters travel as tombstones, without their text.
   */
  since(v: Version): Delta {
    interface Sop {
      kind: OpKind;
      agent: number;
      seq: number;
      n: number;
      lamport: number;
      ragent: number;
      rseq: number;
      text: string | null; // inserts: null for a tombstone
    }
    const ops: Sop[] = [];
    for (let a = 0; a < this.agents.length; a++) {
      const st = this.agents[a]!;
      const lo = Math.min(v.get(st.hex) ?? 0, st.next);
      if (lo >= st.next) continue;
      const firstOp = ops.length;
      for (let i = firstEndingAfter(st.ins, lo); i < st.ins.length; i++) {
        const s = st.ins[i]!;
        const o: Sop = { kind: OpKind.Insert, agent: a, seq: s.seq, n: s.n, lamport: s.lamport, ragent: s.oagent, rseq: s.oseq, text: s.deleted ? null : s.text };
        const cut = lo - Math.min(lo, s.seq);
        if (cut > 0) {
          o.seq += cut;
          o.n -= cut;
          o.lamport += cut;
          o.ragent = a;
          o.rseq = o.seq - 1;
          if (o.text !== null) o.text = o.text.slice(cpOffset(o.text, cut, s.n === s.units ? s.units : -1));
        }
        const p = ops.length > firstOp ? ops[ops.length - 1]! : undefined;
        if (p && p.seq + p.n === o.seq && p.lamport + p.n === o.lamport && o.ragent === a && o.rseq === o.seq - 1 && (p.text === null) === (o.text === null)) {
          p.n += o.n;
          if (p.text !== null) p.text += o.text!;
          continue;
        }
        ops.push(o);
      }
      for (const r of st.dels) {
        if (r.seq + r.n <= lo) continue;
        const o: Sop = { kind: OpKind.Delete, agent: a, seq: r.seq, n: r.n, lamport: r.lamport, ragent: r.tagent, rseq: r.tseq, text: null };
        const cut = lo - Math.min(lo, r.seq);
        if (cut > 0) {
          o.seq += cut;
          o.n -= cut;
          o.lamport += cut;
          o.rseq += cut;
        }
        ops.push(o);
      }
    }
    ops.sort((x, y) => {
      if (x.lamport !== y.lamport) return x.lamport - y.lamport;
      if (x.agent !== y.agent) return this.agents[x.agent]!.hex < this.agents[y.agent]!.hex ? -1 : 1;
      return x.seq - y.seq;
    });
    const b = new DeltaBuilder(this);
    for (const o of ops) {
      const agent = b.ref(o.agent);
      if (o.kind === OpKind.Insert) {
        b.d.ops.push({ kind: OpKind.Insert, agent, seq: o.seq, lamport: o.lamport, len: o.n, origin: { agent: b.ref(o.ragent), seq: o.ragent === ROOT ? 0 : o.rseq }, text: o.text ?? "" });
      } else {
        b.d.ops.push({ kind: OpKind.Delete, agent, seq: o.seq, lamport: o.lamport, len: o.n, target: { agent: b.ref(o.ragent), seq: o.rseq } });
      }
    }
    return b.d;
  }

  // --- anchors ---------------------------------------------------------------

  /** Turns a code point position into an anchor (docs/protocol.md §3.5). */
  anchorAt(pos: number, assoc: Assoc): Anchor {
    const n = this.length;
    if (!(pos >= 0 && pos <= n)) throw new OutOfRangeError(`anchor at ${pos} in text of ${n}`);
    let c = pos;
    if (assoc === ASSOC_LEFT) {
      if (pos === 0) return { edge: -1, assoc, id: null };
      c = pos - 1;
    } else if (pos === n) return { edge: 1, assoc, id: null };
    const [s, k] = this.locate(c);
    return { edge: 0, assoc, id: { agent: this.agents[s.agent]!.key, seq: s.seq + k } };
  }

  /**
   * The current code point position of an anchor, or null when it names a
   * character this replica does not hold (yet). A deleted character
   * resolves to where it stood.
   */
  resolve(a: Anchor): number | null {
    if (a.edge < 0) return 0;
    if (a.edge > 0) return this.length;
    if (!a.id) return null;
    const ag = this.byKey.get(keyHex(a.id.agent));
    if (ag === undefined || a.id.seq > MAX_SEQ) return null;
    const f = this.findID(ag, a.id.seq);
    if (!f) return null;
    let [p] = this.posOf(f[0], f[1]);
    if (a.assoc === ASSOC_LEFT && !f[0].deleted) p++;
    return p;
  }

  // --- UTF-16 conversion ------------------------------------------------------

  /** The UTF-16 offset of code point position pos. */
  toUtf16(pos: number): number {
    let u = 0;
    for (const ch of this.chunks) {
      if (pos >= ch.width) {
        pos -= ch.width;
        u += ch.units;
        continue;
      }
      for (const s of ch.spans) {
        if (s.deleted) continue;
        if (pos < s.n) return u + cpOffset(s.text!, pos, s.n === s.units ? s.units : -1);
        pos -= s.n;
        u += s.units;
      }
    }
    return u;
  }

  /** The code point position of UTF-16 offset u (inside a pair: after it). */
  fromUtf16(u: number): number {
    let p = 0;
    for (const ch of this.chunks) {
      if (u >= ch.units) {
        u -= ch.units;
        p += ch.width;
        continue;
      }
      for (const s of ch.spans) {
        if (s.deleted) continue;
        if (u < s.units) return p + (s.n === s.units ? u : cpCount16(s.text!, u));
        u -= s.units;
        p += s.n;
      }
    }
    return p;
  }

  // --- persistence -----------------------------------------------------------

  /**
   * The replica as a plain structure for local persistence (IndexedDB or a
   * file): every span in document order, tombstones included with their IDs,
   * Lamport times and origins (and their text while known), each agent's
   * delete runs, and the clock. fromSnapshot turns it back into a replica
   * that merges exactly as this one does.
   */
  toSnapshot(): Snapshot {
    const spans: SnapshotSpan[] = [];
    for (const ch of this.chunks) {
      for (const s of ch.spans) spans.push([s.lamport, s.agent, s.seq, s.oagent, s.oseq, s.n, s.deleted ? 1 : 0, s.text]);
    }
    return {
      v: 1,
      self: this.self,
      clock: this.clock,
      agents: this.agents.map((a) => [a.hex, a.next, a.dels.map((r) => [r.lamport, r.seq, r.n, r.tagent, r.tseq] as SnapshotDel)]),
      spans,
    };
  }

  /**
   * Loads a snapshot. With `agent` the replica edits as that key (a new
   * replica forked from the state); otherwise as the snapshot's own agent.
   */
  static fromSnapshot(snap: Snapshot, agent?: AgentKey): Text {
    if (!snap || snap.v !== 1) throw new Error("crdt: unknown snapshot version");
    const first = snap.agents[snap.self];
    if (!first) throw new Error("crdt: corrupt snapshot");
    const t = new Text(hexKey(first[0]));
    t.agents = [];
    t.byKey.clear();
    for (const [hex, next, dels] of snap.agents) {
      const a = t.intern(hexKey(hex));
      const st = t.agents[a]!;
      st.next = next;
      st.dels = dels.map(([lamport, seq, n, tagent, tseq]) => ({ lamport, seq, n, tagent, tseq }));
    }
    t.self = snap.self;
    t.clock = snap.clock;
    t.chunks = [];
    let ch = new Chunk();
    for (const [lamport, agent, seq, oagent, oseq, n, del, text] of snap.spans) {
      if (ch.spans.length >= CHUNK_MAX / 2) {
        ch.idx = t.chunks.length;
        t.chunks.push(ch);
        ch = new Chunk();
      }
      const st = t.agents[agent];
      if (!st || (text === null && !del) || (text !== null && cpLen(text) !== n)) throw new Error("crdt: corrupt snapshot");
      const s: Span = { lamport, agent, seq, oagent, oseq, n, text, units: text === null ? 0 : text.length, deleted: del === 1, chunk: ch };
      ch.spans.push(s);
      ch.width += liveW(s);
      ch.units += liveU(s);
      st.ins.push(s);
    }
    ch.idx = t.chunks.length;
    t.chunks.push(ch);
    for (const st of t.agents) st.ins.sort((x, y) => x.seq - y.seq);
    if (agent) t.self = t.intern(agent);
    return t;
  }

  /** An independent copy that edits as another agent. */
  fork(agent: AgentKey): Text {
    return Text.fromSnapshot(this.toSnapshot(), agent);
  }

  /** An independent copy that edits as the same agent. */
  clone(): Text {
    return Text.fromSnapshot(this.toSnapshot());
  }

  /**
   * Verifies the internal invariants (tests call it after every op): chunk
   * widths, per-agent indices, seq coverage, and that no item is placed
   * before its origin.
   */
  check(): void {
    const seen = new Map<Span, number>();
    let idx = 0;
    for (let c = 0; c < this.chunks.length; c++) {
      const ch = this.chunks[c]!;
      if (ch.idx !== c) throw new Error(`chunk ${c} has idx ${ch.idx}`);
      let w = 0,
        u = 0;
      for (const s of ch.spans) {
        if (s.chunk !== ch) throw new Error("span points at the wrong chunk");
        if (s.n <= 0) throw new Error("empty span");
        if (s.text !== null) {
          if (cpLen(s.text) !== s.n || s.text.length !== s.units) throw new Error("span text disagrees with its length");
        } else if (!s.deleted) throw new Error("live span without text");
        w += liveW(s);
        u += liveU(s);
        seen.set(s, idx++);
      }
      if (w !== ch.width || u !== ch.units) throw new Error(`chunk ${c} widths ${ch.width}/${ch.units}, spans say ${w}/${u}`);
    }
    for (let a = 0; a < this.agents.length; a++) {
      const st = this.agents[a]!;
      let covered = 0;
      for (let i = 0; i < st.ins.length; i++) {
        const s = st.ins[i]!;
        if (s.agent !== a || !seen.has(s)) throw new Error("agent index names a span not in the document");
        if (i > 0 && st.ins[i - 1]!.seq + st.ins[i - 1]!.n > s.seq) throw new Error("agent index overlaps");
        if (s.seq + s.n > st.next) throw new Error("span beyond the agent's version");
        covered += s.n;
      }
      for (const r of st.dels) covered += r.n;
      if (covered !== st.next) throw new Error(`agent ${st.hex}: ${covered} seqs covered, version says ${st.next}`);
    }
    for (const [s, i] of seen) {
      if (s.oagent === ROOT) continue;
      const f = this.findID(s.oagent, s.oseq);
      if (!f) throw new Error("origin not held");
      if (seen.get(f[0])! > i) throw new Error("item placed before its origin");
      if (f[0].lamport + f[1] >= s.lamport) throw new Error("lamport not after origin");
    }
  }
}

type SnapshotSpan = [lamport: number, agent: number, seq: number, oagent: number, oseq: number, n: number, deleted: 0 | 1, text: string | null];
type SnapshotDel = [lamport: number, seq: number, n: number, tagent: number, tseq: number];

/** The persisted form of a replica (see Text.toSnapshot). */
export interface Snapshot {
  v: 1;
  self: number;
  clock: number;
  agents: [hex: string, next: number, dels: SnapshotDel[]][];
  spans: SnapshotSpan[];
}

interface DeltaRun {
  seq: number;
  n: number;
  lamport: number;
  insert: boolean;
}

/** Index of the first span of ins that ends after seq. */
function firstEndingAfter(ins: Span[], seq: number): number {
  let lo = 0,
    hi = ins.length;
  while (lo < hi) {
    const m = (lo + hi) >>> 1;
    if (ins[m]!.seq + ins[m]!.n > seq) hi = m;
    else lo = m + 1;
  }
  return lo;
}

function searchRuns(rs: DeltaRun[], seq: number): number {
  let lo = 0,
    hi = rs.length;
  while (lo < hi) {
    const m = (lo + hi) >>> 1;
    if (rs[m]!.seq + rs[m]!.n > seq) hi = m;
    else lo = m + 1;
  }
  return lo;
}

function appendDelRun(runs: DelRun[], r: DelRun): void {
  const p = runs[runs.length - 1];
  if (p && p.seq + p.n === r.seq && p.lamport + p.n === r.lamport && p.tagent === r.tagent && p.tseq + p.n === r.tseq) {
    p.n += r.n;
    return;
  }
  runs.push(r);
}

/** @internal Per-apply state: the delta and its agents interned lazily. */
class Applier {
  private amap: number[];
  constructor(
    private t: Text,
    readonly d: Delta,
    readonly emit: ((c: Change) => void) | undefined,
  ) {
    this.amap = new Array<number>(d.agents.length).fill(ROOT);
  }
  agent(i: number): number {
    let a = this.amap[i]!;
    if (a === ROOT) {
      a = this.t.internKey(this.d.agents[i]!);
      this.amap[i] = a;
    }
    return a;
  }
  known(i: number): number {
    let a = this.amap[i]!;
    if (a !== ROOT) return a;
    a = this.t.knownKey(this.d.agents[i]!);
    if (a >= 0) this.amap[i] = a;
    return a;
  }
  op(o: Op): ID | null {
    return this.t.applyOp(this, o);
  }
}

const isCount = (x: number) => Number.isSafeInteger(x) && x >= 0;

/** Checks everything about a delta that does not depend on the replica. */
export function validate(d: Delta): void {
  const na = d.agents.length;
  for (const k of d.agents) if (!(k instanceof Uint8Array) || k.length !== 16) throw new InvalidError("agent key is not 16 bytes");
  for (let i = 0; i < d.ops.length; i++) {
    const o = d.ops[i]!;
    const kind = o.kind === OpKind.Insert ? "insert" : o.kind === OpKind.Delete ? "delete" : `kind ${String((o as Op).kind)}`;
    const bad = (why: string) => new InvalidError(`op ${i} (${kind}): ${why}`);
    if (!(Number.isInteger(o.agent) && o.agent >= 0 && o.agent < na)) throw bad("author index out of range");
    if (!isCount(o.seq) || !isCount(o.lamport) || !isCount(o.len)) throw bad("counters are not non-negative integers");
    if (o.len === 0) throw bad("empty op");
    if (o.len > MAX_SEQ || o.seq > MAX_SEQ - o.len) throw bad("seq out of range");
    if (o.lamport === 0 || o.len > MAX_LAMPORT || o.lamport > MAX_LAMPORT - o.len) throw bad("lamport out of range");
    if (o.kind === OpKind.Insert) {
      if (o.origin.agent === ROOT) {
        if (o.origin.seq !== 0) throw bad("root origin with a seq");
      } else if (!(Number.isInteger(o.origin.agent) && o.origin.agent >= 0 && o.origin.agent < na)) throw bad("origin index out of range");
      else if (!isCount(o.origin.seq) || o.origin.seq > MAX_SEQ) throw bad("origin seq out of range");
      if (typeof o.text !== "string") throw bad("text is not a string");
      if (o.text !== "") {
        if (wellFormed(o.text) !== o.text) throw bad("text is not valid UTF-8");
        if (cpLen(o.text) !== o.len) throw bad("text length disagrees with op length");
      }
    } else if (o.kind === OpKind.Delete) {
      if (!(Number.isInteger(o.target.agent) && o.target.agent >= 0 && o.target.agent < na)) throw bad("target index out of range");
      if (!isCount(o.target.seq) || o.target.seq > MAX_SEQ - o.len) throw bad("target seq out of range");
    } else throw bad("unknown kind");
  }
}

// --- version vectors ---------------------------------------------------------

/** Whether v holds everything o holds. */
export function covers(v: Version, o: Version): boolean {
  for (const [k, n] of o) if ((v.get(k) ?? 0) < n) return false;
  return true;
}

export function versionEqual(a: Version, b: Version): boolean {
  return covers(a, b) && covers(b, a);
}

/** Splits a delta into deltas of at most maxOps ops and about maxTextBytes of text each. */
export function splitDelta(d: Delta, maxOps: number, maxTextBytes = 512 * 1024): Delta[] {
  if (d.ops.length <= maxOps && textBytes(d) <= maxTextBytes) return [d];
  const out: Delta[] = [];
  let cur: Op[] = [];
  let bytes = 0;
  const flush = () => {
    if (cur.length > 0) out.push(reindex(d.agents, cur));
    cur = [];
    bytes = 0;
  };
  for (const o of d.ops) {
    const b = o.kind === OpKind.Insert ? utf8Len(o.text) : 0;
    if (cur.length >= maxOps || (cur.length > 0 && bytes + b > maxTextBytes)) flush();
    cur.push(o);
    bytes += b;
  }
  flush();
  return out;
}

function textBytes(d: Delta): number {
  let n = 0;
  for (const o of d.ops) if (o.kind === OpKind.Insert) n += utf8Len(o.text);
  return n;
}

/** UTF-8 length of a well-formed string. */
export function utf8Len(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/** A delta holding ops with a table cut down to the agents they name. */
function reindex(agents: AgentKey[], ops: Op[]): Delta {
  const map = new Map<number, number>();
  const out: Delta = { agents: [], ops: [] };
  const ref = (a: number) => {
    if (a === ROOT) return ROOT;
    let i = map.get(a);
    if (i === undefined) {
      i = out.agents.length;
      out.agents.push(agents[a]!);
      map.set(a, i);
    }
    return i;
  };
  for (const o of ops) {
    if (o.kind === OpKind.Insert) out.ops.push({ ...o, agent: ref(o.agent), origin: { agent: ref(o.origin.agent), seq: o.origin.seq } });
    else out.ops.push({ ...o, agent: ref(o.agent), target: { agent: ref(o.target.agent), seq: o.target.seq } });
  }
  return out;
}

/**
 * Splits insert ops whose text exceeds maxBytes of UTF-8 into runs that
 * continue one another (docs/protocol.md §4 rule 9), so each fits an op.
 */
export function splitLongInserts(d: Delta, maxBytes: number): Delta {
  if (!d.ops.some((o) => o.kind === OpKind.Insert && (o.text.length * 3 > maxBytes))) return d;
  const ops: Op[] = [];
  for (const o of d.ops) {
    if (o.kind !== OpKind.Insert || utf8Len(o.text) <= maxBytes) {
      ops.push(o);
      continue;
    }
    let i = 0; // UTF-16 index into o.text
    let k = 0; // code points emitted
    let origin = o.origin;
    while (i < o.text.length) {
      let j = i,
        bytes = 0,
        cps = 0;
      while (j < o.text.length) {
        const c = o.text.charCodeAt(j);
        const w = c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c <= 0xdbff ? 4 : 3;
        if (bytes + w > maxBytes) break;
        bytes += w;
        j += w === 4 ? 2 : 1;
        cps++;
      }
      ops.push({ kind: OpKind.Insert, agent: o.agent, seq: o.seq + k, lamport: o.lamport + k, len: cps, origin, text: o.text.slice(i, j) });
      k += cps;
      origin = { agent: o.agent, seq: o.seq + k - 1 };
      i = j;
    }
  }
  return { agents: d.agents, ops };
}

/**
 * Concatenates deltas applied one after another into one delta, merging
 * runs that continue each other (docs/protocol.md §4 rule 9), so that a
 * batch of keystrokes travels as a few ops.
 */
export function concatDeltas(ds: Delta[]): Delta {
  if (ds.length === 1) return ds[0]!;
  const out: Delta = { agents: [], ops: [] };
  const idx = new Map<string, number>();
  const ref = (k: AgentKey | undefined) => {
    if (!k) return ROOT;
    const h = keyHex(k);
    let i = idx.get(h);
    if (i === undefined) {
      i = out.agents.length;
      out.agents.push(k);
      idx.set(h, i);
    }
    return i;
  };
  for (const d of ds) {
    for (const o of d.ops) {
      const agent = ref(d.agents[o.agent]);
      const p = out.ops[out.ops.length - 1];
      if (o.kind === OpKind.Insert) {
        const origin = { agent: o.origin.agent === ROOT ? ROOT : ref(d.agents[o.origin.agent]), seq: o.origin.seq };
        if (
          p && p.kind === OpKind.Insert && p.agent === agent && p.seq + p.len === o.seq && p.lamport + p.len === o.lamport &&
          origin.agent === agent && origin.seq === o.seq - 1 && (p.text === "") === (o.text === "")
        ) {
          p.len += o.len;
          p.text += o.text;
          continue;
        }
        out.ops.push({ ...o, agent, origin });
      } else {
        const target = { agent: ref(d.agents[o.target.agent]), seq: o.target.seq };
        if (
          p && p.kind === OpKind.Delete && p.agent === agent && p.seq + p.len === o.seq && p.lamport + p.len === o.lamport &&
          p.target.agent === target.agent && p.target.seq + p.len === target.seq
        ) {
          p.len += o.len;
          continue;
        }
        out.ops.push({ ...o, agent, target });
      }
    }
  }
  return out;
}
