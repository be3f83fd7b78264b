package crdt

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Version returns this replica's version vector.
func (t *Text) Version() Version {
	v := make(Version, len(t.agents))
	for _, a := range t.agents {
		if a.next > 0 {
			v[a.key] = uint64(a.next)
		}
	}
	return v
}

// Since returns exactly the ops this replica holds and a replica at version
// v lacks, in an order the receiver can apply in one pass (ascending Lamport
// time, so every dependency comes first). It is the answer to a resync.
func (t *Text) Since(v Version) Delta {
	d, _ := t.between(v, nil) // cannot fail: every delete travels along
	return d
}

// Between returns the ops held by this replica that are in version to but
// not in from; a nil to means everything this replica holds. Parts of to
// beyond this replica's state are ignored.
//
// When to is behind this replica, characters deleted after to must travel
// with their text. A replica keeps that text until it is loaded from a
// snapshot; after that Between returns ErrCompacted rather than a delta that
// would wrongly show them deleted.
func (t *Text) Between(from, to Version) (Delta, error) { return t.between(from, to) }

func (t *Text) between(from, to Version) (Delta, error) {
	// Each agent's inserts and deletes are collected in seq order and
	// merged. An agent stamps every op after all it has seen, so its ops
	// come out in Lamport order too, and one merge across agents replaces a
	// sort of the whole history. A peer that broke that rule only costs a
	// sort of its own ops.
	var ops, scratch []sop
	var segs []sinceSeg
	partial := false
	if from == nil && to == nil {
		ops = make([]sop, 0, t.opsHeld())
	}
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
		start := len(ops)
		ops = t.collectInserts(ops, uint32(a), lo, hi, to != nil)
		mid := len(ops)
		ops = collectDeletes(ops, st.dels, uint32(a), lo, hi)
		if len(ops) == start {
			continue
		}
		scratch = mergeBySeq(ops[start:], mid-start, scratch)
		run := ops[start:]
		for i := 1; i < len(run); i++ {
			if run[i].lamport < run[i-1].lamport {
				slices.SortFunc(run, func(x, y sop) int {
					if c := cmp.Compare(x.lamport, y.lamport); c != 0 {
						return c
					}
					return cmp.Compare(x.seq, y.seq)
				})
				break
			}
		}
		segs = append(segs, sinceSeg{agent: uint32(a), start: int32(start), end: int32(len(ops))})
	}
	if partial {
		for _, o := range ops {
			if o.kind == OpInsert && o.deleted {
				return Delta{}, fmt.Errorf("%w: text of %s", ErrCompacted, ID{t.agents[o.agent].key, uint64(o.seq)})
			}
		}
	}
	return t.buildDelta(ops, t.mergeAgents(ops, segs)), nil
}

// opsHeld bounds the ops a full Since returns, so that it allocates once.
func (t *Text) opsHeld() int {
	n := 0
	for i := range t.agents {
		a := &t.agents[i]
		n += a.ins.len()
		for _, r := range a.dels {
			if r.rev {
				n += int(r.n)
			} else {
				n++
			}
		}
	}
	return n
}

// sinceSeg is one agent's collected ops, ops[start:end], in Lamport order.
type sinceSeg struct {
	agent      uint32
	start, end int32
}

// mergeBySeq merges run[:k] and run[k:], each in ascending seq order, into
// one ascending run in place, using scratch (returned, perhaps grown).
func mergeBySeq(run []sop, k int, scratch []sop) []sop {
	if k == 0 || k == len(run) || run[k-1].seq < run[k].seq {
		return scratch
	}
	scratch = append(scratch[:0], run[:k]...)
	i, j, w := 0, k, 0
	for i < len(scratch) && j < len(run) {
		if scratch[i].seq < run[j].seq {
			run[w] = scratch[i]
			i++
		} else {
			run[w] = run[j]
			j++
		}
		w++
	}
	copy(run[w:], scratch[i:])
	return scratch
}

// mergeAgents returns the indices of ops in ascending (Lamport time, agent
// key, seq) order, the order a receiver can apply in one pass, from the
// agents' segments, each already in that order.
func (t *Text) mergeAgents(ops []sop, segs []sinceSeg) []int32 {
	order := make([]int32, 0, len(ops))
	switch len(segs) {
	case 0:
		return order
	case 1:
		for i := segs[0].start; i < segs[0].end; i++ {
			order = append(order, i)
		}
		return order
	}
	// Ties in Lamport time go to the smaller agent key: rank the agents by
	// key once, then a binary heap of segment heads keyed by (Lamport time,
	// rank) yields the merged order.
	slices.SortFunc(segs, func(x, y sinceSeg) int {
		return bytes.Compare(t.agents[x.agent].key[:], t.agents[y.agent].key[:])
	})
	heap := make([]int32, len(segs)) // segment indices; segs[i] has rank i
	for i := range heap {
		heap[i] = int32(i)
	}
	less := func(x, y int32) bool {
		lx, ly := ops[segs[x].start].lamport, ops[segs[y].start].lamport
		return lx < ly || lx == ly && x < y
	}
	down := func(i int) {
		for {
			c := 2*i + 1
			if c >= len(heap) {
				return
			}
			if c+1 < len(heap) && less(heap[c+1], heap[c]) {
				c++
			}
			if !less(heap[c], heap[i]) {
				return
			}
			heap[i], heap[c] = heap[c], heap[i]
			i = c
		}
	}
	for i := len(heap)/2 - 1; i >= 0; i-- {
		down(i)
	}
	for len(heap) > 0 {
		s := &segs[heap[0]]
		order = append(order, s.start)
		s.start++
		if s.start == s.end {
			heap[0] = heap[len(heap)-1]
			heap = heap[:len(heap)-1]
		}
		down(0)
	}
	return order
}

// buildDelta turns the collected ops, in the given order, into a Delta
// with its own agent table (agents in order of first mention). The texts
// of all inserts are cut from one string.
func (t *Text) buildDelta(ops []sop, order []int32) Delta {
	if len(order) == 0 {
		return Delta{Ops: []Op{}}
	}
	// A table from interned agent to delta agent, when the agents are few
	// enough for that to be cheaper than a map.
	var remap []uint32
	b := deltaBuilder{t: t}
	if len(t.agents) <= 4*len(order)+64 {
		remap = make([]uint32, len(t.agents))
		for i := range remap {
			remap[i] = RootAgent
		}
	}
	ref := func(a uint32) uint32 {
		if remap == nil || a == rootAgent {
			return b.ref(a)
		}
		if r := remap[a]; r != RootAgent {
			return r
		}
		r := uint32(len(b.d.Agents))
		b.d.Agents = append(b.d.Agents, t.agents[a].key)
		remap[a] = r
		return r
	}
	total := 0
	for _, i := range order {
		total += int(ops[i].tlen)
	}
	var sb strings.Builder
	sb.Grow(total)
	for _, i := range order {
		if o := &ops[i]; o.tlen > 0 {
			sb.Write(t.buf[o.toff : o.toff+o.tlen])
		}
	}
	text := sb.String()
	b.d.Ops = make([]Op, len(order))
	off := uint32(0)
	for k, i := range order {
		o := &ops[i]
		op := &b.d.Ops[k]
		*op = Op{Kind: o.kind, Agent: ref(o.agent), Seq: uint64(o.seq), Lamport: o.lamport, Len: uint64(o.n)}
		if o.kind == OpInsert {
			op.Origin = Ref{Agent: ref(o.ragent), Seq: uint64(o.rseq)}
			if o.tlen > 0 {
				op.Text = text[off : off+o.tlen]
				off += o.tlen
			}
		} else {
			op.Target = Ref{Agent: ref(o.ragent), Seq: uint64(o.rseq)}
		}
	}
	return b.d
}

// sop is an op being collected, in interned form. Text is a byte range of
// buf when the inserted characters are live.
type sop struct {
	lamport    uint64
	kind       OpKind
	agent      uint32
	seq, n     uint32
	ragent     uint32 // origin (insert) or target (delete)
	rseq       uint32
	toff, tlen uint32
	deleted    bool // travels without text
}

// collectInserts appends agent a's insert runs within seqs [lo, hi). Pieces
// of one run that later edits split apart are joined again when their text
// is still adjacent in buf. Deleted characters travel without text unless
// dead is set: the receiver of a partial range may not get their deletes,
// so it needs the text while this replica still holds it.
func (t *Text) collectInserts(ops []sop, a, lo, hi uint32, dead bool) []sop {
	st := &t.agents[a]
	first := len(ops)
	st.ins.each(lo, func(e idEntry) {
		s := &t.spans[e.span]
		if s.seq >= hi {
			return
		}
		if s.seq+s.n <= lo {
			return
		}
		o := sop{kind: OpInsert, agent: a, seq: s.seq, n: s.n, lamport: s.lamport, ragent: s.oagent, rseq: s.oseq, toff: s.off, tlen: s.blen}
		if s.deleted && !dead {
			o.tlen = 0
		}
		o.deleted = o.tlen == 0
		if cut := lo - min(lo, s.seq); cut > 0 {
			o.seq += cut
			o.n -= cut
			o.lamport += uint64(cut)
			o.ragent, o.rseq = a, o.seq-1
			if !o.deleted {
				bo := t.byteOff(s, cut)
				o.toff += bo
				o.tlen -= bo
			}
		}
		if o.seq+o.n > hi {
			keep := hi - o.seq
			if !o.deleted {
				tmp := span{off: o.toff, blen: o.tlen, n: o.n}
				o.tlen = t.byteOff(&tmp, keep)
			}
			o.n = keep
		}
		if k := len(ops) - 1; k >= first {
			p := &ops[k]
			if p.seq+p.n == o.seq && p.lamport+uint64(p.n) == o.lamport && o.ragent == a && o.rseq == o.seq-1 &&
				p.deleted == o.deleted && (o.deleted || p.toff+p.tlen == o.toff) {
				p.n += o.n
				p.tlen += o.tlen
				return
			}
		}
		ops = append(ops, o)
	})
	return ops
}

// collectDeletes appends agent a's delete runs within seqs [lo, hi).
func collectDeletes(ops []sop, runs []delRun, a, lo, hi uint32) []sop {
	i, _ := slices.BinarySearchFunc(runs, lo, func(r delRun, s uint32) int {
		if r.seq+r.n <= s {
			return -1
		}
		if r.seq > s {
			return 1
		}
		return 0
	})
	for ; i < len(runs) && runs[i].seq < hi; i++ {
		r := runs[i]
		if r.rev {
			// A backspace run travels as one op per delete: ops target
			// ascending ranges.
			for k := uint32(0); k < r.n; k++ {
				if s := r.seq + k; s >= lo && s < hi {
					ops = append(ops, sop{kind: OpDelete, agent: a, seq: s, n: 1, lamport: r.lamport + uint64(k), ragent: r.tagent, rseq: r.target(k)})
				}
			}
			continue
		}
		o := sop{kind: OpDelete, agent: a, seq: r.seq, n: r.n, lamport: r.lamport, ragent: r.tagent, rseq: r.tseq}
		if cut := lo - min(lo, r.seq); cut > 0 {
			o.seq += cut
			o.n -= cut
			o.lamport += uint64(cut)
			o.rseq += cut
		}
		if o.seq+o.n > hi {
			o.n = hi - o.seq
		}
		ops = append(ops, o)
	}
	return ops
}

// Next returns how many seqs of agent this replica holds: its entry in the
// version vector, without building the whole vector.
func (t *Text) Next(agent AgentKey) uint64 {
	if a, ok := t.byKey[agent]; ok {
		return uint64(t.agents[a].next)
	}
	return 0
}

// MemSize estimates the bytes this replica holds on the heap, for memory
// budgets; it counts the arenas and buffers, not allocator overhead.
func (t *Text) MemSize() int {
	const spanBytes, leafBytes, nodeBytes, entryBytes, delBytes, agentBytes = 48, 160, 232, 8, 24, 96
	n := cap(t.spans)*spanBytes + cap(t.buf) + cap(t.tree.leaves)*leafBytes + cap(t.tree.nodes)*nodeBytes
	for i := range t.agents {
		a := &t.agents[i]
		n += agentBytes + a.ins.len()*entryBytes + cap(a.dels)*delBytes
	}
	return n
}

// Clock returns the highest Lamport time this replica has seen.
func (t *Text) Clock() uint64 { return t.clock }
