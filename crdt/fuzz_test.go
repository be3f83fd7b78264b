package crdt_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/weft-sync/weft/crdt"
)

// script turns fuzz bytes into choices; past the end it yields zeros.
type script struct{ b []byte }

func (s *script) byte() byte {
	if len(s.b) == 0 {
		return 0
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c
}

func (s *script) done() bool { return len(s.b) == 0 }

// hostile values for 64-bit fields: boundaries of the package's limits and
// of the integer types the implementation narrows to.
var hostile = []uint64{
	0, 1, 2, crdt.MaxSeq - 1, crdt.MaxSeq, crdt.MaxSeq + 1, 1<<32 - 1, 1 << 32, 1<<32 + 1,
	crdt.MaxLamport - 1, crdt.MaxLamport, crdt.MaxLamport + 1, 1<<63 - 1, 1 << 63, ^uint64(0),
}

// num reads a 64-bit field: usually small, sometimes hostile.
func (s *script) num() uint64 {
	switch c := s.byte(); c % 8 {
	case 6:
		return uint64(s.byte()) | uint64(s.byte())<<8
	case 7:
		return hostile[int(s.byte())%len(hostile)]
	default:
		return uint64(c >> 3)
	}
}

// text reads insert text: code points from alphabet, none, or raw bytes
// (often invalid UTF-8).
func (s *script) text(n uint64) string {
	switch c := s.byte(); c % 8 {
	case 6:
		return ""
	case 7:
		k := int(s.byte() % 8)
		var b []byte
		for range k {
			b = append(b, s.byte())
		}
		return string(b)
	default:
		var b strings.Builder
		for i := uint64(0); i < min(n, 16); i++ {
			b.WriteString(alphabet[int(s.byte())%len(alphabet)])
		}
		return b.String()
	}
}

// fuzzAgents are the keys a fuzzed delta draws from: the two the base
// replica knows and two it does not.
var fuzzAgents = []crdt.AgentKey{key(0), key(1), key(2), key(3)}

// ref reads an agent index: in the table, just past it, or the root.
func (s *script) ref(na int) uint32 {
	c := s.byte()
	switch {
	case c%16 == 15:
		return crdt.RootAgent
	case c%16 == 14:
		return uint32(na) + uint32(c>>4)
	}
	if na == 0 {
		return 0
	}
	return uint32(int(c>>4) % na)
}

// fuzzDelta builds an arbitrary delta, hostile values included.
func fuzzDelta(s *script) crdt.Delta {
	var d crdt.Delta
	na := int(s.byte() % 5)
	for range na {
		d.Agents = append(d.Agents, fuzzAgents[int(s.byte())%len(fuzzAgents)])
	}
	nops := int(s.byte() % 6)
	for range nops {
		var o crdt.Op
		switch c := s.byte(); c % 8 {
		case 0, 1, 2, 3:
			o.Kind = crdt.OpInsert
		case 4, 5, 6:
			o.Kind = crdt.OpDelete
		default:
			o.Kind = crdt.OpKind(c >> 3)
		}
		o.Agent = s.ref(na)
		o.Seq = s.num()
		o.Lamport = s.num()
		o.Len = s.num()
		if o.Kind == crdt.OpInsert {
			o.Origin = crdt.Ref{Agent: s.ref(na), Seq: s.num()}
			o.Text = s.text(o.Len)
		} else {
			o.Target = crdt.Ref{Agent: s.ref(na), Seq: s.num()}
			if s.byte()%16 == 0 {
				o.Text = "x"
			}
		}
		d.Ops = append(d.Ops, o)
	}
	return d
}

// fuzzBase is a replica with text from two agents, tombstones and delete
// runs, so fuzzed ops find real IDs, deleted IDs and delete seqs.
func fuzzBase(tb testing.TB) *crdt.Text {
	tb.Helper()
	a := crdt.New(key(0))
	b := a.Fork(key(1))
	for _, e := range []edit{{op: "ins", pos: 0, s: "héllo wörld"}, {op: "del", pos: 2, n: 3}, {op: "ins", pos: 1, s: "😀𝄞"}} {
		if _, err := e.do(a); err != nil {
			tb.Fatal(err)
		}
	}
	if err := b.Apply(a.Since(nil)); err != nil {
		tb.Fatal(err)
	}
	for _, e := range []edit{{op: "ins", pos: 3, s: "中文"}, {op: "rep", pos: 0, n: 2, s: "X"}} {
		if _, err := e.do(b); err != nil {
			tb.Fatal(err)
		}
	}
	if err := a.Apply(b.Since(a.Version())); err != nil {
		tb.Fatal(err)
	}
	return a
}

// FuzzApply feeds arbitrary deltas to a replica holding some text. Apply must
// not panic, Check must hold whatever the result, an ErrInvalid delta must
// leave text and version unchanged, a MissingError must list valid pending
// indices, and whatever was accepted must survive Since and a snapshot.
func FuzzApply(f *testing.F) {
	f.Cleanup(crdt.SetNodeSizes(4, 4, 4))
	f.Add([]byte{})
	f.Add([]byte{1, 0, 1, 0, 0, 0, 8, 200, 200, 1, 15, 0, 0})
	// Agent key(2) inserts after key(0)'s seq 0, then deletes it.
	f.Add([]byte{2, 2, 0, 2, 0, 0, 0, 0x80, 8, 0, 0, 0, 4, 0, 8, 0x80, 8, 16, 0, 0})
	// Hostile counters.
	f.Add([]byte{1, 3, 1, 0, 0, 7, 5, 7, 9, 7, 3, 15, 0, 0})
	f.Add([]byte{3, 0, 1, 2, 5, 4, 16, 7, 14, 0x30, 0, 8, 16, 7, 4, 1, 7, 255, 255, 3, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := fuzzBase(t)
		s := &script{b: data}
		d := fuzzDelta(s)
		text, ver := r.String(), r.Version()
		var changes []crdt.Change
		err := r.ApplyChanges(d, func(c crdt.Change) { changes = append(changes, c) })
		if cerr := r.Check(); cerr != nil {
			t.Fatalf("Apply(%+v) = %v; then Check: %v", d, err, cerr)
		}
		var me *crdt.MissingError
		switch {
		case err == nil:
		case errors.Is(err, crdt.ErrInvalid):
			if errors.Is(err, crdt.ErrMissing) {
				t.Fatalf("error both invalid and missing: %v", err)
			}
			if r.String() != text || !r.Version().Equal(ver) || len(changes) > 0 {
				t.Fatalf("Apply(%+v) = %v but changed the replica: %q %v (was %q %v), changes %v",
					d, err, r.String(), r.Version(), text, ver, changes)
			}
		case errors.As(err, &me):
			if len(me.Pending) == 0 || !slices.IsSorted(me.Pending) || me.Pending[0] < 0 || me.Pending[len(me.Pending)-1] >= len(d.Ops) {
				t.Fatalf("Apply(%+v): bad pending list in %v: %v", d, err, me.Pending)
			}
		default:
			t.Fatalf("Apply(%+v): unexpected error %v", d, err)
		}
		// The reported changes turn the old text into the new one.
		view := mirror([]rune(text))
		for _, c := range changes {
			if err := view.apply(c); err != nil {
				t.Fatalf("Apply(%+v): change %+v: %v", d, c, err)
			}
		}
		if string(view) != r.String() {
			t.Fatalf("Apply(%+v): changes give %q, text is %q", d, string(view), r.String())
		}
		// Applying again changes nothing.
		text2, ver2 := r.String(), r.Version()
		changes = nil
		err2 := r.ApplyChanges(d, func(c crdt.Change) { changes = append(changes, c) })
		if err == nil && err2 != nil {
			t.Fatalf("Apply(%+v) succeeded, then failed on re-apply: %v", d, err2)
		}
		if err == nil && (r.String() != text2 || !r.Version().Equal(ver2) || len(changes) > 0) {
			t.Fatalf("re-applying %+v changed the replica", d)
		}
		if err := r.Check(); err != nil {
			t.Fatalf("after re-apply: %v", err)
		}
		// Whatever the replica holds is consistent history: it rebuilds
		// the same text from scratch and from a snapshot, and still edits.
		fresh := crdt.New(key(5))
		if err := fresh.Apply(r.Since(nil)); err != nil {
			t.Fatalf("after Apply(%+v): Since(nil) does not apply to an empty replica: %v", d, err)
		}
		if fresh.String() != r.String() || !fresh.Version().Equal(r.Version()) {
			t.Fatalf("after Apply(%+v): history rebuilds %q %v, replica is %q %v", d, fresh.String(), fresh.Version(), r.String(), r.Version())
		}
		snap, err := r.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		l, err := crdt.Load(snap, key(6))
		if err != nil {
			t.Fatalf("after Apply(%+v): Load: %v", d, err)
		}
		if err := l.Check(); err != nil || l.String() != r.String() || !l.Version().Equal(r.Version()) {
			t.Fatalf("after Apply(%+v): snapshot loads as %q %v (check %v)", d, l.String(), l.Version(), err)
		}
		// Remote ops may use up the replica's own seqs or the Lamport
		// clock; then a local edit must fail cleanly.
		text3, ver3 := r.String(), r.Version()
		if _, err := r.Insert(r.Len(), "z"); err != nil {
			if !errors.Is(err, crdt.ErrInvalid) || r.String() != text3 || !r.Version().Equal(ver3) {
				t.Fatalf("after Apply(%+v): local insert: %v", d, err)
			}
		} else if r.String() != text3+"z" {
			t.Fatalf("after Apply(%+v): local insert gave %q", d, r.String())
		}
		if err := r.Check(); err != nil {
			t.Fatalf("after a local edit: %v", err)
		}
	})
}

// FuzzConverge turns fuzz bytes into an edit and delivery script over three
// replicas (local edits broadcast to inboxes, deliveries in any order, with
// duplicates and parked ops, pairwise Since syncs), then drains, syncs and
// requires convergence, with Check after every op.
func FuzzConverge(f *testing.F) {
	f.Cleanup(crdt.SetNodeSizes(4, 4, 4))
	f.Add([]byte{})
	f.Add([]byte{0, 0, 1, 8, 0, 2, 16, 1, 3, 5, 0, 13, 0, 21, 0, 7})
	f.Add([]byte{0, 0, 9, 8, 1, 4, 11, 0, 2, 3, 2, 5, 4, 13, 1, 29, 0, 15, 23})
	f.Add([]byte("\x00\x00\x05abcde\x08\x00\x03xyz\x10\x00\x02qq\x05\x00\x0d\x00\x15\x00\x0b\x01\x02\x14\x00\x02ab\x07\x0f\x17"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &sim{t: t}
		s.addReplicas(3)
		sc := &script{b: data}
		for s.step = 0; !sc.done() && s.step < 200; s.step++ {
			c := sc.byte()
			i := int(c>>3) % 3
			rp := s.reps[i]
			n := rp.doc.Len()
			var ch crdt.Change
			switch c % 8 {
			case 0, 1, 2: // insert
				ch.Pos = int(sc.byte()) % (n + 1)
				ch.Insert = fuzzText(sc)
			case 3: // delete
				if n == 0 {
					continue
				}
				ch.Pos = int(sc.byte()) % n
				ch.Delete = 1 + int(sc.byte())%(n-ch.Pos)
			case 4: // replace
				if n == 0 {
					continue
				}
				ch.Pos = int(sc.byte()) % n
				ch.Delete = int(sc.byte()) % (n - ch.Pos + 1)
				ch.Insert = fuzzText(sc)
			case 5, 6: // deliver one message, maybe keeping a duplicate
				if len(rp.inbox) == 0 {
					continue
				}
				b := sc.byte()
				m := int(b>>1) % len(rp.inbox)
				d := rp.inbox[m]
				if b&1 == 0 {
					rp.inbox = append(rp.inbox[:m], rp.inbox[m+1:]...)
				}
				if rest, wait := s.apply(i, d, fmt.Sprintf("delivery to %d", i)); wait {
					rp.inbox = append(rp.inbox, rest)
				}
				continue
			case 7: // sync with Since
				j := int(sc.byte()) % 3
				s.syncPair(i, j)
				continue
			}
			d := s.local(i, ch)
			for j, o := range s.reps {
				if j != i {
					o.inbox = append(o.inbox, d)
				}
			}
		}
		s.drain(1000)
		s.assertConverged("after draining")
		for range 2 {
			s.syncPair(0, 1)
			s.syncPair(1, 2)
		}
		s.assertConverged("after syncing")
	})
}

// fuzzText reads 1..4 code points from alphabet.
func fuzzText(sc *script) string {
	var b strings.Builder
	k := 1 + int(sc.byte()%4)
	for range k {
		b.WriteString(alphabet[int(sc.byte())%len(alphabet)])
	}
	return b.String()
}
