#!/usr/bin/env node
// Prints the Yorkie rows of one run.sh session beside weft and Hocuspocus:
//   node yorkie/table.mjs WEFT_BENCH_OUTPUT HOCUSPOCUS_JSONL YORKIE_JSONL
// Any file may be missing or empty (that column is then "—"). The last
// column holds the figures for Yorkie 0.7.17 quoted in the issue that asked
// for this comparison, for reference; they were not measured here.
import { existsSync, readFileSync } from 'node:fs'

const [weftFile, hpFile, yFile] = process.argv.slice(2)
const read = (f) => (f && existsSync(f) ? readFileSync(f, 'utf8') : '')

const weft = {}
for (const line of read(weftFile).split('\n')) {
  const m = line.match(/^(Benchmark\S+?)(-\d+)?\s+\d+\s+(.*)$/)
  if (!m) continue
  const metrics = {}
  const f = m[3].trim().split(/\s+/)
  for (let i = 0; i + 1 < f.length; i += 2) metrics[f[i + 1]] = Number(f[i])
  weft[m[1]] = metrics
}
const jsonl = (text) => {
  const out = {}
  for (const line of text.split('\n')) {
    if (!line.trim().startsWith('{')) continue
    try {
      const r = JSON.parse(line)
      out[r.scenario] = r
    } catch {}
  }
  return out
}
const hp = jsonl(read(hpFile))
const y = jsonl(read(yFile))
const version = Object.values(y)[0]?.yorkie ?? '?'

const fmt = (x, digits = 2) => {
  if (x === undefined || x === null || Number.isNaN(x)) return '—'
  if (typeof x === 'string') return x
  if (Math.abs(x) >= 1000) return Math.round(x).toLocaleString('en-US')
  return x.toFixed(digits)
}
const rows = []
const row = (scenario, metric, w, h, yv, ref = '') => rows.push(`| ${scenario} | ${metric} | ${fmt(w)} | ${fmt(h)} | ${fmt(yv)} | ${ref} |`)
const notes = []

const hpFan = Array.isArray(hp.fanout?.result) ? hp.fanout.result : []
const yFan = Array.isArray(y.fanout?.result) ? y.fanout.result : []
for (const n of [10, 100]) {
  const w = weft[`BenchmarkFanout/clients=${n}`] ?? {}
  const h = hpFan.find((r) => r.clients === n) ?? {}
  const yr = yFan.find((r) => r.clients === n) ?? {}
  const s = `fan-out, ${n} clients × ${yr.rate ?? h.rate ?? 5} ops/s`
  row(s, 'p50 ms', w['p50-ms'], h.p50, yr.p50, n === 10 ? '64' : '')
  row(s, 'p99 ms', w['p99-ms'], h.p99, yr.p99, n === 10 ? '134' : '')
  row(s, 'delivered %', w['delivered-%'], h.deliveredPct, yr.deliveredPct)
  row(s, 'sent ops/s (target ' + n * (yr.rate ?? 5) + ')', w['sent-ops/s'], h.sentOpsPerSec, yr.sentOpsPerSec)
  row(s, 'server CPU s / 1k ops', w['srv-cpu-s/1k-ops'], h.srvCpuSPer1kOps, yr.srvCpuSPer1kOps)
  row(s, 'generator CPU s (whole step)', undefined, h.genCpuS, yr.genCpuS)
  row(s, 'wire bytes / op (all clients)', w['wire-B/op'], h.wireBPerOp, yr.wireBPerOp)
}
if (y.fanout?.error) notes.push(`Yorkie fan-out failed: ${y.fanout.error}`)

const wm = weft['BenchmarkManyDocs/docs=1000'] ?? {}
const hm = hp.memory?.result ?? {}
const ym = y.memory?.result ?? {}
const docs = ym.docs ?? 1000
row(`${docs.toLocaleString('en-US')} idle 1 KB docs`, 'server heap per doc, with its conns (B): weft, Hocuspocus 1.5 conns/doc, Yorkie 1', wm['total-B/doc'], hm.heapPerDocWithConns, ym.heapPerDoc)
row(`${docs.toLocaleString('en-US')} idle 1 KB docs`, 'server RSS per doc (B)', undefined, hm.rssPerDoc, ym.rssPerDoc, '~153 KB')
if (y.memory?.error) notes.push(`Yorkie memory failed: ${y.memory.error}`)

const wj = weft.BenchmarkColdJoin ?? {}
const hj = hp.join?.result ?? {}
const yj = y.join?.result ?? {}
const how = yj.mode === 'final' ? ', end text as one insert' : yj.mode === 'history' ? ', all edits, 100 per change' : ''
row('join automerge-paper (104,852 chars)', `p50 ms: weft, Hocuspocus cold (server restarted); Yorkie fresh client, no restart${how}`, wj['cold-p50-ms'], hj.coldP50, yj.coldP50, '543')
if (y.join?.error) notes.push(`Yorkie join failed: ${y.join.error}`)

console.log(`| scenario | metric | weft | Hocuspocus | Yorkie ${version} | Yorkie 0.7.17 (issue, not measured here) |`)
console.log('|---|---|---|---|---|---|')
for (const r of rows) console.log(r)
const loads = Object.values(y).map((r) => `${r.scenario} ${r.loadavg?.join('→') ?? '?'}`).join(', ')
if (loads) notes.push(`1-minute load average around the Yorkie scenarios: ${loads}.`)
if (yFan[0]?.syncMode) notes.push(`Yorkie clients: Go SDK, ${yFan[0].syncMode}; latency from the local Update to the change being in an observer's document (polled every ${yFan[0].pollMs} ms).`)
if (yj.mode) {
  const wrote = yj.mode === 'history' ? `the whole history (${fmt(yj.edits, 0)} edits as ${fmt(yj.changes, 0)} changes, written in ${fmt(yj.writeSeconds, 0)} s)` : 'the end text as one insert'
  notes.push(`Yorkie join: the document holds ${wrote}; each of ${yj.samples?.length ?? '?'} fresh clients activates and attaches (realtime) until it holds the whole text. The memory database does not survive a restart, so unlike weft's and Hocuspocus' cold joins the server was not restarted before each join.`)
}
if (!Object.keys(y).length) notes.push('No Yorkie results (see the run.sh output for why).')
for (const n of notes) console.log(`\n${n}`)
