package crdt

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"unicode/utf8"
)

// Snapshot format, version 2. A snapshot is the document state, not its
// history: every span in document order (tombstones included, since later
// merges need their IDs, order and Lamport times, but not their text), each
// agent's delete runs (so Since can still answer from a loaded replica) and
// the live text once.
//
// The text is compressed with the byte-aligned LZ77 code of snapshot_lz.go,
// which decodes several times faster than DEFLATE inflates. The structure
// is not compressed: most fields are predicted and cost a bit in a head
// byte rather than a number, so it is dense already, and reading it is
// cheaper than inflating it would be.
//
//	magic "WFT\x02"
//	uvarint textBytes, uvarint compressedBytes, lz(text)
//	uvarint clock
//	uvarint agents; per agent: key[16] uvarint next uvarint deleteRuns
//	uvarint spans; per span, in document order:
//	    head [ext] [originEscape [oagent oseq]] [agent] [zigzag seqDelta] [uvarint n-8] [zigzag lamportDelta]
//	per agent, its delete runs in seq order:
//	    head [ext] [uvarint n-64] [tagent] [zigzag lamportDelta] zigzag tseqDelta
//
// A span's origin is almost always the last character of a span on a stack
// the decoder keeps of the spans it has read: in document order an item
// comes after its origin's younger children and their subtrees, so popping
// those leaves the origin on top. The head says how many entries to pop
// (none: the previous span is the origin); only an origin elsewhere (in the
// middle of a span, or deeper than the encoder looks) is written out, and
// the root empties the stack. A continuation (its origin is its own
// previous seq) needs neither agent nor seq; other spans take the agent of
// the previous span unless the ext byte names another, and a seq as a delta
// from the end of the agent's previous span. Lamport times are predicted —
// one after the origin for continuations, else from the agent's previous
// lamport−seq difference — and written only when the prediction misses.
// Delete runs carry no seq: with the spans sorted by seq, each agent's runs
// fill the gaps between its inserts in order, which is also how Load
// verifies that IDs tile; their targets are deltas from the previous run's.
const snapMagic = "WFT\x02"

// Span head bits.
const (
	shDeleted     = 1 << 0
	shCont        = 1 << 1 // origin is (agent, seq-1): agent and seq follow from it
	shOriginShift = 2      // 2 bits: pop 0..2 stack entries, or 3: escape uvarint
	shLenShift    = 4      // 3 bits: n 1..7, or 0: uvarint n-8 follows
	shExt         = 1 << 7 // an ext byte follows

	seAgent   = 1 << 0 // uvarint agent follows (not for continuations)
	seLamport = 1 << 1 // zigzag lamport delta follows
)

// Origin escape values; any larger v pops v+1 stack entries.
const (
	oeRoot     = 0
	oeExplicit = 1 // uvarint agent, uvarint seq follow
)

// Delete-run head bits.
const (
	dhRev      = 1 << 0
	dhLenShift = 1      // 6 bits: n 1..63, or 0: uvarint n-64 follows
	dhExt      = 1 << 7 // an ext byte follows

	deAgent   = 1 << 0 // uvarint target agent follows
	deLamport = 1 << 1 // zigzag lamport delta follows
)

// maxStackSearch bounds how deep the encoder looks for an origin on the
// stack, which keeps encoding linear; deeper origins are written out.
const maxStackSearch = 64

type snapWriter struct{ b []byte }

func (w *snapWriter) uv(x uint64) { w.b = binary.AppendUvarint(w.b, x) }
func (w *snapWriter) zz(x int64)  { w.b = binary.AppendVarint(w.b, x) }

// MarshalBinary encodes the replica as a compact snapshot that Load turns
// back into an equivalent replica (same text, same version, same answers to
// Since, same merge behaviour).
func (t *Text) MarshalBinary() ([]byte, error) {
	// Spans, merging neighbours that continue each other, and their text.
	text := make([]byte, 0, len(t.buf))
	runs := make([]span, 0, len(t.spans))
	t.eachSpan(func(s *span) bool {
		if !s.deleted {
			text = append(text, t.buf[s.off:s.off+s.blen]...)
		}
		if k := len(runs) - 1; k >= 0 {
			if p := &runs[k]; p.deleted == s.deleted && continues(p, s) {
				p.n += s.n
				return true
			}
		}
		runs = append(runs, *s)
		return true
	})
	z := lzEncode(make([]byte, 0, len(text)/2+16), text)
	ndels := 0
	for _, a := range t.agents {
		ndels += len(a.dels)
	}
	w := snapWriter{b: make([]byte, 0, len(snapMagic)+32+len(z)+len(t.agents)*24+len(runs)*3+ndels*3)}
	w.b = append(w.b, snapMagic...)
	w.uv(uint64(len(text)))
	w.uv(uint64(len(z)))
	w.b = append(w.b, z...)
	w.uv(t.clock)
	w.uv(uint64(len(t.agents)))
	for _, a := range t.agents {
		w.b = append(w.b, a.key[:]...)
		w.uv(uint64(a.next))
		w.uv(uint64(len(a.dels)))
	}

	w.uv(uint64(len(runs)))
	pred := make([]uint32, len(t.agents)) // end of the agent's last span
	ld := make([]int64, len(t.agents))    // lamport−seq of the agent's last span
	for i := range ld {
		ld[i] = 1
	}
	stack := make([]int32, 0, 64)
	var prevAgent uint32
	for i := range runs {
		s := &runs[i]
		// Find the origin on the stack.
		var x *span // the span the origin ends, when on the stack
		var head, ext byte
		hasEsc, esc := true, uint64(oeExplicit)
		if s.oagent == rootAgent {
			stack = stack[:0]
			esc = oeRoot
		} else {
			for j := len(stack) - 1; j >= max(0, len(stack)-maxStackSearch); j-- {
				if y := &runs[stack[j]]; y.agent == s.oagent && y.seq+y.n-1 == s.oseq {
					k := len(stack) - 1 - j
					if k < 3 {
						hasEsc = false
						head |= byte(k) << shOriginShift
					} else {
						esc = uint64(k - 1)
					}
					x = y
					stack = stack[:j+1]
					break
				}
			}
		}
		if hasEsc {
			head |= 3 << shOriginShift
		}
		if s.deleted {
			head |= shDeleted
		}
		cont := s.oagent == s.agent && s.seq > 0 && s.oseq == s.seq-1
		lpred := int64(s.seq) + ld[s.agent]
		if cont {
			head |= shCont
			if x != nil {
				lpred = int64(x.lamport + uint64(x.n))
			}
		} else if s.agent != prevAgent {
			ext |= seAgent
		}
		if int64(s.lamport) != lpred {
			ext |= seLamport
		}
		if s.n <= 7 {
			head |= byte(s.n) << shLenShift
		}
		if ext != 0 {
			head |= shExt
		}
		w.b = append(w.b, head)
		if ext != 0 {
			w.b = append(w.b, ext)
		}
		if hasEsc {
			w.uv(esc)
			if esc == oeExplicit {
				w.uv(uint64(s.oagent))
				w.uv(uint64(s.oseq))
			}
		}
		if ext&seAgent != 0 {
			w.uv(uint64(s.agent))
		}
		if !cont {
			w.zz(int64(s.seq) - int64(pred[s.agent]))
		}
		if s.n > 7 {
			w.uv(uint64(s.n) - 8)
		}
		if ext&seLamport != 0 {
			w.zz(int64(s.lamport) - lpred)
		}
		pred[s.agent] = s.seq + s.n
		ld[s.agent] = int64(s.lamport) - int64(s.seq)
		prevAgent = s.agent
		stack = append(stack, int32(i))
	}

	for a := range t.agents {
		ta := uint32(a)
		var tend int64
		ldd := int64(1)
		for _, r := range t.agents[a].dels {
			var head, ext byte
			if r.rev {
				head |= dhRev
			}
			if r.n < 64 {
				head |= byte(r.n) << dhLenShift
			}
			if r.tagent != ta {
				ext |= deAgent
			}
			d := int64(r.lamport) - int64(r.seq)
			if d != ldd {
				ext |= deLamport
			}
			if ext != 0 {
				head |= dhExt
			}
			w.b = append(w.b, head)
			if ext != 0 {
				w.b = append(w.b, ext)
			}
			if r.n >= 64 {
				w.uv(uint64(r.n) - 64)
			}
			if ext&deAgent != 0 {
				w.uv(uint64(r.tagent))
			}
			if ext&deLamport != 0 {
				w.zz(d - ldd)
			}
			w.zz(int64(r.tseq) - tend)
			ta, ldd = r.tagent, d
			if r.rev {
				tend = int64(r.tseq) - int64(r.n)
			} else {
				tend = int64(r.tseq) + int64(r.n)
			}
		}
	}
	return w.b, nil
}

// snapReader reads the structure. A read past the end or a malformed
// varint sets bad and yields zeros, so that decoding loops can check once
// per item.
type snapReader struct {
	b   []byte
	p   int
	bad bool
}

func (r *snapReader) byte() byte {
	if r.p < len(r.b) {
		c := r.b[r.p]
		r.p++
		return c
	}
	r.bad = true
	return 0
}

// uv reads a uvarint. It is a loop rather than a fast path and a call so
// that it inlines; a varint of more than ten bytes is malformed.
func (r *snapReader) uv() (x uint64) {
	for s, i := uint(0), r.p; i < len(r.b) && s < 64; s, i = s+7, i+1 {
		c := r.b[i]
		x |= uint64(c&0x7f) << s
		if c < 0x80 {
			r.p = i + 1
			return x
		}
	}
	r.bad = true
	r.p = len(r.b)
	return 0
}

// zz reads a zigzag varint, rejecting magnitudes beyond MaxLamport, which
// no field may exceed, so that sums of a few of them cannot overflow.
func (r *snapReader) zz() int64 {
	x := unzig(r.uv())
	if x > MaxLamport || x < -MaxLamport {
		r.bad = true
		return 0
	}
	return x
}

// unzig undoes zigzag encoding. Callers of it rather than zz add the result
// to a value below 2^33 and reject negative sums: a sum that overflows is
// negative.
func unzig(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

func (r *snapReader) left() int { return len(r.b) - r.p }

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

// Load decodes a snapshot made by MarshalBinary into a replica that edits as
// agent. It returns an error wrapping ErrCorrupt for any input it cannot
// fully verify; it never panics.
func Load(snapshot []byte, agent AgentKey) (*Text, error) {
	if len(snapshot) < len(snapMagic) || string(snapshot[:len(snapMagic)]) != snapMagic {
		return nil, corrupt("bad magic")
	}
	r := snapReader{b: snapshot, p: len(snapMagic)}
	tl, zl := r.uv(), r.uv()
	// A byte of compressed text expands to at most lzMaxRatio bytes, which
	// bounds what a small hostile input can make us allocate here.
	if r.bad || zl > uint64(r.left()) || tl > zl*lzMaxRatio {
		return nil, corrupt("bad text size")
	}
	t := &Text{buf: make([]byte, tl)}
	if !lzDecode(t.buf, snapshot[r.p:r.p+int(zl)]) {
		return nil, corrupt("bad compressed text")
	}
	r.p += int(zl)
	if err := t.decode(&r); err != nil {
		return nil, err
	}
	t.self = t.intern(agent)
	return t, nil
}

// decode reads the structure after the text into t, which holds the text.
func (t *Text) decode(r *snapReader) error {
	t.clock = r.uv()
	if t.clock > MaxLamport {
		return corrupt("clock out of range")
	}
	na := r.uv()
	if r.bad || na > uint64(r.left()/18) {
		return corrupt("bad agent count")
	}
	t.agents = make([]agentState, na, na+1)
	t.byKey = make(map[AgentKey]uint32, na+1)
	nds := make([]int, na)
	ndels := 0
	for a := range t.agents {
		if r.left() < 16 {
			return corrupt("short agent key")
		}
		st := &t.agents[a]
		copy(st.key[:], r.b[r.p:])
		r.p += 16
		if _, dup := t.byKey[st.key]; dup {
			return corrupt("duplicate agent")
		}
		t.byKey[st.key] = uint32(a)
		next, nd := r.uv(), r.uv()
		// Every delete run takes at least two bytes.
		if r.bad || next > MaxSeq || nd > uint64(max(0, r.left()/2-ndels)) {
			return corrupt("bad agent %d", a)
		}
		st.next = uint32(next)
		nds[a] = int(nd)
		ndels += int(nd)
	}
	// One array holds every agent's delete runs, each agent's carved with a
	// capped slice so that later appends reallocate rather than overwrite.
	dels := make([]delRun, ndels)
	for a, nd := range nds {
		t.agents[a].dels, dels = dels[:nd:nd], dels[nd:]
	}
	ns := r.uv()
	if r.bad || ns > uint64(r.left()) {
		return corrupt("bad span count")
	}
	t.spans = make([]span, ns)
	t.buildLeaves()
	ents := make([]idEntry, ns) // (seq, handle) of every span
	counts := make([]int, na)   // spans per agent
	late, ndead, err := t.decodeSpans(r, ents, counts)
	if err != nil {
		return err
	}
	if err := t.decodeDels(r); err != nil {
		return err
	}
	if r.p != len(r.b) {
		return corrupt("%d trailing bytes", len(r.b)-r.p)
	}
	t.buildNodes()
	return t.buildIndex(ents, counts, ndead, late)
}

// decodeSpans reads the spans in document order, checks each against its
// agent's range and its origin's Lamport time, gives live spans their text,
// adds them to their leaf's width and lists their (seq, handle) in ents and
// their number per agent in counts. It returns the spans whose origin was
// written out, to be checked once the ID index exists, and the number of
// tombstones.
func (t *Text) decodeSpans(r *snapReader, ents []idEntry, counts []int) (late []int32, ndead int, err error) {
	na := uint32(len(t.agents))
	spans := t.spans
	pred := make([]uint32, na) // end of the agent's last span
	ld := make([]int64, na)    // lamport−seq of the agent's last span
	next := make([]uint64, na)
	for a := range ld {
		ld[a], next[a] = 1, uint64(t.agents[a].next)
	}
	stack := make([]int32, 0, 64)
	var prevAgent uint32
	buf := t.buf
	ascii := isASCII(buf)
	off := 0
	clock := t.clock
	leaves := t.tree.leaves
	var li int32 // leaf of span i, and its slot there
	lk := 0
	for i := range spans {
		s := &spans[i]
		head := r.byte()
		var ext byte
		if head&shExt != 0 {
			ext = r.byte()
			if ext == 0 || ext&^(seAgent|seLamport) != 0 {
				return nil, 0, corrupt("span %d: bad ext byte", i)
			}
		}
		s.deleted = head&shDeleted != 0
		cont := head&shCont != 0
		// Origin.
		var olam uint64 // Lamport time of the origin; 0 when unknown yet
		k := uint64(head >> shOriginShift & 3)
		explicit := false
		if k == 3 {
			switch v := r.uv(); v {
			case oeRoot:
				if cont {
					return nil, 0, corrupt("span %d: continuation of the root", i)
				}
				s.oagent = rootAgent
				stack = stack[:0]
				k = ^uint64(0)
			case oeExplicit:
				oa, os := r.uv(), r.uv()
				if oa >= uint64(na) || os >= MaxSeq {
					return nil, 0, corrupt("span %d: origin out of range", i)
				}
				s.oagent, s.oseq = uint32(oa), uint32(os)
				explicit = true
				k = ^uint64(0)
			default:
				k = v + 1
			}
		}
		if k != ^uint64(0) {
			if k >= uint64(len(stack)) {
				return nil, 0, corrupt("span %d: origin beyond the stack", i)
			}
			j := len(stack) - 1 - int(k)
			x := &spans[stack[j]]
			stack = stack[:j+1]
			s.oagent, s.oseq = x.agent, x.seq+x.n-1
			olam = x.lamport + uint64(x.n) - 1
		}
		// Agent and seq.
		var a uint32
		var seq uint64
		if cont {
			if ext&seAgent != 0 {
				return nil, 0, corrupt("span %d: agent on a continuation", i)
			}
			a, seq = s.oagent, uint64(s.oseq)+1
		} else {
			a = prevAgent
			if ext&seAgent != 0 {
				x := r.uv()
				if x >= uint64(na) {
					return nil, 0, corrupt("span %d: agent out of range", i)
				}
				a = uint32(x)
			}
			if a >= na {
				return nil, 0, corrupt("span %d: agent out of range", i)
			}
			d := int64(pred[a]) + unzig(r.uv())
			if d < 0 {
				return nil, 0, corrupt("span %d: seq out of range", i)
			}
			seq = uint64(d)
		}
		n := uint64(head >> shLenShift & 7)
		if n == 0 {
			n = r.uv() + 8
			if n < 8 || n > MaxSeq {
				return nil, 0, corrupt("span %d: length out of range", i)
			}
		}
		if seq+n > next[a] {
			return nil, 0, corrupt("span %d: seqs beyond the agent's version", i)
		}
		// Lamport time.
		lam := int64(seq) + ld[a]
		if cont && olam != 0 {
			lam = int64(olam) + 1
		}
		if ext&seLamport != 0 {
			lam += r.zz()
		}
		if r.bad {
			return nil, 0, corrupt("span %d: truncated", i)
		}
		if lam <= 0 || uint64(lam)+n-1 > MaxLamport || uint64(lam) <= olam {
			return nil, 0, corrupt("span %d: bad Lamport time", i)
		}
		if explicit {
			late = append(late, int32(i))
		}
		s.agent, s.seq, s.n, s.lamport = a, uint32(seq), uint32(n), uint64(lam)
		clock = max(clock, uint64(lam)+n-1)
		pred[a], ld[a], prevAgent = uint32(seq+n), lam-int64(seq), a
		counts[a]++
		ents[i] = idEntry{seq: uint32(seq), span: int32(i)}
		stack = append(stack, int32(i))
		s.leaf = li
		if lk++; lk == leafCap {
			li, lk = li+1, 0
		}
		if s.deleted {
			ndead++
			continue
		}
		leaves[s.leaf].width += int(n)
		// Text. ASCII text (most documents) needs no decoding: a code point
		// is a byte.
		if ascii {
			if uint64(len(buf)-off) < n {
				return nil, 0, corrupt("text shorter than spans")
			}
			s.off, s.blen = uint32(off), uint32(n)
			off += int(n)
			continue
		}
		start := off
		for ; n > 0; n-- {
			if off >= len(buf) {
				return nil, 0, corrupt("text shorter than spans")
			}
			if buf[off] < utf8.RuneSelf {
				off++
				continue
			}
			c, sz := utf8.DecodeRune(buf[off:])
			if c == utf8.RuneError && sz <= 1 {
				return nil, 0, corrupt("text is not UTF-8")
			}
			off += sz
		}
		s.off, s.blen = uint32(start), uint32(off-start)
	}
	if off != len(buf) {
		return nil, 0, corrupt("text longer than spans")
	}
	t.clock = clock
	return late, ndead, nil
}

// decodeDels reads every agent's delete runs. Their seqs and Lamport times
// are assigned by buildIndex, which sees the gaps they fill; until then
// lamport holds the Lamport delta read here.
func (t *Text) decodeDels(r *snapReader) error {
	na := uint64(len(t.agents))
	for a := range t.agents {
		ta := uint32(a)
		var tend int64
		for j := range t.agents[a].dels {
			head := r.byte()
			var ext byte
			if head&dhExt != 0 {
				ext = r.byte()
				if ext == 0 || ext&^(deAgent|deLamport) != 0 {
					return corrupt("delete run: bad ext byte")
				}
			}
			n := uint64(head >> dhLenShift & 63)
			if n == 0 {
				n = r.uv() + 64
				if n < 64 || n > MaxSeq {
					return corrupt("delete run: length out of range")
				}
			}
			if ext&deAgent != 0 {
				x := r.uv()
				if x >= na {
					return corrupt("delete run: agent out of range")
				}
				ta = uint32(x)
			}
			var dl int64
			if ext&deLamport != 0 {
				dl = r.zz()
			}
			tseq := tend + unzig(r.uv())
			rev := head&dhRev != 0
			if r.bad {
				return corrupt("delete run: truncated")
			}
			if tseq < 0 || rev && (tseq >= MaxSeq || uint64(tseq)+1 < n) || !rev && uint64(tseq)+n > MaxSeq {
				return corrupt("delete run: target out of range")
			}
			t.agents[a].dels[j] = delRun{lamport: uint64(dl), n: uint32(n), tagent: ta, tseq: uint32(tseq), rev: rev}
			if rev {
				tend = tseq - int64(n)
			} else {
				tend = tseq + int64(n)
			}
		}
	}
	return nil
}

// buildLeaves lays the spans, in document order, into full leaves, with no
// widths yet.
func (t *Text) buildLeaves() {
	t.tree = tree{root: 0, first: 0, cLeaf: -1}
	per := leafCap
	nl := max(1, (len(t.spans)+per-1)/per)
	t.tree.leaves = make([]leaf, nl)
	for i := range t.tree.leaves {
		lo, hi := i*per, min((i+1)*per, len(t.spans))
		lf := &t.tree.leaves[i]
		lf.n = int32(hi - lo)
		for j := range lf.n {
			lf.arr[j] = int32(lo) + j
		}
		lf.parent, lf.prev, lf.next = -1, int32(i-1), int32(i+1)
	}
	t.tree.leaves[nl-1].next = -1
}

// buildNodes builds the inner levels of the tree over its leaves, bottom
// up.
func (t *Text) buildNodes() {
	nl := len(t.tree.leaves)
	level := make([]int32, nl)
	widths := make([]int, nl)
	for i := range level {
		level[i] = int32(i)
		widths[i] = t.tree.leaves[i].width
	}
	t.tree.nodes = make([]node, 0, nl/(nodeCap-1)+2)
	leafKids := true
	for len(level) > 1 {
		m := (len(level) + nodeCap - 1) / nodeCap
		for i := 0; i < len(level); i += nodeCap {
			j := min(i+nodeCap, len(level))
			h := int32(len(t.tree.nodes))
			n := node{nk: int32(j - i), parent: -1, leafKids: leafKids}
			copy(n.kidArr[:], level[i:j])
			copy(n.wArr[:], widths[i:j])
			w := 0
			for _, x := range n.widths() {
				w += x
			}
			t.tree.nodes = append(t.tree.nodes, n)
			for _, k := range n.kids() {
				t.tree.setParent(&t.tree.nodes[h], k, h)
			}
			level[i/nodeCap], widths[i/nodeCap] = h, w
		}
		level, widths = level[:m], widths[:m]
		leafKids = false
		t.tree.height++
	}
	t.tree.root = level[0]
}

// buildIndex sorts each agent's spans by seq, verifies that they and the
// agent's delete runs tile [0, next) (assigning the runs their seqs and
// Lamport times on the way), that delete runs name existing deleted
// characters, and that origins written out exist earlier in the document
// with smaller Lamport times; then it builds the ID indexes.
func (t *Text) buildIndex(ents []idEntry, counts []int, ndead int, late []int32) error {
	// One array holds every agent's entries, sorted in place and then cut
	// into the index chunks. Each chunk is full and capped, so the first
	// insert into one reallocates it rather than overwriting its neighbour.
	per := max(1, idChunkCap)
	starts := make([]int, len(counts)+1)
	most := 0
	for a, c := range counts {
		starts[a+1] = starts[a] + c
		most = max(most, c)
	}
	all := ents
	var scratch []idEntry
	if len(counts) > 1 {
		// Group the entries by agent, keeping document order within each.
		scratch = make([]idEntry, len(ents))
		fill := slices.Clone(starts[:len(counts)])
		for _, e := range ents {
			a := t.spans[e.span].agent
			scratch[fill[a]] = e
			fill[a]++
		}
		all, scratch = scratch, ents
	}
	// Each agent's deleted seqs as sorted, disjoint, maximal ranges.
	dead := make([]seqRange, 0, ndead)
	deadAt := make([]int, len(counts)+1)

	clock := t.clock
	for a := range t.agents {
		st := &t.agents[a]
		es := all[starts[a]:starts[a+1]:starts[a+1]]
		scratch = sortEntries(es, scratch, most)
		// Tiling: spans in seq order, delete runs filling the gaps.
		var cur uint64
		next := uint64(st.next)
		ldd := int64(1)
		di := 0
		dels := st.dels
		// place gives the next run the seq cur and its Lamport time.
		place := func() bool {
			r := &dels[di]
			lam := int64(cur) + ldd + int64(r.lamport)
			if lam <= 0 || uint64(lam)+uint64(r.n)-1 > MaxLamport {
				return false
			}
			r.seq, r.lamport = uint32(cur), uint64(lam)
			clock = max(clock, uint64(lam)+uint64(r.n)-1)
			ldd = lam - int64(cur)
			cur += uint64(r.n)
			di++
			return true
		}
		for _, e := range es {
			for cur < uint64(e.seq) && di < len(dels) {
				if !place() {
					return corrupt("agent %s: bad delete Lamport time", st.key)
				}
			}
			if cur != uint64(e.seq) {
				return corrupt("agent %s: seqs do not tile at %d", st.key, cur)
			}
			s := &t.spans[e.span]
			if s.deleted {
				if k := len(dead) - 1; k >= deadAt[a] && dead[k].hi == e.seq {
					dead[k].hi += s.n
				} else {
					dead = append(dead, seqRange{e.seq, e.seq + s.n})
				}
			}
			cur += uint64(s.n)
		}
		for di < len(dels) && cur < next {
			if !place() {
				return corrupt("agent %s: bad delete Lamport time", st.key)
			}
		}
		if cur != next || di != len(dels) {
			return corrupt("agent %s: seqs do not tile at %d", st.key, cur)
		}
		deadAt[a+1] = len(dead)
		nch := (len(es) + per - 1) / per
		st.ins.chunks = make([][]idEntry, nch)
		st.ins.firsts = make([]uint32, nch)
		for c := range nch {
			lo, hi := c*per, min((c+1)*per, len(es))
			st.ins.chunks[c] = es[lo:hi:hi]
			st.ins.firsts[c] = es[lo].seq
		}
	}
	t.clock = clock
	// Delete targets: each run's must lie in one deleted range.
	var tabs []rangeTable
	for a := range t.agents {
		for _, r := range t.agents[a].dels {
			if tabs == nil {
				tabs = make([]rangeTable, len(t.agents))
			}
			tb := &tabs[r.tagent]
			if tb.rs == nil {
				tb.init(dead[deadAt[r.tagent]:deadAt[r.tagent+1]:deadAt[r.tagent+1]])
			}
			if lo, hi := r.targets(); !tb.covers(lo, hi) {
				return corrupt("delete run names a missing or live character")
			}
		}
	}
	// Origins written out.
	for _, h := range late {
		s := &t.spans[h]
		oh, k, ok := t.findID(s.oagent, s.oseq)
		if !ok || oh >= h || t.spans[oh].lamport+uint64(k) >= s.lamport {
			return corrupt("bad origin for span %d", h)
		}
	}
	return nil
}

// seqRange is the seqs [lo, hi) of one agent.
type seqRange struct{ lo, hi uint32 }

// rangeTable finds, among sorted disjoint ranges, the one holding a seq:
// a table of where each bucket of seqs starts narrows the search to the
// few ranges in one bucket. It has at most one bucket per range, so its
// size is bounded by the input, whatever the seqs.
type rangeTable struct {
	rs    []seqRange
	shift uint
	first []int32 // first[b]: the first range whose lo>>shift is ≥ b
}

func (x *rangeTable) init(rs []seqRange) {
	x.rs = rs
	if len(rs) == 0 {
		x.rs = []seqRange{}
		return
	}
	top := rs[len(rs)-1].lo
	for uint64(top>>x.shift) >= uint64(len(rs)) {
		x.shift++
	}
	nb := int(top>>x.shift) + 1
	x.first = make([]int32, nb+1)
	j := 0
	for b := range x.first {
		for j < len(rs) && int(rs[j].lo>>x.shift) < b {
			j++
		}
		x.first[b] = int32(j)
	}
}

// covers reports whether [lo, hi) lies within one range.
func (x *rangeTable) covers(lo, hi uint32) bool {
	if len(x.rs) == 0 {
		return false
	}
	// The last range starting at or before lo.
	i, j := len(x.rs), len(x.rs)
	if b := int(lo >> x.shift); b+1 < len(x.first) {
		i, j = int(x.first[b]), int(x.first[b+1])
	}
	if j-i <= 4 { // a typical bucket holds one or two
		for i < j && x.rs[i].lo <= lo {
			i++
		}
		j = i
	}
	for i < j {
		m := int(uint(i+j) >> 1)
		if x.rs[m].lo <= lo {
			i = m + 1
		} else {
			j = m
		}
	}
	if i == 0 {
		return false
	}
	r := x.rs[i-1]
	return r.lo <= lo && hi <= r.hi
}

// sortEntries sorts es by seq with an LSD radix sort (as many passes of at
// most 11 bits as the largest seq needs): loading a snapshot sorts every
// span, and this is several times faster than a comparison sort. scratch
// is reused between calls (allocated with room for most entries when it is
// needed) and returned.
func sortEntries(es, scratch []idEntry, most int) []idEntry {
	if len(es) < 64 {
		slices.SortFunc(es, func(x, y idEntry) int { return cmp.Compare(x.seq, y.seq) })
		return scratch
	}
	var top uint32
	sorted := true
	for i, e := range es {
		top = max(top, e.seq)
		if i > 0 && e.seq < es[i-1].seq {
			sorted = false
		}
	}
	if sorted {
		return scratch
	}
	if len(scratch) < len(es) {
		scratch = make([]idEntry, max(most, len(es)))
	}
	nbits := uint(bits.Len32(top))
	passes := (nbits + 10) / 11
	digit := (nbits + passes - 1) / passes
	mask := uint32(1)<<digit - 1
	src, dst := es, scratch[:len(es)]
	var count [1 << 11]int
	for shift := uint(0); shift < nbits; shift += digit {
		c := count[:mask+1]
		clear(c)
		for _, e := range src {
			c[e.seq>>shift&mask]++
		}
		sum := 0
		for i, n := range c {
			c[i] = sum
			sum += n
		}
		for _, e := range src {
			b := e.seq >> shift & mask
			dst[c[b]] = e
			c[b]++
		}
		src, dst = dst, src
	}
	if &src[0] != &es[0] {
		copy(es, src)
	}
	return scratch
}

// isASCII reports whether b holds only ASCII bytes, eight at a time.
func isASCII(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
