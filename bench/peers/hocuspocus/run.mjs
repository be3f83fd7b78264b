#!/usr/bin/env node
// Hocuspocus under the scenarios of weft's bench/, side by side:
//   fanout   one document, N clients typing one character per update at a
//            fixed rate: delivery latency p50/p99, delivered ops/s, server CPU
//   ceiling  the same with the total rate doubled per step until a step fails
//            (< 99 % delivered, p99 > 100 ms, or a connection lost)
//   memory   1,000 documents of 1 KB with 1.5 connections each: server heap
//   join     cold (server restarted, document from its file) and hot joins of
//            the automerge-paper trace as a Y.Doc, with a real provider
//   resync   1,000 offline edits on each side, time to converge
// The server runs in its own process (server.mjs); this process is the load
// generator. Typing clients speak the Hocuspocus protocol directly (auth,
// sync step 1, updates) with a Y.Doc of their own edits only, like weft's
// generator, so that the generator does not apply every broadcast; up to 20
// of them ("observers") decode what they receive and time it.
//
// usage: node run.mjs [scenario ...]   (default: all; one JSON line each)
// env: RATE (5), DUR_MS (5000), SAMPLES (20), TRACES (../../../../shared/traces)
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { gunzipSync } from 'node:zlib'
import WebSocket from 'ws'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import * as syncProtocol from 'y-protocols/sync'
import { HocuspocusProvider } from '@hocuspocus/provider'

const here = path.dirname(fileURLToPath(import.meta.url))
const RATE = Number(process.env.RATE ?? 5)
const DUR = Number(process.env.DUR_MS ?? 5000)
const SAMPLES = Number(process.env.SAMPLES ?? 20)
const TRACES = process.env.TRACES ?? path.join(here, '..', '..', '..', '..', 'shared', 'traces')
const PROVIDER_VERSION = '4.8.0'
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const now = () => performance.now()

// --- the server process -------------------------------------------------------

let nextPort = 21000 + Math.floor(Math.random() * 2000) * 2
async function startServer (persistDir) {
  const port = nextPort
  nextPort += 2
  const args = ['--expose-gc', path.join(here, 'server.mjs'), String(port)]
  if (persistDir) args.push(persistDir)
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  await new Promise((resolve, reject) => {
    proc.stdout.once('data', resolve)
    proc.once('exit', (code) => reject(new Error(`server exited ${code}`)))
  })
  const stats = async () => (await fetch(`http://127.0.0.1:${port + 1}/stats`)).json()
  const stop = async () => {
    if (proc.exitCode !== null) return
    const done = new Promise((r) => proc.once('exit', r))
    proc.kill('SIGTERM')
    const t = setTimeout(() => proc.kill('SIGKILL'), 15000)
    await done
    clearTimeout(t)
  }
  return { url: `ws://127.0.0.1:${port}`, stats, stop }
}

// --- a light protocol client --------------------------------------------------

function message (doc, type, write) {
  const e = encoding.createEncoder()
  encoding.writeVarString(e, doc)
  encoding.writeVarUint(e, type)
  write(e)
  return encoding.toUint8Array(e)
}

const srcIP = (i) => `127.0.${Math.floor((2 + Math.floor(i / 500)) / 256)}.${(2 + Math.floor(i / 500)) % 256}`

class LightClient {
  constructor (url, doc, i, { observe = false, sent = null } = {}) {
    this.doc = doc
    this.ydoc = new Y.Doc()
    this.text = this.ydoc.getText('t')
    this.observe = observe
    this.sent = sent // Map "client:clock" → send time, shared by all clients
    this.delivered = 0
    this.lat = []
    this.rx = 0
    this.tx = 0
    this.closedUnexpectedly = false
    this.ydoc.on('update', (u, origin) => {
      if (origin === 'remote') return
      this.send(message(doc, 0, (e) => syncProtocol.writeUpdate(e, u)))
    })
    this.synced = new Promise((resolve, reject) => { this.onSynced = resolve; this.onFail = reject })
    this.synced.catch(() => {}) // a close after the sync is no failure of it
    this.ws = new WebSocket(url, { localAddress: srcIP(i), perMessageDeflate: false })
    this.ws.binaryType = 'nodebuffer'
    this.ws.on('open', () => {
      this.send(message(doc, 2, (e) => { encoding.writeVarUint(e, 0); encoding.writeVarString(e, ''); encoding.writeVarString(e, PROVIDER_VERSION) }))
      this.send(message(doc, 0, (e) => syncProtocol.writeSyncStep1(e, this.ydoc)))
    })
    this.ws.on('message', (data) => this.recv(data))
    this.ws.on('error', (err) => this.onFail(err))
    this.ws.on('close', () => { if (!this.closing) this.closedUnexpectedly = true; this.onFail(new Error('closed')) })
  }

  send (b) {
    this.tx += b.length
    this.ws.send(b)
  }

  recv (data) {
    this.rx += data.length
    const d = decoding.createDecoder(data)
    decoding.readVarString(d)
    const type = decoding.readVarUint(d)
    if (type !== 0) return
    const sub = decoding.readVarUint(d)
    if (sub === syncProtocol.messageYjsSyncStep1) {
      const e = encoding.createEncoder()
      encoding.writeVarString(e, this.doc)
      encoding.writeVarUint(e, 0)
      syncProtocol.writeSyncStep2(e, this.ydoc, decoding.readVarUint8Array(d))
      this.send(encoding.toUint8Array(e))
    } else if (sub === syncProtocol.messageYjsSyncStep2) {
      this.onSynced()
    } else if (sub === syncProtocol.messageYjsUpdate && this.observe) {
      const t = now()
      const u = decoding.readVarUint8Array(d)
      for (const s of Y.decodeUpdate(u).structs) {
        if (s.id.client === this.ydoc.clientID) continue // own ops echoed back
        for (let k = 0; k < s.length; k++) {
          const at = this.sent.get(s.id.client * 4294967296 + s.id.clock + k)
          if (at !== undefined) { this.lat.push(t - at); this.delivered++ }
        }
      }
    }
  }

  type (ch = 'a') {
    const clock = Y.getState(this.ydoc.store, this.ydoc.clientID)
    if (this.sent) this.sent.set(this.ydoc.clientID * 4294967296 + clock, now())
    this.text.insert(this.text.length, ch)
  }

  close () {
    this.closing = true
    this.ws.close()
  }
}

async function connectAll (url, n, docOf, opts = () => ({})) {
  const clients = []
  for (let i = 0; i < n; i += 100) {
    const batch = []
    for (let j = i; j < Math.min(n, i + 100); j++) {
      const c = new LightClient(url, docOf(j), j, opts(j))
      clients.push(c)
      batch.push(c.synced)
    }
    await Promise.all(batch)
  }
  return clients
}

const pct = (xs, q) => {
  if (xs.length === 0) return 0
  const s = Float64Array.from(xs).sort()
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]
}

// --- fanout -------------------------------------------------------------------

async function fanoutStep (srv, clients, rate, dur) {
  for (const c of clients) { c.lat = []; c.delivered = 0; c.rx = 0; c.tx = 0 }
  const cpu0 = (await srv.stats()).cpuMs
  const gen0 = process.cpuUsage()
  const interval = 1000 / rate
  const start = now() + 50
  const end = start + dur
  let sent = 0
  const sentBy = new Map()
  // One timer loop for all clients: each has its next due time.
  const due = clients.map(() => start + Math.random() * interval)
  await new Promise((resolve) => {
    const tick = () => {
      const t = now()
      let next = Infinity
      for (let i = 0; i < clients.length; i++) {
        while (due[i] <= t && due[i] < end) {
          clients[i].type()
          sent++
          sentBy.set(i, (sentBy.get(i) ?? 0) + 1)
          due[i] += interval
        }
        if (due[i] < end) next = Math.min(next, due[i])
      }
      if (next === Infinity) return resolve()
      setTimeout(tick, Math.max(0, next - now()))
    }
    tick()
  })
  const sendEnd = now()
  const observers = clients.filter((c) => c.observe)
  const expectedAt = (c, i) => sent - (sentBy.get(clients.indexOf(c)) ?? 0)
  const drainUntil = now() + 5000
  while (now() < drainUntil && observers.some((c, i) => c.delivered < expectedAt(c, i))) await sleep(20)
  const cpu1 = (await srv.stats()).cpuMs
  const gen = process.cpuUsage(gen0)
  const lat = observers.flatMap((c) => c.lat)
  const delivered = observers.reduce((a, c) => a + c.delivered, 0)
  const expected = observers.reduce((a, c, i) => a + expectedAt(c, i), 0)
  const elapsed = (sendEnd - start) / 1000
  const rx = clients.reduce((a, c) => a + c.rx, 0)
  const tx = clients.reduce((a, c) => a + c.tx, 0)
  const deliveredFrac = expected ? delivered / expected : 0
  return {
    clients: clients.length,
    rate,
    total: rate * clients.length,
    sent,
    sentOpsPerSec: sent / elapsed,
    deliveredPct: 100 * deliveredFrac,
    deliveredOpsPerSec: (sent * (clients.length - 1) * deliveredFrac) / elapsed,
    p50: pct(lat, 0.5),
    p99: pct(lat, 0.99),
    max: pct(lat, 1),
    srvCpuSPer1kOps: sent ? (cpu1 - cpu0) / sent : 0,
    genCpuS: (gen.user + gen.system) / 1e6,
    wireBPerOp: sent ? (rx + tx) / sent : 0,
    closed: clients.filter((c) => c.closedUnexpectedly).length,
  }
}

async function withFanout (n, fn) {
  const srv = await startServer()
  try {
    const sent = new Map()
    const clients = await connectAll(srv.url, n, () => 'fanout', (i) => ({ observe: i < 20, sent }))
    try { return await fn(srv, clients) } finally { for (const c of clients) c.close() }
  } finally { await srv.stop() }
}

async function fanout () {
  const out = []
  for (const n of [10, 100, 500]) {
    out.push(await withFanout(n, async (srv, clients) => {
      await fanoutStep(srv, clients, RATE, 1000) // warm-up
      return fanoutStep(srv, clients, RATE, DUR)
    }))
  }
  return out
}

async function ceiling () {
  const out = []
  for (const n of [10, 100, 500]) {
    const steps = []
    await withFanout(n, async (srv, clients) => {
      for (let total = 1000; total <= 64000; total *= 2) {
        if (total / n < 1) continue
        const r = await fanoutStep(srv, clients, total / n, DUR / 2)
        steps.push(r)
        if (r.deliveredPct < 99 || r.p99 > 100 || r.closed > 0) break
      }
    })
    const ok = steps.filter((r) => r.deliveredPct >= 99 && r.p99 <= 100 && r.closed === 0)
    out.push({ clients: n, ceilingOpsPerSec: ok.length ? ok[ok.length - 1].sentOpsPerSec : 0, steps })
  }
  return out
}

// --- memory -------------------------------------------------------------------

async function memory () {
  const docs = 1000
  const conns = docs + docs / 2
  const srv = await startServer()
  try {
    const s0 = await srv.stats()
    const text = 'lorem ipsum dolor sit amet, consectetur adipiscing elit. '.repeat(20).slice(0, 1024)
    const clients = await connectAll(srv.url, conns, (i) => `doc-${i % docs}`)
    for (const c of clients.slice(0, docs)) c.text.insert(0, text)
    await sleep(3000)
    const s1 = await srv.stats()
    for (const c of clients) c.close()
    const per = (k) => (s1[k] - s0[k]) / docs
    return {
      docs, conns, loaded: s1.docs, connected: s1.conns,
      heapPerDocWithConns: per('heapUsed'),
      heapPlusExternalPerDoc: per('heapUsed') + per('external'),
      rssPerDoc: per('rss'),
    }
  } finally { await srv.stop() }
}

// --- join ---------------------------------------------------------------------

function traceDoc () {
  const file = path.join(TRACES, 'automerge-paper.json.gz')
  if (!existsSync(file)) throw new Error(`editing trace missing: ${file}`)
  const t = JSON.parse(gunzipSync(readFileSync(file)).toString())
  const doc = new Y.Doc()
  const text = doc.getText('t')
  for (const tx of t.txns) {
    for (const [pos, del, ins] of tx.patches) {
      doc.transact(() => {
        if (del > 0) text.delete(pos, del)
        if (ins !== '') text.insert(pos, ins)
      })
    }
  }
  if (text.toString() !== t.endContent) throw new Error('trace replay does not end in endContent')
  return { update: Y.encodeStateAsUpdate(doc), length: text.length }
}

// joinOnce connects a real provider with an empty Y.Doc and resolves with the
// time until it is synced and holds the whole text.
function joinOnce (url, name, length) {
  return new Promise((resolve, reject) => {
    const t0 = now()
    const ydoc = new Y.Doc()
    const p = new HocuspocusProvider({ url, WebSocketPolyfill: WebSocket, name, document: ydoc })
    const timer = setTimeout(() => reject(new Error('join timed out')), 60000)
    p.on('synced', () => {
      const took = now() - t0
      clearTimeout(timer)
      const ok = ydoc.getText('t').length === length
      p.destroy()
      ok ? resolve(took) : reject(new Error('joined text has the wrong length'))
    })
  })
}

async function join () {
  const { update, length } = traceDoc()
  const dir = mkdtempSync(path.join(tmpdir(), 'hocuspocus-'))
  let srv = await startServer(dir)
  try {
    // Write the document through the server; closing the last connection
    // unloads it, which stores it.
    const w = new LightClient(srv.url, 'automerge-paper', 0)
    await w.synced
    Y.applyUpdate(w.ydoc, update)
    await sleep(1000)
    w.close()
    for (let i = 0; i < 100 && (await srv.stats()).docs > 0; i++) await sleep(100)
    const cold = []
    for (let i = 0; i < SAMPLES; i++) {
      await srv.stop()
      srv = await startServer(dir)
      cold.push(await joinOnce(srv.url, 'automerge-paper', length))
      await sleep(200)
    }
    const holder = new LightClient(srv.url, 'automerge-paper', 0)
    await holder.synced
    const hot = []
    for (let i = 0; i < SAMPLES; i++) hot.push(await joinOnce(srv.url, 'automerge-paper', length))
    holder.close()
    return { chars: length, updateBytes: update.length, coldP50: pct(cold, 0.5), coldMax: pct(cold, 1), hotP50: pct(hot, 0.5), hotMax: pct(hot, 1) }
  } finally {
    await srv.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

// --- resync -------------------------------------------------------------------

function provider (url, name, ydoc) {
  const p = new HocuspocusProvider({ url, WebSocketPolyfill: WebSocket, name, document: ydoc })
  const synced = new Promise((resolve) => p.on('synced', resolve))
  return { p, synced, destroy: () => p.destroy() }
}

function randomEdit (text, rnd) {
  const n = text.length
  if (n > 0 && rnd() < 0.25) text.delete(Math.floor(rnd() * n), 1)
  else text.insert(Math.floor(rnd() * (n + 1)), String.fromCharCode(97 + Math.floor(rnd() * 26)))
}

async function resync () {
  const srv = await startServer()
  let seed = 1
  const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 }
  const took = []
  try {
    for (let i = 0; i < SAMPLES; i++) {
      const name = `resync-${i}`
      const da = new Y.Doc()
      const db = new Y.Doc()
      const a = provider(srv.url, name, da)
      let b = provider(srv.url, name, db)
      await Promise.all([a.synced, b.synced])
      da.getText('t').insert(0, 'lorem ipsum dolor sit amet, consectetur adipiscing elit. '.repeat(20).slice(0, 1024))
      while (db.getText('t').length !== 1024) await sleep(5)
      b.destroy()
      for (let k = 0; k < 1000; k++) randomEdit(da.getText('t'), rnd)
      while (a.p.hasUnsyncedChanges) await sleep(5)
      for (let k = 0; k < 1000; k++) randomEdit(db.getText('t'), rnd)
      const t0 = now()
      const done = new Promise((resolve) => {
        const check = () => {
          if (da.getText('t').toString() === db.getText('t').toString()) {
            da.off('update', check)
            db.off('update', check)
            resolve()
          }
        }
        da.on('update', check)
        db.on('update', check)
      })
      b = provider(srv.url, name, db)
      await done
      took.push(now() - t0)
      a.destroy()
      b.destroy()
    }
    return { edits: 1000, p50: pct(took, 0.5), max: pct(took, 1) }
  } finally { await srv.stop() }
}

const scenarios = { fanout, ceiling, memory, join, resync }
const want = process.argv.slice(2).length ? process.argv.slice(2) : Object.keys(scenarios)
for (const name of want) {
  if (!scenarios[name]) { console.error(`unknown scenario ${name}`); process.exit(2) }
  try {
    process.stdout.write(JSON.stringify({ scenario: name, result: await scenarios[name]() }) + '\n')
  } catch (err) {
    process.stdout.write(JSON.stringify({ scenario: name, error: String(err?.stack ?? err) }) + '\n')
  }
}
process.exit(0)
