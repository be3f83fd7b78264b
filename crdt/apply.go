package crdt

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"unicode/utf8"
)

// Apply merges a delta from another replica. It is idempotent (ops and parts
// of ops already held are skipped) and commutative for any causal order.
//
// An invalid delta (malformed, or contradicting what this replica holds) is
// rejected whole with an error wrapping ErrInvalid before anything changes. An op that needs an ID this replica
// lacks is left out and reported in a *MissingError; every other op is
// applied. Apply never panics on remote input.
func (t *Text) Apply(d Delta) error { return t.ApplyChanges(d, nil) }

// ApplyChanges is Apply that also reports every visible effect, in order, as
// a position-based Change — what an editor binding needs to mirror remote
// edits. emit may be nil.
func (t *Text) ApplyChanges(d Delta, emit func(Change)) error {
	if err := validate(d); err != nil {
		return err
	}
	if err := t.precheck(d); err != nil {
		return err
	}
	ap := applier{t: t, d: &d, emit: emit, amap: make([]uint32, len(d.Agents))}
	for i := range ap.amap {
		ap.amap[i] = rootAgent
	}
	var pending []int
	var missing ID
	for i := range d.Ops {
		id, err := ap.op(&d.Ops[i])
		if err != nil {
			return fmt.Errorf("op %d: %w", i, err)
		}
		if id != nil {
			if pending == nil {
				missing = *id
			}
			pending = append(pending, i)
		}
	}
	// Ops of one delta may come in an order that is not causal (a merged
	// delete run can target text newer than its first Lamport time). Retry
	// the waiting ones while that makes progress; the pass count is bounded
	// so hostile input cannot make this quadratic.
	for pass := 0; pass < 8 && len(pending) > 0; pass++ {
		var still []int
		for _, i := range pending {
			id, err := ap.op(&d.Ops[i])
			if err != nil {
				return fmt.Errorf("op %d: %w", i, err)
			}
			if id != nil {
				if still == nil {
					missing = *id
				}
				still = append(still, i)
			}
		}
		if len(still) == len(pending) {
			break
		}
		pending = still
	}
	if len(pending) > 0 {
		return &MissingError{ID: missing, Pending: pending}
	}
	return nil
}

// validate checks everything about a delta that does not depend on the
// replica's state.
func validate(d Delta) error {
	na := uint32(len(d.Agents))
	if len(d.Agents) > MaxAgents {
		return fmt.Errorf("%w: %d agents", ErrInvalid, len(d.Agents))
	}
	for i := range d.Ops {
		o := &d.Ops[i]
		bad := func(why string) error { return fmt.Errorf("%w: op %d (%s): %s", ErrInvalid, i, o.Kind, why) }
		if o.Agent >= na {
			return bad("author index out of range")
		}
		if o.Len == 0 {
			return bad("empty op")
		}
		if o.Len > MaxSeq || o.Seq > MaxSeq-o.Len {
			return bad("seq out of range")
		}
		if o.Lamport == 0 || o.Len > MaxLamport || o.Lamport > MaxLamport-o.Len {
			return bad("lamport out of range")
		}
		switch o.Kind {
		case OpInsert:
			if o.Origin.Agent == RootAgent {
				if o.Origin.Seq != 0 {
					return bad("root origin with a seq")
				}
			} else if o.Origin.Agent >= na {
				return bad("origin index out of range")
			} else if o.Origin.Seq > MaxSeq {
				return bad("origin seq out of range")
			}
			if o.Text != "" {
				if !utf8.ValidString(o.Text) {
					return bad("text is not valid UTF-8")
				}
				if uint64(utf8.RuneCountInString(o.Text)) != o.Len {
					return bad("text length disagrees with op length")
				}
			}
		case OpDelete:
			if o.Target.Agent >= na {
				return bad("target index out of range")
			}
			if o.Target.Seq > MaxSeq-o.Len {
				return bad("target seq out of range")
			}
			if o.Text != "" {
				return bad("delete carries text")
			}
		default:
			return bad("unknown kind")
		}
	}
	return nil
}

type applier struct {
	t    *Text
	d    *Delta
	emit func(Change)
	amap []uint32 // delta agent index → interned agent, rootAgent until needed
}

// agent interns the delta's agent i.
func (ap *applier) agent(i uint32) uint32 {
	if a := ap.amap[i]; a != rootAgent {
		return a
	}
	a := ap.t.intern(ap.d.Agents[i])
	ap.amap[i] = a
	return a
}

// known returns the interned agent for delta index i if this replica has
// heard of it, without interning.
func (ap *applier) known(i uint32) (uint32, bool) {
	if a := ap.amap[i]; a != rootAgent {
		return a, true
	}
	a, ok := ap.t.byKey[ap.d.Agents[i]]
	if ok {
		ap.amap[i] = a
	}
	return a, ok
}

// op applies one op. It returns the missing ID when the op must wait, or an
// error wrapping ErrInvalid when it can never apply.
func (ap *applier) op(o *Op) (*ID, error) {
	t := ap.t
	key := ap.d.Agents[o.Agent]
	a := ap.agent(o.Agent)
	st := &t.agents[a]
	seq, end := uint32(o.Seq), uint32(o.Seq+o.Len)
	if end <= st.next {
		return nil, nil // already held
	}
	if seq > st.next {
		return &ID{Agent: key, Seq: uint64(st.next)}, nil
	}
	skip := st.next - seq
	lamport := o.Lamport + uint64(skip)
	n := end - st.next
	seq = st.next
	if o.Kind == OpDelete {
		ta, ok := ap.known(o.Target.Agent)
		if !ok {
			return &ID{Agent: ap.d.Agents[o.Target.Agent], Seq: o.Target.Seq + uint64(skip)}, nil
		}
		return ap.del(a, seq, lamport, n, ta, uint32(o.Target.Seq)+skip)
	}
	text := o.Text
	if text != "" && skip > 0 {
		b := 0
		for k := uint32(0); k < skip; k++ {
			_, sz := utf8.DecodeRuneInString(text[b:])
			b += sz
		}
		text = text[b:]
	}
	oa, oseq := rootAgent, uint32(0)
	if skip > 0 {
		oa, oseq = a, seq-1
	} else if o.Origin.Agent != RootAgent {
		var ok bool
		if oa, ok = ap.known(o.Origin.Agent); !ok {
			return &ID{Agent: ap.d.Agents[o.Origin.Agent], Seq: o.Origin.Seq}, nil
		}
		oseq = uint32(o.Origin.Seq)
	}
	return ap.ins(span{lamport: lamport, agent: a, seq: seq, oagent: oa, oseq: oseq, n: n, deleted: text == ""}, text)
}

// less reports whether item key (lamport, agent key, seq) a sorts before b.
func (t *Text) less(al uint64, aa, as uint32, bl uint64, ba, bs uint32) bool {
	if al != bl {
		return al < bl
	}
	if aa != ba {
		return bytes.Compare(t.agents[aa].key[:], t.agents[ba].key[:]) < 0
	}
	return as < bs
}

func (ap *applier) ins(ns span, text string) (*ID, error) {
	t := ap.t
	var l int32
	var slot int
	if ns.oagent == rootAgent {
		l, slot = t.tree.first, 0
	} else {
		h, k, ok := t.findID(ns.oagent, ns.oseq)
		if !ok {
			if ns.oseq >= t.agents[ns.oagent].next {
				return &ID{Agent: t.agents[ns.oagent].key, Seq: uint64(ns.oseq)}, nil
			}
			return nil, fmt.Errorf("%w: origin %s is not a character", ErrInvalid, ID{t.agents[ns.oagent].key, uint64(ns.oseq)})
		}
		x := t.spans[h]
		if x.lamport+uint64(k) >= ns.lamport {
			return nil, fmt.Errorf("%w: lamport %d not after its origin's %d", ErrInvalid, ns.lamport, x.lamport+uint64(k))
		}
		var i int
		l, i = t.slotOf(h)
		if k < x.n-1 {
			// The next character is a sibling (its origin is ours too).
			if t.less(x.lamport+uint64(k)+1, x.agent, x.seq+k+1, ns.lamport, ns.agent, ns.seq) {
				t.split(l, i, k+1)
				l, i = t.slotOf(h)
				return ap.place(ns, text, l, i+1)
			}
		}
		slot = i + 1
	}
	// Skip every following span whose first character sorts after ours:
	// those are younger siblings' subtrees (RGA ordering).
	for {
		lf := &t.tree.leaves[l]
		if slot >= len(lf.items()) {
			if lf.next < 0 {
				break
			}
			l, slot = lf.next, 0
			continue
		}
		y := &t.spans[lf.items()[slot]]
		if !t.less(ns.lamport, ns.agent, ns.seq, y.lamport, y.agent, y.seq) {
			break
		}
		slot++
	}
	return ap.place(ns, text, l, slot)
}

// place puts a new span at (l, slot), growing the previous span instead when
// the new one continues it.
func (ap *applier) place(ns span, text string, l int32, slot int) (*ID, error) {
	t := ap.t
	st := &t.agents[ns.agent]
	st.next = ns.seq + ns.n
	t.clock = max(t.clock, ns.lamport+uint64(ns.n)-1)
	var h int32 = -1
	if slot > 0 {
		ph := t.tree.leaves[l].items()[slot-1]
		p := &t.spans[ph]
		if p.agent == ns.agent && p.seq+p.n == ns.seq && p.lamport+uint64(p.n) == ns.lamport &&
			ns.oagent == p.agent && ns.oseq == p.seq+p.n-1 && p.deleted == ns.deleted &&
			(p.deleted && p.blen == 0 || !p.deleted && int(p.off+p.blen) == len(t.buf)) {
			p.n += ns.n
			if !ns.deleted {
				p.blen += uint32(len(text))
				t.buf = append(t.buf, text...)
				t.tree.addWidth(l, int(ns.n))
			}
			h = ph
			if ap.emit != nil && !ns.deleted {
				ap.emit(Change{Pos: t.posOf(h, p.n-ns.n), Insert: text})
			}
			return nil, nil
		}
	}
	w := 0
	if !ns.deleted {
		ns.off, ns.blen = uint32(len(t.buf)), uint32(len(text))
		t.buf = append(t.buf, text...)
		w = int(ns.n)
	}
	h = t.newSpan(ns)
	t.insertSlot(l, slot, h, w)
	st.ins.insert(idEntry{seq: ns.seq, span: h})
	if ap.emit != nil && !ns.deleted {
		ap.emit(Change{Pos: t.posOf(h, 0), Insert: text})
	}
	return nil, nil
}

// del applies a delete run after checking that every target exists.
func (ap *applier) del(a, seq uint32, lamport uint64, n uint32, ta, tseq uint32) (*ID, error) {
	t := ap.t
	for cur, end := tseq, tseq+n; cur < end; {
		h, k, ok := t.findID(ta, cur)
		if !ok {
			if cur >= t.agents[ta].next {
				return &ID{Agent: t.agents[ta].key, Seq: uint64(cur)}, nil
			}
			return nil, fmt.Errorf("%w: delete target %s is not a character", ErrInvalid, ID{t.agents[ta].key, uint64(cur)})
		}
		cur += min(end-cur, t.spans[h].n-k)
	}
	for cur, end := tseq, tseq+n; cur < end; {
		h, k, _ := t.findID(ta, cur)
		x := &t.spans[h]
		take := min(end-cur, x.n-k)
		if !x.deleted {
			if ap.emit != nil {
				ap.emit(Change{Pos: t.posOf(h, k), Delete: int(take)})
			}
			t.kill(h, k, take)
		}
		cur += take
	}
	st := &t.agents[a]
	st.next = seq + n
	t.clock = max(t.clock, lamport+uint64(n)-1)
	appendDelRun(&st.dels, delRun{lamport: lamport, seq: seq, n: n, tagent: ta, tseq: tseq})
	return nil, nil
}

// precheck finds, without changing anything, every op that contradicts this
// replica or the rest of its delta: an insert whose Lamport time is not
// after its origin's, or an origin or delete target that names a delete
// rather than a character. Checking first keeps Apply all-or-nothing for
// invalid input. IDs that neither side holds are left to the missing-
// dependency path.
func (t *Text) precheck(d Delta) error {
	// Canonical delta agent per key, and each agent's runs in this delta.
	// known[i] is the interned agent of delta agent i, or rootAgent.
	canon := make([]uint32, len(d.Agents))
	known := make([]uint32, len(d.Agents))
	first := make(map[AgentKey]uint32, len(d.Agents))
	for i, k := range d.Agents {
		if j, ok := first[k]; ok {
			canon[i] = j
		} else {
			first[k] = uint32(i)
			canon[i] = uint32(i)
		}
		known[i] = rootAgent
		if a, ok := t.byKey[k]; ok {
			known[i] = a
		}
	}
	// One backing array, cut per agent by counting first.
	counts := make([]int, len(d.Agents))
	for _, o := range d.Ops {
		counts[canon[o.Agent]]++
	}
	backing := make([]deltaRun, 0, len(d.Ops))
	runs := make([][]deltaRun, len(d.Agents))
	for a, n := range counts {
		runs[a] = backing[len(backing) : len(backing) : len(backing)+n]
		backing = backing[:len(backing)+n]
	}
	for _, o := range d.Ops {
		a := canon[o.Agent]
		runs[a] = append(runs[a], deltaRun{o.Seq, o.Len, o.Lamport, o.Kind == OpInsert})
	}
	for a, rs := range runs {
		// Deltas from Since are already in seq order per agent.
		if !slices.IsSortedFunc(rs, func(x, y deltaRun) int { return cmp.Compare(x.seq, y.seq) }) {
			slices.SortFunc(rs, func(x, y deltaRun) int { return cmp.Compare(x.seq, y.seq) })
		}
		// Ops of one agent must not overlap: each seq names one op, and
		// overlaps would let the order of application decide an op's origin.
		for i := 1; i < len(rs); i++ {
			if rs[i-1].seq+rs[i-1].n > rs[i].seq {
				return fmt.Errorf("%w: ops of agent %s overlap at seq %d", ErrInvalid, d.Agents[a], rs[i].seq)
			}
		}
	}
	hint := make([]int, len(d.Agents)) // per agent: the run found last
	// lookup reports what the ID (delta agent a, seq) is: a character with
	// its Lamport time, a delete (bad), or unknown.
	const (
		unknown = iota
		char
		del
	)
	lookup := func(a uint32, seq uint64) (int, uint64) {
		if ag := known[a]; ag != rootAgent && seq <= MaxSeq {
			if h, k, ok := t.findID(ag, uint32(seq)); ok {
				return char, t.spans[h].lamport + uint64(k)
			}
			if seq < uint64(t.agents[ag].next) {
				return del, 0
			}
		}
		ca := canon[a]
		rs := runs[ca]
		i := hint[ca]
		if i >= len(rs) || rs[i].seq > seq || rs[i].seq+rs[i].n <= seq {
			i = searchRuns(rs, seq)
			hint[ca] = i
		}
		if i < len(rs) && rs[i].seq <= seq {
			if rs[i].insert {
				return char, rs[i].lamport + seq - rs[i].seq
			}
			return del, 0
		}
		return unknown, 0
	}
	for i := range d.Ops {
		o := &d.Ops[i]
		bad := func(why string) error { return fmt.Errorf("%w: op %d (%s): %s", ErrInvalid, i, o.Kind, why) }
		if ag := known[o.Agent]; ag != rootAgent && o.Seq+o.Len <= uint64(t.agents[ag].next) {
			continue // already held; Apply skips it
		}
		if o.Kind == OpDelete {
			for s, end := o.Target.Seq, o.Target.Seq+o.Len; s < end; {
				what, _ := lookup(o.Target.Agent, s)
				if what == del {
					return bad("target names a delete, not a character")
				}
				// Step to the next run boundary rather than per character.
				s = t.nextBoundary(runs[canon[o.Target.Agent]], known[o.Target.Agent], s, end)
			}
			continue
		}
		// An op that overlaps seqs already held continues from its author's
		// last held ID; otherwise from its stated origin.
		oa, oseq, lam := o.Origin.Agent, o.Origin.Seq, o.Lamport
		if ag := known[o.Agent]; ag != rootAgent {
			if next := uint64(t.agents[ag].next); o.Seq < next && next < o.Seq+o.Len {
				oa, oseq, lam = o.Agent, next-1, o.Lamport+next-o.Seq
			}
		}
		if oa == RootAgent {
			continue
		}
		what, ol := lookup(oa, oseq)
		switch {
		case what == del:
			return bad("origin names a delete, not a character")
		case what == char && ol >= lam:
			return bad(fmt.Sprintf("lamport %d not after its origin's %d", lam, ol))
		}
	}
	return nil
}

// deltaRun is the seq range an op of a delta covers, for precheck.
type deltaRun struct {
	seq, n, lamport uint64
	insert          bool
}

// nextBoundary returns the first seq after s, at most end, where what an ID
// of an agent (interned as ag, or rootAgent when unknown; rs its runs in the
// delta) is could change: the end of the span or run holding s.
func (t *Text) nextBoundary(rs []deltaRun, ag uint32, s, end uint64) uint64 {
	next := end
	if ag != rootAgent && s <= MaxSeq {
		if h, k, ok := t.findID(ag, uint32(s)); ok {
			next = min(next, s+uint64(t.spans[h].n-k))
		} else if s < uint64(t.agents[ag].next) {
			return s + 1
		}
	}
	i := searchRuns(rs, s)
	if i < len(rs) {
		if rs[i].seq <= s {
			next = min(next, rs[i].seq+rs[i].n)
		} else {
			next = min(next, rs[i].seq)
		}
	}
	return max(next, s+1)
}

// searchRuns returns the index of the first run that ends after seq.
func searchRuns(rs []deltaRun, seq uint64) int {
	lo, hi := 0, len(rs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if rs[m].seq+rs[m].n > seq {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}
