package client

import (
	"unicode/utf8"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// Limits for one pending entry. An edit larger than this (a big paste) is
// kept as several entries, each of which fits a Delta frame of any server
// that advertises at least these limits.
const (
	entryMaxOps   = 4096
	entryMaxBytes = 256 << 10
	opOverhead    = 40 // a generous bound on an op's encoding without its text
)

// deltaWriter builds a delta whose agent table holds only the agents its
// ops name.
type deltaWriter struct {
	d   crdt.Delta
	idx map[crdt.AgentKey]uint32
}

func (w *deltaWriter) agent(k crdt.AgentKey) uint32 {
	if i, ok := w.idx[k]; ok {
		return i
	}
	if w.idx == nil {
		w.idx = make(map[crdt.AgentKey]uint32)
	}
	i := uint32(len(w.d.Agents))
	w.d.Agents = append(w.d.Agents, k)
	w.idx[k] = i
	return i
}

func (w *deltaWriter) ref(src *crdt.Delta, r crdt.Ref) crdt.Ref {
	if r.Agent == crdt.RootAgent {
		return r
	}
	return crdt.Ref{Agent: w.agent(src.Agents[r.Agent]), Seq: r.Seq}
}

// add appends op o of src, re-indexing its agents.
func (w *deltaWriter) add(src *crdt.Delta, o crdt.Op) {
	o.Agent = w.agent(src.Agents[o.Agent])
	if o.Kind == crdt.OpInsert {
		o.Origin = w.ref(src, o.Origin)
	} else {
		o.Target = w.ref(src, o.Target)
	}
	w.d.Ops = append(w.d.Ops, o)
}

func (w *deltaWriter) addAll(src *crdt.Delta) {
	for _, o := range src.Ops {
		w.add(src, o)
	}
}

func deltaBytes(d *crdt.Delta) int {
	n := 8 + 18*len(d.Agents)
	for i := range d.Ops {
		n += opOverhead + len(d.Ops[i].Text)
	}
	return n
}

// splitDelta cuts d into deltas of at most maxOps ops and about maxBytes
// bytes each, cutting inserts longer than protocol.MaxOpTextBytes into ops
// whose seqs continue one another. It returns d itself when it fits.
func splitDelta(d crdt.Delta, maxOps, maxBytes int) []crdt.Delta {
	fits := len(d.Ops) <= maxOps && deltaBytes(&d) <= maxBytes && len(d.Agents) <= protocol.MaxAgentsPerDelta
	for i := 0; fits && i < len(d.Ops); i++ {
		fits = len(d.Ops[i].Text) <= protocol.MaxOpTextBytes
	}
	if fits {
		return []crdt.Delta{d}
	}
	var out []crdt.Delta
	var w deltaWriter
	size := 0
	for _, o := range d.Ops {
		for _, piece := range cutInsert(o) {
			cost := opOverhead + len(piece.Text) + 36
			if len(w.d.Ops) > 0 && (len(w.d.Ops) >= maxOps || size+cost > maxBytes || len(w.d.Agents)+3 > protocol.MaxAgentsPerDelta) {
				out = append(out, w.d)
				w, size = deltaWriter{}, 0
			}
			w.add(&d, piece)
			size += cost
		}
	}
	if len(w.d.Ops) > 0 {
		out = append(out, w.d)
	}
	return out
}

// cutInsert splits an insert whose text exceeds protocol.MaxOpTextBytes.
func cutInsert(o crdt.Op) []crdt.Op {
	if o.Kind != crdt.OpInsert || len(o.Text) <= protocol.MaxOpTextBytes {
		return []crdt.Op{o}
	}
	var out []crdt.Op
	for o.Text != "" {
		cut := min(len(o.Text), protocol.MaxOpTextBytes)
		for cut < len(o.Text) && !utf8.RuneStart(o.Text[cut]) {
			cut--
		}
		n := uint64(utf8.RuneCountInString(o.Text[:cut]))
		p := o
		p.Text, p.Len = o.Text[:cut], n
		out = append(out, p)
		o = trimOp(o, n)
	}
	return out
}

// trimOp drops the first k units (code points or deletes) of o, k < o.Len.
// The rest keeps its IDs, Lamport times and, for an insert, its origin:
// the code point just before it in the same op.
func trimOp(o crdt.Op, k uint64) crdt.Op {
	if k == 0 {
		return o
	}
	o.Seq += k
	o.Lamport += k
	o.Len -= k
	if o.Kind == crdt.OpInsert {
		o.Origin = crdt.Ref{Agent: o.Agent, Seq: o.Seq - 1}
		if o.Text != "" {
			i := 0
			for n := k; n > 0; n-- {
				_, sz := utf8.DecodeRuneInString(o.Text[i:])
				i += sz
			}
			o.Text = o.Text[i:]
		}
	} else {
		o.Target.Seq += k
	}
	return o
}

// ownRange returns the seqs [lo, hi) of agent me that d's ops cover.
func ownRange(d *crdt.Delta, me crdt.AgentKey) (lo, hi uint64) {
	first := true
	for i := range d.Ops {
		o := &d.Ops[i]
		if d.Agents[o.Agent] != me {
			continue
		}
		if first || o.Seq < lo {
			lo = o.Seq
		}
		if first || o.Seq+o.Len > hi {
			hi = o.Seq + o.Len
		}
		first = false
	}
	return lo, hi
}

// checkDocID applies the protocol's rules for document IDs.
func checkDocID(id string) bool {
	if id == "" || len(id) > protocol.MaxDocIDBytes || !utf8.ValidString(id) {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}
