#!/usr/bin/env node
// Side-by-side replay of a sequential editing trace through peer CRDT
// libraries (Yjs, Loro, json-joy, Automerge, diamond-types), printing one JSON
// line per peer with the same field names as `weft trace`:
//   apply_ms, merge_ms, snapshot_bytes, load_ms (+ ok, version, extras).
//
// Usage:
//   node --expose-gc run.mjs [TRACE.json.gz] [--runs N] [--automerge-runs N]
//                            [--warmup N] [--peers yjs,loro,...]
//
// Each peer runs in its own child process so that JIT state, heap size and
// WASM memory of one library cannot skew another's numbers.

import { spawnSync } from 'node:child_process';
import { readFileSync, existsSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..', '..', '..');
const DEFAULT_TRACE = resolve(REPO, '..', 'shared', 'traces', 'automerge-paper.json.gz');
const require = createRequire(import.meta.url);

const ALL_PEERS = ['yjs', 'loro', 'json-joy', 'automerge', 'diamond-types'];
const PKG = {
  yjs: 'yjs',
  loro: 'loro-crdt',
  'json-joy': 'json-joy',
  automerge: '@automerge/automerge',
  'diamond-types': 'diamond-types-node',
};

// ---------------------------------------------------------------- arguments

function parseArgs(argv) {
  const o = { trace: null, runs: 5, automergeRuns: 3, warmup: 1, peers: ALL_PEERS, child: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) die(`missing value after ${a}`);
      return argv[++i];
    };
    const int = (s) => {
      const n = Number(s);
      if (!Number.isInteger(n) || n < 0) die(`${a} wants a non-negative integer, got ${JSON.stringify(s)}`);
      return n;
    };
    if (a === '--runs') o.runs = int(val());
    else if (a === '--automerge-runs') o.automergeRuns = int(val());
    else if (a === '--warmup') o.warmup = int(val());
    else if (a === '--peers') o.peers = val().split(',').map((s) => s.trim()).filter(Boolean);
    else if (a === '--child') o.child = val();
    else if (a === '-h' || a === '--help') {
      console.log('usage: node --expose-gc run.mjs [TRACE.json.gz] [--runs N] [--automerge-runs N] [--warmup N] [--peers ' + ALL_PEERS.join(',') + ']');
      process.exit(0);
    } else if (a.startsWith('-')) die(`unknown option ${a}`);
    else if (o.trace === null) o.trace = a;
    else die(`unexpected argument ${a}`);
  }
  for (const p of o.peers) if (!ALL_PEERS.includes(p)) die(`unknown peer ${p}; known: ${ALL_PEERS.join(', ')}`);
  if (o.runs < 1) die('--runs must be at least 1');
  if (o.automergeRuns < 1) die('--automerge-runs must be at least 1');
  o.trace = resolve(o.trace ?? DEFAULT_TRACE);
  return o;
}

function die(msg) {
  console.error(`run.mjs: ${msg}`);
  process.exit(2);
}

// -------------------------------------------------------------------- trace

function loadTrace(path) {
  if (!existsSync(path)) {
    die(`trace not found: ${path}\n` +
      `  (default is <repo>/../shared/traces/automerge-paper.json.gz; pass a path as the first argument to override)`);
  }
  let raw = readFileSync(path);
  if (raw[0] === 0x1f && raw[1] === 0x8b) raw = gunzipSync(raw);
  const t = JSON.parse(raw.toString('utf8'));
  if (typeof t.endContent !== 'string' || !Array.isArray(t.txns)) {
    die(`${path} is not a sequential editing trace ({startContent, endContent, txns:[{patches}]})`);
  }
  // Flatten to [pos, del, ins] triples in code points, one group per txn.
  const txns = [];
  if (t.startContent) txns.push([[0, 0, t.startContent]]);
  for (const tx of t.txns) txns.push(tx.patches);
  return { txnsCp: txns, endContent: t.endContent };
}

// JS strings (and Yjs, Loro, json-joy, Automerge's JS API) index in UTF-16
// code units; the trace and diamond-types index in code points. When the trace
// holds no astral characters the two agree and the patches are reused as is;
// otherwise positions and delete lengths are converted by replaying the trace
// once on a chunked plain-text document.
function hasAstral(txns) {
  for (const tx of txns) for (const p of tx) if (/[\ud800-\udfff]/.test(p[2])) return true;
  return false;
}

function toUtf16(txns) {
  const CH = 512; // code points per chunk (soft)
  let chunks = [[]]; // arrays of code-point strings
  const out = [];
  const locate = (cp) => { // -> [chunk index, offset in chunk, utf16 prefix]
    let u = 0;
    for (let i = 0; i < chunks.length; i++) {
      const c = chunks[i];
      if (cp <= c.length && (cp < c.length || i === chunks.length - 1)) {
        for (let k = 0; k < cp; k++) u += c[k].length;
        return [i, cp, u];
      }
      cp -= c.length;
      for (const s of c) u += s.length;
    }
    throw new Error('position past end of document');
  };
  for (const tx of txns) {
    const otx = [];
    for (const [pos, del, ins] of tx) {
      let [ci, off, u16] = locate(pos);
      let delU = 0;
      let left = del;
      let i = ci, o = off;
      while (left > 0) {
        const c = chunks[i];
        const n = Math.min(left, c.length - o);
        for (const s of c.splice(o, n)) delU += s.length;
        left -= n;
        if (left > 0) { i++; o = 0; if (i >= chunks.length) throw new Error('delete past end'); }
      }
      const cps = Array.from(ins);
      chunks[ci].splice(off, 0, ...cps);
      if (chunks[ci].length > 2 * CH) {
        const c = chunks[ci];
        const parts = [];
        for (let k = 0; k < c.length; k += CH) parts.push(c.slice(k, k + CH));
        chunks.splice(ci, 1, ...parts);
      }
      if (chunks.length > 1) chunks = chunks.filter((c) => c.length > 0);
      if (chunks.length === 0) chunks = [[]];
      otx.push([u16, delU, ins]);
    }
    out.push(otx);
  }
  return out;
}

// ------------------------------------------------------------------- peers
// Every driver returns plain functions; timed phases always end by reading
// the document text, so a library that decodes lazily pays for it inside the
// phase that is timed.

async function makeDriver(peer) {
  switch (peer) {
    case 'yjs': {
      const Y = await import('yjs');
      return {
        apply(txns) {
          const doc = new Y.Doc();
          // Yjs picks a random 32-bit client id, and every item stores its
          // origin ids as varints, so the encoded size varies with it; fix
          // one of typical (5-byte varint) size for repeatable numbers.
          doc.clientID = 0x9e3779b9;
          const text = doc.getText('text');
          for (const tx of txns) {
            doc.transact(() => {
              for (const [pos, del, ins] of tx) {
                if (del) text.delete(pos, del);
                if (ins) text.insert(pos, ins);
              }
            });
          }
          return { doc, text: text.toString() };
        },
        // What a new replica receives in sync step 2 (state vector empty).
        history: (s) => Y.encodeStateAsUpdate(s.doc, new Uint8Array([0])),
        merge(update) {
          const doc = new Y.Doc();
          Y.applyUpdate(doc, update);
          return { doc, text: doc.getText('text').toString() };
        },
        snapshot: (s) => Y.encodeStateAsUpdate(s.doc),
        load(bytes) {
          const doc = new Y.Doc();
          Y.applyUpdate(doc, bytes);
          return { doc, text: doc.getText('text').toString() };
        },
        free: (s) => s.doc.destroy(),
      };
    }
    case 'loro': {
      const { LoroDoc } = await import('loro-crdt');
      return {
        apply(txns) {
          const doc = new LoroDoc();
          doc.setPeerId(0x9e3779b97f4a7c15n); // fixed, full-width, like a random peer id
          const text = doc.getText('text');
          for (const tx of txns) {
            for (const [pos, del, ins] of tx) {
              if (del) text.delete(pos, del);
              if (ins) text.insert(pos, ins);
            }
            doc.commit();
          }
          return { doc, text: text.toString() };
        },
        history: (s) => s.doc.export({ mode: 'update' }),
        merge(bytes) {
          const doc = new LoroDoc();
          doc.import(bytes);
          return { doc, text: doc.getText('text').toString() };
        },
        snapshot: (s) => s.doc.export({ mode: 'snapshot' }),
        load(bytes) {
          const doc = LoroDoc.fromSnapshot(bytes);
          return { doc, text: doc.getText('text').toString() };
        },
        free: (s) => s.doc.free(),
      };
    }
    case 'json-joy': {
      const { Model, Patch, s: schema } = require('json-joy/lib/json-crdt/index.js');
      return {
        apply(txns) {
          const model = Model.create(schema.str(''), 0x1779b97f4a7c15); // fixed session id, as wide as Model.sid() draws (53 bits)
          const patches = [model.api.flush()]; // the patch that creates the root string
          const str = model.api.str([]);
          for (const tx of txns) {
            for (const [pos, del, ins] of tx) {
              if (del) str.del(pos, del);
              if (ins) str.ins(pos, ins);
            }
            const patch = model.api.flush();
            if (patch.ops.length) patches.push(patch);
          }
          return { model, patches, text: str.view() };
        },
        // The patch log, one binary JSON CRDT Patch per transaction.
        history: (s) => s.patches.map((p) => p.toBinary()),
        merge(blobs) {
          const model = Model.create(undefined, 0x1f4a7c159e3779);
          model.applyBatch(blobs.map((b) => Patch.fromBinary(b)));
          return { model, text: model.view() };
        },
        snapshot: (s) => s.model.toBinary(),
        load(bytes) {
          const model = Model.fromBinary(bytes);
          return { model, text: model.view() };
        },
        free: () => {},
      };
    }
    case 'automerge': {
      const A = await import('@automerge/automerge');
      const actor = '0123456789abcdef0123456789abcdef';
      return {
        apply(txns) {
          let doc = A.change(A.init({ actor }), (d) => { d.text = ''; });
          for (const tx of txns) {
            doc = A.change(doc, (d) => {
              for (const [pos, del, ins] of tx) A.splice(d, ['text'], pos, del, ins);
            });
          }
          return { doc, text: doc.text };
        },
        history: (s) => A.getAllChanges(s.doc),
        merge(changes) {
          const [doc] = A.applyChanges(A.init(), changes);
          return { doc, text: doc.text };
        },
        snapshot: (s) => A.save(s.doc),
        load(bytes) {
          const doc = A.load(bytes);
          return { doc, text: doc.text };
        },
        free: (s) => A.free(s.doc),
      };
    }
    case 'diamond-types': {
      const { Doc } = require('diamond-types-node');
      return {
        codePoints: true, // diamond-types positions are unicode code points
        apply(txns) {
          const doc = new Doc('weft');
          for (const tx of txns) {
            for (const [pos, del, ins] of tx) {
              if (del) doc.del(pos, del);
              if (ins) doc.ins(pos, ins);
            }
          }
          return { doc, text: doc.get() };
        },
        // Everything since the empty version, as sent to a replica that has nothing.
        history: (s) => s.doc.getPatchSince(new Uint32Array(0)),
        merge(bytes) {
          const doc = new Doc('reader');
          doc.mergeBytes(bytes);
          return { doc, text: doc.get() };
        },
        snapshot: (s) => s.doc.toBytes(),
        load(bytes) {
          const doc = Doc.fromBytes(bytes, 'reader');
          return { doc, text: doc.get() };
        },
        free: (s) => s.doc.free(),
      };
    }
  }
  throw new Error(`no driver for ${peer}`);
}

function versionOf(peer) {
  const p = join(HERE, 'node_modules', PKG[peer], 'package.json');
  return JSON.parse(readFileSync(p, 'utf8')).version;
}

// ------------------------------------------------------------------- timing

const gc = typeof globalThis.gc === 'function' ? globalThis.gc : () => {};

function median(xs) {
  const a = [...xs].sort((x, y) => x - y);
  const m = a.length >> 1;
  return a.length % 2 ? a[m] : (a[m - 1] + a[m]) / 2;
}

const round = (x) => Math.round(x * 100) / 100;
const sizeOf = (h) => (h instanceof Uint8Array ? h.byteLength : h.reduce((n, b) => n + b.byteLength, 0));

// Runs fn `warmup + runs` times; returns the median time of the last `runs`
// and the last result. `release` frees each result except the last.
function timed(fn, runs, warmup, release) {
  const times = [];
  let last = null;
  for (let i = 0; i < warmup + runs; i++) {
    if (last) { release(last); last = null; }
    gc();
    const t0 = performance.now();
    const r = fn();
    const t1 = performance.now();
    if (i >= warmup) times.push(t1 - t0);
    last = r;
  }
  return { ms: median(times), result: last };
}

async function runChild(opts) {
  const peer = opts.child;
  const runs = peer === 'automerge' ? Math.min(opts.runs, opts.automergeRuns) : opts.runs;
  const warmup = peer === 'automerge' ? 0 : opts.warmup;
  const { txnsCp, endContent } = loadTrace(opts.trace);
  const drv = await makeDriver(peer);
  const astral = hasAstral(txnsCp);
  const txns = drv.codePoints || !astral ? txnsCp : toUtf16(txnsCp);
  const out = { peer, version: versionOf(peer) };

  const apply = timed(() => drv.apply(txns), runs, warmup, drv.free);
  const doc = apply.result;
  let ok = doc.text === endContent;

  const hist = drv.history(doc);
  const merge = timed(() => drv.merge(hist), runs, warmup, drv.free);
  ok = ok && merge.result.text === endContent;
  drv.free(merge.result);

  const snap = drv.snapshot(doc);
  const load = timed(() => drv.load(snap), runs, warmup, drv.free);
  ok = ok && load.result.text === endContent;
  drv.free(load.result);
  drv.free(doc);

  Object.assign(out, {
    apply_ms: round(apply.ms),
    merge_ms: round(merge.ms),
    snapshot_bytes: snap.byteLength,
    load_ms: round(load.ms),
    ok,
    runs,
    merge_bytes: sizeOf(hist),
    edits: txnsCp.reduce((n, tx) => n + tx.length, 0),
    ...(astral && !drv.codePoints ? { utf16_converted: true } : {}),
  });
  process.stdout.write(JSON.stringify(out) + '\n');
}

// ------------------------------------------------------------------- parent

function runParent(opts) {
  loadTrace(opts.trace); // fail early, with the message, if it is missing or malformed
  const started = performance.now();
  let failed = 0;
  for (const peer of opts.peers) {
    const t0 = performance.now();
    const args = ['--expose-gc', '--max-old-space-size=8192', fileURLToPath(import.meta.url), opts.trace,
      '--child', peer, '--runs', String(opts.runs), '--automerge-runs', String(opts.automergeRuns),
      '--warmup', String(opts.warmup)];
    const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'pipe'] });
    const line = (r.stdout || '').trim().split('\n').filter(Boolean).pop();
    let rec = null;
    try { rec = line ? JSON.parse(line) : null; } catch { rec = null; }
    if (r.status !== 0 || !rec) {
      failed++;
      const errLines = (r.stderr || '').split('\n').filter((l) => /Error|error:|abort|heap/i.test(l));
      const why = (r.error ? String(r.error) : '') || errLines.slice(0, 2).join(' | ').trim() || `exit ${r.status}, signal ${r.signal}`;
      let version = null;
      try { version = versionOf(peer); } catch { /* not installed */ }
      rec = { peer, version, ok: false, error: why };
    } else if (!rec.ok) {
      failed++;
    }
    process.stdout.write(JSON.stringify(rec) + '\n');
    process.stderr.write(`# ${peer}: ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  }
  process.stderr.write(`# total: ${((performance.now() - started) / 1000).toFixed(1)} s, node ${process.version}, trace ${opts.trace}\n`);
  process.exitCode = failed ? 1 : 0;
}

const opts = parseArgs(process.argv.slice(2));
if (opts.child) await runChild(opts);
else runParent(opts);
