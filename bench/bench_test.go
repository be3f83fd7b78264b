package bench

import (
	"testing"
	"time"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// These tests keep the benchmark machinery honest; `go test ./bench` runs
// them in a few seconds, the benchmarks only run with -bench.

func TestSkimUpdate(t *testing.T) {
	a, o := agentKey(3, 41), agentKey(3, 7)
	u := &protocol.Update{Doc: "d", Seq: 300, Author: a, Delta: crdt.Delta{
		Agents: []crdt.AgentKey{a, o},
		Ops: []crdt.Op{
			{Kind: crdt.OpInsert, Agent: 0, Seq: 70000, Lamport: 1 << 40, Len: 2, Origin: crdt.Ref{Agent: 1, Seq: 3}, Text: "hé"},
			{Kind: crdt.OpDelete, Agent: 0, Seq: 70002, Lamport: 1<<40 + 2, Len: 1, Target: crdt.Ref{Agent: 1, Seq: 0}},
			{Kind: crdt.OpInsert, Agent: 1, Seq: 5, Lamport: 9, Len: 1, Origin: crdt.Ref{Agent: crdt.RootAgent}, Text: "x"},
		},
	}}
	frame, err := protocol.Encode(nil, u)
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		client    int
		seq, n    uint64
		recognise bool
	}
	var gots []got
	ok := skimUpdate(frame, func(author []byte, seq, n uint64) {
		c, ok := clientOf(author)
		gots = append(gots, got{c, seq, n, ok})
	})
	want := []got{{41, 70000, 2, true}, {41, 70002, 1, true}, {7, 5, 1, true}}
	if !ok || len(gots) != len(want) {
		t.Fatalf("skimUpdate = %v, %v; want %v", ok, gots, want)
	}
	for i := range want {
		if gots[i] != want[i] {
			t.Errorf("op %d: %+v, want %+v", i, gots[i], want[i])
		}
	}
	if skimUpdate(frame[:len(frame)-3], func([]byte, uint64, uint64) {}) {
		t.Error("a truncated frame skimmed as valid")
	}
	ack, err := protocol.Encode(nil, &protocol.Ack{Doc: "d", ClientSeq: 1234, Seq: 9})
	if err != nil {
		t.Fatal(err)
	}
	if cs, ok := ackSeq(ack); !ok || cs != 1234 {
		t.Errorf("ackSeq = %d, %v; want 1234", cs, ok)
	}
}

func TestHist(t *testing.T) {
	var h hist
	for us := 1; us <= 10000; us++ {
		h.add(time.Duration(us) * time.Microsecond)
	}
	for _, c := range []struct{ q, want float64 }{{0.5, 5}, {0.99, 9.9}} {
		if got := h.quantile(c.q); got < c.want*0.96 || got > c.want*1.04 {
			t.Errorf("quantile(%v) = %v ms, want about %v", c.q, got, c.want)
		}
	}
	for i := range histBuckets - 1 {
		if histIndex(histLow(i)) != i || histLow(i+1) <= histLow(i) {
			t.Fatalf("bucket %d: low %d maps to %d", i, histLow(i), histIndex(histLow(i)))
		}
	}
}

// TestFanoutSmall runs the fan-out scenario end to end with a few clients
// in a child load generator: every op reaches every other client and is
// acked, with no error.
func TestFanoutSmall(t *testing.T) {
	s := startServer(t, t.TempDir(), serverConfig{})
	g, ready := startLoadgen(t, genConfig{Scenario: "fanout", URL: s.url, Run: 1, Clients: 3, Docs: 1, DocPrefix: "t-", MaxOps: 1000}, time.Minute)
	if ready.Clients != 3 || ready.Errors != 0 {
		t.Fatalf("ready: %+v", ready)
	}
	r := g.call(genCmd{Cmd: "step", Rate: 20, Dur: 300 * time.Millisecond}, time.Minute)
	if r.Sent == 0 || r.Delivered != r.Expected || r.Expected != 2*r.Sent || r.Acked != r.Sent || r.Errors != 0 || r.Closed != 0 {
		t.Fatalf("step: %+v", r)
	}
	if r.P50 <= 0 || r.P99 < r.P50 {
		t.Errorf("latencies p50 %v ms, p99 %v ms", r.P50, r.P99)
	}
	g.stop()
	if !s.waitConns(0, 10*time.Second) {
		t.Errorf("%d connections left after the generator quit", s.srv.Connections())
	}
}

// TestResyncConverges is one small offline resync through syncClient.
func TestResyncConverges(t *testing.T) {
	s := startServer(t, t.TempDir(), serverConfig{})
	a, c := newSyncClient(agentKey(2, 1)), newSyncClient(agentKey(2, 2))
	for _, x := range []*syncClient{a, c} {
		if err := x.connect(s.url, "doc"); err != nil {
			t.Fatal(err)
		}
		if err := x.waitUntil("join", 10*time.Second, func() bool { return x.synced["doc"] }); err != nil {
			t.Fatal(err)
		}
	}
	c.close()
	var seq uint64
	var err error
	for _, w := range []string{"one ", "two ", "three "} {
		if seq, err = a.edit("doc", func(x *crdt.Text) (crdt.Delta, error) { return x.Insert(x.Len(), w) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.waitUntil("acks", 10*time.Second, func() bool { return a.acked == seq }); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	if _, err := c.docs["doc"].Insert(0, "offline "); err != nil {
		t.Fatal(err)
	}
	c.mu.Unlock()
	if err := c.connect(s.url, "doc"); err != nil {
		t.Fatal(err)
	}
	if err := c.waitUntil("sync", 10*time.Second, func() bool { return c.synced["doc"] }); err != nil {
		t.Fatal(err)
	}
	if seq, err = c.edit("doc", func(x *crdt.Text) (crdt.Delta, error) { return x.Since(c.server["doc"]), nil }); err != nil {
		t.Fatal(err)
	}
	if err := c.waitUntil("ack", 10*time.Second, func() bool { return c.acked == seq }); err != nil {
		t.Fatal(err)
	}
	if err := a.waitUntil("update", 10*time.Second, func() bool { return a.docs["doc"].Len() == c.docs["doc"].Len() }); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	c.mu.Lock()
	at, ct := a.docs["doc"].String(), c.docs["doc"].String()
	c.mu.Unlock()
	a.mu.Unlock()
	if at != ct || at != "offline one two three " {
		t.Errorf("after the resync: %q and %q", at, ct)
	}
	a.close()
	c.close()
}
