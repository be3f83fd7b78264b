package client_test

import (
	"testing"
	"time"

	"github.com/weft-sync/weft/client"
	"github.com/weft-sync/weft/syncer"
)

// BenchmarkInsert measures a keystroke: applied locally, queued as a
// pending delta and sent; connected to a server on loopback, without and
// with a state file (one fsync'd commit per edit, or per group of edits
// when several goroutines edit).
func BenchmarkInsert(b *testing.B) {
	for _, state := range []bool{false, true} {
		name := "memory"
		if state {
			name = "state"
		}
		b.Run(name, func(b *testing.B) {
			ts := startServer(b, syncer.ServerOptions{Limits: syncer.Limits{OpsPerSecond: -1, BytesPerSecond: -1}})
			var o client.Options = fastOptions()
			if state {
				o.StatePath = b.TempDir() + "/state.db"
			}
			c := mustDial(b, ts.url(), o)
			d := mustOpen(b, c, "bench")
			waitSynced(b, d, 10*time.Second)
			b.ReportAllocs()
			for b.Loop() {
				if err := d.Insert(d.Len(), "x"); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			waitSynced(b, d, time.Minute)
			_ = c.Close()
		})
	}
}
