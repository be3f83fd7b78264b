package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// betweenRef is Between as it was before the per-agent merge: collect
// every op, sort the lot by (Lamport time, agent key, seq), convert. The
// tests hold the new one to its exact output.
func (t *Text) betweenRef(from, to Version) (Delta, error) {
	var ops []sop
	partial := false
	for a := range t.agents {
		st := &t.agents[a]
		lo := uint32(min(from[st.key], uint64(st.next)))
		hi := st.next
		if to != nil {
			hi = uint32(min(to[st.key], uint64(st.next)))
			partial = partial || hi < st.next
		}
		if lo >= hi {
			continue
		}
		ops = t.collectInserts(ops, uint32(a), lo, hi, to != nil)
	}
	if partial {
		for _, o := range ops {
			if o.kind == OpInsert && o.deleted {
				return Delta{}, fmt.Errorf("%w: text of %s", ErrCompacted, ID{t.agents[o.agent].key, uint64(o.seq)})
			}
		}
	}
	for a := range t.agents {
		st := &t.agents[a]
		lo := uint32(min(from[st.key], uint64(st.next)))
		hi := st.next
		if to != nil {
			hi = uint32(min(to[st.key], uint64(st.next)))
		}
		if lo >= hi {
			continue
		}
		ops = collectDeletes(ops, st.dels, uint32(a), lo, hi)
	}
	slices.SortFunc(ops, func(x, y sop) int {
		if x.lamport != y.lamport {
			if x.lamport < y.lamport {
				return -1
			}
			return 1
		}
		if x.agent != y.agent {
			return bytes.Compare(t.agents[x.agent].key[:], t.agents[y.agent].key[:])
		}
		return int(x.seq) - int(y.seq)
	})
	b := deltaBuilder{t: t}
	b.d.Ops = make([]Op, 0, len(ops))
	for _, o := range ops {
		op := Op{Kind: o.kind, Agent: b.ref(o.agent), Seq: uint64(o.seq), Lamport: o.lamport, Len: uint64(o.n)}
		if o.kind == OpInsert {
			op.Origin = Ref{Agent: b.ref(o.ragent), Seq: uint64(o.rseq)}
			if o.tlen > 0 {
				op.Text = string(t.buf[o.toff : o.toff+o.tlen])
			}
		} else {
			op.Target = Ref{Agent: b.ref(o.ragent), Seq: uint64(o.rseq)}
		}
		b.d.Ops = append(b.d.Ops, op)
	}
	return b.d, nil
}

func refKey(i int) AgentKey {
	var k AgentKey
	x := uint64(i+7) * 0x9e3779b97f4a7c15
	for j := range k {
		x ^= x >> 29
		x *= 0xbf58476d1ce4e5b9
		k[j] = byte(x >> 56)
	}
	return k
}

var refAlphabet = []string{"a", "b", " ", "é", "中", "😀"}

func refText(r *rand.Rand, max int) string {
	var b strings.Builder
	for n := 1 + r.IntN(max); n > 0; n-- {
		b.WriteString(refAlphabet[r.IntN(len(refAlphabet))])
	}
	return b.String()
}

// refEdit makes a random local edit; runs of backspaces and forward
// deletes are frequent, since they make the delete runs Since expands.
func refEdit(tb testing.TB, r *rand.Rand, d *Text) {
	tb.Helper()
	n := d.Len()
	var err error
	switch k := r.IntN(10); {
	case k < 5 || n == 0:
		_, err = d.Insert(r.IntN(n+1), refText(r, 6))
	case k < 7: // backspaces
		p := r.IntN(n) + 1
		for c := 1 + r.IntN(min(p, 8)); c > 0 && err == nil; c-- {
			p--
			_, err = d.Delete(p, 1)
		}
	case k < 8: // forward deletes
		p := r.IntN(n)
		for c := 1 + r.IntN(min(n-p, 8)); c > 0 && err == nil; c-- {
			_, err = d.Delete(p, 1)
		}
	default:
		p := r.IntN(n)
		_, err = d.Replace(p, r.IntN(min(n-p, 4)+1), refText(r, 3))
	}
	if err != nil {
		tb.Fatal(err)
	}
}

func checkAgainstRef(tb testing.TB, d *Text, from, to Version, ctx string) {
	tb.Helper()
	got, gerr := d.between(from, to)
	want, werr := d.betweenRef(from, to)
	if (gerr == nil) != (werr == nil) || gerr != nil && gerr.Error() != werr.Error() {
		tb.Fatalf("%s: Between error %v, reference %v", ctx, gerr, werr)
	}
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("%s: Between differs from the reference\n got %+v\nwant %+v", ctx, got, want)
	}
}

// TestSinceMatchesReference runs random multi-agent editing with syncs,
// snapshot reloads and partial versions, and checks that Between returns
// exactly what the sort-based reference returns, op for op.
func TestSinceMatchesReference(t *testing.T) {
	for seed := range uint64(12) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			if seed%3 == 0 {
				l, n, c := leafCap, nodeCap, idChunkCap
				leafCap, nodeCap, idChunkCap = 4, 4, 4
				t.Cleanup(func() { leafCap, nodeCap, idChunkCap = l, n, c })
			}
			r := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
			reps := make([]*Text, 2+int(seed%4))
			for i := range reps {
				reps[i] = New(refKey(i))
			}
			var versions []Version
			for step := range 400 {
				i := r.IntN(len(reps))
				switch k := r.IntN(100); {
				case k < 65:
					refEdit(t, r, reps[i])
				case k < 92:
					j := r.IntN(len(reps))
					if err := reps[i].Apply(reps[j].Since(reps[i].Version())); err != nil {
						t.Fatalf("step %d: sync %d<-%d: %v", step, i, j, err)
					}
				default:
					j := r.IntN(len(reps))
					if !reps[j].Version().Covers(reps[i].Version()) {
						continue
					}
					snap, err := reps[j].MarshalBinary()
					if err != nil {
						t.Fatal(err)
					}
					if reps[i], err = Load(snap, refKey(i)); err != nil {
						t.Fatal(err)
					}
				}
				versions = append(versions, reps[i].Version())
				if step%7 != 0 {
					continue
				}
				d := reps[r.IntN(len(reps))]
				ctx := fmt.Sprintf("seed %d step %d", seed, step)
				checkAgainstRef(t, d, nil, nil, ctx+" full")
				for range 3 {
					v := versions[r.IntN(len(versions))]
					w := versions[r.IntN(len(versions))]
					checkAgainstRef(t, d, v, nil, ctx+" since")
					checkAgainstRef(t, d, nil, v, ctx+" upto")
					checkAgainstRef(t, d, v, w, ctx+" between")
				}
			}
		})
	}
}

// TestSinceLamportOutOfSeqOrder: a peer whose Lamport times do not grow
// with its seqs (Apply does not refuse that) still gets its ops sorted by
// Lamport time, as before.
func TestSinceLamportOutOfSeqOrder(t *testing.T) {
	x, y := refKey(1), refKey(2)
	d := New(refKey(0))
	if _, err := d.Insert(0, "hello"); err != nil {
		t.Fatal(err)
	}
	odd := Delta{Agents: []AgentKey{x, y}, Ops: []Op{
		{Kind: OpInsert, Agent: 0, Seq: 0, Lamport: 100, Len: 2, Origin: Ref{Agent: RootAgent}, Text: "ab"},
		{Kind: OpInsert, Agent: 0, Seq: 2, Lamport: 3, Len: 1, Origin: Ref{Agent: RootAgent}, Text: "c"},
		{Kind: OpDelete, Agent: 0, Seq: 3, Lamport: 50, Len: 1, Target: Ref{Agent: 0, Seq: 0}},
		{Kind: OpInsert, Agent: 1, Seq: 0, Lamport: 3, Len: 1, Origin: Ref{Agent: RootAgent}, Text: "z"},
		{Kind: OpInsert, Agent: 1, Seq: 1, Lamport: 50, Len: 1, Origin: Ref{Agent: 1, Seq: 0}, Text: "w"},
	}}
	if err := d.Apply(odd); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	checkAgainstRef(t, d, nil, nil, "full")
	checkAgainstRef(t, d, Version{x: 1}, nil, "partial")
	got := d.Since(nil)
	if !slices.IsSortedFunc(got.Ops, func(a, b Op) int {
		if a.Lamport != b.Lamport {
			return int(a.Lamport) - int(b.Lamport)
		}
		return bytes.Compare(got.Agents[a.Agent][:], got.Agents[b.Agent][:])
	}) {
		t.Fatalf("Since is not in Lamport order: %+v", got.Ops)
	}
	fresh := New(refKey(9))
	if err := fresh.Apply(got); err != nil && !errors.Is(err, ErrMissing) {
		t.Fatalf("Apply(Since(nil)): %v", err)
	}
}

// TestSinceSharesOneString: the texts of a full history are cut from one
// allocation, and the result is still exact.
func TestSinceSharesOneString(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	d := New(refKey(0))
	for range 300 {
		refEdit(t, r, d)
	}
	allocs := testing.AllocsPerRun(5, func() { d.Since(nil) })
	// The ops, the text, the order and the agent table; a handful more for
	// the merge's scratch.
	if allocs > 8 {
		t.Errorf("Since(nil) made %.0f allocations, want at most 8", allocs)
	}
	fresh := New(refKey(1))
	if err := fresh.Apply(d.Since(nil)); err != nil {
		t.Fatal(err)
	}
	if fresh.String() != d.String() || !fresh.Version().Equal(d.Version()) {
		t.Fatalf("history rebuilds %q, want %q", fresh.String(), d.String())
	}
}
