package crdt_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/weft-sync/weft/crdt"
)

// snapDoc builds a small document by three replicas editing at random and
// syncing now and then, so that it holds concurrent inserts, several agents,
// tombstones, runs of backspaces and non-ASCII text. It returns the first
// replica after it has merged the others.
func snapDoc(tb testing.TB, seed int64, steps int) *crdt.Text {
	tb.Helper()
	r := newRand(seed)
	reps := []*crdt.Text{crdt.New(key(0)), crdt.New(key(1)), crdt.New(key(2))}
	sync := func(a, b *crdt.Text) {
		if err := a.Apply(b.Since(a.Version())); err != nil {
			tb.Fatalf("seed %d: sync: %v", seed, err)
		}
	}
	for range steps {
		d := reps[r.IntN(len(reps))]
		n := d.Len()
		var err error
		switch c := r.IntN(12); {
		case c == 0:
			sync(d, reps[r.IntN(len(reps))])
		case c <= 2 && n > 0: // backspaces
			p := 1 + r.IntN(n)
			for k := 1 + r.IntN(min(p, 6)); k > 0 && err == nil; k-- {
				_, err = d.Delete(p-1, 1)
				p--
			}
		case c <= 4 && n > 0:
			p := r.IntN(n)
			_, err = d.Delete(p, 1+r.IntN(min(n-p, 80)))
		default:
			_, err = d.Insert(r.IntN(n+1), randText(r, 12))
		}
		if err != nil {
			tb.Fatalf("seed %d: edit: %v", seed, err)
		}
	}
	sync(reps[0], reps[1])
	sync(reps[0], reps[2])
	return reps[0]
}

func mustSnapshot(tb testing.TB, d *crdt.Text) []byte {
	tb.Helper()
	snap, err := d.MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	return snap
}

// checkRoundTrip loads snap, which must succeed, and compares the replica
// with want.
func checkRoundTrip(tb testing.TB, snap []byte, want *crdt.Text, ctx string) *crdt.Text {
	tb.Helper()
	l, err := crdt.Load(snap, key(9))
	if err != nil {
		tb.Fatalf("%s: Load: %v", ctx, err)
	}
	mustCheck(tb, l, ctx)
	if l.String() != want.String() || !l.Version().Equal(want.Version()) {
		tb.Fatalf("%s: loaded replica differs", ctx)
	}
	return l
}

// checkLoaded is what FuzzLoad and the corruption tests require of any
// input: Load either rejects it with ErrCorrupt or returns a replica that
// passes Check, snapshots and loads again to the same text and version,
// and still edits and answers Since without panicking.
func checkLoaded(t *testing.T, snap []byte) {
	l, err := crdt.Load(snap, key(5))
	if err != nil {
		if !errors.Is(err, crdt.ErrCorrupt) {
			t.Fatalf("Load error does not wrap ErrCorrupt: %v", err)
		}
		return
	}
	if err := l.Check(); err != nil {
		t.Fatalf("Load accepted a snapshot that fails Check: %v", err)
	}
	again, err := l.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	l2, err := crdt.Load(again, key(6))
	if err != nil {
		t.Fatalf("re-marshalled snapshot does not load: %v", err)
	}
	if err := l2.Check(); err != nil {
		t.Fatalf("re-marshalled snapshot fails Check: %v", err)
	}
	if l2.String() != l.String() || !l2.Version().Equal(l.Version()) {
		t.Fatalf("re-marshalled snapshot loads as %q %v, want %q %v", l2.String(), l2.Version(), l.String(), l.Version())
	}
	// Whatever was accepted must survive use.
	_ = l.Since(nil)
	_, _ = l.Insert(l.Len(), "z")
	if l.Len() > 0 {
		_, _ = l.Delete(0, 1)
	}
	if err := l.Check(); err != nil {
		t.Fatalf("after editing a loaded replica: %v", err)
	}
}

func TestSnapshot_RandomDocs(t *testing.T) {
	for _, seed := range seeds(20) {
		for _, small := range []bool{false, true} {
			restore := func() {}
			if small {
				restore = crdt.SetNodeSizes(4, 4, 4)
			}
			d := snapDoc(t, seed, 300)
			mustCheck(t, d, "built")
			ctx := fmt.Sprintf("seed %d small %v", seed, small)
			l := checkRoundTrip(t, mustSnapshot(t, d), d, ctx)
			// The loaded replica keeps merging like the original.
			e := snapDoc(t, seed+1, 100)
			for _, x := range []*crdt.Text{d, l} {
				if err := x.Apply(e.Since(x.Version())); err != nil {
					t.Fatalf("%s: merge: %v", ctx, err)
				}
			}
			if l.String() != d.String() || !l.Version().Equal(d.Version()) {
				t.Fatalf("%s: loaded replica merges differently", ctx)
			}
			mustCheck(t, l, ctx+" merged")
			checkRoundTrip(t, mustSnapshot(t, l), d, ctx+" again")
			restore()
		}
	}
}

// Shapes the random documents rarely reach: long spans and delete runs
// (lengths past the head byte), long texts (long literal runs and matches,
// overlapping and capped), an origin deeper than the encoder searches, and
// the empty document.
func TestSnapshot_Shapes(t *testing.T) {
	build := map[string]func(d *crdt.Text) error{
		"empty": func(d *crdt.Text) error { return nil },
		"long runs": func(d *crdt.Text) error {
			if _, err := d.Insert(0, strings.Repeat("ab", 300)); err != nil {
				return err
			}
			if _, err := d.Delete(10, 200); err != nil {
				return err
			}
			for range 100 { // one backspace run
				if _, err := d.Delete(d.Len()-1, 1); err != nil {
					return err
				}
			}
			return nil
		},
		"repetitive": func(d *crdt.Text) error {
			_, err := d.Insert(0, strings.Repeat("a", 20000)+strings.Repeat("xyz中😀", 3000))
			return err
		},
		"incompressible": func(d *crdt.Text) error {
			r := newRand(1)
			var b strings.Builder
			for range 5000 {
				b.WriteString(alphabet[r.IntN(len(alphabet))])
			}
			_, err := d.Insert(0, b.String())
			return err
		},
		"deep origin": func(d *crdt.Text) error { return deepDoc(d, 100) },
	}
	for name, fn := range build {
		d := crdt.New(key(0))
		if err := fn(d); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		mustCheck(t, d, name)
		l := checkRoundTrip(t, mustSnapshot(t, d), d, name)
		if _, err := l.Insert(l.Len()/2, "é"); err != nil {
			t.Fatalf("%s: edit after load: %v", name, err)
		}
		mustCheck(t, l, name+" edited")
	}
}

// TestLoad_Corrupt feeds Load every truncation and many single-byte
// corruptions of real snapshots: each must be rejected with ErrCorrupt or
// load as a consistent replica, and none may panic.
func TestLoad_Corrupt(t *testing.T) {
	if _, err := crdt.Load(nil, key(0)); !errors.Is(err, crdt.ErrCorrupt) {
		t.Fatalf("Load(nil): %v", err)
	}
	for i, seed := range []int64{1, 2, 3} {
		snap := mustSnapshot(t, snapDoc(t, seed, 40+40*i))
		for n := range len(snap) {
			checkLoaded(t, snap[:n])
		}
		for p := range snap {
			for _, x := range []byte{0x01, 0x02, 0x40, 0x80, 0xff} {
				c := append([]byte(nil), snap...)
				c[p] ^= x
				checkLoaded(t, c)
			}
			checkLoaded(t, append(append(append([]byte(nil), snap[:p]...), 0x00), snap[p:]...))
		}
	}
}

// deepDoc types s0 s1 … sn X, each si after s(i-1) and X after s0 before
// them (a "y" typed at the end between keeps the si apart), so that X's
// origin is n spans down the stack the snapshot encoder keeps.
func deepDoc(d *crdt.Text, n int) error {
	if _, err := d.Insert(0, "s"); err != nil {
		return err
	}
	if _, err := d.Insert(1, "X"); err != nil {
		return err
	}
	for i := 1; i <= n; i++ {
		if _, err := d.Insert(i, "s"); err != nil {
			return err
		}
		if _, err := d.Insert(d.Len(), "y"); err != nil {
			return err
		}
	}
	return nil
}

// FuzzLoad feeds Load arbitrary bytes, starting from real snapshots.
func FuzzLoad(f *testing.F) {
	f.Add([]byte{})
	f.Add(mustSnapshot(f, crdt.New(key(0))))
	for _, seed := range []int64{1, 2, 3, 4} {
		f.Add(mustSnapshot(f, snapDoc(f, seed, 30*int(seed))))
	}
	d := crdt.New(key(0))
	if err := deepDoc(d, 70); err != nil {
		f.Fatal(err)
	}
	f.Add(mustSnapshot(f, d))
	if !testing.Short() {
		f.Add(mustSnapshot(f, replayConcurrent(f, loadConcurrent(f, "friendsforever.json.gz"), false)))
		f.Add(mustSnapshot(f, replay(f, loadSequential(f, "automerge-paper.json.gz"))))
	}
	f.Fuzz(checkLoaded)
}
