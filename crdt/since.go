package crdt

import (
	"bytes"
	"fmt"
	"slices"
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
