// The weft protocol v1 codec (docs/protocol.md). A frame is one msgpack
// array: [kind, fields...]; records inside are arrays too.
//
// Encoding goes through @msgpack/msgpack, which writes every integer,
// string and array in its shortest form, so equal frames give equal bytes
// (the golden files check this). Decoding is done by a small strict reader
// instead of a generic msgpack decoder, because the spec asks for checks a
// decoder to plain JS values cannot make: a float 1.0 and an integer 1
// decode to the same number but only the integer is valid; a bin is not a
// str; and every array, str and bin header is checked against the bytes
// left in the frame and against its limit before anything is allocated.

import { Encoder } from "@msgpack/msgpack";
import { keyHex, hexKey, OpKind, ROOT, cpLen, type Anchor, type Delta, type Op, type Version, type AgentKey } from "./crdt.ts";

export const PROTOCOL_VERSION = 1;
export const SUBPROTOCOL = "weft.v1";

// --- limits (§10) -------------------------------------------------------------

export const MaxFrameBytes = 1 << 20;
export const MaxOpsPerFrame = 16384;
export const MaxAgentsPerDelta = 1024;
export const MaxVersionEntries = 16384;
export const MaxDocsPerFrame = 256;
export const MaxDocsPerSocket = 256;
export const MaxSelections = 32;
export const MaxPresencePeers = 256;
export const MaxDocIDBytes = 256;
export const MaxTokenBytes = 8192;
export const MaxSoftwareBytes = 128;
export const MaxNameBytes = 128;
export const MaxColorBytes = 32;
export const MaxMessageBytes = 1024;
export const MaxOpTextBytes = 65536;
export const MaxCounter = Number.MAX_SAFE_INTEGER;
const MaxU32 = 0xffffffff;
const MaxU16 = 0xffff;

// --- frames (§5) --------------------------------------------------------------

export const enum Kind {
  Hello = 0x01,
  Join = 0x02,
  Leave = 0x03,
  Delta = 0x04,
  Presence = 0x05,
  Refresh = 0x06,
  Ping = 0x10,
  Pong = 0x11,
  Welcome = 0x20,
  Sync = 0x21,
  Ack = 0x22,
  Update = 0x23,
  PresenceUpdate = 0x24,
  Refreshed = 0x25,
  Error = 0x26,
  GoingAway = 0x27,
}

export interface User {
  name: string;
  color: string;
}

export interface Selection {
  anchor: Anchor;
  head: Anchor;
}

export interface Limits {
  maxFrameBytes: number;
  maxOpsPerFrame: number;
  maxDocsPerSocket: number;
  opsPerSecond: number;
  bytesPerSecond: number;
  presenceMs: number;
  presenceTtlMs: number;
}

export const DefaultLimits: Readonly<Limits> = {
  maxFrameBytes: MaxFrameBytes,
  maxOpsPerFrame: MaxOpsPerFrame,
  maxDocsPerSocket: MaxDocsPerSocket,
  opsPerSecond: 0,
  bytesPerSecond: 0,
  presenceMs: 50,
  presenceTtlMs: 30000,
};

export interface Peer {
  session: Uint8Array;
  agent: AgentKey;
  user: User;
  clock: number;
  cursor: Anchor;
  selections: Selection[];
}

export interface HelloFrame { kind: Kind.Hello; client: string; token: string; agent: AgentKey; user: User }
export interface JoinFrame { kind: Kind.Join; docs: { doc: string; version: Version }[] }
export interface LeaveFrame { kind: Kind.Leave; docs: string[] }
export interface DeltaFrame { kind: Kind.Delta; doc: string; clientSeq: number; delta: Delta }
export interface PresenceFrame { kind: Kind.Presence; doc: string; clock: number; user: User; cursor: Anchor; selections: Selection[] }
export interface RefreshFrame { kind: Kind.Refresh; token: string }
export interface PingFrame { kind: Kind.Ping; nonce: number }
export interface PongFrame { kind: Kind.Pong; nonce: number }
export interface WelcomeFrame { kind: Kind.Welcome; server: string; session: Uint8Array; expiresAt: number; limits: Limits }
export interface SyncFrame { kind: Kind.Sync; doc: string; seq: number; version: Version; delta: Delta; more: boolean }
export interface AckFrame { kind: Kind.Ack; doc: string; clientSeq: number; seq: number }
export interface UpdateFrame { kind: Kind.Update; doc: string; seq: number; author: AgentKey; delta: Delta }
export interface PresenceUpdateFrame { kind: Kind.PresenceUpdate; doc: string; peers: Peer[]; gone: Uint8Array[] }
export interface RefreshedFrame { kind: Kind.Refreshed; expiresAt: number }
export interface ErrorFrame { kind: Kind.Error; code: number; message: string; doc: string; clientSeq: number; retryAfterMs: number }
export interface GoingAwayFrame { kind: Kind.GoingAway; reason: string; retryAfterMs: number }

export type Frame =
  | HelloFrame
  | JoinFrame
  | LeaveFrame
  | DeltaFrame
  | PresenceFrame
  | RefreshFrame
  | PingFrame
  | PongFrame
  | WelcomeFrame
  | SyncFrame
  | AckFrame
  | UpdateFrame
  | PresenceUpdateFrame
  | RefreshedFrame
  | ErrorFrame
  | GoingAwayFrame;

/** A well-formed frame of a kind this side does not know (§11: ignore it). */
export interface UnknownFrame {
  kind: number;
  unknown: true;
}

// --- errors (§8) and close codes (§9) ---------------------------------------------

export const enum ErrorCode {
  TokenExpired = 1,
  UnsupportedVersion = 2,
  Forbidden = 3,
  NotFound = 4,
  Malformed = 5,
  Protocol = 6,
  UnknownKind = 7,
  SlowConsumer = 8,
  InvalidDelta = 9,
  MissingDependency = 10,
  TooManyDocs = 11,
  DocTooLarge = 12,
  Timeout = 13,
  NotJoined = 14,
  Unauthorized = 15,
  TooLarge = 16,
  Internal = 17,
  RateLimited = 18,
  Overloaded = 19,
  GoingAway = 20,
}

export const ErrorNames: Record<number, string> = {
  1: "token_expired",
  2: "unsupported_version",
  3: "forbidden",
  4: "not_found",
  5: "malformed",
  6: "protocol",
  7: "unknown_kind",
  8: "slow_consumer",
  9: "invalid_delta",
  10: "missing_dependency",
  11: "too_many_docs",
  12: "doc_too_large",
  13: "timeout",
  14: "not_joined",
  15: "unauthorized",
  16: "too_large",
  17: "internal",
  18: "rate_limited",
  19: "overloaded",
  20: "going_away",
};

/** The close code that goes with an error code (§8). */
export function errorCloseCode(code: number): number {
  if (code >= 1 && code <= 14) return 4000 + code;
  switch (code) {
    case ErrorCode.Unauthorized:
      return 1008;
    case ErrorCode.TooLarge:
      return 1009;
    case ErrorCode.RateLimited:
    case ErrorCode.Overloaded:
      return 1013;
    case ErrorCode.GoingAway:
      return 1001;
    default:
      return 1011; // internal, and unknown codes are treated like it
  }
}

/**
 * What a client does after a close (§9): reconnect with backoff, get a new
 * token first, or stop and report to the application.
 */
export type CloseAction = "reconnect" | "new-token" | "stop";

export function closeAction(code: number): CloseAction {
  switch (code) {
    case 1008:
    case 4001:
      return "new-token";
    case 1000:
    case 4002:
    case 4003:
    case 4004:
    case 4005:
    case 4006:
    case 4007:
    case 4009:
    case 4011:
    case 4012:
    case 4014:
      return "stop";
    default:
      return "reconnect"; // 1001, 1006, 1009, 1011, 1012, 1013, 4008, 4010, 4013, unknown
  }
}

/** A frame that breaks the rules of docs/protocol.md §2. */
export class ProtocolError extends Error {
  constructor(
    readonly code: "malformed" | "too_large" | "unsupported_version",
    readonly what: string,
    detail: string,
  ) {
    super(`${code}: ${what}: ${detail}`);
    this.name = "ProtocolError";
  }
}

const malformed = (what: string, detail: string) => new ProtocolError("malformed", what, detail);
const tooLarge = (what: string, n: number, max: number) => new ProtocolError("too_large", what, `${n} > ${max}`);

// --- encoding ---------------------------------------------------------------------

const encoder = new Encoder({ ignoreUndefined: false, initialBufferSize: 256 });
const utf8 = new TextEncoder();

function checkStr(what: string, s: string, max: number): string {
  if (utf8.encode(s).length > max) throw tooLarge(what + " bytes", utf8.encode(s).length, max);
  return s;
}

function checkDoc(what: string, s: string): string {
  if (s === "") throw malformed(what, "empty document ID");
  checkStr(what, s, MaxDocIDBytes);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) throw malformed(what, "control character in document ID");
  }
  return s;
}

function checkCount(what: string, n: number, max = MaxCounter): number {
  if (!Number.isSafeInteger(n) || n < 0) throw malformed(what, `not a non-negative integer: ${n}`);
  if (n > max) throw tooLarge(what, n, max);
  return n;
}

function checkKey(what: string, k: Uint8Array): Uint8Array {
  if (!(k instanceof Uint8Array) || k.length !== 16) throw malformed(what, "not a 16-byte key");
  return k;
}

function encVersion(v: Version): unknown[] {
  const entries = [...v.entries()].filter(([, n]) => n > 0).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  if (entries.length > MaxVersionEntries) throw tooLarge("version", entries.length, MaxVersionEntries);
  return entries.map(([k, n]) => [hexKey(k), checkCount("version count", n)]);
}

function encDelta(d: Delta): unknown[] {
  if (d.agents.length > MaxAgentsPerDelta) throw tooLarge("delta.agents", d.agents.length, MaxAgentsPerDelta);
  if (d.ops.length > MaxOpsPerFrame) throw tooLarge("delta.ops", d.ops.length, MaxOpsPerFrame);
  const seen = new Set<string>();
  for (const k of d.agents) {
    const h = keyHex(checkKey("delta.agents", k));
    if (seen.has(h)) throw malformed("delta.agents", `agent ${h} listed twice`);
    seen.add(h);
  }
  return [d.agents, d.ops.map((o) => encOp(o, d.agents.length))];
}

function encOp(o: Op, agents: number): unknown[] {
  if (!(Number.isInteger(o.agent) && o.agent >= 0 && o.agent < agents)) throw malformed("op", `agent index ${o.agent} outside a table of ${agents}`);
  if (o.len === 0) throw malformed("op", "zero length");
  checkCount("op seq+len", o.seq + o.len);
  checkCount("op lamport+len", o.lamport + o.len);
  if (o.kind === OpKind.Insert) {
    const ra = o.origin.agent;
    if (ra !== ROOT && !(Number.isInteger(ra) && ra >= 0 && ra < agents)) throw malformed("op", `origin agent index ${ra}`);
    checkStr("op text", o.text, MaxOpTextBytes);
    if (o.text !== "" && cpLen(o.text) !== o.len) throw malformed("op", "text length disagrees with op length");
    return [OpKind.Insert, o.agent, o.seq, o.lamport, o.len, ra, ra === ROOT ? 0 : checkCount("op origin seq", o.origin.seq), o.text];
  }
  if (o.kind === OpKind.Delete) {
    const ta = o.target.agent;
    if (!(Number.isInteger(ta) && ta >= 0 && ta < agents)) throw malformed("op", `target agent index ${ta}`);
    checkCount("op target seq+len", o.target.seq + o.len);
    return [OpKind.Delete, o.agent, o.seq, o.lamport, o.len, ta, o.target.seq];
  }
  throw malformed("op", `unknown op kind ${String((o as Op).kind)}`);
}

function encUser(u: User): unknown[] {
  return [checkStr("user.name", u.name, MaxNameBytes), checkStr("user.color", u.color, MaxColorBytes)];
}

function encAnchor(a: Anchor): unknown[] {
  if (a.assoc !== 0 && a.assoc !== -1) throw malformed("anchor", `association ${a.assoc}`);
  if (a.edge === 0) {
    if (!a.id) throw malformed("anchor", "character anchor without an ID");
    return [0, a.assoc, checkKey("anchor.agent", a.id.agent), checkCount("anchor.seq", a.id.seq)];
  }
  if (a.edge !== -1 && a.edge !== 1) throw malformed("anchor", `edge ${String(a.edge)}`);
  return [a.edge, a.assoc, null, 0];
}

function encSelections(s: Selection[]): unknown[] {
  if (s.length > MaxSelections) throw tooLarge("selections", s.length, MaxSelections);
  return s.map((x) => [encAnchor(x.anchor), encAnchor(x.head)]);
}

function encDocs(what: string, docs: string[]): string[] {
  if (docs.length === 0) throw malformed(what, "no documents");
  if (docs.length > MaxDocsPerFrame) throw tooLarge(what, docs.length, MaxDocsPerFrame);
  if (new Set(docs).size !== docs.length) throw malformed(what, "document named twice");
  return docs.map((d) => checkDoc(what, d));
}

function encLimits(l: Limits): unknown[] {
  return [l.maxFrameBytes, l.maxOpsPerFrame, l.maxDocsPerSocket, l.opsPerSecond, l.bytesPerSecond, l.presenceMs, l.presenceTtlMs].map((n) =>
    checkCount("limits", n, MaxU32),
  );
}

/** Encodes a frame. Throws ProtocolError for a frame a decoder would reject. */
export function encodeFrame(f: Frame): Uint8Array {
  let v: unknown[];
  switch (f.kind) {
    case Kind.Hello:
      v = [f.kind, PROTOCOL_VERSION, checkStr("hello.client", f.client, MaxSoftwareBytes), checkStr("hello.token", f.token, MaxTokenBytes), checkKey("hello.agent", f.agent), encUser(f.user)];
      break;
    case Kind.Join:
      encDocs("join.docs", f.docs.map((d) => d.doc));
      v = [f.kind, f.docs.map((d) => [d.doc, encVersion(d.version)])];
      break;
    case Kind.Leave:
      v = [f.kind, encDocs("leave.docs", f.docs)];
      break;
    case Kind.Delta:
      v = [f.kind, checkDoc("delta.doc", f.doc), checkCount("delta.client_seq", f.clientSeq), encDelta(f.delta)];
      break;
    case Kind.Presence:
      v = [f.kind, checkDoc("presence.doc", f.doc), checkCount("presence.clock", f.clock), encUser(f.user), encAnchor(f.cursor), encSelections(f.selections)];
      break;
    case Kind.Refresh:
      if (f.token === "") throw malformed("refresh.token", "empty");
      v = [f.kind, checkStr("refresh.token", f.token, MaxTokenBytes)];
      break;
    case Kind.Ping:
    case Kind.Pong:
      v = [f.kind, checkCount("nonce", f.nonce)];
      break;
    case Kind.Welcome:
      v = [f.kind, PROTOCOL_VERSION, checkStr("welcome.server", f.server, MaxSoftwareBytes), checkKey("welcome.session", f.session), checkCount("welcome.expires_at", f.expiresAt), encLimits(f.limits)];
      break;
    case Kind.Sync:
      v = [f.kind, checkDoc("sync.doc", f.doc), checkCount("sync.seq", f.seq), encVersion(f.version), encDelta(f.delta), f.more];
      break;
    case Kind.Ack:
      v = [f.kind, checkDoc("ack.doc", f.doc), checkCount("ack.client_seq", f.clientSeq), checkCount("ack.seq", f.seq)];
      break;
    case Kind.Update:
      v = [f.kind, checkDoc("update.doc", f.doc), checkCount("update.seq", f.seq), checkKey("update.author", f.author), encDelta(f.delta)];
      break;
    case Kind.PresenceUpdate:
      if (f.peers.length > MaxPresencePeers) throw tooLarge("presence_update.peers", f.peers.length, MaxPresencePeers);
      if (f.gone.length > MaxPresencePeers) throw tooLarge("presence_update.gone", f.gone.length, MaxPresencePeers);
      v = [
        f.kind,
        checkDoc("presence_update.doc", f.doc),
        f.peers.map((p) => [checkKey("peer.session", p.session), checkKey("peer.agent", p.agent), encUser(p.user), checkCount("peer.clock", p.clock), encAnchor(p.cursor), encSelections(p.selections)]),
        f.gone.map((g) => checkKey("presence_update.gone", g)),
      ];
      break;
    case Kind.Refreshed:
      v = [f.kind, checkCount("refreshed.expires_at", f.expiresAt)];
      break;
    case Kind.Error:
      if (f.code === 0) throw malformed("error.code", "zero");
      if (f.doc !== "") checkDoc("error.doc", f.doc);
      v = [f.kind, checkCount("error.code", f.code, MaxU16), checkStr("error.message", f.message, MaxMessageBytes), f.doc, checkCount("error.client_seq", f.clientSeq), checkCount("error.retry_after_ms", f.retryAfterMs, MaxU32)];
      break;
    case Kind.GoingAway:
      v = [f.kind, checkStr("going_away.reason", f.reason, MaxMessageBytes), checkCount("going_away.retry_after_ms", f.retryAfterMs, MaxU32)];
      break;
    default:
      throw malformed("frame", `unknown kind ${(f as { kind: number }).kind}`);
  }
  const out = encoder.encode(v);
  if (out.length > MaxFrameBytes) throw tooLarge("frame bytes", out.length, MaxFrameBytes);
  return out;
}

// --- decoding ---------------------------------------------------------------------

const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function codeName(c: number): string {
  if (c <= 0x7f || c >= 0xe0 || (c >= 0xcc && c <= 0xd3)) return "integer";
  if ((c >= 0x80 && c <= 0x8f) || c === 0xde || c === 0xdf) return "map";
  if ((c >= 0x90 && c <= 0x9f) || c === 0xdc || c === 0xdd) return "array";
  if ((c >= 0xa0 && c <= 0xbf) || (c >= 0xd9 && c <= 0xdb)) return "string";
  if (c === 0xc0) return "nil";
  if (c === 0xc2 || c === 0xc3) return "bool";
  if (c >= 0xc4 && c <= 0xc6) return "bin";
  if (c === 0xca || c === 0xcb) return "float";
  return `code 0x${c.toString(16)}`;
}

class Reader {
  private pos = 0;
  private view: DataView;
  constructor(private b: Uint8Array) {
    this.view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }

  get left(): number {
    return this.b.length - this.pos;
  }

  private peek(what: string): number {
    if (this.pos >= this.b.length) throw malformed(what, "truncated");
    return this.b[this.pos]!;
  }

  /** Reads a big-endian unsigned integer of w bytes after the current code byte. */
  private fixed(what: string, w: number): number {
    const p = this.pos + 1;
    if (w > this.b.length - p) throw malformed(what, "truncated");
    let n: number;
    switch (w) {
      case 1:
        n = this.b[p]!;
        break;
      case 2:
        n = this.view.getUint16(p);
        break;
      case 4:
        n = this.view.getUint32(p);
        break;
      default: {
        const hi = this.view.getUint32(p);
        const lo = this.view.getUint32(p + 4);
        // Beyond 2^53 a number is inexact: report it as too large (every
        // field here is at most 2^53 − 1).
        n = hi >= 0x200000 ? Infinity : hi * 0x100000000 + lo;
      }
    }
    this.pos = p + w;
    return n;
  }

  private signedFixed(what: string, c: number): number {
    const w = 1 << (c - 0xd0);
    const p = this.pos + 1;
    if (w > this.b.length - p) throw malformed(what, "truncated");
    let n: number;
    switch (w) {
      case 1:
        n = this.view.getInt8(p);
        break;
      case 2:
        n = this.view.getInt16(p);
        break;
      case 4:
        n = this.view.getInt32(p);
        break;
      default: {
        const hi = this.view.getInt32(p);
        const lo = this.view.getUint32(p + 4);
        n = hi >= 0x200000 ? Infinity : hi < -0x200000 ? -Infinity : hi * 0x100000000 + lo;
      }
    }
    this.pos = p + w;
    return n;
  }

  uint(what: string, max: number): number {
    const c = this.peek(what);
    let n: number;
    if (c <= 0x7f) {
      this.pos++;
      n = c;
    } else if (c >= 0xcc && c <= 0xcf) n = this.fixed(what, 1 << (c - 0xcc));
    else if (c >= 0xd0 && c <= 0xd3) {
      n = this.signedFixed(what, c);
      if (n < 0) throw malformed(what, `negative value ${n}`);
    } else throw malformed(what, `want an unsigned integer, got ${codeName(c)}`);
    if (n > max) throw tooLarge(what, n, max);
    return n;
  }

  counter(what: string): number {
    return this.uint(what, MaxCounter);
  }

  int(what: string, lo: number, hi: number): number {
    const c = this.peek(what);
    let n: number;
    if (c <= 0x7f || c >= 0xe0) {
      this.pos++;
      n = c <= 0x7f ? c : c - 0x100;
    } else if (c >= 0xcc && c <= 0xcf) n = this.fixed(what, 1 << (c - 0xcc));
    else if (c >= 0xd0 && c <= 0xd3) n = this.signedFixed(what, c);
    else throw malformed(what, `want an integer, got ${codeName(c)}`);
    if (n < lo || n > hi) throw malformed(what, `${n} out of range [${lo}, ${hi}]`);
    return n;
  }

  bool(what: string): boolean {
    const c = this.peek(what);
    if (c !== 0xc2 && c !== 0xc3) throw malformed(what, `want a bool, got ${codeName(c)}`);
    this.pos++;
    return c === 0xc3;
  }

  isNil(): boolean {
    if (this.pos < this.b.length && this.b[this.pos] === 0xc0) {
      this.pos++;
      return true;
    }
    return false;
  }

  /** Reads an array header; n elements need at least n*minBytes bytes. */
  arrayLen(what: string, limit: number, minBytes: number): number {
    const c = this.peek(what);
    let n: number;
    if (c >= 0x90 && c <= 0x9f) {
      this.pos++;
      n = c & 0x0f;
    } else if (c === 0xdc) n = this.fixed(what, 2);
    else if (c === 0xdd) n = this.fixed(what, 4);
    else throw malformed(what, `want an array, got ${codeName(c)}`);
    if (n > limit) throw tooLarge(what, n, limit);
    if (n * minBytes > this.left) throw malformed(what, `${n} elements in ${this.left} bytes`);
    return n;
  }

  /** An array of at least min elements (a record); returns its length. */
  fields(what: string, min: number): number {
    const n = this.arrayLen(what, MaxFrameBytes, 1);
    if (n < min) throw malformed(what, `${n} fields, want at least ${min}`);
    return n;
  }

  private payload(what: string, c: number, limit: number): Uint8Array {
    let n: number;
    if (c >= 0xa0 && c <= 0xbf) {
      this.pos++;
      n = c & 0x1f;
    } else if (c === 0xd9 || c === 0xc4) n = this.fixed(what, 1);
    else if (c === 0xda || c === 0xc5) n = this.fixed(what, 2);
    else n = this.fixed(what, 4);
    if (n > limit) throw tooLarge(what + " bytes", n, limit);
    if (n > this.left) throw malformed(what, `${n} bytes with ${this.left} left`);
    const out = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  str(what: string, limit: number): string {
    const c = this.peek(what);
    if (!((c >= 0xa0 && c <= 0xbf) || (c >= 0xd9 && c <= 0xdb))) throw malformed(what, `want a string, got ${codeName(c)}`);
    const b = this.payload(what, c, limit);
    try {
      return textDecoder.decode(b);
    } catch {
      throw malformed(what, "invalid UTF-8");
    }
  }

  doc(what: string): string {
    return checkDoc(what, this.str(what, MaxDocIDBytes));
  }

  key(what: string): Uint8Array {
    const c = this.peek(what);
    if (c < 0xc4 || c > 0xc6) throw malformed(what, `want a 16-byte bin, got ${codeName(c)}`);
    const b = this.payload(what, c, MaxFrameBytes);
    if (b.length !== 16) throw malformed(what, `bin of ${b.length} bytes, want 16`);
    return Uint8Array.from(b);
  }

  /** Skips n values of any type (the fields a later revision appended). */
  skip(what: string, n: number): void {
    const b = this.b;
    let p = this.pos;
    for (let owed = n; owed > 0; owed--) {
      if (p >= b.length) throw malformed(what, "truncated");
      const c = b[p++]!;
      let lenBytes = 0,
        size = 0,
        children = 0;
      if (c <= 0x7f || c >= 0xe0 || c === 0xc0 || c === 0xc2 || c === 0xc3) {
        // one byte
      } else if (c >= 0x80 && c <= 0x8f) children = 2 * (c & 0x0f);
      else if (c >= 0x90 && c <= 0x9f) children = c & 0x0f;
      else if (c >= 0xa0 && c <= 0xbf) size = c & 0x1f;
      else if (c === 0xc4 || c === 0xd9) lenBytes = 1;
      else if (c === 0xc5 || c === 0xda || c === 0xdc || c === 0xde) lenBytes = 2;
      else if (c === 0xc6 || c === 0xdb || c === 0xdd || c === 0xdf) lenBytes = 4;
      else if (c === 0xc7) (lenBytes = 1), (size = 1);
      else if (c === 0xc8) (lenBytes = 2), (size = 1);
      else if (c === 0xc9) (lenBytes = 4), (size = 1);
      else if (c >= 0xd4 && c <= 0xd8) size = 1 + (1 << (c - 0xd4));
      else if (c === 0xcc || c === 0xd0) size = 1;
      else if (c === 0xcd || c === 0xd1) size = 2;
      else if (c === 0xce || c === 0xd2 || c === 0xca) size = 4;
      else if (c === 0xcf || c === 0xd3 || c === 0xcb) size = 8;
      else throw malformed(what, `invalid msgpack code 0x${c.toString(16)}`);
      if (lenBytes > b.length - p) throw malformed(what, "truncated");
      let l = 0;
      for (let i = 0; i < lenBytes; i++) l = l * 256 + b[p + i]!;
      p += lenBytes;
      if (c === 0xdc || c === 0xdd) children = l;
      else if (c === 0xde || c === 0xdf) children = 2 * l;
      else size += l;
      if (size > b.length - p) throw malformed(what, "truncated");
      p += size;
      owed += children;
      if (owed - 1 > b.length - p) throw malformed(what, `${owed - 1} values owed with ${b.length - p} bytes left`);
    }
    this.pos = p;
  }

  user(): User {
    const n = this.fields("user", 2);
    const u = { name: this.str("user.name", MaxNameBytes), color: this.str("user.color", MaxColorBytes) };
    this.skip("user", n - 2);
    return u;
  }

  version(): Version {
    const n = this.arrayLen("version", MaxVersionEntries, 1 + 2 + 16 + 1);
    const v: Version = new Map();
    for (let i = 0; i < n; i++) {
      const m = this.fields("version entry", 2);
      const k = keyHex(this.key("version agent"));
      const c = this.counter("version count");
      if (v.has(k)) throw malformed("version", `agent ${k} listed twice`);
      this.skip("version entry", m - 2);
      v.set(k, c);
    }
    for (const [k, c] of v) if (c === 0) v.delete(k);
    return v;
  }

  delta(): Delta {
    const n = this.fields("delta", 2);
    const na = this.arrayLen("delta.agents", MaxAgentsPerDelta, 2 + 16);
    const agents: Uint8Array[] = [];
    const seen = new Set<string>();
    for (let i = 0; i < na; i++) {
      const k = this.key("delta.agents");
      const h = keyHex(k);
      if (seen.has(h)) throw malformed("delta.agents", `agent ${h} listed twice`);
      seen.add(h);
      agents.push(k);
    }
    const no = this.arrayLen("delta.ops", MaxOpsPerFrame, 8);
    const ops: Op[] = [];
    for (let i = 0; i < no; i++) ops.push(this.op(na));
    this.skip("delta", n - 2);
    return { agents, ops };
  }

  op(agents: number): Op {
    const n = this.fields("op", 7);
    const kind = this.uint("op.kind", 0xff);
    let known = 7;
    if (kind === OpKind.Insert) {
      known = 8;
      if (n < known) throw malformed("op", `insert of ${n} fields`);
    } else if (kind !== OpKind.Delete) throw malformed("op", `unknown op kind ${kind}`);
    const agent = this.uint("op.agent", MaxCounter);
    if (agent >= agents) throw malformed("op", `agent index ${agent} outside a table of ${agents}`);
    const seq = this.counter("op.seq");
    const lamport = this.counter("op.lamport");
    const len = this.counter("op.len");
    const ra = this.int("op.ref_agent", -1, agents - 1);
    const rs = this.counter("op.ref_seq");
    if (len === 0) throw malformed("op", "zero length");
    if (len > MaxCounter - seq) throw tooLarge("op seq+len", seq + len, MaxCounter);
    if (len > MaxCounter - lamport) throw tooLarge("op lamport+len", lamport + len, MaxCounter);
    let op: Op;
    if (kind === OpKind.Insert) {
      if (ra < 0 && rs !== 0) throw malformed("op", `document start with seq ${rs}`);
      const text = this.str("op.text", MaxOpTextBytes);
      if (text !== "" && cpLen(text) !== len) throw malformed("op", `text of ${cpLen(text)} code points for length ${len}`);
      op = { kind: OpKind.Insert, agent, seq, lamport, len, origin: { agent: ra < 0 ? ROOT : ra, seq: rs }, text };
    } else {
      if (ra < 0) throw malformed("op", "delete of the document start");
      if (len > MaxCounter - rs) throw tooLarge("op target seq+len", rs + len, MaxCounter);
      op = { kind: OpKind.Delete, agent, seq, lamport, len, target: { agent: ra, seq: rs } };
    }
    this.skip("op", n - known);
    return op;
  }

  anchor(): Anchor {
    const n = this.fields("anchor", 4);
    const edge = this.int("anchor.edge", -1, 1) as -1 | 0 | 1;
    const assoc = this.int("anchor.assoc", -1, 0) as 0 | -1;
    let a: Anchor;
    if (edge !== 0) {
      if (!this.isNil()) throw malformed("anchor", "document edge with an agent");
      const s = this.counter("anchor.seq");
      if (s !== 0) throw malformed("anchor", `document edge with seq ${s}`);
      a = { edge, assoc, id: null };
    } else {
      const agent = this.key("anchor.agent");
      a = { edge, assoc, id: { agent, seq: this.counter("anchor.seq") } };
    }
    this.skip("anchor", n - 4);
    return a;
  }

  selections(): Selection[] {
    const n = this.arrayLen("selections", MaxSelections, 1 + 5 + 5);
    const out: Selection[] = [];
    for (let i = 0; i < n; i++) {
      const m = this.fields("selections", 2);
      out.push({ anchor: this.anchor(), head: this.anchor() });
      this.skip("selections", m - 2);
    }
    return out;
  }

  docs(what: string): string[] {
    const n = this.arrayLen(what, MaxDocsPerFrame, 2);
    const docs: string[] = [];
    for (let i = 0; i < n; i++) docs.push(this.doc(what));
    if (n === 0) throw malformed(what, "no documents");
    if (new Set(docs).size !== n) throw malformed(what, "document named twice");
    return docs;
  }

  limits(): Limits {
    const m = this.fields("welcome.limits", 7);
    const r = (w: string) => this.uint(w, MaxU32);
    const l: Limits = {
      maxFrameBytes: r("limits.max_frame_bytes"),
      maxOpsPerFrame: r("limits.max_ops_per_frame"),
      maxDocsPerSocket: r("limits.max_docs_per_socket"),
      opsPerSecond: r("limits.ops_per_second"),
      bytesPerSecond: r("limits.bytes_per_second"),
      presenceMs: r("limits.presence_ms"),
      presenceTtlMs: r("limits.presence_ttl_ms"),
    };
    this.skip("welcome.limits", m - 7);
    return l;
  }

  version1(what: string): void {
    const v = this.uint(what, Infinity);
    if (v !== PROTOCOL_VERSION) throw new ProtocolError("unsupported_version", what, `version ${v}, this side speaks ${PROTOCOL_VERSION}`);
  }

  kind(): number {
    const c = this.peek("frame kind");
    if (c > 0x7f) throw malformed("frame kind", `want a positive fixint, got ${codeName(c)}`);
    this.pos++;
    return c;
  }
}

function need(what: string, n: number, known: number): void {
  if (n < known) throw malformed(what, `${n + 1} fields, want at least ${known + 1}`);
}

/**
 * Decodes one frame. Throws ProtocolError for a frame the rules reject;
 * returns an UnknownFrame for a well-formed array of a kind v1 does not
 * define (the caller ignores it, §11).
 */
export function decodeFrame(bytes: Uint8Array): Frame | UnknownFrame {
  if (bytes.length > MaxFrameBytes) throw tooLarge("frame bytes", bytes.length, MaxFrameBytes);
  const r = new Reader(bytes);
  const all = r.fields("frame", 1);
  const kind = r.kind();
  const n = all - 1;
  let f: Frame | UnknownFrame;
  let known: number;
  switch (kind) {
    case Kind.Hello: {
      need("hello", n, (known = 5));
      r.version1("hello.version");
      f = { kind, client: r.str("hello.client", MaxSoftwareBytes), token: r.str("hello.token", MaxTokenBytes), agent: r.key("hello.agent"), user: r.user() };
      break;
    }
    case Kind.Join: {
      need("join", n, (known = 1));
      const m = r.arrayLen("join.docs", MaxDocsPerFrame, 2);
      if (m === 0) throw malformed("join.docs", "no documents");
      const docs: JoinFrame["docs"] = [];
      for (let i = 0; i < m; i++) {
        const k = r.fields("join entry", 2);
        const doc = r.doc("join.doc");
        docs.push({ doc, version: r.version() });
        r.skip("join entry", k - 2);
      }
      if (new Set(docs.map((d) => d.doc)).size !== m) throw malformed("join.docs", "document named twice");
      f = { kind, docs };
      break;
    }
    case Kind.Leave:
      need("leave", n, (known = 1));
      f = { kind, docs: r.docs("leave.docs") };
      break;
    case Kind.Delta:
      need("delta", n, (known = 3));
      f = { kind, doc: r.doc("delta.doc"), clientSeq: r.counter("delta.client_seq"), delta: r.delta() };
      break;
    case Kind.Presence:
      need("presence", n, (known = 5));
      f = { kind, doc: r.doc("presence.doc"), clock: r.counter("presence.clock"), user: r.user(), cursor: r.anchor(), selections: r.selections() };
      break;
    case Kind.Refresh: {
      need("refresh", n, (known = 1));
      const token = r.str("refresh.token", MaxTokenBytes);
      if (token === "") throw malformed("refresh.token", "empty");
      f = { kind, token };
      break;
    }
    case Kind.Ping:
    case Kind.Pong:
      need("ping", n, (known = 1));
      f = { kind, nonce: r.counter("nonce") } as PingFrame | PongFrame;
      break;
    case Kind.Welcome:
      need("welcome", n, (known = 5));
      r.version1("welcome.version");
      f = { kind, server: r.str("welcome.server", MaxSoftwareBytes), session: r.key("welcome.session"), expiresAt: r.counter("welcome.expires_at"), limits: r.limits() };
      break;
    case Kind.Sync:
      need("sync", n, (known = 5));
      f = { kind, doc: r.doc("sync.doc"), seq: r.counter("sync.seq"), version: r.version(), delta: r.delta(), more: r.bool("sync.more") };
      break;
    case Kind.Ack:
      need("ack", n, (known = 3));
      f = { kind, doc: r.doc("ack.doc"), clientSeq: r.counter("ack.client_seq"), seq: r.counter("ack.seq") };
      break;
    case Kind.Update:
      need("update", n, (known = 4));
      f = { kind, doc: r.doc("update.doc"), seq: r.counter("update.seq"), author: r.key("update.author"), delta: r.delta() };
      break;
    case Kind.PresenceUpdate: {
      need("presence_update", n, (known = 3));
      const doc = r.doc("presence_update.doc");
      const np = r.arrayLen("presence_update.peers", MaxPresencePeers, 1 + 18 + 18 + 3 + 1 + 5 + 1);
      const peers: Peer[] = [];
      for (let i = 0; i < np; i++) {
        const m = r.fields("peer", 6);
        peers.push({ session: r.key("peer.session"), agent: r.key("peer.agent"), user: r.user(), clock: r.counter("peer.clock"), cursor: r.anchor(), selections: r.selections() });
        r.skip("peer", m - 6);
      }
      const ng = r.arrayLen("presence_update.gone", MaxPresencePeers, 18);
      const gone: Uint8Array[] = [];
      for (let i = 0; i < ng; i++) gone.push(r.key("presence_update.gone"));
      f = { kind, doc, peers, gone };
      break;
    }
    case Kind.Refreshed:
      need("refreshed", n, (known = 1));
      f = { kind, expiresAt: r.counter("refreshed.expires_at") };
      break;
    case Kind.Error: {
      need("error", n, (known = 5));
      const code = r.uint("error.code", MaxU16);
      if (code === 0) throw malformed("error.code", "zero");
      const message = r.str("error.message", MaxMessageBytes);
      const doc = r.str("error.doc", MaxDocIDBytes);
      if (doc !== "") checkDoc("error.doc", doc);
      f = { kind, code, message, doc, clientSeq: r.counter("error.client_seq"), retryAfterMs: r.uint("error.retry_after_ms", MaxU32) };
      break;
    }
    case Kind.GoingAway:
      need("going_away", n, (known = 2));
      f = { kind, reason: r.str("going_away.reason", MaxMessageBytes), retryAfterMs: r.uint("going_away.retry_after_ms", MaxU32) };
      break;
    default:
      // Unknown kind: check it is one well-formed msgpack value and ignore it.
      r.skip("frame", n);
      known = n;
      f = { kind, unknown: true };
  }
  r.skip("frame", n - known);
  if (r.left !== 0) throw malformed("frame", `${r.left} bytes after the frame`);
  return f;
}

/** The kind of a frame from its first bytes, without decoding the rest. */
export function peekKind(b: Uint8Array): number {
  let i: number;
  if (b.length === 0) throw malformed("frame", "empty");
  if (b[0]! >= 0x91 && b[0]! <= 0x9f) i = 1;
  else if (b[0] === 0xdc) i = 3;
  else if (b[0] === 0xdd) i = 5;
  else throw malformed("frame", "not a non-empty array");
  if (i >= b.length) throw malformed("frame", "truncated");
  if (b[i]! > 0x7f) throw malformed("frame kind", "not a positive fixint");
  return b[i]!;
}

export function isUnknown(f: Frame | UnknownFrame): f is UnknownFrame {
  return (f as UnknownFrame).unknown === true;
}

/** Encodes a delta alone (its wire form inside frames), for local storage. */
export function encodeDelta(d: Delta): Uint8Array {
  return encoder.encode(encDelta(d));
}

/** Decodes what encodeDelta produced, with the same checks as a frame. */
export function decodeDelta(b: Uint8Array): Delta {
  const r = new Reader(b);
  const d = r.delta();
  if (r.left !== 0) throw malformed("delta", `${r.left} bytes after the delta`);
  return d;
}
