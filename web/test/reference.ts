// A naive RGA kept for differential tests: one array entry per code point,
// a linear scan per operation. Slow and obviously faithful to
// docs/protocol.md §4, which is the point.
import { keyHex, OpKind, ROOT, type Delta } from "../src/crdt.ts";

interface Item {
  id: string; // hex:seq
  hex: string;
  seq: number;
  lamport: number;
  ch: string;
  deleted: boolean;
}

export class NaiveRGA {
  items: Item[] = [];
  next = new Map<string, number>();
  clock = 0;
  byId = new Map<string, Item>();
  constructor(readonly self: string) {}

  text(): string {
    return this.items.filter((i) => !i.deleted).map((i) => i.ch).join("");
  }

  private visible(): Item[] {
    return this.items.filter((i) => !i.deleted);
  }

  private greater(a: Item, lamport: number, hex: string, seq: number): boolean {
    if (a.lamport !== lamport) return a.lamport > lamport;
    if (a.hex !== hex) return a.hex > hex;
    return a.seq > seq;
  }

  private integrate(it: Item, origin: string | null): void {
    let j = 0;
    if (origin !== null) {
      const o = this.byId.get(origin);
      if (!o) throw new Error("naive: missing origin " + origin);
      j = this.items.indexOf(o) + 1;
    }
    while (j < this.items.length && this.greater(this.items[j]!, it.lamport, it.hex, it.seq)) j++;
    this.items.splice(j, 0, it);
    this.byId.set(it.id, it);
  }

  localInsert(pos: number, s: string): void {
    const cps = Array.from(s);
    const vis = this.visible();
    let origin = pos === 0 ? null : vis[pos - 1]!.id;
    let seq = this.next.get(this.self) ?? 0;
    for (const ch of cps) {
      const it: Item = { id: `${this.self}:${seq}`, hex: this.self, seq, lamport: ++this.clock, ch, deleted: false };
      this.integrate(it, origin);
      origin = it.id;
      seq++;
    }
    this.next.set(this.self, seq);
  }

  localDelete(pos: number, n: number): void {
    const vis = this.visible().slice(pos, pos + n);
    for (const it of vis) it.deleted = true;
    this.next.set(this.self, (this.next.get(this.self) ?? 0) + n);
    this.clock += n;
  }

  /** Applies whatever ops of d it can; returns whether every op applied. */
  apply(d: Delta): boolean {
    let all = true;
    let progress = true;
    const done = new Set<number>();
    while (progress) {
      progress = false;
      for (let i = 0; i < d.ops.length; i++) {
        if (done.has(i)) continue;
        const o = d.ops[i]!;
        const hex = keyHex(d.agents[o.agent]!);
        const have = this.next.get(hex) ?? 0;
        if (o.seq + o.len <= have) {
          done.add(i);
          continue;
        }
        if (o.seq > have) continue;
        if (o.kind === OpKind.Insert) {
          const cps = o.text === "" ? null : Array.from(o.text);
          const firstOrigin = o.origin.agent === ROOT ? null : `${keyHex(d.agents[o.origin.agent]!)}:${o.origin.seq}`;
          if (firstOrigin !== null && !this.byId.has(firstOrigin) && have === o.seq) continue;
          for (let k = have - o.seq; k < o.len; k++) {
            const origin = k === 0 ? firstOrigin : `${hex}:${o.seq + k - 1}`;
            const it: Item = { id: `${hex}:${o.seq + k}`, hex, seq: o.seq + k, lamport: o.lamport + k, ch: cps ? cps[k]! : "?", deleted: cps === null };
            this.integrate(it, origin);
            this.clock = Math.max(this.clock, it.lamport);
          }
        } else {
          const th = keyHex(d.agents[o.target.agent]!);
          const skip = have - o.seq;
          let ok = true;
          for (let k = skip; k < o.len; k++) if (!this.byId.has(`${th}:${o.target.seq + k}`)) ok = false;
          if (!ok) continue;
          for (let k = skip; k < o.len; k++) this.byId.get(`${th}:${o.target.seq + k}`)!.deleted = true;
          this.clock = Math.max(this.clock, o.lamport + o.len - 1);
        }
        this.next.set(hex, o.seq + o.len);
        done.add(i);
        progress = true;
      }
    }
    if (done.size < d.ops.length) all = false;
    return all;
  }
}

/** mulberry32: a small seeded PRNG. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function keyFor(i: number): Uint8Array {
  const k = new Uint8Array(16);
  k[0] = 0x01;
  k[15] = i;
  k[7] = (i * 37) & 0xff; // keys that do not sort like their index
  return k;
}

const ALPHABET = ["a", "b", "c", "d", "e", " ", "é", "中", "😀", "🎉", "\n", "x", "y", "z"];
export function randomText(r: () => number, max: number): string {
  const n = 1 + Math.floor(r() * max);
  let s = "";
  for (let i = 0; i < n; i++) s += ALPHABET[Math.floor(r() * ALPHABET.length)];
  return s;
}
