package bench

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/weft-sync/weft/syncer"
)

// BenchmarkManyDocs loads 1,000 and 10,000 documents of 1 KB, with one
// client on every document and a second one on every other document
// (1,500 and 15,000 connections), all idle, and reports the server's
// memory after GC:
//   - heap-B/doc: per loaded document once its clients are gone;
//   - heap-B/conn and stack-B/conn: per connection (session, socket
//     buffers, the read goroutine's stack);
//   - B/doc+conn: one idle document with one connection, heap and stacks,
//     the figure the ≤ 12 KB target is about;
//   - total-B/doc: all of it divided by the documents, with their 1.5
//     connections each.
//
// Admission is opened up and documents are kept loaded for an hour once
// idle; everything else is the server's default.
func BenchmarkManyDocs(b *testing.B) {
	for _, docs := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("docs=%d", docs), func(b *testing.B) {
			for b.Loop() {
				manyDocs(b, docs)
			}
		})
	}
}

func manyDocs(b *testing.B, docs int) {
	clients := docs + docs/2
	s := startServer(b, b.TempDir(), serverConfig{
		srv: syncer.ServerOptions{UpgradesPerSecond: 100000, JoinsPerSecond: 100000},
		hub: syncer.Options{IdleTimeout: time.Hour, InboxSize: *inboxFlag},
	})
	heap0, stack0 := memAfterGC()
	g, ready := startLoadgen(b, genConfig{Scenario: "hold", URL: s.url, Run: rand.Uint32(), Clients: clients, Docs: docs,
		DocPrefix: "doc-", TextBytes: 1024}, 10*time.Minute)
	if got := len(s.hub.Loaded()); got != docs {
		b.Fatalf("%d documents loaded, want %d", got, docs)
	}
	if !s.waitConns(clients, time.Minute) {
		b.Fatalf("%d connections, want %d", s.srv.Connections(), clients)
	}
	time.Sleep(500 * time.Millisecond) // let the last writes leave the queues
	heap2, stack2 := memAfterGC()
	if *heapFlag != "" {
		writeHeapProfile(b, *heapFlag)
	}
	g.call(genCmd{Cmd: "close"}, 5*time.Minute)
	if !s.waitConns(0, time.Minute) {
		b.Fatalf("%d connections still open after the clients left", s.srv.Connections())
	}
	heap1, stack1 := memAfterGC()
	if got := len(s.hub.Loaded()); got != docs {
		b.Fatalf("%d documents loaded after the clients left, want %d", got, docs)
	}
	g.stop()
	perDoc := (float64(heap1) - float64(heap0) + float64(stack1) - float64(stack0)) / float64(docs)
	heapDoc := (float64(heap1) - float64(heap0)) / float64(docs)
	heapConn := (float64(heap2) - float64(heap1)) / float64(clients)
	stackConn := (float64(stack2) - float64(stack1)) / float64(clients)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(heapDoc, "heap-B/doc")
	b.ReportMetric(perDoc-heapDoc, "stack-B/doc")
	b.ReportMetric(heapConn, "heap-B/conn")
	b.ReportMetric(stackConn, "stack-B/conn")
	b.ReportMetric(perDoc+heapConn+stackConn, "B/doc+conn")
	b.ReportMetric((float64(heap2)-float64(heap0)+float64(stack2)-float64(stack0))/float64(docs), "total-B/doc")
	b.ReportMetric(ready.ConnectMs, "connect-ms")
	b.Logf("docs=%d conns=%d: heap %d → %d (all connected) → %d (clients gone); stacks %d → %d → %d; connecting and writing took %.0f ms (refused %d, errors %d)",
		docs, clients, heap0, heap2, heap1, stack0, stack2, stack1, ready.ConnectMs, ready.Refused, ready.Errors)
}

func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}
