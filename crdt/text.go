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
	off     uint32 // text bytes are buf[off:off+blen] while live
	blen    uint32
	leaf    int32 // leaf holding this span's handle
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
// times [lamport, lamport+n) deleted target IDs [tseq, tseq+n) of tagent.
type delRun struct {
	lamport uint64
	seq     uint32
	n       uint32
	tagent  uint32
	tseq    uint32
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
	clock  uint64 // highest Lamport time seen
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
		for _, h := range t.tree.leaves[l].spans {
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
	for i, h := range t.tree.leaves[l].spans {
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

// byteOff returns the byte offset of code point k within live span s.
func (t *Text) byteOff(s *span, k uint32) uint32 {
	if s.blen == s.n {
		return k
	}
	b := t.buf[s.off : s.off+s.blen]
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
	h := t.tree.leaves[l].spans[i]
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
	if !s.deleted {
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
	lf.spans = append(lf.spans, 0)
	copy(lf.spans[i+1:], lf.spans[i:])
	lf.spans[i] = h
	t.spans[h].leaf = l
	t.tree.addWidth(l, w)
	if len(lf.spans) <= leafCap {
		return
	}
	half := len(lf.spans) / 2
	rh := int32(len(t.tree.leaves))
	right := leaf{
		spans:  append(make([]int32, 0, leafCap+1), lf.spans[half:]...),
		parent: lf.parent,
		prev:   l,
		next:   lf.next,
	}
	lf.spans = lf.spans[:half]
	rw := 0
	for _, x := range right.spans {
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
	for i, x := range t.tree.leaves[l].spans {
		if x == h {
			return l, i
		}
	}
	panic(fmt.Sprintf("crdt: span %d missing from leaf %d", h, l))
}

// findID returns the span handle and offset holding seq of agent a.
func (t *Text) findID(a uint32, seq uint32) (int32, uint32, bool) {
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
	return h, seq - s.seq, true
}

// posOf returns the number of live code points before offset k of span h.
func (t *Text) posOf(h int32, k uint32) int {
	l, i := t.slotOf(h)
	p := t.tree.leafStart(l)
	for _, x := range t.tree.leaves[l].spans[:i] {
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
	for i >= len(t.tree.leaves[l].spans) {
		l = t.tree.leaves[l].next
		if l < 0 {
			return -1, 0, false
		}
		i = 0
	}
	return l, i, true
}
