package crdt

import "sort"

// idIndex maps one agent's seqs to the spans that hold them. Entries are
// (first seq, span handle) in seq order; a span covers [seq, seq+n), so a
// lookup is "the last entry whose seq ≤ s". New text from an agent always
// has higher seqs than all it wrote before, so the common case is an append;
// splitting an old span inserts in the middle. Entries sit in chunks of at
// most idChunkCap, which bounds the memmove of a middle insert, and a
// directory of each chunk's first seq gives two binary searches per lookup.
type idIndex struct {
	chunks [][]idEntry
	firsts []uint32
}

type idEntry struct {
	seq  uint32
	span int32
}

var idChunkCap = 128

func (x *idIndex) clone() idIndex {
	c := idIndex{chunks: make([][]idEntry, len(x.chunks)), firsts: append([]uint32(nil), x.firsts...)}
	for i, ch := range x.chunks {
		c.chunks[i] = append([]idEntry(nil), ch...)
	}
	return c
}

// find returns the span handle of the last entry with seq ≤ s, or -1.
func (x *idIndex) find(s uint32) int32 {
	// Hand-rolled binary searches: this is on every remote op's path.
	lo, hi := 0, len(x.firsts)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if x.firsts[m] <= s {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 {
		return -1
	}
	ch := x.chunks[lo-1]
	lo, hi = 0, len(ch)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if ch[m].seq <= s {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return ch[lo-1].span
}

// insert adds an entry whose seq is not yet present.
func (x *idIndex) insert(e idEntry) {
	nc := len(x.chunks)
	if nc == 0 {
		// Start small: most agents of a document write a few runs.
		x.chunks = append(x.chunks, append(make([]idEntry, 0, 4), e))
		x.firsts = append(x.firsts, e.seq)
		return
	}
	j := sort.Search(nc, func(i int) bool { return x.firsts[i] > e.seq }) - 1
	if j < 0 {
		j = 0
	}
	ch := x.chunks[j]
	k := sort.Search(len(ch), func(i int) bool { return ch[i].seq > e.seq })
	ch = append(ch, idEntry{})
	copy(ch[k+1:], ch[k:])
	ch[k] = e
	x.firsts[j] = ch[0].seq
	if len(ch) <= idChunkCap {
		x.chunks[j] = ch
		return
	}
	half := len(ch) / 2
	right := append(make([]idEntry, 0, idChunkCap+1), ch[half:]...)
	x.chunks[j] = ch[:half]
	x.chunks = append(x.chunks, nil)
	copy(x.chunks[j+2:], x.chunks[j+1:])
	x.chunks[j+1] = right
	x.firsts = append(x.firsts, 0)
	copy(x.firsts[j+2:], x.firsts[j+1:])
	x.firsts[j+1] = right[0].seq
}

// each calls fn for every entry with seq ≥ from... in seq order, starting
// with the entry that covers from.
func (x *idIndex) each(from uint32, fn func(e idEntry)) {
	j := sort.Search(len(x.firsts), func(i int) bool { return x.firsts[i] > from }) - 1
	if j < 0 {
		j = 0
	}
	for ; j < len(x.chunks); j++ {
		ch := x.chunks[j]
		k := 0
		if len(ch) > 0 && ch[0].seq <= from {
			k = sort.Search(len(ch), func(i int) bool { return ch[i].seq > from }) - 1
		}
		for ; k < len(ch); k++ {
			fn(ch[k])
		}
		from = 0
	}
}

func (x *idIndex) len() int {
	n := 0
	for _, ch := range x.chunks {
		n += len(ch)
	}
	return n
}

// rekey moves the entry at seq old to seq new. The caller guarantees the
// entry keeps its place in seq order (a span boundary shifted between two
// neighbouring spans of one agent).
func (x *idIndex) rekey(old, new uint32) {
	j := sort.Search(len(x.firsts), func(i int) bool { return x.firsts[i] > old }) - 1
	ch := x.chunks[j]
	k := sort.Search(len(ch), func(i int) bool { return ch[i].seq > old }) - 1
	ch[k].seq = new
	if k == 0 {
		x.firsts[j] = new
	}
}
