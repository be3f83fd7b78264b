package crdt

import "fmt"

// AnchorAt turns a position into an anchor that follows the text it sits in
// through concurrent edits. AssocRight sticks to the character after pos, so
// text inserted at pos by others lands before the anchor; AssocLeft sticks to
// the character before pos.
func (t *Text) AnchorAt(pos int, assoc Assoc) (Anchor, error) {
	n := t.Len()
	if pos < 0 || pos > n {
		return Anchor{}, fmt.Errorf("%w: anchor at %d in text of %d", ErrOutOfRange, pos, n)
	}
	c := pos
	if assoc == AssocLeft {
		if pos == 0 {
			return Anchor{Assoc: assoc, Edge: -1}, nil
		}
		c = pos - 1
	} else if pos == n {
		return Anchor{Assoc: assoc, Edge: 1}, nil
	}
	l, i, k := t.locate(c)
	s := &t.spans[t.tree.leaves[l].items()[i]]
	return Anchor{ID: ID{Agent: t.agents[s.agent].key, Seq: uint64(s.seq + k)}, Assoc: assoc}, nil
}

// Resolve returns the current position of an anchor. A deleted anchor
// character resolves to where it stood. ok is false when the anchor names a
// character this replica does not hold (yet).
func (t *Text) Resolve(a Anchor) (pos int, ok bool) {
	switch {
	case a.Edge < 0:
		return 0, true
	case a.Edge > 0:
		return t.Len(), true
	}
	ag, known := t.byKey[a.ID.Agent]
	if !known || a.ID.Seq > MaxSeq {
		return 0, false
	}
	h, k, found := t.findID(ag, uint32(a.ID.Seq))
	if !found {
		return 0, false
	}
	p := t.posOf(h, k)
	if a.Assoc == AssocLeft && !t.spans[h].deleted {
		p++
	}
	return p, true
}
