package crdt

import (
	"bytes"
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
func (t *Text) Since(v Version) Delta { return t.Between(v, nil) }

// Between returns the ops held by this replica that are in version to but
// not in from; a nil to means everything this replica holds. Parts of to
// beyond this replica's state are ignored.
func (t *Text) Between(from, to Version) Delta {
	var ops []sop
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
		ops = t.collectInserts(ops, uint32(a), lo, hi)
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
	deleted    bool
}

// collectInserts appends agent a's insert runs within seqs [lo, hi). Pieces
// of one run that later edits split apart are joined again when their text
// is still adjacent in buf.
func (t *Text) collectInserts(ops []sop, a, lo, hi uint32) []sop {
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
		o := sop{kind: OpInsert, agent: a, seq: s.seq, n: s.n, lamport: s.lamport, ragent: s.oagent, rseq: s.oseq, deleted: s.deleted, toff: s.off, tlen: s.blen}
		if cut := lo - min(lo, s.seq); cut > 0 {
			o.seq += cut
			o.n -= cut
			o.lamport += uint64(cut)
			o.ragent, o.rseq = a, o.seq-1
			if !s.deleted {
				bo := t.byteOff(s, cut)
				o.toff += bo
				o.tlen -= bo
			}
		}
		if o.seq+o.n > hi {
			keep := hi - o.seq
			if !s.deleted {
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
