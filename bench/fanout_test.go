package bench

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/weft-sync/weft/syncer"
)

// fanoutStep runs one measured load phase and reports it. Delivery
// latency is from the moment a client writes its Delta to the moment
// another client has read the Update carrying it; every client times
// every op it receives.
func fanoutStep(b *testing.B, g *loadgen, clients int, rate float64, dur time.Duration) genReply {
	b.Helper()
	var sum genReply
	var cpu time.Duration
	var elapsed float64
	for b.Loop() {
		cpu0 := cpuTime()
		r := g.call(genCmd{Cmd: "step", Rate: rate, Dur: dur}, dur+2*time.Minute)
		cpu += cpuTime() - cpu0
		elapsed += r.ElapsedMs / 1000
		sum.Sent += r.Sent
		sum.Delivered += r.Delivered
		sum.Expected += r.Expected
		sum.Acked += r.Acked
		sum.RxBytes += r.RxBytes
		sum.TxBytes += r.TxBytes
		sum.Errors += r.Errors
		sum.Closed += r.Closed
		sum.GenCPUms += r.GenCPUms
		sum.P50, sum.P99, sum.Max = max(sum.P50, r.P50), max(sum.P99, r.P99), max(sum.Max, r.Max)
		sum.GenLagP99 = max(sum.GenLagP99, r.GenLagP99)
		if sum.ErrSample == "" {
			sum.ErrSample = r.ErrSample
		}
	}
	sum.ElapsedMs = elapsed * 1000
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(sum.P50, "p50-ms")
	b.ReportMetric(sum.P99, "p99-ms")
	b.ReportMetric(sum.Max, "max-ms")
	b.ReportMetric(float64(sum.Sent)/elapsed, "sent-ops/s")
	b.ReportMetric(float64(sum.Delivered)/elapsed, "delivered-ops/s")
	if sum.Expected > 0 {
		b.ReportMetric(100*float64(sum.Delivered)/float64(sum.Expected), "delivered-%")
	}
	if sum.Sent > 0 {
		b.ReportMetric(cpu.Seconds()/float64(sum.Sent)*1000, "srv-cpu-s/1k-ops")
		b.ReportMetric(sum.GenCPUms/1000/float64(sum.Sent)*1000, "gen-cpu-s/1k-ops")
		b.ReportMetric(float64(sum.RxBytes+sum.TxBytes)/float64(sum.Sent), "wire-B/op")
		b.ReportMetric(float64(sum.TxBytes)/float64(sum.Sent), "up-B/op")
	}
	if sum.Delivered > 0 {
		b.ReportMetric(float64(sum.RxBytes)/float64(sum.Delivered), "down-B/delivery")
	}
	b.ReportMetric(float64(sum.Closed), "closed")
	b.ReportMetric(float64(sum.Errors), "errors")
	b.Logf("clients=%d rate=%.0f/s: sent %d, delivered %d of %d, acked %d, p50 %.2f ms, p99 %.2f ms, max %.1f ms, server CPU %.2f s, generator CPU %.2f s, generator lag p99 %.1f ms, closed %d, errors %d %s",
		clients, rate, sum.Sent, sum.Delivered, sum.Expected, sum.Acked, sum.P50, sum.P99, sum.Max, cpu.Seconds(), sum.GenCPUms/1000, sum.GenLagP99, sum.Closed, sum.Errors, sum.ErrSample)
	return sum
}

// fanoutServer starts a server for one document shared by many clients.
// Admission is opened up (connecting the clients is not what is
// measured); with unlimited set, so are the per-connection op and byte
// rates, for rates above the default 2,000 ops/s per connection.
func fanoutServer(b *testing.B, unlimited bool) *server {
	cfg := serverConfig{srv: syncer.ServerOptions{UpgradesPerSecond: 100000, JoinsPerSecond: 100000}}
	if unlimited {
		cfg.srv.Limits.OpsPerSecond, cfg.srv.Limits.BytesPerSecond = -1, -1
	}
	return startServer(b, b.TempDir(), cfg)
}

// BenchmarkFanout: one document, 10, 100 and 500 clients each typing one
// character per Delta at -bench.rate per second (default 5), for
// -bench.dur. Every op is broadcast to every other client, so delivered
// ops/s is about clients × (clients−1) × rate.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{10, 100, 500} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			s := fanoutServer(b, false)
			rate, dur := *rateFlag, *durFlag
			maxOps := int(rate*(dur.Seconds()+1)*1.2) + 1000
			g, _ := startLoadgen(b, genConfig{Scenario: "fanout", URL: s.url, Run: rand.Uint32(), Clients: n, Docs: 1,
				DocPrefix: "fanout-", MaxOps: maxOps}, 5*time.Minute)
			g.call(genCmd{Cmd: "step", Rate: rate, Dur: time.Second}, 2*time.Minute) // warm-up
			fanoutStep(b, g, n, rate, dur)
		})
	}
}

// BenchmarkFanoutCeiling raises the total ingress rate on one document
// step by step (each step -bench.dur/2) and stops after the first step
// that fails: less than 99 % of the ops delivered, p99 over 100 ms, or
// a connection closed. The last passing step is the ceiling; the failing
// one shows how overload degrades. Per-connection rate limits are lifted.
func BenchmarkFanoutCeiling(b *testing.B) {
	for _, n := range []int{10, 100, 500} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			var totals []int
			for t := 1000; t <= 64000; t *= 2 {
				if float64(t)/float64(n) >= 1 {
					totals = append(totals, t)
				}
			}
			s := fanoutServer(b, true)
			dur := *durFlag / 2
			maxOps := 1000
			for _, t := range totals {
				maxOps += int(float64(t) / float64(n) * (dur.Seconds() + 1) * 1.2)
			}
			g, _ := startLoadgen(b, genConfig{Scenario: "fanout", URL: s.url, Run: rand.Uint32(), Clients: n, Docs: 1,
				DocPrefix: "ceiling-", MaxOps: maxOps}, 5*time.Minute)
			failed := false
			for _, t := range totals {
				if failed {
					break
				}
				b.Run(fmt.Sprintf("total=%d", t), func(b *testing.B) {
					r := fanoutStep(b, g, n, float64(t)/float64(n), dur)
					if r.Expected == 0 || float64(r.Delivered) < 0.99*float64(r.Expected) || r.P99 > 100 || r.Closed > 0 {
						failed = true
					}
				})
			}
		})
	}
}
