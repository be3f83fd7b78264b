#!/usr/bin/env node
// Prints the markdown comparison table of one run.sh session:
//   node table.mjs WEFT_BENCH_OUTPUT HOCUSPOCUS_JSONL
// The first file is the text output of `go test -bench` on ./bench, the
// second the JSON lines of hocuspocus/run.mjs.
import { readFileSync } from 'node:fs'

const [weftFile, hpFile] = process.argv.slice(2)

// "BenchmarkFanout/clients=10-2   1   0 closed   100.0 delivered-% ..." → metrics
const weft = {}
for (const line of readFileSync(weftFile, 'utf8').split('\n')) {
  const m = line.match(/^(Benchmark\S+?)(-\d+)?\s+\d+\s+(.*)$/)
  if (!m) continue
  const metrics = {}
  const f = m[3].trim().split(/\s+/)
  for (let i = 0; i + 1 < f.length; i += 2) metrics[f[i + 1]] = Number(f[i])
  weft[m[1]] = metrics
}
const hp = {}
if (hpFile) {
  for (const line of readFileSync(hpFile, 'utf8').split('\n')) {
    if (!line.trim()) continue
    const r = JSON.parse(line)
    hp[r.scenario] = r.result ?? { error: r.error }
  }
}

const fmt = (x, digits = 1) => {
  if (x === undefined || x === null || Number.isNaN(x)) return '—'
  if (Math.abs(x) >= 1000) return Math.round(x).toLocaleString('en-US')
  return x.toFixed(digits)
}
const ratio = (a, b, higherBetter) => {
  if (!a || !b) return '—'
  const r = higherBetter ? a / b : b / a
  return `${r.toFixed(2)}×`
}
const rows = []
const row = (scenario, metric, w, h, higherBetter, target = '') => {
  rows.push(`| ${scenario} | ${metric} | ${fmt(w, 2)} | ${fmt(h, 2)} | ${ratio(w, h, higherBetter)} | ${target} |`)
}

// weft's ceiling: the sent rate of the last passing step.
const weftCeiling = (n) => {
  let best
  for (const [name, m] of Object.entries(weft)) {
    if (!name.startsWith(`BenchmarkFanoutCeiling/clients=${n}/`)) continue
    if (m['delivered-%'] >= 99 && m['p99-ms'] <= 100 && m.closed === 0) best = Math.max(best ?? 0, m['sent-ops/s'])
  }
  return best
}
const weftFailing = (n) => {
  for (const [name, m] of Object.entries(weft)) {
    if (name.startsWith(`BenchmarkFanoutCeiling/clients=${n}/`) && !(m['delivered-%'] >= 99 && m['p99-ms'] <= 100 && m.closed === 0)) return [name.split('/').pop(), m]
  }
  return []
}

for (const [i, n] of [10, 100, 500].entries()) {
  const w = weft[`BenchmarkFanout/clients=${n}`] ?? {}
  const h = (Array.isArray(hp.fanout) ? hp.fanout[i] : undefined) ?? {}
  const s = `fan-out, ${n} clients × ${h.rate ?? 5} ops/s`
  row(s, 'p50 ms', w['p50-ms'], h.p50, false)
  row(s, 'p99 ms', w['p99-ms'], h.p99, false, n === 500 ? '≤ 15 ms' : '')
  row(s, 'delivered ops/s', w['delivered-ops/s'], h.deliveredOpsPerSec, true)
  row(s, 'delivered %', w['delivered-%'], h.deliveredPct, true)
  row(s, 'server CPU s / 1k ops', w['srv-cpu-s/1k-ops'], h.srvCpuSPer1kOps, false)
  row(s, 'wire bytes / op (all clients)', w['wire-B/op'], h.wireBPerOp, false)
}
for (const [i, n] of [10, 100, 500].entries()) {
  const h = (Array.isArray(hp.ceiling) ? hp.ceiling[i] : undefined) ?? {}
  const target = n === 500 ? '≥ 3× Hocuspocus, 9,000 ops/s' : n === 10 ? 'p99 < 100 ms at 30,000 ops/s' : ''
  row(`fan-out ceiling, ${n} clients`, 'ops/s in (p99 ≤ 100 ms, ≥ 99 % delivered)', weftCeiling(n), h.ceilingOpsPerSec, true, target)
  const [step, m] = weftFailing(n)
  if (m) rows.push(`| fan-out ceiling, ${n} clients | weft's first failing step (${step}) | p99 ${fmt(m['p99-ms'])} ms, ${fmt(m['delivered-%'])} % delivered, ${fmt(m.closed, 0)} closed | | | graceful degradation |`)
  const hs = (h.steps ?? []).at(-1)
  if (hs) rows.push(`| fan-out ceiling, ${n} clients | Hocuspocus' last step (total=${hs.total}) | | p99 ${fmt(hs.p99)} ms, ${fmt(hs.deliveredPct)} % delivered, ${hs.closed} closed | | |`)
}
for (const docs of [1000, 10000]) {
  const w = weft[`BenchmarkManyDocs/docs=${docs}`] ?? {}
  const h = docs === 1000 ? hp.memory ?? {} : {}
  row(`${docs.toLocaleString('en-US')} idle 1 KB docs, 1.5 conns each`, 'server memory per doc, with its conns (B)', w['total-B/doc'], h.heapPerDocWithConns, false)
  row(`${docs.toLocaleString('en-US')} idle 1 KB docs`, 'one doc + one conn (B)', w['B/doc+conn'], undefined, false, '≤ 12 KB')
}
const wj = weft.BenchmarkColdJoin ?? {}
const hj = hp.join ?? {}
row('join automerge-paper (104,852 chars, 259,778 edits)', 'cold p50 ms', wj['cold-p50-ms'], hj.coldP50, false, '≤ 10 ms')
row('join automerge-paper', 'hot p50 ms', wj['hot-p50-ms'], hj.hotP50, false)
const wr = weft.BenchmarkResync ?? {}
const hr = hp.resync ?? {}
row('offline resync, 1,000 edits each side', 'p50 ms', wr['resync-p50-ms'], hr.p50, false, '≤ 8 ms')
for (const [name, m] of Object.entries(weft)) {
  if (name.startsWith('BenchmarkDurableWrites/')) {
    row(`durable writes (${name.split('/').slice(1).join(', ')})`, 'fsync-acked ops/s', m['acked-ops/s'], undefined, true, '≥ 20,000 ops/s')
  }
  if (name.startsWith('BenchmarkReconnectStorm/')) {
    row(`reconnect storm (${name.split('/')[1]})`, 'all rejoined ms', m['all-rejoined-ms'], undefined, false)
    row(`reconnect storm (${name.split('/')[1]})`, 'refused (429) / errors', m.refused, undefined, false, `${fmt(m.errors, 0)} errors`)
  }
}

console.log('| scenario | metric | weft | Hocuspocus | weft advantage | target |')
console.log('|---|---|---|---|---|---|')
for (const r of rows) console.log(r)
