package syncer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
	"github.com/weft-sync/weft/store"
	"github.com/weft-sync/weft/syncer"
)

// TestServer_RestartKeepsEverything stops the server and starts a new one
// on the same data directory: a fresh client gets the same text and
// version, from the log alone and from a snapshot plus its tail.
func TestServer_RestartKeepsEverything(t *testing.T) {
	for _, snapEvery := range []uint64{0, 7} {
		t.Run(fmt.Sprintf("snapshotEvery=%d", snapEvery), func(t *testing.T) {
			rng := newRand(t)
			cfg := serverConfig{hub: syncer.Options{Engine: syncer.EngineOptions{SnapshotEvery: snapEvery}}}
			ts := startServerWith(t, t.TempDir(), cfg)
			a, b := mustDial(t, ts.url), mustDial(t, ts.url)
			a.join("doc", "other")
			b.join("doc")
			for i := range 30 {
				c := a
				if i%2 == 1 {
					c = b
				}
				c.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return randEdit(rng, r) })
			}
			a.edit("other", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "other 𝄞") })
			a.waitAcked()
			b.waitAcked()
			a.waitFor(func() bool { return a.docs["doc"].Version().Covers(b.docs["doc"].Version()) }, "a to catch up")
			text, version := a.text("doc"), a.version("doc")
			var snapSeq uint64
			if snapEvery > 0 {
				// Once all 30 records are durable, snapshots follow until
				// fewer than snapEvery records are past the last one.
				waitFor(t, "a snapshot of the durable log", func() bool {
					seq, _, err := ts.db.LoadSnapshot("doc")
					snapSeq = seq
					return err == nil && seq > 30-snapEvery
				})
			}

			ts = ts.restart()
			if snapEvery > 0 {
				// A cold load reads the snapshot and a short tail.
				waitFor(t, "the log to be truncated", func() bool {
					m, err := ts.db.Stat("doc")
					return err == nil && m.LastSeq == 30 && m.Records == 30-snapSeq
				})
			}
			back := readBack(t, ts.url, "doc", "other")
			if back["doc"].String() != text || !back["doc"].Version().Equal(version) {
				t.Fatalf("after restart %q %v, want %q %v", back["doc"].String(), back["doc"].Version(), text, version)
			}
			if back["other"].String() != "other 𝄞" {
				t.Fatalf("other doc %q", back["other"].String())
			}
			// The reloaded document keeps taking edits at the next seq.
			c := mustDial(t, ts.url)
			c.join("doc")
			seq := c.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "after") })
			c.waitAcked()
			if got := c.acked[seq]; got != 31 {
				t.Fatalf("first edit after restart at seq %d, want 31", got)
			}
			// And a client that held an old version resyncs from the
			// snapshot: it gets what it lacks (tombstones without text).
			a.reconnectTo(ts.url)
			a.join("doc")
			a.waitFor(func() bool { return a.docs["doc"].String() == c.docs["doc"].String() }, "old client to resync")
		})
	}
}

// reconnectTo points the client at another server and reconnects.
func (c *wsClient) reconnectTo(url string) {
	c.t.Helper()
	c.mu.Lock()
	c.url = url
	c.mu.Unlock()
	if _, err := c.connect(nil); err != nil {
		c.t.Fatal(err)
	}
	c.hello("")
}

// TestServer_ResyncBothWays: a client with offline edits rejoins with its
// version; it gets what it lacks, its unsent ops are accepted once sent,
// and nothing is duplicated, also when it resends deltas already acked.
func TestServer_ResyncBothWays(t *testing.T) {
	ts := startServer(t, t.TempDir(), syncer.Options{}, syncer.ServerOptions{})
	a, b := mustDial(t, ts.url), mustDial(t, ts.url)
	a.join("doc")
	b.join("doc")
	a.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "base") })
	a.waitAcked()
	b.waitFor(func() bool { return b.docs["doc"].String() == "base" }, "b to see base")

	b.disconnect()
	a.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(4, " online") })
	a.waitAcked()
	b.editOffline("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "offline ") })
	b.editOffline("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Delete(8, 1) }) // the b of base
	b.editOffline("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(r.Len(), " 中文") })
	// Reconnect and join with the offline version: the Sync carries exactly
	// a's " online".
	if _, err := b.connect(nil); err != nil {
		t.Fatal(err)
	}
	b.hello("")
	b.join("doc")
	sync := ofKind[*protocol.Sync](b.frames)[0]
	if len(sync.Delta.Ops) != 1 || sync.Delta.Ops[0].Text != " online" {
		t.Fatalf("sync carried %+v, want only a's insert", sync.Delta.Ops)
	}
	if sync.Version.Covers(b.version("doc")) {
		t.Fatal("the server's version already covers the unsent edits")
	}
	b.flushUnsent()
	b.waitAcked()
	want := b.text("doc")
	for _, part := range []string{"offline ", "ase", " online", " 中文"} {
		if strings.Count(want, part) != 1 || strings.Contains(want, "base") {
			t.Fatalf("b holds %q", want)
		}
	}
	a.waitFor(func() bool { return a.docs["doc"].String() == want }, "a to see b's offline edits")
	// Resending everything (acks lost, say) changes nothing.
	b.mu.Lock()
	resend := make([]crdt.Delta, 0, len(b.sent))
	for i := uint64(1); i <= b.seq; i++ {
		resend = append(resend, b.sent[i])
	}
	b.mu.Unlock()
	for _, d := range resend {
		b.edit("doc", func(*crdt.Text) (crdt.Delta, error) { return d, nil })
	}
	b.waitAcked()
	back := readBack(t, ts.url, "doc")["doc"]
	if back.String() != want || !back.Version().Equal(b.version("doc")) {
		t.Fatalf("read back %q %v, want %q %v", back.String(), back.Version(), want, b.version("doc"))
	}
	m, err := ts.db.Stat("doc")
	if err != nil || m.LastSeq != 5 {
		t.Fatalf("log %+v (%v), want 5 records: duplicates must not be logged", m, err)
	}
}

// TestServer_IdleUnloadAndReload: a document unloads IdleTimeout after its
// last client leaves and reloads with the same text.
func TestServer_IdleUnloadAndReload(t *testing.T) {
	ts := startServer(t, t.TempDir(), syncer.Options{IdleTimeout: 50 * time.Millisecond}, syncer.ServerOptions{})
	a := mustDial(t, ts.url)
	a.join("doc")
	a.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "kept 😀") })
	a.waitAcked()
	if got := ts.hub.Loaded(); !slices.Equal(got, []string{"doc"}) {
		t.Fatalf("loaded %v", got)
	}
	a.send(&protocol.Leave{Docs: []string{"doc"}})
	waitFor(t, "the document to unload", func() bool { return len(ts.hub.Loaded()) == 0 })
	if n := ts.metric("weft_document_unloads_total"); n != 1 {
		t.Fatalf("%v unloads counted", n)
	}
	b := mustDial(t, ts.url)
	b.join("doc")
	if got := b.text("doc"); got != "kept 😀" {
		t.Fatalf("reloaded %q", got)
	}
	// Still loaded while a client is in it, however long it idles; the
	// disconnect starts the clock again.
	b.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "+") })
	b.waitAcked()
	if got := ts.hub.Loaded(); !slices.Equal(got, []string{"doc"}) {
		t.Fatalf("loaded %v while a client is in it", got)
	}
	b.disconnect()
	waitFor(t, "the document to unload again", func() bool { return len(ts.hub.Loaded()) == 0 })
	if got := readBack(t, ts.url, "doc")["doc"].String(); got != "+kept 😀" {
		t.Fatalf("reloaded %q", got)
	}
}

// TestServer_MemoryBudgetEvicts: with a tiny memory budget, loading a
// document evicts the idle ones (least recently used first), long before
// their idle timeout; evicted documents reload intact.
func TestServer_MemoryBudgetEvicts(t *testing.T) {
	ts := startServer(t, t.TempDir(), syncer.Options{IdleTimeout: time.Hour, MemoryBudget: 1}, syncer.ServerOptions{})
	a := mustDial(t, ts.url)
	docs := []string{"m1", "m2", "m3", "m4"}
	for _, d := range docs {
		a.join(d)
		a.edit(d, func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "text of "+d) })
		a.waitAcked()
		a.send(&protocol.Leave{Docs: []string{d}})
		// The next load evicts this one; until then it may stay.
		if n := len(ts.hub.Loaded()); n > 2 {
			t.Fatalf("%d documents loaded: %v", n, ts.hub.Loaded())
		}
	}
	b := mustDial(t, ts.url)
	b.join("fresh")
	waitFor(t, "idle documents to be evicted", func() bool { return slices.Equal(ts.hub.Loaded(), []string{"fresh"}) })
	if n := ts.metric("weft_document_evictions_total"); n < float64(len(docs)) {
		t.Fatalf("%v evictions counted, want %d", n, len(docs))
	}
	back := readBack(t, ts.url, docs...)
	for _, d := range docs {
		if got := back[d].String(); got != "text of "+d {
			t.Fatalf("%s reloaded as %q", d, got)
		}
	}
}

// TestServer_GracefulShutdownLosesNothing shuts the server down while
// clients edit: every acked edit is in the store afterwards, and every
// client was told to go away with a retry-after and close code 1001.
func TestServer_GracefulShutdownLosesNothing(t *testing.T) {
	dir := t.TempDir()
	cfg := serverConfig{srv: syncer.ServerOptions{GoingAwayRetry: 1500 * time.Millisecond}}
	ts := startServerWith(t, dir, cfg)
	const n = 4
	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i] = mustDial(t, ts.url)
		clients[i].join("doc")
	}
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			// Append tokens until the server goes away (bounded).
			for k := range 2000 {
				tok := fmt.Sprintf("<%d.%d>", i, k)
				if _, err := c.tryEdit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(r.Len(), tok) }); err != nil {
					return
				}
				c.mu.Lock()
				gone := c.closed != nil || c.has(protocol.KindGoingAway)
				c.mu.Unlock()
				if gone {
					return
				}
			}
		})
	}
	// Shut down once every client has some acks, with edits in flight.
	for _, c := range clients {
		c.waitFor(func() bool { return len(c.acked) >= 5 }, "some acks")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	wg.Wait()
	for i, c := range clients {
		c.waitFor(func() bool { return c.closed != nil }, "the close")
		c.mu.Lock()
		ga := ofKind[*protocol.GoingAway](c.frames)
		code := c.closeCode()
		c.mu.Unlock()
		if len(ga) != 1 || ga[0].RetryAfterMs != 1500 {
			t.Fatalf("client %d got going-away frames %+v", i, ga)
		}
		if code != uint16(protocol.CloseGoingAway) {
			t.Fatalf("client %d closed with %d (%v), want 1001", i, code, c.closed)
		}
	}
	ts.stop()

	// Every acked delta is in the reopened log: the text holds its token
	// and the version covers its ops.
	ts = startServerWith(t, dir, cfg)
	back := readBack(t, ts.url, "doc")["doc"]
	text, version := back.String(), back.Version()
	total := 0
	for i, c := range clients {
		c.mu.Lock()
		for seq := range c.acked {
			d := c.sent[seq]
			if tok := d.Ops[0].Text; !strings.Contains(text, tok) {
				t.Errorf("client %d: acked %q missing", i, tok)
			}
			o := d.Ops[len(d.Ops)-1]
			if version[d.Agents[o.Agent]] < o.Seq+o.Len {
				t.Errorf("client %d: acked ops up to %d not in version %v", i, o.Seq+o.Len, version)
			}
			total++
		}
		c.mu.Unlock()
	}
	t.Logf("%d acked edits survived the shutdown; %d code points", total, back.Len())
}

// TestServer_DiskFull: with a size-capped store filled up, edits are not
// acked while the server keeps serving; after space is freed, the pending
// records are retried and acked, and none is lost.
func TestServer_DiskFull(t *testing.T) {
	dir := t.TempDir()
	cfg := serverConfig{
		store: store.Options{MaxSize: 1 << 20},
		hub:   syncer.Options{PersistRetry: 10 * time.Millisecond},
	}
	ts := startServerWith(t, dir, cfg)
	a, b := mustDial(t, ts.url), mustDial(t, ts.url)
	a.join("doc")
	b.join("doc")
	a.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "before ") })
	a.waitAcked()

	// Fill the store through another document until even small appends fail.
	filled := 0
	for _, size := range []int{16 << 10, 2 << 10, 256, 16} {
		for range 5000 {
			_, _, err := ts.db.Append("filler", bytes.Repeat([]byte{'f'}, size))
			if errors.Is(err, store.ErrDiskFull) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			filled++
		}
	}
	t.Logf("%d filler records", filled)

	errsBefore := ts.metric("weft_append_errors_total")
	seqs := []uint64{}
	for i := range 3 {
		seqs = append(seqs, a.edit("doc", func(r *crdt.Text) (crdt.Delta, error) {
			// Pastes of a few pages each: they need pages the file has not got.
			return r.Insert(r.Len(), fmt.Sprintf("full%d ", i)+strings.Repeat("é", 8<<10))
		}))
	}
	waitFor(t, "an append to fail", func() bool { return ts.metric("weft_append_errors_total") > errsBefore })
	// Peers still see the edits (broadcast does not wait for the disk),
	// and the server still serves: a new client joins and gets them too.
	b.waitFor(func() bool { return strings.Contains(b.docs["doc"].String(), "full2 ") }, "b to see the edits")
	c := mustDial(t, ts.url)
	c.join("doc")
	c.send(&protocol.Ping{Nonce: 7})
	c.waitFor(func() bool { return c.has(protocol.KindPong) }, "pong")
	a.mu.Lock()
	for _, s := range seqs {
		if _, ok := a.acked[s]; ok {
			a.mu.Unlock()
			t.Fatalf("delta %d acked while the disk is full", s)
		}
	}
	a.mu.Unlock()

	// Free space: the retries succeed and the acks arrive.
	if err := ts.db.Delete("filler"); err != nil {
		t.Fatal(err)
	}
	a.waitAcked()
	want := a.text("doc")
	ts = ts.restart()
	if got := readBack(t, ts.url, "doc")["doc"].String(); got != want {
		t.Fatalf("after restart %q, want %q", got, want)
	}
}

// TestServer_UnloadRaces has clients join, edit and leave one document in
// a loop while it unloads and reloads between them (IdleTimeout 1 ms): no
// acked edit may be lost to a reload racing an unload.
func TestServer_UnloadRaces(t *testing.T) {
	ts := startServer(t, t.TempDir(), syncer.Options{IdleTimeout: time.Millisecond}, syncer.ServerOptions{})
	const clients, rounds = 4, 15
	cs := make([]*wsClient, clients)
	for i := range cs {
		cs[i] = mustDial(t, ts.url)
		cs[i].mu.Lock()
		cs[i].docs["doc"] = crdt.New(cs[i].agent)
		cs[i].mu.Unlock()
	}
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			for k := range rounds {
				if err := c.trySend(&protocol.Join{Docs: []protocol.JoinDoc{{Doc: "doc", Version: c.version("doc")}}}); err != nil {
					t.Error(err)
					return
				}
				// Wait for this round's sync without Fatal (not the test's goroutine).
				deadline := time.After(10 * time.Second)
				for synced := false; !synced; {
					c.mu.Lock()
					synced = len(ofKind[*protocol.Sync](c.frames)) > k
					c.mu.Unlock()
					if !synced {
						select {
						case <-c.changed:
						case <-deadline:
							t.Errorf("client %d round %d: no sync", i, k)
							return
						}
					}
				}
				tok := fmt.Sprintf("<%d.%d>", i, k)
				if _, err := c.tryEdit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(r.Len(), tok) }); err != nil {
					t.Error(err)
					return
				}
				if err := c.trySend(&protocol.Leave{Docs: []string{"doc"}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, c := range cs {
		c.waitAcked()
	}
	text := readBack(t, ts.url, "doc")["doc"].String()
	for i := range clients {
		for k := range rounds {
			if tok := fmt.Sprintf("<%d.%d>", i, k); !strings.Contains(text, tok) {
				t.Fatalf("acked %s lost: %q", tok, text)
			}
		}
	}
	if ts.metric("weft_document_unloads_total") == 0 {
		t.Log("the document never unloaded between rounds")
	}
}
