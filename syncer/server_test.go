package syncer_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
	"github.com/weft-sync/weft/syncer"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"))
}

func TestServer_TwoClientsConverge(t *testing.T) {
	ts := startServer(t, t.TempDir(), syncer.Options{}, syncer.ServerOptions{})
	a, b := mustDial(t, ts.url), mustDial(t, ts.url)
	a.join("doc")
	b.join("doc")
	var seqs []uint64
	for i := range 20 {
		seqs = append(seqs, a.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(r.Len(), fmt.Sprint(i%10)) }))
		b.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "b") })
	}
	a.waitFor(func() bool { return len(a.acked) == len(seqs) }, "acks")
	want := func() bool { return a.docs["doc"].Len() == 40 }
	a.waitFor(want, "a to hold 40 chars")
	b.waitFor(func() bool { return b.docs["doc"].Len() == 40 }, "b to hold 40 chars")
	if a.text("doc") != b.text("doc") {
		t.Fatalf("diverged: %q vs %q", a.text("doc"), b.text("doc"))
	}
}

// TestServer_Converge has n clients edit one document concurrently with
// random inserts and deletes of multi-byte and astral text. Every replica
// must end identical, every delta acked, and a fresh client must read the
// same text back.
func TestServer_Converge(t *testing.T) {
	for _, tc := range []struct{ clients, edits int }{{2, 60}, {10, 25}, {50, 8}} {
		t.Run(fmt.Sprintf("clients=%d", tc.clients), func(t *testing.T) {
			rng := newRand(t)
			ts := startServer(t, t.TempDir(), syncer.Options{}, syncer.ServerOptions{})
			clients := make([]*wsClient, tc.clients)
			seeds := make([]uint64, tc.clients)
			for i := range clients {
				clients[i] = mustDial(t, ts.url)
				clients[i].join("doc")
				seeds[i] = rng.Uint64()
			}
			var wg sync.WaitGroup
			errs := make(chan error, tc.clients)
			for i, c := range clients {
				r := rand.New(rand.NewPCG(seeds[i], uint64(i)))
				wg.Go(func() {
					for range tc.edits {
						if _, err := c.tryEdit("doc", func(x *crdt.Text) (crdt.Delta, error) { return randEdit(r, x) }); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for _, c := range clients {
				c.waitAcked()
			}
			// Every client has acks for all its deltas; the server's version
			// is the union of everybody's, which each client reaches.
			want := crdt.Version{}
			for _, c := range clients {
				for k, v := range c.version("doc") {
					want[k] = max(want[k], v)
				}
			}
			for i, c := range clients {
				c.waitFor(func() bool { return c.docs["doc"].Version().Covers(want) }, fmt.Sprintf("client %d to catch up", i))
			}
			text := clients[0].text("doc")
			for i, c := range clients {
				if got := c.text("doc"); got != text {
					t.Fatalf("client %d diverged:\n%q\nvs\n%q", i, got, text)
				}
			}
			back := readBack(t, ts.url, "doc")["doc"]
			if back.String() != text || !back.Version().Equal(want) {
				t.Fatalf("read back %q (%v), want %q (%v)", back.String(), back.Version(), text, want)
			}
		})
	}
}

// TestServer_ManyDocsPerSocket joins several documents with one Join, edits
// them all, and resyncs all of them in one Join after a reconnect.
func TestServer_ManyDocsPerSocket(t *testing.T) {
	ts := startServer(t, t.TempDir(), syncer.Options{}, syncer.ServerOptions{})
	docs := []string{"d1", "d2", "d3", "d4", "d5"}
	a, b := mustDial(t, ts.url), mustDial(t, ts.url)
	a.join(docs...)
	b.join(docs...)
	if n := len(ofKind[*protocol.Sync](a.frames)); n != len(docs) {
		t.Fatalf("%d syncs for %d docs", n, len(docs))
	}
	for i, d := range docs {
		a.edit(d, func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, strings.Repeat("é", i+1)) })
	}
	a.waitAcked()
	for i, d := range docs {
		b.waitFor(func() bool { return b.docs[d].Len() == i+1 }, "b to see "+d)
	}
	// b goes offline; a keeps editing; b edits offline; b resyncs all.
	b.disconnect()
	for _, d := range docs {
		a.edit(d, func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(r.Len(), "A") })
		b.editOffline(d, func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "😀") })
	}
	a.waitAcked()
	b.reconnect()
	b.join(docs...)
	b.flushUnsent()
	b.waitAcked()
	for i, d := range docs {
		want := "😀" + strings.Repeat("é", i+1) + "A"
		b.waitFor(func() bool { return b.docs[d].String() == want }, "b's "+d)
		a.waitFor(func() bool { return a.docs[d].String() == want }, "a's "+d)
	}
	back := readBack(t, ts.url, docs...)
	for i, d := range docs {
		if got, want := back[d].String(), "😀"+strings.Repeat("é", i+1)+"A"; got != want {
			t.Fatalf("%s read back %q, want %q", d, got, want)
		}
	}
}

// TestServer_MissingDependencies: a delta that depends on ops the server
// lacks waits; it is applied and acked when they arrive from another
// client, and it fails with missing_dependency after ParkTimeout when they
// never do, leaving the document and other clients unharmed.
func TestServer_MissingDependencies(t *testing.T) {
	ts := startServer(t, t.TempDir(), syncer.Options{Engine: syncer.EngineOptions{ParkTimeout: 200 * time.Millisecond}}, syncer.ServerOptions{})
	a, b := mustDial(t, ts.url), mustDial(t, ts.url)
	a.join("doc")
	// b's edits reach a directly (say, peer to peer), not the server yet.
	b.mu.Lock()
	b.docs["doc"] = crdt.New(b.agent)
	d1, err := b.docs["doc"].Insert(0, "base")
	b.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	if err := a.docs["doc"].Apply(d1); err != nil {
		t.Fatal(err)
	}
	a.mu.Unlock()
	seq := a.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(4, " on top") })

	// b joins with its version and sends what the server lacks.
	b.join("doc")
	b.mu.Lock()
	b.seq++
	b.sent[b.seq] = d1
	b.mu.Unlock()
	b.send(&protocol.Delta{Doc: "doc", ClientSeq: b.seq, Delta: d1})
	b.waitAcked()
	a.waitFor(func() bool { _, ok := a.acked[seq]; return ok }, "the parked delta's ack")
	b.waitFor(func() bool { return b.docs["doc"].String() == "base on top" }, "b to get a's delta")

	// A dependency that never comes.
	orphan := crdt.New(newAgent())
	d2, err := orphan.Insert(0, "never sent")
	if err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	if err := a.docs["doc"].Apply(d2); err != nil {
		t.Fatal(err)
	}
	a.mu.Unlock()
	seq = a.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(1, "!") })
	e := a.waitErr(protocol.CodeMissingDependency)
	if e.ClientSeq != seq || e.Doc != "doc" {
		t.Fatalf("missing dependency error %+v, want client seq %d", e, seq)
	}
	b.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, ">") })
	b.waitAcked()
	if got := readBack(t, ts.url, "doc")["doc"].String(); got != ">base on top" {
		t.Fatalf("server holds %q", got)
	}
}
