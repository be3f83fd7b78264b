package crdt_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/weft-sync/weft/crdt"
)

// edit is one local edit in a table.
type edit struct {
	op     string // "ins", "del" or "rep"
	pos, n int
	s      string
}

func (e edit) do(d *crdt.Text) (crdt.Delta, error) {
	switch e.op {
	case "ins":
		return d.Insert(e.pos, e.s)
	case "del":
		return d.Delete(e.pos, e.n)
	case "rep":
		return d.Replace(e.pos, e.n, e.s)
	}
	panic("bad edit " + e.op)
}

func (e edit) String() string { return fmt.Sprintf("%s(%d,%d,%q)", e.op, e.pos, e.n, e.s) }

func TestLocalEdits(t *testing.T) {
	tests := []struct {
		name    string
		start   string
		e       edit
		want    string
		wantErr error
	}{
		{"insert into empty", "", edit{op: "ins", pos: 0, s: "abc"}, "abc", nil},
		{"insert at start", "world", edit{op: "ins", pos: 0, s: "hello "}, "hello world", nil},
		{"insert in middle", "held", edit{op: "ins", pos: 2, s: "l"}, "helld", nil},
		{"insert at end", "abc", edit{op: "ins", pos: 3, s: "def"}, "abcdef", nil},
		{"insert empty string", "abc", edit{op: "ins", pos: 1, s: ""}, "abc", nil},
		{"delete at start", "abcdef", edit{op: "del", pos: 0, n: 2}, "cdef", nil},
		{"delete in middle", "abcdef", edit{op: "del", pos: 2, n: 2}, "abef", nil},
		{"delete at end", "abcdef", edit{op: "del", pos: 4, n: 2}, "abcd", nil},
		{"delete everything", "abcdef", edit{op: "del", pos: 0, n: 6}, "", nil},
		{"delete nothing", "abc", edit{op: "del", pos: 3, n: 0}, "abc", nil},
		{"replace at start", "abcdef", edit{op: "rep", pos: 0, n: 1, s: "XY"}, "XYbcdef", nil},
		{"replace in middle", "abcdef", edit{op: "rep", pos: 2, n: 3, s: "-"}, "ab-f", nil},
		{"replace at end", "abcdef", edit{op: "rep", pos: 5, n: 1, s: "F!"}, "abcdeF!", nil},
		{"replace as pure insert", "abc", edit{op: "rep", pos: 3, n: 0, s: "d"}, "abcd", nil},
		{"replace as pure delete", "abc", edit{op: "rep", pos: 0, n: 2, s: ""}, "c", nil},

		{"insert before start", "abc", edit{op: "ins", pos: -1, s: "x"}, "abc", crdt.ErrOutOfRange},
		{"insert past end", "abc", edit{op: "ins", pos: 4, s: "x"}, "abc", crdt.ErrOutOfRange},
		{"insert into empty past end", "", edit{op: "ins", pos: 1, s: "x"}, "", crdt.ErrOutOfRange},
		{"delete before start", "abc", edit{op: "del", pos: -1, n: 1}, "abc", crdt.ErrOutOfRange},
		{"delete past end", "abc", edit{op: "del", pos: 2, n: 2}, "abc", crdt.ErrOutOfRange},
		{"delete negative count", "abc", edit{op: "del", pos: 1, n: -1}, "abc", crdt.ErrOutOfRange},
		{"delete from empty", "", edit{op: "del", pos: 0, n: 1}, "", crdt.ErrOutOfRange},
		{"replace past end", "abc", edit{op: "rep", pos: 1, n: 3, s: "x"}, "abc", crdt.ErrOutOfRange},
		{"replace at bad position", "abc", edit{op: "rep", pos: 4, n: 0, s: "x"}, "abc", crdt.ErrOutOfRange},
		{"insert invalid UTF-8", "abc", edit{op: "ins", pos: 1, s: "\xff"}, "abc", crdt.ErrInvalid},
		{"replace invalid UTF-8", "abc", edit{op: "rep", pos: 1, n: 1, s: "a\xc3"}, "abc", crdt.ErrInvalid},

		// Positions and counts are code points, whatever their UTF-8 or
		// UTF-16 width.
		{"two-byte code points", "héllo", edit{op: "ins", pos: 2, s: "ÿ"}, "héÿllo", nil},
		{"three-byte code points", "中文字", edit{op: "del", pos: 1, n: 1}, "中字", nil},
		{"emoji is one position", "a😀b", edit{op: "ins", pos: 2, s: "|"}, "a😀|b", nil},
		{"delete one emoji", "a😀b", edit{op: "del", pos: 1, n: 1}, "ab", nil},
		{"astral past end", "😀😀", edit{op: "ins", pos: 3, s: "x"}, "😀😀", crdt.ErrOutOfRange},
		{"astral at end", "😀😀", edit{op: "ins", pos: 2, s: "𝄞"}, "😀😀𝄞", nil},
		{"last code point", "a\U0010FFFFb", edit{op: "rep", pos: 1, n: 1, s: "\U00010000"}, "a\U00010000b", nil},
		{"zwj sequence counts each code point", "👩\u200d💻!", edit{op: "del", pos: 1, n: 2}, "👩!", nil},
		{"replace astral run", "x𝄞𝄞𝄞y", edit{op: "rep", pos: 2, n: 2, s: "é"}, "x𝄞éy", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := crdt.New(key(0))
			if tc.start != "" {
				if _, err := d.Insert(0, tc.start); err != nil {
					t.Fatal(err)
				}
			}
			peer := d.Fork(key(1))
			before := d.Version()
			delta, err := tc.e.do(d)
			mustCheck(t, d, tc.e.String())
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("%v: err = %v, want %v", tc.e, err, tc.wantErr)
				}
				if !delta.Empty() {
					t.Errorf("%v failed but returned %d ops", tc.e, len(delta.Ops))
				}
				if !d.Version().Equal(before) {
					t.Errorf("%v failed but moved the version from %v to %v", tc.e, before, d.Version())
				}
			} else if err != nil {
				t.Fatalf("%v: %v", tc.e, err)
			}
			if got := d.String(); got != tc.want {
				t.Fatalf("%v on %q: got %q, want %q", tc.e, tc.start, got, tc.want)
			}
			if got, want := d.Len(), runeLen(tc.want); got != want {
				t.Fatalf("Len = %d, want %d code points", got, want)
			}
			// The delta carries the edit to a replica that forked before it.
			if err := peer.Apply(delta); err != nil {
				t.Fatalf("peer Apply: %v", err)
			}
			mustCheck(t, peer, "peer")
			if got := peer.String(); got != tc.want {
				t.Fatalf("peer: got %q, want %q", got, tc.want)
			}
			if !peer.Version().Equal(d.Version()) {
				t.Fatalf("peer version %v, want %v", peer.Version(), d.Version())
			}
		})
	}
}

// TestDeltaCountsCodePoints checks the wire form of local edits: one ID per
// code point, contiguous seqs, and a Lamport time per code point.
func TestDeltaCountsCodePoints(t *testing.T) {
	d := crdt.New(key(0))
	ins, err := d.Insert(0, "a😀é中")
	if err != nil {
		t.Fatal(err)
	}
	if len(ins.Ops) != 1 {
		t.Fatalf("insert: %d ops, want 1", len(ins.Ops))
	}
	o := ins.Ops[0]
	if o.Kind != crdt.OpInsert || o.Seq != 0 || o.Len != 4 || o.Text != "a😀é中" || o.Origin.Agent != crdt.RootAgent {
		t.Fatalf("insert op = %+v", o)
	}
	if ins.Agents[o.Agent] != key(0) {
		t.Fatalf("author key %v, want %v", ins.Agents[o.Agent], key(0))
	}
	del, err := d.Delete(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(del.Ops) != 1 {
		t.Fatalf("delete: %d ops, want 1", len(del.Ops))
	}
	o2 := del.Ops[0]
	if o2.Kind != crdt.OpDelete || o2.Seq != 4 || o2.Len != 2 || o2.Target.Seq != 1 || del.Agents[o2.Target.Agent] != key(0) {
		t.Fatalf("delete op = %+v", o2)
	}
	if o2.Lamport < o.Lamport+o.Len {
		t.Fatalf("delete Lamport %d not after the insert's last %d", o2.Lamport, o.Lamport+o.Len-1)
	}
	if v := d.Version(); v[key(0)] != 6 || len(v) != 1 {
		t.Fatalf("version %v, want {%v: 6}", v, key(0))
	}
	if d.String() != "a中" || d.Len() != 2 {
		t.Fatalf("text %q len %d", d.String(), d.Len())
	}
}

// TestConcurrentInsertsSamePosition has three replicas insert at the same
// position at once and delivers the three deltas in all six orders: every
// order gives the same text, and it is the one the RGA rule dictates.
func TestConcurrentInsertsSamePosition(t *testing.T) {
	base := crdt.New(key(9))
	if _, err := base.Insert(0, "[]"); err != nil {
		t.Fatal(err)
	}
	texts := []string{"A", "BB", "C😀"}
	agents := []crdt.AgentKey{key(0), key(1), key(2)}
	var deltas []crdt.Delta
	for i, s := range texts {
		r := base.Fork(agents[i])
		d, err := r.Insert(1, s)
		if err != nil {
			t.Fatal(err)
		}
		deltas = append(deltas, d)
	}
	// Equal Lamport times, so the order among siblings is by agent key,
	// the greatest first (a new item skips the greater ones after its
	// origin).
	idx := []int{0, 1, 2}
	slices.SortFunc(idx, func(a, b int) int { return -strings.Compare(string(agents[a][:]), string(agents[b][:])) })
	want := "["
	for _, i := range idx {
		want += texts[i]
	}
	want += "]"
	for _, order := range permutations(3) {
		r := base.Fork(key(5))
		for _, i := range order {
			if err := r.Apply(deltas[i]); err != nil {
				t.Fatalf("order %v: %v", order, err)
			}
			mustCheck(t, r, fmt.Sprint("order ", order))
		}
		if got := r.String(); got != want {
			t.Errorf("order %v: got %q, want %q", order, got, want)
		}
	}

	// A later Lamport time wins over any key: an agent that has seen more
	// places its insert first.
	busy := base.Fork(key(3))
	for range 3 {
		if _, err := busy.Insert(2, "z"); err != nil {
			t.Fatal(err)
		}
		if _, err := busy.Delete(2, 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := busy.Insert(1, "L"); err != nil {
		t.Fatal(err)
	}
	hist := busy.Since(base.Version())
	for _, order := range permutations(4) {
		r := base.Fork(key(6))
		for _, i := range order {
			d := hist
			if i < 3 {
				d = deltas[i]
			}
			if err := r.Apply(d); err != nil {
				t.Fatalf("order %v: %v", order, err)
			}
			mustCheck(t, r, fmt.Sprint("order ", order))
		}
		if got := r.String(); got != "[L"+want[1:] {
			t.Errorf("order %v: got %q, want %q", order, got, "[L"+want[1:])
		}
	}
}

func permutations(n int) [][]int {
	if n == 1 {
		return [][]int{{0}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int{}, p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

func TestDeleteAlreadyDeleted(t *testing.T) {
	a := crdt.New(key(0))
	if _, err := a.Insert(0, "abcdef"); err != nil {
		t.Fatal(err)
	}
	b := a.Fork(key(1))
	da, err := a.Delete(1, 3) // bcd
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Delete(2, 3) // cde
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(db); err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(da); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*crdt.Text{a, b} {
		mustCheck(t, r, "after crossing deletes")
		if got := r.String(); got != "af" || r.Len() != 2 {
			t.Fatalf("got %q (len %d), want \"af\"", got, r.Len())
		}
	}
	if !a.Version().Equal(b.Version()) {
		t.Fatalf("versions differ: %v vs %v", a.Version(), b.Version())
	}
	// A third replica receiving both deletes, in either order, agrees.
	for _, order := range [][]crdt.Delta{{da, db}, {db, da}} {
		c := crdt.New(key(2))
		if err := c.Apply(a.Since(nil)); err != nil {
			t.Fatal(err)
		}
		for _, d := range order {
			if err := c.Apply(d); err != nil {
				t.Fatal(err)
			}
		}
		mustCheck(t, c, "third replica")
		if c.String() != "af" || !c.Version().Equal(a.Version()) {
			t.Fatalf("third replica %q %v", c.String(), c.Version())
		}
	}
}

func TestReapplyIsIdempotent(t *testing.T) {
	a := crdt.New(key(0))
	var deltas []crdt.Delta
	for _, e := range []edit{{op: "ins", pos: 0, s: "héllo wörld"}, {op: "del", pos: 2, n: 3}, {op: "rep", pos: 0, n: 1, s: "😀"}, {op: "ins", pos: 3, s: "中"}} {
		d, err := e.do(a)
		if err != nil {
			t.Fatal(err)
		}
		deltas = append(deltas, d)
	}
	b := crdt.New(key(1))
	var changes []crdt.Change
	for round := range 3 {
		for i, d := range deltas {
			if err := b.ApplyChanges(d, func(c crdt.Change) { changes = append(changes, c) }); err != nil {
				t.Fatalf("round %d delta %d: %v", round, i, err)
			}
			mustCheck(t, b, "reapply")
		}
		if b.String() != a.String() || !b.Version().Equal(a.Version()) {
			t.Fatalf("round %d: %q %v, want %q %v", round, b.String(), b.Version(), a.String(), a.Version())
		}
		if round > 0 && len(changes) > 0 {
			t.Fatalf("round %d: re-applying reported changes %v", round, changes)
		}
		changes = nil
	}
	// The whole history, twice, changes nothing either.
	for range 2 {
		if err := b.ApplyChanges(a.Since(nil), func(c crdt.Change) { changes = append(changes, c) }); err != nil {
			t.Fatal(err)
		}
	}
	if len(changes) > 0 || b.String() != a.String() {
		t.Fatalf("history re-applied: changes %v, text %q", changes, b.String())
	}
}

// TestPartialOverlap applies runs that are partly known already: only the
// unknown tail may take effect.
func TestPartialOverlap(t *testing.T) {
	a := crdt.New(key(0))
	first, err := a.Insert(0, "héllo")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Insert(5, " wörld😀"); err != nil {
		t.Fatal(err)
	}
	full := a.Since(nil)
	if len(full.Ops) != 1 || full.Ops[0].Len != 12 {
		t.Fatalf("want the typing run as one op of 12, got %+v", full.Ops)
	}
	b := crdt.New(key(1))
	if err := b.Apply(first); err != nil {
		t.Fatal(err)
	}
	var changes []crdt.Change
	if err := b.ApplyChanges(full, func(c crdt.Change) { changes = append(changes, c) }); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, b, "overlap insert")
	if b.String() != "héllo wörld😀" {
		t.Fatalf("got %q", b.String())
	}
	if want := []crdt.Change{{Pos: 5, Insert: " wörld😀"}}; !slices.Equal(changes, want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}

	// A delete run that overlaps a known one: deleting "llo w" after
	// "ll" is known removes only "o w".
	del, err := a.Delete(2, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(del.Ops) != 1 {
		t.Fatalf("delete: %d ops", len(del.Ops))
	}
	head := del
	head.Ops = []crdt.Op{del.Ops[0]}
	head.Ops[0].Len = 2
	if err := b.Apply(head); err != nil {
		t.Fatal(err)
	}
	if b.String() != "héo wörld😀" {
		t.Fatalf("after head of delete: %q", b.String())
	}
	changes = nil
	if err := b.ApplyChanges(del, func(c crdt.Change) { changes = append(changes, c) }); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, b, "overlap delete")
	if b.String() != a.String() || !b.Version().Equal(a.Version()) {
		t.Fatalf("got %q %v, want %q %v", b.String(), b.Version(), a.String(), a.Version())
	}
	if want := []crdt.Change{{Pos: 2, Delete: 3}}; !slices.Equal(changes, want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
}

func TestMissingDependency(t *testing.T) {
	a := crdt.New(key(0))
	d1, err := a.Insert(0, "abc")
	if err != nil {
		t.Fatal(err)
	}
	d2, err := a.Insert(1, "X")
	if err != nil {
		t.Fatal(err)
	}
	// An independent agent's op travels in the same delta.
	c := crdt.New(key(2))
	dc, err := c.Insert(0, "c")
	if err != nil {
		t.Fatal(err)
	}
	mixed := crdt.Delta{Agents: []crdt.AgentKey{key(2), key(0)}}
	oc := dc.Ops[0]
	oc.Agent = 0
	o2 := d2.Ops[0]
	o2.Agent, o2.Origin.Agent = 1, 1
	mixed.Ops = []crdt.Op{o2, oc}

	b := crdt.New(key(1))
	err = b.Apply(mixed)
	mustCheck(t, b, "after missing")
	var me *crdt.MissingError
	if !errors.As(err, &me) || !errors.Is(err, crdt.ErrMissing) {
		t.Fatalf("err = %v, want a *MissingError wrapping ErrMissing", err)
	}
	// a's seq 3 needs seqs 0..2 first: the missing ID is a's seq 0.
	if me.ID != (crdt.ID{Agent: key(0), Seq: 0}) {
		t.Fatalf("missing ID %v, want %v", me.ID, crdt.ID{Agent: key(0), Seq: 0})
	}
	if !slices.Equal(me.Pending, []int{0}) {
		t.Fatalf("pending %v, want [0]", me.Pending)
	}
	// The other op was applied.
	if b.String() != "c" || b.Version()[key(2)] != 1 || b.Version()[key(0)] != 0 {
		t.Fatalf("after partial apply: %q %v", b.String(), b.Version())
	}
	// Once the gap is filled, exactly the parked ops go through.
	if err := b.Apply(d1); err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(subDelta(mixed, me.Pending)); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, b, "after retry")
	want := crdt.New(key(3))
	for _, d := range []crdt.Delta{d1, d2, dc} {
		if err := want.Apply(d); err != nil {
			t.Fatal(err)
		}
	}
	if b.String() != want.String() || !b.Version().Equal(want.Version()) {
		t.Fatalf("got %q %v, want %q %v", b.String(), b.Version(), want.String(), want.Version())
	}

	// A missing origin (not a missing seq of the author) is named too.
	e := crdt.New(key(4))
	if err := e.Apply(d1); err != nil {
		t.Fatal(err)
	}
	f := e.Fork(key(5))
	if err := f.Apply(d2); err != nil {
		t.Fatal(err)
	}
	df, err := f.Insert(2, "!") // after a's X, seq 3
	if err != nil {
		t.Fatal(err)
	}
	err = e.Apply(df)
	if !errors.As(err, &me) || me.ID != (crdt.ID{Agent: key(0), Seq: 3}) || !slices.Equal(me.Pending, []int{0}) {
		t.Fatalf("err = %v, want missing %v with pending [0]", err, crdt.ID{Agent: key(0), Seq: 3})
	}
	if e.String() != "abc" {
		t.Fatalf("waiting op changed the text: %q", e.String())
	}
	// A delete of text this replica lacks waits as well.
	g := f.Fork(key(6))
	dd, err := g.Delete(1, 1) // deletes X
	if err != nil {
		t.Fatal(err)
	}
	err = e.Apply(dd)
	if !errors.As(err, &me) || me.ID != (crdt.ID{Agent: key(0), Seq: 3}) {
		t.Fatalf("err = %v, want missing %v", err, crdt.ID{Agent: key(0), Seq: 3})
	}
	mustCheck(t, e, "after waiting delete")
}

// base builds a replica with text from two agents and a delete, so that
// agent 0 holds insert seqs 0..5, delete seqs 6..7 and insert seqs 8..9.
func invalidBase(t *testing.T) *crdt.Text {
	t.Helper()
	a := crdt.New(key(0))
	for _, e := range []edit{{op: "ins", pos: 0, s: "abcdef"}, {op: "del", pos: 1, n: 2}, {op: "ins", pos: 0, s: "😀é"}} {
		if _, err := e.do(a); err != nil {
			t.Fatal(err)
		}
	}
	b := a.Fork(key(1))
	d, err := b.Insert(2, "XY")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(d); err != nil {
		t.Fatal(err)
	}
	if a.String() != "😀éXYadef" {
		t.Fatalf("base text %q", a.String())
	}
	return a
}

func TestInvalidDeltas(t *testing.T) {
	k0, k1, kz := key(0), key(1), key(7) // kz is new to the replica
	ins := func(agent uint32, seq, lamport uint64, origin crdt.Ref, text string) crdt.Op {
		return crdt.Op{Kind: crdt.OpInsert, Agent: agent, Seq: seq, Lamport: lamport, Len: uint64(runeLen(text)), Origin: origin, Text: text}
	}
	root := crdt.Ref{Agent: crdt.RootAgent}
	agents := []crdt.AgentKey{kz, k0, k1}
	ok := ins(0, 0, 100, root, "ok") // a valid op to pair with bad ones
	tests := []struct {
		name string
		d    crdt.Delta
	}{
		{"author index out of range", crdt.Delta{Agents: agents, Ops: []crdt.Op{ins(3, 0, 100, root, "x")}}},
		{"no agent table", crdt.Delta{Ops: []crdt.Op{ins(0, 0, 100, root, "x")}}},
		{"origin index out of range", crdt.Delta{Agents: agents, Ops: []crdt.Op{ins(0, 0, 100, crdt.Ref{Agent: 3}, "x")}}},
		{"target index out of range", crdt.Delta{Agents: agents, Ops: []crdt.Op{{Kind: crdt.OpDelete, Agent: 0, Seq: 0, Lamport: 100, Len: 1, Target: crdt.Ref{Agent: 9}}}}},
		{"root target", crdt.Delta{Agents: agents, Ops: []crdt.Op{{Kind: crdt.OpDelete, Agent: 0, Seq: 0, Lamport: 100, Len: 1, Target: crdt.Ref{Agent: crdt.RootAgent}}}}},
		{"bad UTF-8", crdt.Delta{Agents: agents, Ops: []crdt.Op{{Kind: crdt.OpInsert, Agent: 0, Lamport: 100, Len: 2, Origin: root, Text: "a\xff"}}}},
		{"surrogate half in UTF-8", crdt.Delta{Agents: agents, Ops: []crdt.Op{{Kind: crdt.OpInsert, Agent: 0, Lamport: 100, Len: 1, Origin: root, Text: "\xed\xa0\xbd"}}}},
		{"text longer than Len", crdt.Delta{Agents: agents, Ops: []crdt.Op{{Kind: crdt.OpInsert, Agent: 0, Lamport: 100, Len: 2, Origin: root, Text: "abc"}}}},
		{"text shorter than Len (bytes match)", crdt.Delta{Agents: agents, Ops: []crdt.Op{{Kind: crdt.OpInsert, Agent: 0, Lamport: 100, Len: 4, Origin: root, Text: "😀"}}}},
		{"zero Len insert", crdt.Delta{Agents: agents, Ops: []crdt.Op{{Kind: crdt.OpInsert, Agent: 0, Lamport: 100, Len: 0, Origin: root}}}},
		{"zero Len delete", crdt.Delta{Agents: agents, Ops: []crdt.Op{{Kind: crdt.OpDelete, Agent: 0, Lamport: 100, Len: 0, Target: crdt.Ref{Agent: 1}}}}},
		{"zero Lamport", crdt.Delta{Agents: agents, Ops: []crdt.Op{ins(0, 0, 0, root, "x")}}},
		{"Lamport overflow", crdt.Delta{Agents: agents, Ops: []crdt.Op{ins(0, 0, crdt.MaxLamport, root, "xy")}}},
		{"seq overflow", crdt.Delta{Agents: agents, Ops: []crdt.Op{ins(0, crdt.MaxSeq, 100, root, "xy")}}},
		{"huge Len", crdt.Delta{Agents: agents, Ops: []crdt.Op{{Kind: crdt.OpDelete, Agent: 0, Lamport: 100, Len: 1 << 62, Target: crdt.Ref{Agent: 1}}}}},
		{"root origin with a seq", crdt.Delta{Agents: agents, Ops: []crdt.Op{ins(0, 0, 100, crdt.Ref{Agent: crdt.RootAgent, Seq: 3}, "x")}}},
		{"unknown kind", crdt.Delta{Agents: agents, Ops: []crdt.Op{{Kind: 3, Agent: 0, Lamport: 100, Len: 1}}}},
		{"zero kind", crdt.Delta{Agents: agents, Ops: []crdt.Op{{Agent: 0, Lamport: 100, Len: 1}}}},
		{"delete carries text", crdt.Delta{Agents: agents, Ops: []crdt.Op{{Kind: crdt.OpDelete, Agent: 0, Lamport: 100, Len: 1, Target: crdt.Ref{Agent: 1}, Text: "a"}}}},
		{"valid op then a malformed one", crdt.Delta{Agents: agents, Ops: []crdt.Op{ok, ins(0, 2, 102, crdt.Ref{Agent: 0, Seq: 1}, "\xc0")}}},
		{"ops of one agent overlap", crdt.Delta{Agents: agents, Ops: []crdt.Op{ins(0, 0, 100, root, "abc"), ins(0, 2, 1, root, "xyz")}}},
		{"ops of one agent overlap under two table entries", crdt.Delta{Agents: []crdt.AgentKey{kz, k0, kz}, Ops: []crdt.Op{ins(0, 0, 100, root, "abc"), ins(2, 1, 200, root, "bc")}}},
		{"malformed op then a valid one", crdt.Delta{Agents: agents, Ops: []crdt.Op{{Kind: crdt.OpInsert, Agent: 0, Lamport: 100, Len: 0, Origin: root}, ok}}},

		// Invalid against this replica's state: the op can never apply.
		// k0's character seq 0 ("a") has Lamport 1.
		{"Lamport equal to its origin's", crdt.Delta{Agents: agents, Ops: []crdt.Op{ins(0, 0, 1, crdt.Ref{Agent: 1, Seq: 0}, "x")}}},
		{"Lamport before its origin's", crdt.Delta{Agents: agents, Ops: []crdt.Op{ins(0, 0, 3, crdt.Ref{Agent: 1, Seq: 8}, "x")}}},
		{"origin names a delete seq", crdt.Delta{Agents: agents, Ops: []crdt.Op{ins(0, 0, 100, crdt.Ref{Agent: 1, Seq: 6}, "x")}}},
		{"delete target names a delete seq", crdt.Delta{Agents: agents, Ops: []crdt.Op{{Kind: crdt.OpDelete, Agent: 0, Lamport: 100, Len: 1, Target: crdt.Ref{Agent: 1, Seq: 7}}}}},
		{"delete run crossing into delete seqs", crdt.Delta{Agents: agents, Ops: []crdt.Op{{Kind: crdt.OpDelete, Agent: 0, Lamport: 100, Len: 3, Target: crdt.Ref{Agent: 1, Seq: 4}}}}},
		{"delete run crossing into delete seqs by a known agent", crdt.Delta{Agents: agents, Ops: []crdt.Op{{Kind: crdt.OpDelete, Agent: 2, Seq: 2, Lamport: 100, Len: 3, Target: crdt.Ref{Agent: 1, Seq: 5}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := invalidBase(t)
			text, ver := r.String(), r.Version()
			hist := r.Since(nil)
			var changes []crdt.Change
			err := r.ApplyChanges(tc.d, func(c crdt.Change) { changes = append(changes, c) })
			if !errors.Is(err, crdt.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if errors.Is(err, crdt.ErrMissing) {
				t.Fatalf("err = %v is both invalid and missing", err)
			}
			mustCheck(t, r, tc.name)
			if got := r.String(); got != text {
				t.Errorf("text changed: %q, was %q", got, text)
			}
			if got := r.Version(); !got.Equal(ver) {
				t.Errorf("version changed: %v, was %v", got, ver)
			}
			if len(changes) > 0 {
				t.Errorf("reported changes %v", changes)
			}
			// The replica still works: it edits and merges as before.
			if _, err := r.Insert(0, ">"); err != nil {
				t.Fatal(err)
			}
			c := crdt.New(key(3))
			if err := c.Apply(hist); err != nil {
				t.Fatal(err)
			}
			if err := c.Apply(r.Since(c.Version())); err != nil {
				t.Fatal(err)
			}
			if c.String() != ">"+text || c.String() != r.String() {
				t.Fatalf("after invalid delta: replica %q, merged %q", r.String(), c.String())
			}
			mustCheck(t, r, "after edit")
		})
	}
}

// TestOwnEchoIsHarmless delivers a replica's own deltas back to it, as a
// server broadcast would.
func TestOwnEchoIsHarmless(t *testing.T) {
	a := crdt.New(key(0))
	d1, _ := a.Insert(0, "abc")
	d2, _ := a.Delete(1, 1)
	for _, d := range []crdt.Delta{d2, d1, a.Since(nil)} {
		if err := a.Apply(d); err != nil {
			t.Fatal(err)
		}
	}
	mustCheck(t, a, "echo")
	if a.String() != "ac" || a.Version()[key(0)] != 4 {
		t.Fatalf("%q %v", a.String(), a.Version())
	}
}

func TestAnchors(t *testing.T) {
	a := crdt.New(key(0))
	if _, err := a.Insert(0, "héllo😀world"); err != nil {
		t.Fatal(err)
	}
	right, err := a.AnchorAt(6, crdt.AssocRight) // before 'w'
	if err != nil {
		t.Fatal(err)
	}
	left, err := a.AnchorAt(6, crdt.AssocLeft) // after '😀'
	if err != nil {
		t.Fatal(err)
	}
	start, _ := a.AnchorAt(0, crdt.AssocLeft)
	end, _ := a.AnchorAt(a.Len(), crdt.AssocRight)
	if _, err := a.AnchorAt(a.Len()+1, crdt.AssocRight); !errors.Is(err, crdt.ErrOutOfRange) {
		t.Fatalf("AnchorAt past end: %v", err)
	}
	if _, err := a.AnchorAt(-1, crdt.AssocLeft); !errors.Is(err, crdt.ErrOutOfRange) {
		t.Fatalf("AnchorAt -1: %v", err)
	}
	b := a.Fork(key(1))
	// Text inserted exactly at the anchor position by a peer.
	d, err := b.Insert(6, "ABC")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(d); err != nil {
		t.Fatal(err)
	}
	check := func(an crdt.Anchor, want int) {
		t.Helper()
		got, ok := a.Resolve(an)
		if !ok || got != want {
			t.Fatalf("Resolve(%+v) = %d, %v; want %d in %q", an, got, ok, want, a.String())
		}
	}
	check(right, 9) // pushed right
	check(left, 6)  // stays after the emoji
	check(start, 0)
	check(end, a.Len())
	// Deleting text before the anchors moves them left.
	if _, err := a.Delete(0, 2); err != nil {
		t.Fatal(err)
	}
	check(right, 7)
	check(left, 4)
	// A deleted anchor character resolves to where it stood.
	if _, err := a.Delete(7, 1); err != nil { // the 'w'
		t.Fatal(err)
	}
	check(right, 7)
	// An anchor naming a character this replica lacks does not resolve.
	c := crdt.New(key(2))
	if _, ok := c.Resolve(right); ok {
		t.Fatal("Resolve of an unknown character reported ok")
	}
	if _, ok := c.Resolve(crdt.Anchor{ID: crdt.ID{Agent: key(0), Seq: 1 << 40}}); ok {
		t.Fatal("Resolve of a huge seq reported ok")
	}
}
