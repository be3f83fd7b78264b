package crdt

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// Check walks every internal structure and reports the first broken
// invariant. It costs O(n log n) and exists for tests, which run it after
// every op, and for operators debugging a suspicious document.
func (t *Text) Check() error {
	var errs []error
	bad := func(format string, args ...any) {
		if len(errs) < 8 {
			errs = append(errs, fmt.Errorf("crdt: check: "+format, args...))
		}
	}
	tr := &t.tree
	seen := make([]bool, len(t.spans))
	// Leaves: the linked list visits every span exactly once, widths add up.
	var prev int32 = -1
	count := 0
	for l := tr.first; l >= 0; l = tr.leaves[l].next {
		lf := &tr.leaves[l]
		if lf.prev != prev {
			bad("leaf %d prev %d, want %d", l, lf.prev, prev)
		}
		if len(lf.items()) == 0 && !(l == tr.first && lf.next < 0) {
			bad("empty leaf %d", l)
		}
		if len(lf.items()) > leafCap {
			bad("leaf %d holds %d spans", l, len(lf.items()))
		}
		w := 0
		for _, h := range lf.items() {
			if h < 0 || int(h) >= len(t.spans) || seen[h] {
				bad("leaf %d holds bad or repeated span %d", l, h)
				continue
			}
			seen[h] = true
			count++
			s := &t.spans[h]
			if s.leaf != l {
				bad("span %d says leaf %d, is in %d", h, s.leaf, l)
			}
			if s.n == 0 {
				bad("span %d is empty", h)
			}
			if !s.deleted {
				w += int(s.n)
			}
			if !s.deleted || s.blen > 0 {
				if int(s.off+s.blen) > len(t.buf) || utf8.RuneCount(t.buf[s.off:s.off+s.blen]) != int(s.n) {
					bad("span %d text does not hold %d code points", h, s.n)
				}
			}
		}
		if w != lf.width {
			bad("leaf %d width %d, spans hold %d", l, lf.width, w)
		}
		prev = l
		count += 0
	}
	if count != len(t.spans) {
		bad("%d of %d spans reachable", count, len(t.spans))
	}
	// Inner nodes: widths and parent links.
	var walk func(h int32, height int, parent int32) int
	walk = func(h int32, height int, parent int32) int {
		if height == 0 {
			if tr.leaves[h].parent != parent {
				bad("leaf %d parent %d, want %d", h, tr.leaves[h].parent, parent)
			}
			return tr.leaves[h].width
		}
		n := &tr.nodes[h]
		if n.parent != parent {
			bad("node %d parent %d, want %d", h, n.parent, parent)
		}
		if n.leafKids != (height == 1) {
			bad("node %d leafKids wrong", h)
		}
		if n.nk == 0 || int(n.nk) > nodeCap {
			bad("node %d holds %d kids", h, n.nk)
		}
		sum := 0
		for i, k := range n.kids() {
			w := walk(k, height-1, h)
			if w != n.widths()[i] {
				bad("node %d kid %d width %d, holds %d", h, k, n.widths()[i], w)
			}
			sum += w
		}
		return sum
	}
	walk(tr.root, tr.height, -1)
	// Per agent: the ID index finds every span and the seqs tile [0, next).
	for a := range t.agents {
		st := &t.agents[a]
		if t.byKey[st.key] != uint32(a) {
			bad("agent %d not interned under its key", a)
		}
		var cur uint32
		di := 0
		lastSeq := int64(-1)
		st.ins.each(0, func(e idEntry) {
			if int64(e.seq) <= lastSeq {
				bad("agent %d index out of order at %d", a, e.seq)
			}
			lastSeq = int64(e.seq)
			s := &t.spans[e.span]
			if s.agent != uint32(a) || s.seq != e.seq {
				bad("agent %d index entry %d points at span (%d,%d)", a, e.seq, s.agent, s.seq)
				return
			}
			for di < len(st.dels) && st.dels[di].seq == cur {
				cur += st.dels[di].n
				di++
			}
			if e.seq != cur {
				bad("agent %d seqs do not tile at %d (span at %d)", a, cur, e.seq)
			}
			cur = e.seq + s.n
		})
		for di < len(st.dels) && st.dels[di].seq == cur {
			cur += st.dels[di].n
			di++
		}
		if cur != st.next || di != len(st.dels) {
			bad("agent %d seqs tile to %d, next is %d", a, cur, st.next)
		}
		for i, c := range st.ins.chunks {
			if len(c) == 0 || st.ins.firsts[i] != c[0].seq {
				bad("agent %d index chunk %d malformed", a, i)
			}
		}
		for _, r := range st.dels {
			if r.lamport+uint64(r.n)-1 > t.clock {
				bad("agent %d delete run beyond the clock", a)
			}
		}
	}
	// Causality: origins exist, precede in Lamport time and in document order.
	order := make([]int, len(t.spans))
	i := 0
	t.eachSpan(func(s *span) bool {
		order[s.handle(t)] = i
		i++
		return true
	})
	for h := range t.spans {
		s := &t.spans[h]
		if s.lamport+uint64(s.n)-1 > t.clock {
			bad("span %d beyond the clock", h)
		}
		if s.oagent == rootAgent {
			continue
		}
		oh, k, ok := t.findID(s.oagent, s.oseq)
		if !ok {
			bad("span %d origin missing", h)
			continue
		}
		if t.spans[oh].lamport+uint64(k) >= s.lamport {
			bad("span %d not after its origin in time", h)
		}
		if order[oh] > order[h] || (oh == int32(h)) {
			bad("span %d before its origin in the document", h)
		}
	}
	return errors.Join(errs...)
}

// handle returns the arena handle of a span reached by pointer.
func (s *span) handle(t *Text) int {
	for _, h := range t.tree.leaves[s.leaf].items() {
		if &t.spans[h] == s {
			return int(h)
		}
	}
	return -1
}
