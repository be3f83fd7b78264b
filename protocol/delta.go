package protocol

import (
	"unicode/utf8"

	"github.com/weft-sync/weft/crdt"
)

// Deltas often have to be reshaped to fit frames: a server's answer to a
// join, a long paste, a client's offline backlog. These helpers keep every
// piece valid on its own: each has an agent table holding only the agents
// its ops name, and an insert cut in two continues with the next seq and
// Lamport time after the previous piece.

// DeltaWriter builds a delta out of ops taken from other deltas, re-indexing
// their agents into its own table.
type DeltaWriter struct {
	d   crdt.Delta
	idx map[crdt.AgentKey]uint32
}

func (w *DeltaWriter) agent(k crdt.AgentKey) uint32 {
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

func (w *DeltaWriter) ref(src *crdt.Delta, r crdt.Ref) crdt.Ref {
	if r.Agent == crdt.RootAgent {
		return r
	}
	return crdt.Ref{Agent: w.agent(src.Agents[r.Agent]), Seq: r.Seq}
}

// Add appends op o of src.
func (w *DeltaWriter) Add(src *crdt.Delta, o crdt.Op) {
	o.Agent = w.agent(src.Agents[o.Agent])
	if o.Kind == crdt.OpInsert {
		o.Origin = w.ref(src, o.Origin)
	} else {
		o.Target = w.ref(src, o.Target)
	}
	w.d.Ops = append(w.d.Ops, o)
}

// AddAll appends every op of src.
func (w *DeltaWriter) AddAll(src *crdt.Delta) {
	for _, o := range src.Ops {
		w.Add(src, o)
	}
}

// Delta returns the delta built so far. It shares memory with the writer.
func (w *DeltaWriter) Delta() crdt.Delta { return w.d }

// SubDelta returns the ops of d at the given indices, as their own delta.
func SubDelta(d crdt.Delta, idx []int) crdt.Delta {
	var w DeltaWriter
	for _, i := range idx {
		w.Add(&d, d.Ops[i])
	}
	return w.d
}

// opOverhead bounds the encoding of an op without its text, with its share
// of agent-table entries.
const opOverhead = 48

// EstimateBytes bounds the encoded size of d's ops and agents, without the
// frame around them.
func EstimateBytes(d *crdt.Delta) int {
	n := 8 + 18*len(d.Agents)
	for i := range d.Ops {
		n += opOverhead + len(d.Ops[i].Text)
	}
	return n
}

// SplitDelta cuts d into deltas of at most maxOps ops and about maxBytes
// bytes each, with at most MaxAgentsPerDelta agents, cutting inserts longer
// than MaxOpTextBytes into ops whose seqs continue one another. It returns
// d itself when it already fits, and always at least one delta.
func SplitDelta(d crdt.Delta, maxOps, maxBytes int) []crdt.Delta {
	fits := len(d.Ops) <= maxOps && EstimateBytes(&d) <= maxBytes && len(d.Agents) <= MaxAgentsPerDelta
	for i := 0; fits && i < len(d.Ops); i++ {
		fits = len(d.Ops[i].Text) <= MaxOpTextBytes
	}
	if fits {
		return []crdt.Delta{d}
	}
	var out []crdt.Delta
	var w DeltaWriter
	size := 0
	for _, o := range d.Ops {
		for _, piece := range cutInsert(o) {
			cost := opOverhead + len(piece.Text)
			if len(w.d.Ops) > 0 && (len(w.d.Ops) >= maxOps || size+cost > maxBytes || len(w.d.Agents)+3 > MaxAgentsPerDelta) {
				out = append(out, w.d)
				w, size = DeltaWriter{}, 0
			}
			w.Add(&d, piece)
			size += cost
		}
	}
	if len(w.d.Ops) > 0 || len(out) == 0 {
		out = append(out, w.d)
	}
	return out
}

// cutInsert splits an insert whose text exceeds MaxOpTextBytes.
func cutInsert(o crdt.Op) []crdt.Op {
	if o.Kind != crdt.OpInsert || len(o.Text) <= MaxOpTextBytes {
		return []crdt.Op{o}
	}
	var out []crdt.Op
	for o.Text != "" {
		cut := min(len(o.Text), MaxOpTextBytes)
		for cut < len(o.Text) && !utf8.RuneStart(o.Text[cut]) {
			cut--
		}
		n := uint64(utf8.RuneCountInString(o.Text[:cut]))
		p := o
		p.Text, p.Len = o.Text[:cut], n
		out = append(out, p)
		o = TrimOp(o, n)
	}
	return out
}

// TrimOp drops the first k units (code points or deletes) of o, k < o.Len.
// The rest keeps its IDs and Lamport times and, for an insert, its origin:
// the code point just before it in the same op.
func TrimOp(o crdt.Op, k uint64) crdt.Op {
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
