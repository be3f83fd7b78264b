package bench

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/weft-sync/weft/syncer"
)

// BenchmarkDurableWrites: many clients editing many documents (two per
// document), each keeping 4 one-character Deltas unacknowledged at a time
// for -bench.dur. An Ack leaves the server only after the op-log record
// holding the delta is fsynced (bbolt, group commit), so acked-ops/s is
// durable throughput. Also reported: ack latency (send to Ack) and how
// many acked ops one fsync carried. The server runs with its defaults
// (per-connection rate limits included) apart from admission.
func BenchmarkDurableWrites(b *testing.B) {
	sizes := [][2]int{{100, 200}}
	if *largeFlag {
		sizes = append(sizes, [2]int{1000, 2000})
	}
	for _, sz := range sizes {
		docs, clients := sz[0], sz[1]
		b.Run(fmt.Sprintf("docs=%d/clients=%d", docs, clients), func(b *testing.B) {
			s := startServer(b, b.TempDir(), serverConfig{srv: syncer.ServerOptions{UpgradesPerSecond: 100000, JoinsPerSecond: 100000}})
			g, _ := startLoadgen(b, genConfig{Scenario: "durable", URL: s.url, Run: rand.Uint32(), Clients: clients, Docs: docs,
				DocPrefix: "durable-", Window: 4}, 5*time.Minute)
			g.call(genCmd{Cmd: "durable", Dur: time.Second}, 2*time.Minute) // warm-up
			var acked, sent, errs int64
			var p50, p99 float64
			var elapsed float64
			var cpu time.Duration
			var groups, records uint64
			for b.Loop() {
				st0 := s.db.Stats()
				cpu0 := cpuTime()
				r := g.call(genCmd{Cmd: "durable", Dur: *durFlag}, *durFlag+2*time.Minute)
				cpu += cpuTime() - cpu0
				st1 := s.db.Stats()
				groups += st1.Groups - st0.Groups
				records += st1.Records - st0.Records
				acked += r.Delivered
				sent += r.Sent
				errs += r.Errors
				elapsed += r.ElapsedMs / 1000
				p50, p99 = max(p50, r.P50), max(p99, r.P99)
				if r.Errors > 0 || r.Closed > 0 {
					b.Logf("errors %d, closed %d: %s", r.Errors, r.Closed, r.ErrSample)
				}
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(acked)/elapsed, "acked-ops/s")
			b.ReportMetric(p50, "ack-p50-ms")
			b.ReportMetric(p99, "ack-p99-ms")
			if groups > 0 {
				b.ReportMetric(float64(records)/float64(groups), "records/fsync")
				b.ReportMetric(float64(groups)/elapsed, "fsyncs/s")
			}
			if acked > 0 {
				b.ReportMetric(cpu.Seconds()/float64(acked)*1000, "srv-cpu-s/1k-ops")
			}
			b.ReportMetric(float64(errs), "errors")
		})
	}
}

// BenchmarkReconnectStorm: N clients (10 per document) are connected and
// joined; then every connection drops at once, as after a network failure,
// and every client reconnects at once, retrying refusals with full-jitter
// backoff and never sooner than the server's Retry-After. Reported: the
// time until every client has rejoined (its Sync received), the median
// and p99 client, refusals (HTTP 429 from admission control, overloaded
// joins) and errors (anything else). The server runs with its default
// admission control (500 upgrades/s, burst 1,000).
func BenchmarkReconnectStorm(b *testing.B) {
	sizes := []int{1000}
	if *largeFlag {
		sizes = append(sizes, 10000)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			s := startServer(b, b.TempDir(), serverConfig{})
			g, _ := startLoadgen(b, genConfig{Scenario: "storm", URL: s.url, Run: rand.Uint32(), Clients: n, Docs: max(n/10, 1),
				DocPrefix: "storm-", TextBytes: 256}, 10*time.Minute)
			var all, p50, p99 float64
			var refused, errs int64
			unfinished := 0
			for b.Loop() {
				r := g.call(genCmd{Cmd: "storm"}, 5*time.Minute)
				all, p50, p99 = max(all, r.RejoinAll), max(p50, r.RejoinP50), max(p99, r.RejoinP99)
				refused += r.Refused
				errs += r.Errors
				unfinished += r.Unfinished
				if r.Errors > 0 {
					b.Logf("errors: %d, e.g. %s", r.Errors, r.ErrSample)
				}
			}
			if got := s.srv.Connections(); got != n {
				b.Errorf("%d connections after the storm, want %d", got, n)
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(all, "all-rejoined-ms")
			b.ReportMetric(p50, "rejoin-p50-ms")
			b.ReportMetric(p99, "rejoin-p99-ms")
			b.ReportMetric(float64(refused), "refused")
			b.ReportMetric(float64(errs), "errors")
			b.ReportMetric(float64(unfinished), "unfinished")
		})
	}
}
