package crdt

import (
	"fmt"
	"unicode/utf8"
)

// deltaBuilder assembles a Delta for local edits, interning agents into the
// delta's own table.
type deltaBuilder struct {
	t    *Text
	d    Delta
	ids  [2]uint32 // interned agents of the first two table entries
	more map[uint32]uint32
}

func (b *deltaBuilder) ref(a uint32) uint32 {
	if a == rootAgent {
		return RootAgent
	}
	n := len(b.d.Agents)
	for i := 0; i < n && i < len(b.ids); i++ {
		if b.ids[i] == a {
			return uint32(i)
		}
	}
	if i, ok := b.more[a]; ok {
		return i
	}
	b.d.Agents = append(b.d.Agents, b.t.agents[a].key)
	if n < len(b.ids) {
		b.ids[n] = a
	} else {
		if b.more == nil {
			b.more = make(map[uint32]uint32)
		}
		b.more[a] = uint32(n)
	}
	return uint32(n)
}

// deltaSlot backs the delta of one local edit: room for the author, one
// other agent and one op, which covers a keystroke.
type deltaSlot struct {
	agents [2]AgentKey
	ops    [1]Op
}

// deltaSlab is the most slots allocated at once. Handing out slots from a
// slab makes a keystroke allocation-free most of the time; the price is
// that a slab stays alive while any delta cut from it does (a few KiB).
// Slabs start at 4 slots and double, so a replica that edits rarely (the
// server's, for HTTP edits) does not pay for 64.
const deltaSlab = 64

// newBuilder returns a builder backed by the next free delta slot.
func newBuilder(t *Text) deltaBuilder {
	if len(t.slab) == 0 {
		t.slabN = min(max(2*t.slabN, 4), deltaSlab)
		t.slab = make([]deltaSlot, t.slabN)
	}
	st := &t.slab[0]
	t.slab = t.slab[1:]
	return deltaBuilder{t: t, d: Delta{Agents: st.agents[:0:2], Ops: st.ops[:0:1]}}
}

// Insert inserts s at code-point position pos and returns the delta that
// carries the edit to other replicas.
func (t *Text) Insert(pos int, s string) (Delta, error) {
	b := newBuilder(t)
	if err := t.insert(&b, pos, s); err != nil {
		return Delta{}, err
	}
	return b.d, nil
}

// Delete deletes n code points starting at position pos and returns the
// delta that carries the edit.
func (t *Text) Delete(pos, n int) (Delta, error) {
	b := newBuilder(t)
	if err := t.delete(&b, pos, n); err != nil {
		return Delta{}, err
	}
	return b.d, nil
}

// Replace deletes n code points at pos and inserts s there, as one delta.
func (t *Text) Replace(pos, n int, s string) (Delta, error) {
	if pos < 0 || n < 0 || pos+n > t.Len() {
		return Delta{}, fmt.Errorf("%w: replace %d+%d in text of %d", ErrOutOfRange, pos, n, t.Len())
	}
	if !utf8.ValidString(s) {
		return Delta{}, fmt.Errorf("%w: insert text is not valid UTF-8", ErrInvalid)
	}
	b := newBuilder(t)
	if err := t.delete(&b, pos, n); err != nil {
		return Delta{}, err
	}
	if err := t.insert(&b, pos, s); err != nil {
		return Delta{}, err
	}
	return b.d, nil
}

func (t *Text) insert(b *deltaBuilder, pos int, s string) error {
	if pos < 0 || pos > t.Len() {
		return fmt.Errorf("%w: insert at %d in text of %d", ErrOutOfRange, pos, t.Len())
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: insert text is not valid UTF-8", ErrInvalid)
	}
	n := uint32(utf8.RuneCountInString(s))
	if n == 0 {
		return nil
	}
	me := &t.agents[t.self]
	if uint64(me.next)+uint64(n) > MaxSeq || t.clock+uint64(n) > MaxLamport {
		return fmt.Errorf("%w: document counters exhausted", ErrInvalid)
	}
	seq, lamport := me.next, t.clock+1
	ns := span{lamport: lamport, agent: t.self, seq: seq, oagent: rootAgent, n: n}
	var l int32
	var slot int
	if pos == 0 {
		l, slot = t.tree.first, 0
	} else {
		var i int
		var k uint32
		l, i, k = t.locate(pos - 1)
		h := t.tree.leaves[l].items()[i]
		x := &t.spans[h]
		ns.oagent, ns.oseq = x.agent, x.seq+k
		if k == x.n-1 && x.agent == t.self && x.seq+x.n == seq && x.lamport+uint64(x.n) == lamport &&
			int(x.off+x.blen) == len(t.buf) {
			// Typing at the end of our own latest run: grow it in place.
			x.n += n
			x.blen += uint32(len(s))
			t.buf = append(t.buf, s...)
			t.tree.addWidth(l, int(n))
			t.commitInsert(b, ns, s)
			return nil
		}
		if k < x.n-1 {
			t.split(l, i, k+1)
			l, i = t.slotOf(h)
		}
		slot = i + 1
	}
	ns.off, ns.blen = uint32(len(t.buf)), uint32(len(s))
	t.buf = append(t.buf, s...)
	h := t.newSpan(ns)
	t.insertSlot(l, slot, h, int(n))
	me.ins.insert(idEntry{seq: seq, span: h})
	t.commitInsert(b, ns, s)
	return nil
}

func (t *Text) commitInsert(b *deltaBuilder, ns span, s string) {
	me := &t.agents[t.self]
	me.next += ns.n
	t.clock = ns.lamport + uint64(ns.n) - 1
	self := b.ref(t.self)
	b.d.Ops = append(b.d.Ops, Op{
		Kind: OpInsert, Agent: self, Seq: uint64(ns.seq), Lamport: ns.lamport, Len: uint64(ns.n),
		Origin: Ref{Agent: b.ref(ns.oagent), Seq: uint64(ns.oseq)}, Text: s,
	})
}

func (t *Text) delete(b *deltaBuilder, pos, n int) error {
	if pos < 0 || n < 0 || pos+n > t.Len() {
		return fmt.Errorf("%w: delete %d+%d in text of %d", ErrOutOfRange, pos, n, t.Len())
	}
	if n == 0 {
		return nil
	}
	me := &t.agents[t.self]
	if uint64(me.next)+uint64(n) > MaxSeq || t.clock+uint64(n) > MaxLamport {
		return fmt.Errorf("%w: document counters exhausted", ErrInvalid)
	}
	l, i, k := t.locate(pos)
	left := uint32(n)
	for left > 0 {
		h := t.tree.leaves[l].items()[i]
		if t.spans[h].deleted {
			var ok bool
			if l, i, ok = t.nextSlot(l, i); !ok {
				panic("crdt: delete ran past the end of the tree")
			}
			continue
		}
		x := &t.spans[h]
		take := min(left, x.n-k)
		t.recordDelete(b, x.agent, x.seq+k, take)
		h = t.kill(h, k, take)
		l, i = t.slotOf(h)
		k = 0
		left -= take
		if left > 0 {
			var ok bool
			if l, i, ok = t.nextSlot(l, i); !ok {
				panic("crdt: delete ran past the end of the tree")
			}
		}
	}
	return nil
}

// recordDelete consumes n seqs of this replica's agent deleting target IDs
// [tseq, tseq+n) of tagent, and adds the op to the delta.
func (t *Text) recordDelete(b *deltaBuilder, tagent, tseq, n uint32) {
	me := &t.agents[t.self]
	r := delRun{lamport: t.clock + 1, seq: me.next, n: n, tagent: tagent, tseq: tseq}
	me.next += n
	t.clock += uint64(n)
	appendDelRun(&me.dels, r)
	self, tr := b.ref(t.self), b.ref(tagent)
	if k := len(b.d.Ops) - 1; k >= 0 {
		o := &b.d.Ops[k]
		if o.Kind == OpDelete && o.Target.Agent == tr && o.Target.Seq+o.Len == uint64(tseq) &&
			o.Seq+o.Len == uint64(r.seq) && o.Lamport+o.Len == r.lamport {
			o.Len += uint64(n)
			return
		}
	}
	b.d.Ops = append(b.d.Ops, Op{
		Kind: OpDelete, Agent: self, Seq: uint64(r.seq), Lamport: r.lamport, Len: uint64(n),
		Target: Ref{Agent: tr, Seq: uint64(tseq)},
	})
}

// appendDelRun appends r to runs, merging it into the last run when both
// are contiguous in seq, time and target.
func appendDelRun(runs *[]delRun, r delRun) {
	if k := len(*runs) - 1; k >= 0 {
		p := &(*runs)[k]
		if p.seq+p.n == r.seq && p.lamport+uint64(p.n) == r.lamport && p.tagent == r.tagent {
			if !p.rev && !r.rev && p.tseq+p.n == r.tseq {
				p.n += r.n
				return
			}
			if (p.rev || p.n == 1) && (r.rev || r.n == 1) && p.tseq >= p.n && r.tseq == p.tseq-p.n {
				p.rev = true
				p.n += r.n
				return
			}
		}
	}
	*runs = append(*runs, r)
}
