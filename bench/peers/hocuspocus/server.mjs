#!/usr/bin/env node
// A Hocuspocus server for the side-by-side load runs, in its own process
// (as weft's server is in the benchmark process and its clients in a
// child): node --expose-gc server.mjs PORT [PERSIST_DIR]
//
// Without PERSIST_DIR documents live in memory only. With it, the
// Database extension keeps each document's Yjs state in a file there,
// written by Hocuspocus' own debounced store (2 s debounce, 10 s max, and
// on unload), which is the durability Hocuspocus offers.
//
// GET http://127.0.0.1:PORT+1/stats answers with this process's CPU time
// and its memory after a full GC, plus the loaded documents and the
// connections.
import http from 'node:http'
import { mkdirSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { Server } from '@hocuspocus/server'
import { Database } from '@hocuspocus/extension-database'

const port = Number(process.argv[2])
const dir = process.argv[3]
const extensions = []
if (dir) {
  mkdirSync(dir, { recursive: true })
  const file = (name) => path.join(dir, encodeURIComponent(name))
  extensions.push(new Database({
    fetch: async ({ documentName }) => {
      try { return new Uint8Array(await readFile(file(documentName))) } catch { return null }
    },
    store: async ({ documentName, state }) => { await writeFile(file(documentName), state) },
  }))
}

const server = new Server({ port, address: '127.0.0.1', quiet: true, extensions })
await server.listen()

http.createServer((req, res) => {
  if (global.gc) { global.gc(); global.gc() }
  const cpu = process.cpuUsage()
  const mem = process.memoryUsage()
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({
    cpuMs: (cpu.user + cpu.system) / 1000,
    heapUsed: mem.heapUsed, external: mem.external, arrayBuffers: mem.arrayBuffers, rss: mem.rss,
    docs: server.hocuspocus.getDocumentsCount(), conns: server.hocuspocus.getConnectionsCount(),
  }))
}).listen(port + 1, '127.0.0.1', () => process.stdout.write('ready\n'))

const stop = async () => {
  server.hocuspocus.flushPendingStores()
  await server.destroy()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
