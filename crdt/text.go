package crdt

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// rootAgent marks the virtual item at the document start in a span's origin.
const rootAgent = ^uint32(0)

// Limits that keep internal counters in range. They are far above anything a
// real document reaches, and remote ops beyond them are ErrInvalid.
const (
	// MaxSeq bounds the seqs of one agent in one document.
	MaxSeq = 1<<32 - 2
	// MaxLamport bounds Lamport times; 2^53 keeps them exact in JavaScript.
	MaxLamport = 1<<53 - 1
	// MaxAgents bounds the agents one document interns.
	MaxAgents = 1<<31 - 1
)

// span is a run of code points inserted by one agent with contiguous seqs and
// contiguous Lamport times, each one inserted right after the previous. It
// holds no pointers so that the arena is invisible to the garbage collector.
type span struct {
	lamport uint64 // Lamport time of the first code point
	agent   uint32 // interned author
	seq     uint32 // seq of the first code point
	oagent  uint32 // origin of the first code point; rootAgent for the start
	oseq    uint32
	n       uint32 // code points
	off     uint32 // text bytes are buf[off:off+blen]; a tombstone keeps its
	blen    uint32 // text (for Between) until a snapshot drops it: blen == 0
	leaf    int32  // leaf holding this span's handle
	deleted bool
}

// agentState is what a replica knows about one agent.
type agentState struct {
	key  AgentKey
	next uint32  // version vector entry: seqs [0,next) are known
	ins  idIndex // insert seqs → spans
	dels []delRun
}

// delRun is a run of delete ops by one agent: seqs [seq, seq+n) at Lamport
// times [lamport, lamport+n) deleted target IDs tseq, tseq+1, ... of tagent,
// or tseq, tseq-1, ... when rev is set — a run of backspaces, the most
// common delete in real editing, so it is worth its own flag.
type delRun struct {
	lamport uint64
	seq     uint32
	n       uint32
	tagent  uint32
	tseq    uint32
	rev     bool
}

// targets returns the target seqs of the run as an ascending range.
func (r delRun) targets() (lo, hi uint32) {
	if r.rev {
		return r.tseq + 1 - r.n, r.tseq + 1
	}
	return r.tseq, r.tseq + r.n
}

// target returns the target seq of the run's i-th delete.
func (r delRun) target(i uint32) uint32 {
	if r.rev {
		return r.tseq - i
	}
	return r.tseq + i
}

// Text is one replica of a text document. It is not safe for concurrent
// use: the server gives each document to one goroutine.
type Text struct {
	spans  []span
	tree   tree
	buf    []byte // text of live spans; dead bytes are reclaimed by snapshots
	agents []agentState
	byKey  map[AgentKey]uint32
	self   uint32
	clock  uint64      // highest Lamport time seen
	slab   []deltaSlot // unused backing for local deltas; never shared by clones
	slabN  int         // size of the last slab (see newBuilder)
	lastID int32       // span handle findID found last (a hint, see findID)
}

// New returns an empty replica that edits as agent.
func New(agent AgentKey) *Text {
	t := &Text{tree: newTree(), byKey: make(map[AgentKey]uint32)}
	t.self = t.intern(agent)
	return t
}

func (t *Text) intern(k AgentKey) uint32 {
	if a, ok := t.byKey[k]; ok {
		return a
	}
	a := uint32(len(t.agents))
	t.agents = append(t.agents, agentState{key: k})
	t.byKey[k] = a
	return a
}

// Agent returns the key this replica edits as.
func (t *Text) Agent() AgentKey { return t.agents[t.self].key }

// Len returns the length of the text in code points.
func (t *Text) Len() int { return t.tree.width() }

// String returns the text.
func (t *Text) String() string {
	var b strings.Builder
	b.Grow(len(t.buf))
	t.eachSpan(func(s *span) bool {
		if !s.deleted {
			b.Write(t.buf[s.off : s.off+s.blen])
		}
		return true
	})
	return b.String()
}

// eachSpan visits spans in document order until fn returns false.
func (t *Text) eachSpan(fn func(s *span) bool) {
	for l := t.tree.first; l >= 0; l = t.tree.leaves[l].next {
		for _, h := range t.tree.leaves[l].items() {
			if !fn(&t.spans[h]) {
				return
			}
		}
	}
}

// Clone returns an independent copy that edits as the same agent.
func (t *Text) Clone() *Text {
	c := &Text{
		spans:  append([]span(nil), t.spans...),
		tree:   t.tree.clone(),
		buf:    append([]byte(nil), t.buf...),
		agents: make([]agentState, len(t.agents)),
		byKey:  make(map[AgentKey]uint32, len(t.byKey)),
		self:   t.self,
		clock:  t.clock,
	}
	for i, a := range t.agents {
		a.ins = a.ins.clone()
		a.dels = append([]delRun(nil), a.dels...)
		c.agents[i] = a
	}
	for k, v := range t.byKey {
		c.byKey[k] = v
	}
	return c
}

// Fork returns an independent copy that edits as another agent, as a new
// replica joining with this one's state would.
func (t *Text) Fork(agent AgentKey) *Text {
	c := t.Clone()
	c.self = c.intern(agent)
	return c
}

// --- locating ---------------------------------------------------------------

// locate returns the leaf, slot and offset of live code point c.
func (t *Text) locate(c int) (int32, int, uint32) {
	l, before := t.tree.findLeaf(c)
	c -= before
	for i, h := range t.tree.leaves[l].items() {
		s := &t.spans[h]
		if s.deleted {
			continue
		}
		if c < int(s.n) {
			return l, i, uint32(c)
		}
		c -= int(s.n)
	}
	panic(fmt.Sprintf("crdt: tree widths disagree with spans at leaf %d", l))
}

// byteOff returns the byte offset of code point k within live span s,
// walking from whichever end of the span is nearer.
func (t *Text) byteOff(s *span, k uint32) uint32 {
	if s.blen == s.n {
		return k
	}
	b := t.buf[s.off : s.off+s.blen]
	if k > s.n/2 {
		i := len(b)
		for r := s.n - k; r > 0; r-- {
			_, sz := utf8.DecodeLastRune(b[:i])
			i -= sz
		}
		return uint32(i)
	}
	i := 0
	for ; k > 0; k-- {
		_, sz := utf8.DecodeRune(b[i:])
		i += sz
	}
	return uint32(i)
}

// split cuts the span in slot i of leaf l so that its first k code points
// stay and the rest become a new span in slot i+1, whose handle it returns.
// Widths do not change.
func (t *Text) split(l int32, i int, k uint32) int32 {
	h := t.tree.leaves[l].items()[i]
	s := t.spans[h]
	r := span{
		lamport: s.lamport + uint64(k),
		agent:   s.agent,
		seq:     s.seq + k,
		oagent:  s.agent,
		oseq:    s.seq + k - 1,
		n:       s.n - k,
		deleted: s.deleted,
	}
	if s.blen > 0 {
		bo := t.byteOff(&s, k)
		r.off = s.off + bo
		r.blen = s.blen - bo
		t.spans[h].blen = bo
	}
	t.spans[h].n = k
	rh := t.newSpan(r)
	t.agents[r.agent].ins.insert(idEntry{seq: r.seq, span: rh})
	t.insertSlot(l, i+1, rh, 0)
	return rh
}

func (t *Text) newSpan(s span) int32 {
	h := int32(len(t.spans))
	t.spans = append(t.spans, s)
	return h
}

// insertSlot puts span handle h at slot i of leaf l and adds w live code
// points to the widths, splitting the leaf when it overflows.
func (t *Text) insertSlot(l int32, i int, h int32, w int) {
	lf := &t.tree.leaves[l]
	copy(lf.arr[i+1:lf.n+1], lf.arr[i:lf.n])
	lf.arr[i] = h
	lf.n++
	t.spans[h].leaf = l
	t.tree.addWidth(l, w)
	if int(lf.n) <= leafCap {
		return
	}
	half := lf.n / 2
	rh := int32(len(t.tree.leaves))
	right := leaf{n: lf.n - half, parent: lf.parent, prev: l, next: lf.next}
	copy(right.arr[:], lf.arr[half:lf.n])
	lf.n = half
	rw := 0
	for _, x := range right.items() {
		s := &t.spans[x]
		s.leaf = rh
		if !s.deleted {
			rw += int(s.n)
		}
	}
	right.width = rw
	lf.width -= rw
	if lf.next >= 0 {
		t.tree.leaves[lf.next].prev = rh
	}
	lf.next = rh
	t.tree.leaves = append(t.tree.leaves, right)
	t.tree.linkSplit(t.tree.leaves[l].parent, l, rh, rw, true)
}

// slotOf returns the slot of span handle h in its leaf.
func (t *Text) slotOf(h int32) (int32, int) {
	l := t.spans[h].leaf
	for i, x := range t.tree.leaves[l].items() {
		if x == h {
			return l, i
		}
	}
	panic(fmt.Sprintf("crdt: span %d missing from leaf %d", h, l))
}

// findID returns the span handle and offset holding seq of agent a.
func (t *Text) findID(a uint32, seq uint32) (int32, uint32, bool) {
	// Remote ops mostly name IDs next to the previous one; a span's fields
	// always describe what it holds, so the cache validates itself.
	if h := t.lastID; h < int32(len(t.spans)) {
		if s := &t.spans[h]; s.agent == a && seq >= s.seq && seq < s.seq+s.n {
			return h, seq - s.seq, true
		}
	}
	if a >= uint32(len(t.agents)) {
		return -1, 0, false
	}
	h := t.agents[a].ins.find(seq)
	if h < 0 {
		return -1, 0, false
	}
	s := &t.spans[h]
	if seq >= s.seq+s.n {
		return -1, 0, false
	}
	t.lastID = h
	return h, seq - s.seq, true
}

// posOf returns the number of live code points before offset k of span h.
func (t *Text) posOf(h int32, k uint32) int {
	l, i := t.slotOf(h)
	p := t.tree.leafStart(l)
	for _, x := range t.tree.leaves[l].items()[:i] {
		if s := &t.spans[x]; !s.deleted {
			p += int(s.n)
		}
	}
	if !t.spans[h].deleted {
		p += int(k)
	}
	return p
}

// next returns the slot after (l, i) in document order, or ok=false at the end.
func (t *Text) nextSlot(l int32, i int) (int32, int, bool) {
	i++
	for i >= len(t.tree.leaves[l].items()) {
		l = t.tree.leaves[l].next
		if l < 0 {
			return -1, 0, false
		}
		i = 0
	}
	return l, i, true
}

// prevSlot returns the slot before (l, i) in document order, or ok=false at
// the start.
func (t *Text) prevSlot(l int32, i int) (int32, int, bool) {
	for i == 0 {
		l = t.tree.leaves[l].prev
		if l < 0 {
			return -1, 0, false
		}
		i = len(t.tree.leaves[l].items())
	}
	return l, i - 1, true
}

// continues reports whether span y carries on where span x stops: same
// agent, next seq, next Lamport time, and y's origin is x's last character.
func continues(x, y *span) bool {
	return y.agent == x.agent && y.seq == x.seq+x.n && y.lamport == x.lamport+uint64(x.n) &&
		y.oagent == x.agent && y.oseq == y.seq-1
}

// kill deletes code points [k, k+take) of live span h and returns the handle
// of the span now holding the last of them. Deleting the end of a span whose
// deleted continuation follows it (a run of backspaces), or the start of one
// that continues a deleted span (a run of forward deletes), moves the
// boundary instead of splitting, so typing and deleting leave one tombstone
// rather than one per keystroke.
func (t *Text) kill(h int32, k, take uint32) int32 {
	l, i := t.slotOf(h)
	x := &t.spans[h]
	// Splits keep widths; the width drops once, on the leaf that ends up
	// holding the deleted characters' former live span.
	switch {
	case k == 0 && take == x.n:
		t.tree.addWidth(l, -int(take))
		x.deleted = true
		return h
	case k > 0 && k+take == x.n:
		if nl, ni, ok := t.nextSlot(l, i); ok {
			yh := t.tree.leaves[nl].items()[ni]
			// Move the boundary only when no kept text would be lost: the
			// tombstone has none, or its text follows x's in buf.
			if y := &t.spans[yh]; y.deleted && continues(x, y) && (y.blen == 0 || x.off+x.blen == y.off) {
				old := y.seq
				bo := t.byteOff(x, k)
				if y.blen > 0 {
					y.off, y.blen = x.off+bo, y.blen+x.blen-bo
				}
				y.seq -= take
				y.lamport -= uint64(take)
				y.oseq = y.seq - 1
				y.n += take
				x.blen = bo
				x.n = k
				t.agents[y.agent].ins.rekey(old, y.seq)
				t.tree.addWidth(l, -int(take))
				return yh
			}
		}
		r := t.split(l, i, k)
		t.markDead(r)
		return r
	case k == 0:
		if pl, pi, ok := t.prevSlot(l, i); ok {
			wh := t.tree.leaves[pl].items()[pi]
			if w := &t.spans[wh]; w.deleted && continues(w, x) && (w.blen == 0 || w.off+w.blen == x.off) {
				bo := t.byteOff(x, take)
				old := x.seq
				if w.blen > 0 {
					w.blen += bo
				}
				w.n += take
				x.seq += take
				x.lamport += uint64(take)
				x.oseq = x.seq - 1
				x.n -= take
				x.off += bo
				x.blen -= bo
				t.agents[x.agent].ins.rekey(old, x.seq)
				t.tree.addWidth(l, -int(take))
				return wh
			}
		}
		t.split(l, i, take)
		t.markDead(h)
		return h
	default:
		r := t.split(l, i, k)
		rl, ri := t.slotOf(r)
		t.split(rl, ri, take)
		t.markDead(r)
		return r
	}
}

// markDead turns live span h into a tombstone.
func (t *Text) markDead(h int32) {
	x := &t.spans[h]
	t.tree.addWidth(x.leaf, -int(x.n))
	x.deleted = true
}
