package bench

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
	"github.com/weft-sync/weft/syncer"
)

// seqTrace is a sequential editing trace in the public editing-traces
// format: patches [pos, delete count, inserted text], positions in code
// points, applied in order.
type seqTrace struct {
	StartContent string `json:"startContent"`
	EndContent   string `json:"endContent"`
	Txns         []struct {
		Patches [][3]json.RawMessage `json:"patches"`
	} `json:"txns"`
}

type patch struct {
	pos, del int
	ins      string
}

func loadTrace(tb testing.TB, name string) (start, end string, patches []patch) {
	tb.Helper()
	path := filepath.Join(tracesDir(), name)
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("editing trace missing: %v (the traces live in ../shared/traces beside the repository; -bench.traces names another directory)", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		tb.Fatalf("trace %s: %v", path, err)
	}
	var t seqTrace
	if err := json.NewDecoder(zr).Decode(&t); err != nil {
		tb.Fatalf("trace %s: %v", path, err)
	}
	for _, tx := range t.Txns {
		for _, p := range tx.Patches {
			var q patch
			if json.Unmarshal(p[0], &q.pos) != nil || json.Unmarshal(p[1], &q.del) != nil || json.Unmarshal(p[2], &q.ins) != nil {
				tb.Fatalf("trace %s: bad patch %s", path, p)
			}
			patches = append(patches, q)
		}
	}
	return t.StartContent, t.EndContent, patches
}

// syncClient is an in-process client that keeps a replica of every
// document it joins, for the scenarios that time one client.
type syncClient struct {
	*wsClient
	agent crdt.AgentKey

	mu      sync.Mutex
	docs    map[string]*crdt.Text
	synced  map[string]bool
	server  map[string]crdt.Version // the server's version from the last Sync
	acked   uint64                  // highest client seq acked (acks arrive in order per document)
	updates int                     // ops applied from Updates
	err     error
	changed chan struct{}
}

func newSyncClient(agent crdt.AgentKey) *syncClient {
	return &syncClient{agent: agent, docs: map[string]*crdt.Text{}, synced: map[string]bool{}, server: map[string]crdt.Version{}, changed: make(chan struct{}, 1)}
}

// connect dials, says hello, joins docs with the replicas' versions and
// does not wait for anything.
func (c *syncClient) connect(url string, docs ...string) error {
	c.mu.Lock()
	j := &protocol.Join{}
	for _, d := range docs {
		if c.docs[d] == nil {
			c.docs[d] = crdt.New(c.agent)
		}
		c.synced[d] = false
		j.Docs = append(j.Docs, protocol.JoinDoc{Doc: d, Version: c.docs[d].Version()})
	}
	c.acked = 0
	c.mu.Unlock()
	w, err := dial(dialOpts{url: url, agent: c.agent, recv: c.recv, closed: func(*wsClient, error) { c.notify() }})
	if err != nil {
		return err
	}
	c.wsClient = w
	return w.send(j)
}

func (c *syncClient) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *syncClient) recv(_ *wsClient, k protocol.Kind, frame []byte) {
	switch k {
	case protocol.KindSync, protocol.KindUpdate, protocol.KindAck, protocol.KindError:
	default:
		return
	}
	f, err := protocol.Decode(frame)
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.notify()
	if err != nil {
		c.err = errors.Join(c.err, err)
		return
	}
	switch f := f.(type) {
	case *protocol.Sync:
		if err := c.docs[f.Doc].Apply(f.Delta); err != nil {
			c.err = errors.Join(c.err, err)
		}
		if !f.More {
			c.synced[f.Doc] = true
			c.server[f.Doc] = f.Version
		}
	case *protocol.Update:
		if err := c.docs[f.Doc].Apply(f.Delta); err != nil {
			c.err = errors.Join(c.err, err)
		}
		c.updates += len(f.Delta.Ops)
	case *protocol.Ack:
		c.acked = max(c.acked, f.ClientSeq)
	case *protocol.Error:
		c.err = errors.Join(c.err, f)
	}
}

// waitUntil waits (bounded) until cond holds, with c.mu held while it is
// checked; it fails on an error frame or a closed connection.
func (c *syncClient) waitUntil(what string, within time.Duration, cond func() bool) error {
	t := time.NewTimer(within)
	defer t.Stop()
	for {
		c.mu.Lock()
		ok, err := cond(), c.err
		c.mu.Unlock()
		switch {
		case err != nil:
			return fmt.Errorf("%s: %w", what, err)
		case ok:
			return nil
		}
		select {
		case <-c.changed:
		case <-c.done:
			c.mu.Lock()
			ok := cond()
			c.mu.Unlock()
			if ok {
				return nil
			}
			return fmt.Errorf("%s: connection closed: %v", what, c.wsClient.err)
		case <-t.C:
			return fmt.Errorf("%s: timed out after %v", what, within)
		}
	}
}

// edit applies fn to the replica of doc and sends the delta it returns.
func (c *syncClient) edit(doc string, fn func(t *crdt.Text) (crdt.Delta, error)) (uint64, error) {
	c.mu.Lock()
	d, err := fn(c.docs[doc])
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.sendDelta(doc, d, nil)
}

// BenchmarkColdJoin: one document holding the final state and the whole
// history of the automerge-paper trace (259,778 edits), written through
// the server as one Delta per 100 edits, so that the log and the
// snapshots are the server's own. A fresh client then connects, joins and
// holds the whole text (every Sync part applied to its replica):
//   - cold: the server was restarted just before, so the document comes
//     from disk (bbolt snapshot plus log tail; the file itself is in the
//     OS page cache);
//   - hot: the document is loaded.
func BenchmarkColdJoin(b *testing.B) {
	_, end, patches := loadTrace(b, "automerge-paper.json.gz")
	// Unlimited per-connection rates only for writing the history fast.
	s := startServer(b, b.TempDir(), serverConfig{srv: syncer.ServerOptions{
		Limits: syncer.Limits{OpsPerSecond: -1, BytesPerSecond: -1}}})
	const doc = "automerge-paper"
	w := newSyncClient(agentKey(7, 0))
	if err := w.connect(s.url, doc); err != nil {
		b.Fatal(err)
	}
	if err := w.waitUntil("join", time.Minute, func() bool { return w.synced[doc] }); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	const perDelta, window = 100, 32
	var sent uint64
	for i := 0; i < len(patches); i += perDelta {
		c := min(i+perDelta, len(patches))
		seq, err := w.edit(doc, func(t *crdt.Text) (crdt.Delta, error) {
			v := t.Version()
			for _, p := range patches[i:c] {
				if _, err := t.Replace(p.pos, p.del, p.ins); err != nil {
					return crdt.Delta{}, err
				}
			}
			return t.Since(v), nil
		})
		if err != nil {
			b.Fatal(err)
		}
		sent = seq
		if err := w.waitUntil("acks", time.Minute, func() bool { return w.acked+window > sent }); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.waitUntil("acks", time.Minute, func() bool { return w.acked == sent }); err != nil {
		b.Fatal(err)
	}
	w.close()
	st := s.db.Stats()
	b.Logf("wrote %d edits as %d deltas in %v; store: %d records, file %d bytes", len(patches), sent, time.Since(start).Round(time.Millisecond), st.Records, st.FileSize)

	join := func() (time.Duration, error) {
		c := newSyncClient(agentKey(8, 0))
		t0 := time.Now()
		if err := c.connect(s.url, doc); err != nil {
			return 0, err
		}
		err := c.waitUntil("join", time.Minute, func() bool { return c.synced[doc] })
		took := time.Since(t0)
		if err == nil && c.docs[doc].String() != end {
			err = errors.New("the joined text differs from the trace's end content")
		}
		c.close()
		return took, err
	}
	n := *samplesFlag
	var cold, hot durations
	for b.Loop() {
		for range n {
			s = s.restart()
			d, err := join()
			if err != nil {
				b.Fatal(err)
			}
			cold = append(cold, d)
		}
		for range n {
			d, err := join()
			if err != nil {
				b.Fatal(err)
			}
			hot = append(hot, d)
		}
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(cold.quantile(0.5), "cold-p50-ms")
	b.ReportMetric(cold.quantile(0.99), "cold-max-ms")
	b.ReportMetric(hot.quantile(0.5), "hot-p50-ms")
	b.ReportMetric(hot.quantile(0.99), "hot-max-ms")
	b.ReportMetric(float64(len([]rune(end))), "chars")
}
