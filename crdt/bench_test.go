package crdt_test

import (
	"fmt"
	"testing"

	"github.com/weft-sync/weft/crdt"
)

// benchDoc builds a document of n code points by random local typing and
// deleting from one agent, so it holds many spans and tombstones.
func benchDoc(b *testing.B, n int) *crdt.Text {
	b.Helper()
	r := newRand(int64(n))
	d := crdt.New(key(0))
	for d.Len() < n {
		l := d.Len()
		if l > 10 && r.IntN(5) == 0 {
			if _, err := d.Delete(r.IntN(l-5), 1+r.IntN(4)); err != nil {
				b.Fatal(err)
			}
			continue
		}
		if _, err := d.Insert(r.IntN(l+1), randText(r, 8)); err != nil {
			b.Fatal(err)
		}
	}
	return d
}

var benchSizes = []int{1_000, 10_000, 100_000}

// BenchmarkLocalInsert inserts one code point at a random position.
func BenchmarkLocalInsert(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", n), func(b *testing.B) {
			d := benchDoc(b, n)
			r := newRand(1)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.Insert(r.IntN(d.Len()+1), "x"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLocalDelete deletes one code point at a random position,
// rebuilding the document (untimed) when half of it is gone.
func BenchmarkLocalDelete(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("size=%d", n), func(b *testing.B) {
			orig := benchDoc(b, n)
			d := orig.Clone()
			r := newRand(1)
			b.ReportAllocs()
			for b.Loop() {
				if d.Len() < n/2 {
					b.StopTimer()
					d = orig.Clone()
					b.StartTimer()
				}
				if _, err := d.Delete(r.IntN(d.Len()), 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRemoteApply applies the automerge-paper trace as remote ops: the
// delta of every local edit, one by one, to an empty replica.
func BenchmarkRemoteApply(b *testing.B) {
	tr := loadSequential(b, "automerge-paper.json.gz")
	src := crdt.New(key(0))
	var deltas []crdt.Delta
	for i, p := range tr.patches {
		var d crdt.Delta
		var err error
		switch {
		case p.del > 0 && p.ins != "":
			d, err = src.Replace(p.pos, p.del, p.ins)
		case p.del > 0:
			d, err = src.Delete(p.pos, p.del)
		default:
			d, err = src.Insert(p.pos, p.ins)
		}
		if err != nil {
			b.Fatalf("patch %d: %v", i, err)
		}
		deltas = append(deltas, d)
	}
	b.ReportAllocs()
	for b.Loop() {
		m := crdt.New(key(1))
		for _, d := range deltas {
			if err := m.Apply(d); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(len(deltas)*b.N)/b.Elapsed().Seconds(), "edits/s")
}

// BenchmarkSnapshot encodes and decodes the automerge-paper final document.
func BenchmarkSnapshot(b *testing.B) {
	tr := loadSequential(b, "automerge-paper.json.gz")
	d := replay(b, tr)
	snap, err := d.MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := d.MarshalBinary(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(snap)), "bytes")
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := crdt.Load(snap, key(1)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(snap)), "bytes")
	})
}

// BenchmarkSince asks the automerge-paper final document for its whole
// history and for the last 100 edits.
func BenchmarkSince(b *testing.B) {
	tr := loadSequential(b, "automerge-paper.json.gz")
	head := trace{end: tr.end, patches: tr.patches[:len(tr.patches)-100]}
	recent := replay(b, head).Version()
	d := replay(b, tr)
	for _, bc := range []struct {
		name string
		v    crdt.Version
	}{{"full", nil}, {"recent", recent}} {
		b.Run(bc.name, func(b *testing.B) {
			ops := len(d.Since(bc.v).Ops)
			b.ReportAllocs()
			for b.Loop() {
				if d.Since(bc.v).Empty() {
					b.Fatal("empty delta")
				}
			}
			b.ReportMetric(float64(ops), "ops")
		})
	}
}

// BenchmarkTrace_FriendsForever replays the concurrent trace with a replica
// per agent, as TestTrace_FriendsForever does, without the invariant checks.
func BenchmarkTrace_FriendsForever(b *testing.B) {
	ct := loadConcurrent(b, "friendsforever.json.gz")
	edits := ct.Patches
	b.ReportAllocs()
	for b.Loop() {
		replayConcurrent(b, ct, false)
	}
	b.ReportMetric(float64(edits*b.N)/b.Elapsed().Seconds(), "edits/s")
}
