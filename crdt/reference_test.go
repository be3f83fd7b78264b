package crdt_test

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/weft-sync/weft/crdt"
)

// refDoc is a naive RGA kept only for the differential test: one item per
// code point in a slice, linear scans everywhere, no runs, no indexes. It
// shares nothing with the package but the ordering rule it must agree with:
// a new item goes right after its origin, then skips every following item
// whose key (Lamport, agent key bytes, seq) is greater than its own; a
// delete marks a tombstone. Deletes take a seq and a Lamport time per
// deleted code point, as the package's do.
type refDoc struct {
	self  crdt.AgentKey
	items []refItem
	ops   []refOp // every op unit held, in the order applied
	next  map[crdt.AgentKey]uint64
	clock uint64
}

type refID struct {
	agent crdt.AgentKey
	seq   uint64
}

type refItem struct {
	id      refID
	lamport uint64
	r       rune
	deleted bool
}

type refOp struct {
	id      refID
	lamport uint64
	insert  bool
	r       rune
	origin  refID // insert: the item it goes after
	root    bool  // insert: at the document start
	target  refID // delete
}

func newRef(self crdt.AgentKey) *refDoc {
	return &refDoc{self: self, next: map[crdt.AgentKey]uint64{}}
}

func (d *refDoc) String() string {
	var b strings.Builder
	for _, it := range d.items {
		if !it.deleted {
			b.WriteRune(it.r)
		}
	}
	return b.String()
}

func (d *refDoc) Len() int {
	n := 0
	for _, it := range d.items {
		if !it.deleted {
			n++
		}
	}
	return n
}

func (d *refDoc) Version() crdt.Version {
	v := crdt.Version{}
	for k, n := range d.next {
		if n > 0 {
			v[k] = n
		}
	}
	return v
}

// visible returns the IDs of the live items in document order.
func (d *refDoc) visible() []refID {
	var ids []refID
	for _, it := range d.items {
		if !it.deleted {
			ids = append(ids, it.id)
		}
	}
	return ids
}

func (d *refDoc) index(id refID) int {
	for i, it := range d.items {
		if it.id == id {
			return i
		}
	}
	panic(fmt.Sprintf("ref: no item %v", id))
}

func (d *refDoc) greater(it refItem, o refOp) bool {
	if it.lamport != o.lamport {
		return it.lamport > o.lamport
	}
	if c := bytes.Compare(it.id.agent[:], o.id.agent[:]); c != 0 {
		return c > 0
	}
	return it.id.seq > o.id.seq
}

func (d *refDoc) apply(o refOp) {
	if d.next[o.id.agent] != o.id.seq {
		panic(fmt.Sprintf("ref: op %v out of order (next %d)", o.id, d.next[o.id.agent]))
	}
	d.next[o.id.agent]++
	d.clock = max(d.clock, o.lamport)
	d.ops = append(d.ops, o)
	if !o.insert {
		d.items[d.index(o.target)].deleted = true
		return
	}
	i := 0
	if !o.root {
		i = d.index(o.origin) + 1
	}
	for i < len(d.items) && d.greater(d.items[i], o) {
		i++
	}
	d.items = slices.Insert(d.items, i, refItem{id: o.id, lamport: o.lamport, r: o.r})
}

func (d *refDoc) local() refOp {
	o := refOp{id: refID{d.self, d.next[d.self]}, lamport: d.clock + 1}
	return o
}

func (d *refDoc) insert(pos int, s string) {
	vis := d.visible()
	prev, root := refID{}, pos == 0
	if !root {
		prev = vis[pos-1]
	}
	for _, r := range s {
		o := d.local()
		o.insert, o.r, o.origin, o.root = true, r, prev, root
		d.apply(o)
		prev, root = o.id, false
	}
}

func (d *refDoc) delete(pos, n int) {
	for _, id := range d.visible()[pos : pos+n] {
		o := d.local()
		o.target = id
		d.apply(o)
	}
}

// merge applies every op src holds and d lacks, in Lamport order (which is
// causal: an op's Lamport time exceeds its origin's or target's).
func (d *refDoc) merge(src *refDoc) {
	var todo []refOp
	for _, o := range src.ops {
		if o.id.seq >= d.next[o.id.agent] {
			todo = append(todo, o)
		}
	}
	slices.SortFunc(todo, func(a, b refOp) int {
		if a.lamport != b.lamport {
			if a.lamport < b.lamport {
				return -1
			}
			return 1
		}
		if c := bytes.Compare(a.id.agent[:], b.id.agent[:]); c != 0 {
			return c
		}
		if a.id.seq < b.id.seq {
			return -1
		}
		return 1
	})
	for _, o := range todo {
		d.apply(o)
	}
}

// TestReferenceItself pins the reference to hand-worked cases, so that a
// disagreement in the differential test can be blamed on the right side.
func TestReferenceItself(t *testing.T) {
	a, b, c := newRef(key(0)), newRef(key(1)), newRef(key(2))
	a.insert(0, "ab")
	b.merge(a)
	c.merge(a)
	a.insert(1, "1")
	b.insert(1, "2")
	c.insert(1, "3")
	c.insert(2, "x") // child of c's "3", Lamport 4
	for _, r := range []*refDoc{a, b, c} {
		r.merge(a)
		r.merge(b)
		r.merge(c)
	}
	// Siblings of Lamport 3 sort by key, greatest first; "x" follows its
	// origin "3" whatever the keys.
	ks := []struct {
		k crdt.AgentKey
		s string
	}{{key(0), "1"}, {key(1), "2"}, {key(2), "3x"}}
	slices.SortFunc(ks, func(x, y struct {
		k crdt.AgentKey
		s string
	}) int {
		return -bytes.Compare(x.k[:], y.k[:])
	})
	want := "a" + ks[0].s + ks[1].s + ks[2].s + "b"
	for i, r := range []*refDoc{a, b, c} {
		if r.String() != want {
			t.Fatalf("ref %d: %q, want %q", i, r.String(), want)
		}
	}
	a.delete(0, 2)
	if a.String() != want[2:] || a.Len() != runeLen(want)-2 || a.Version()[key(0)] != 5 {
		t.Fatalf("after delete: %q %v", a.String(), a.Version())
	}
}

// TestDifferential runs random local edits on several replicas and random
// syncs through Since/Apply, mirrors every step on naive reference replicas,
// and requires the same text and version after every step.
func TestDifferential(t *testing.T) {
	smallNodes(t)
	for _, seed := range seeds(8) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			t.Logf("seed %d (replay with -seed %d)", seed, seed)
			differential(t, seed, 4, 400)
		})
	}
}

func differential(t *testing.T, seed int64, nrep, steps int) {
	r := newRand(seed)
	reals := make([]*crdt.Text, nrep)
	refs := make([]*refDoc, nrep)
	for i := range reals {
		reals[i] = crdt.New(key(i))
		refs[i] = newRef(key(i))
	}
	for step := range steps {
		i := r.IntN(nrep)
		var what string
		if r.IntN(10) < 6 {
			n := refs[i].Len()
			switch k := r.IntN(3); {
			case k == 0 || n == 0:
				pos, s := r.IntN(n+1), randText(r, 6)
				what = fmt.Sprintf("replica %d: insert(%d, %q)", i, pos, s)
				if _, err := reals[i].Insert(pos, s); err != nil {
					t.Fatalf("seed %d step %d %s: %v", seed, step, what, err)
				}
				refs[i].insert(pos, s)
			case k == 1:
				pos := r.IntN(n)
				cnt := 1 + r.IntN(min(n-pos, 8))
				what = fmt.Sprintf("replica %d: delete(%d, %d)", i, pos, cnt)
				if _, err := reals[i].Delete(pos, cnt); err != nil {
					t.Fatalf("seed %d step %d %s: %v", seed, step, what, err)
				}
				refs[i].delete(pos, cnt)
			default:
				pos := r.IntN(n)
				cnt := r.IntN(min(n-pos, 4) + 1)
				s := randText(r, 4)
				what = fmt.Sprintf("replica %d: replace(%d, %d, %q)", i, pos, cnt, s)
				if _, err := reals[i].Replace(pos, cnt, s); err != nil {
					t.Fatalf("seed %d step %d %s: %v", seed, step, what, err)
				}
				refs[i].delete(pos, cnt)
				refs[i].insert(pos, s)
			}
		} else {
			j := r.IntN(nrep)
			what = fmt.Sprintf("sync %d -> %d", j, i)
			if err := reals[i].Apply(reals[j].Since(reals[i].Version())); err != nil {
				t.Fatalf("seed %d step %d %s: %v", seed, step, what, err)
			}
			refs[i].merge(refs[j])
		}
		mustCheck(t, reals[i], fmt.Sprintf("seed %d step %d %s", seed, step, what))
		if got, want := reals[i].String(), refs[i].String(); got != want {
			t.Fatalf("seed %d step %d %s: text differs from the reference at code point %d\n got %q\nwant %q",
				seed, step, what, firstDiff(got, want), got, want)
		}
		if got, want := reals[i].Len(), refs[i].Len(); got != want {
			t.Fatalf("seed %d step %d %s: Len %d, reference %d", seed, step, what, got, want)
		}
		if got, want := reals[i].Version(), refs[i].Version(); !got.Equal(want) {
			t.Fatalf("seed %d step %d %s: version %v, reference %v", seed, step, what, got, want)
		}
	}
	// Everyone syncs with everyone: all equal the reference's merged text.
	for i := range nrep {
		for j := range nrep {
			if err := reals[i].Apply(reals[j].Since(reals[i].Version())); err != nil {
				t.Fatalf("seed %d final sync %d -> %d: %v", seed, j, i, err)
			}
			refs[i].merge(refs[j])
		}
	}
	for i := range nrep {
		mustCheck(t, reals[i], fmt.Sprintf("seed %d final", seed))
		if got, want := reals[i].String(), refs[0].String(); got != want {
			t.Fatalf("seed %d final replica %d differs at %d\n got %q\nwant %q", seed, i, firstDiff(got, want), got, want)
		}
	}
}
