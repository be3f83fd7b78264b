package crdt_test

import (
	"testing"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/internal/edittrace"
)

// loadConcurrent reads a concurrent trace (txns with parents and agent)
// from ../shared/traces; a missing trace fails the test.
func loadConcurrent(tb testing.TB, name string) *edittrace.Trace {
	tb.Helper()
	tr, err := edittrace.Shared(name)
	if err != nil {
		tb.Fatal(err)
	}
	if !tr.Concurrent {
		tb.Fatalf("%s is not a concurrent trace", name)
	}
	return tr
}

// replayConcurrent replays a concurrent trace with a replica per agent (see
// edittrace), running the invariant check every 500 txns when check is set.
func replayConcurrent(tb testing.TB, ct *edittrace.Trace, check bool) *crdt.Text {
	tb.Helper()
	var every func(int, ...*crdt.Text) error
	if check {
		every = func(i int, rs ...*crdt.Text) error {
			if i%500 != 0 {
				return nil
			}
			for _, r := range rs {
				if err := r.Check(); err != nil {
					return err
				}
			}
			return nil
		}
	}
	d, err := ct.ReplayChecked(every)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

func TestTrace_FriendsForever(t *testing.T) {
	ct := loadConcurrent(t, "friendsforever.json.gz")
	if len(ct.Txns) == 0 || ct.Agents < 2 {
		t.Fatalf("trace has %d txns, %d agents", len(ct.Txns), ct.Agents)
	}
	d := replayConcurrent(t, ct, true)
	mustCheck(t, d, "friendsforever")
	if got := d.String(); got != ct.End {
		i := firstDiff(got, ct.End)
		t.Fatalf("final text differs at code point %d: got %d code points, want %d\n got …%q…\nwant …%q…",
			i, runeLen(got), runeLen(ct.End), window(got, i), window(ct.End, i))
	}
	// The whole history, as remote ops, rebuilds it; so does a snapshot.
	m := crdt.New(key(7))
	if err := m.Apply(d.Since(nil)); err != nil {
		t.Fatal(err)
	}
	if m.String() != ct.End || !m.Version().Equal(d.Version()) {
		t.Fatal("history merged into an empty replica differs")
	}
	snap, err := d.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	l, err := crdt.Load(snap, key(8))
	if err != nil {
		t.Fatal(err)
	}
	mustCheck(t, l, "loaded")
	if l.String() != ct.End || !l.Version().Equal(d.Version()) {
		t.Fatal("loaded snapshot differs")
	}
}

// window returns up to 20 code points either side of code point i.
func window(s string, i int) string {
	r := []rune(s)
	return string(r[max(0, i-20):min(len(r), i+20)])
}
