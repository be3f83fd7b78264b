package syncer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

func runeCount(s string) int { return utf8.RuneCountInString(s) }

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

func (w *deltaWriter) add(src *crdt.Delta, o crdt.Op) {
	o.Agent = w.agent(src.Agents[o.Agent])
	if o.Kind == crdt.OpInsert {
		o.Origin = w.ref(src, o.Origin)
	} else {
		o.Target = w.ref(src, o.Target)
	}
	w.d.Ops = append(w.d.Ops, o)
}

// subDelta returns the ops of d at the given indices.
func subDelta(d crdt.Delta, idx []int) crdt.Delta {
	var w deltaWriter
	for _, i := range idx {
		w.add(&d, d.Ops[i])
	}
	return w.d
}

// mergeDelta appends b's ops to a's.
func mergeDelta(a, b crdt.Delta) crdt.Delta {
	w := deltaWriter{d: crdt.Delta{Agents: a.Agents, Ops: a.Ops}}
	if len(a.Agents) > 0 {
		w.idx = make(map[crdt.AgentKey]uint32, len(a.Agents))
		for i, k := range a.Agents {
			w.idx[k] = uint32(i)
		}
	}
	for _, o := range b.Ops {
		w.add(&b, o)
	}
	return w.d
}

// splitDelta cuts d into deltas that each fit one frame: at most maxOps ops,
// about maxBytes of payload, at most protocol.MaxAgentsPerDelta agents, and
// no insert with more than protocol.MaxOpTextBytes of text (a long insert is
// cut into ops whose seqs continue one another). It always returns at
// least one delta.
func splitDelta(d crdt.Delta, maxOps, maxBytes int) []crdt.Delta {
	const opOverhead = 48 // a generous bound on an op's encoding without text
	var out []crdt.Delta
	var w deltaWriter
	size := 0
	flush := func() {
		out = append(out, w.d)
		w = deltaWriter{}
		size = 0
	}
	for _, o := range d.Ops {
		for _, piece := range cutOp(o) {
			cost := opOverhead + len(piece.Text)
			if len(w.d.Ops) > 0 && (len(w.d.Ops) >= maxOps || size+cost > maxBytes || len(w.d.Agents)+3 > protocol.MaxAgentsPerDelta) {
				flush()
			}
			w.add(&d, piece)
			size += cost
		}
	}
	if len(w.d.Ops) > 0 || len(out) == 0 {
		flush()
	}
	return out
}

// cutOp splits an insert whose text is longer than a frame allows.
func cutOp(o crdt.Op) []crdt.Op {
	if o.Kind != crdt.OpInsert || len(o.Text) <= protocol.MaxOpTextBytes {
		return []crdt.Op{o}
	}
	var out []crdt.Op
	text := o.Text
	for text != "" {
		cut := min(len(text), protocol.MaxOpTextBytes)
		for cut < len(text) && !utf8.RuneStart(text[cut]) {
			cut--
		}
		n := uint64(utf8.RuneCountInString(text[:cut]))
		p := o
		p.Text, p.Len = text[:cut], n
		out = append(out, p)
		o.Origin = crdt.Ref{Agent: o.Agent, Seq: o.Seq + n - 1}
		o.Seq += n
		o.Lamport += n
		text = text[cut:]
	}
	return out
}

// A document snapshot as the log stores it: the CRDT snapshot and the
// audit trail (which the truncated log records no longer carry).
//
//	magic "WFD1"
//	uvarint crdt bytes, crdt snapshot
//	uvarint audit entries; each: uvarint seq, unix ms, ops, inserted,
//	    deleted; string subject, name, agent
const docSnapMagic = "WFD1"

var errBadSnapshot = errors.New("syncer: bad document snapshot")

func encodeSnapshot(t *crdt.Text, audit []Audit) ([]byte, error) {
	cs, err := t.MarshalBinary()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(cs)+len(audit)*48+16)
	b = append(b, docSnapMagic...)
	b = binary.AppendUvarint(b, uint64(len(cs)))
	b = append(b, cs...)
	b = binary.AppendUvarint(b, uint64(len(audit)))
	for _, a := range audit {
		for _, v := range []uint64{a.Seq, uint64(a.Time.UnixMilli()), uint64(a.Ops), uint64(a.Inserted), uint64(a.Deleted)} {
			b = binary.AppendUvarint(b, v)
		}
		for _, s := range []string{clip(a.Subject), clip(a.Name), a.Agent} {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
	}
	return b, nil
}

func decodeSnapshot(data []byte, agent crdt.AgentKey) (*crdt.Text, []Audit, error) {
	if len(data) < len(docSnapMagic) || string(data[:len(docSnapMagic)]) != docSnapMagic {
		return nil, nil, fmt.Errorf("%w: magic", errBadSnapshot)
	}
	b := data[len(docSnapMagic):]
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return nil, nil, fmt.Errorf("%w: crdt length", errBadSnapshot)
	}
	t, err := crdt.Load(b[n:n+int(l)], agent)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errBadSnapshot, err)
	}
	b = b[n+int(l):]
	cnt, n := binary.Uvarint(b)
	if n <= 0 || cnt > uint64(len(b)) {
		return nil, nil, fmt.Errorf("%w: audit count", errBadSnapshot)
	}
	b = b[n:]
	audit := make([]Audit, 0, cnt)
	for range cnt {
		var v [5]uint64
		for i := range v {
			x, n := binary.Uvarint(b)
			if n <= 0 {
				return nil, nil, fmt.Errorf("%w: audit", errBadSnapshot)
			}
			v[i], b = x, b[n:]
		}
		var s [3]string
		for i := range s {
			x, n := binary.Uvarint(b)
			if n <= 0 || x > maxAuthorBytes || x > uint64(len(b)-n) {
				return nil, nil, fmt.Errorf("%w: audit", errBadSnapshot)
			}
			s[i], b = string(b[n:n+int(x)]), b[n+int(x):]
		}
		audit = append(audit, Audit{Seq: v[0], Time: time.UnixMilli(int64(v[1])).UTC(), Ops: int(v[2]), Inserted: int(v[3]), Deleted: int(v[4]),
			Subject: s[0], Name: s[1], Agent: s[2]})
	}
	return t, audit, nil
}
