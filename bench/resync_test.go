package bench

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/weft-sync/weft/crdt"
)

// randomEdit is one keystroke at a random place: an insert of one
// character (3 in 4) or a backspace.
func randomEdit(rng *rand.Rand, t *crdt.Text) (crdt.Delta, error) {
	n := t.Len()
	if n > 0 && rng.IntN(4) == 0 {
		return t.Delete(rng.IntN(n), 1)
	}
	return t.Insert(rng.IntN(n+1), string(rune('a'+rng.IntN(26))))
}

// BenchmarkResync: clients A and B share a 1 KB document; B goes offline.
// A makes 1,000 edits through the server (each acked), while B makes
// 1,000 edits of its own offline, at random places. The timed part starts
// when B reconnects: connect, hello, join with B's version, apply the
// server's Sync (A's 1,000 edits), send what the server lacks (B's), and
// ends when the server has acked B's edits and A has received them: all
// three replicas converged (checked after the timing).
func BenchmarkResync(b *testing.B) {
	const edits = 1000
	s := startServer(b, b.TempDir(), serverConfig{})
	rng := rand.New(rand.NewPCG(1, 2))
	n := *samplesFlag
	var took, down, up durations
	iter := 0
	for b.Loop() {
		for range n {
			iter++
			doc := fmt.Sprintf("resync-%d", iter)
			a := newSyncClient(agentKey(9, 2*iter))
			c := newSyncClient(agentKey(9, 2*iter+1))
			for _, x := range []*syncClient{a, c} {
				if err := x.connect(s.url, doc); err != nil {
					b.Fatal(err)
				}
				if err := x.waitUntil("join", time.Minute, func() bool { return x.synced[doc] }); err != nil {
					b.Fatal(err)
				}
			}
			seq, err := a.edit(doc, func(t *crdt.Text) (crdt.Delta, error) {
				return t.Insert(0, loremKB)
			})
			if err != nil {
				b.Fatal(err)
			}
			if err := c.waitUntil("text", time.Minute, func() bool { return c.docs[doc].Len() == len(loremKB) }); err != nil {
				b.Fatal(err)
			}
			c.close()
			for range edits {
				if seq, err = a.edit(doc, func(t *crdt.Text) (crdt.Delta, error) { return randomEdit(rng, t) }); err != nil {
					b.Fatal(err)
				}
			}
			if err := a.waitUntil("acks", time.Minute, func() bool { return a.acked == seq }); err != nil {
				b.Fatal(err)
			}
			c.mu.Lock()
			for range edits {
				if _, err := randomEdit(rng, c.docs[doc]); err != nil {
					b.Fatal(err)
				}
			}
			c.mu.Unlock()
			a.mu.Lock()
			base := a.updates
			a.mu.Unlock()

			t0 := time.Now()
			if err := c.connect(s.url, doc); err != nil {
				b.Fatal(err)
			}
			if err := c.waitUntil("sync", time.Minute, func() bool { return c.synced[doc] }); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			seq, err = c.edit(doc, func(t *crdt.Text) (crdt.Delta, error) {
				return t.Since(c.server[doc]), nil // what the server lacks
			})
			if err != nil {
				b.Fatal(err)
			}
			if err := c.waitUntil("ack", time.Minute, func() bool { return c.acked == seq }); err != nil {
				b.Fatal(err)
			}
			if err := a.waitUntil("update", time.Minute, func() bool { return a.updates > base }); err != nil {
				b.Fatal(err)
			}
			t2 := time.Now()
			took = append(took, t2.Sub(t0))
			down = append(down, t1.Sub(t0))
			up = append(up, t2.Sub(t1))
			a.mu.Lock()
			c.mu.Lock()
			same := a.docs[doc].String() == c.docs[doc].String()
			c.mu.Unlock()
			a.mu.Unlock()
			if !same {
				b.Fatalf("%s: the replicas differ after the resync", doc)
			}
			a.close()
			c.close()
		}
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(took.quantile(0.5), "resync-p50-ms")
	b.ReportMetric(took.quantile(0.99), "resync-max-ms")
	b.ReportMetric(down.quantile(0.5), "to-sync-p50-ms")
	b.ReportMetric(up.quantile(0.5), "send-ack-p50-ms")
}

const loremKB = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. " +
	"Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure " +
	"dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non " +
	"proident, sunt in culpa qui officia deserunt mollit anim id est laborum. Sed ut perspiciatis unde omnis iste natus error sit " +
	"voluptatem accusantium doloremque laudantium, totam rem aperiam, eaque ipsa quae ab illo inventore veritatis et quasi " +
	"architecto beatae vitae dicta sunt explicabo. Nemo enim ipsam voluptatem quia voluptas sit aspernatur aut odit aut fugit, sed " +
	"quia consequuntur magni dolores eos qui ratione voluptatem sequi nesciunt. Neque porro quisquam est, qui dolorem ipsum quia " +
	"dolor sit amet, consectetur, adipisci velit, sed quia non numquam eius modi tempora incidunt ut labore et dolore magnam al."
