package syncer_test

import (
	"fmt"
	"testing"

	"go.uber.org/goleak"

	"github.com/weft-sync/weft/crdt"
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
