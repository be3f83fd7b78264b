package crdt

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"unicode/utf8"
)

// Snapshot format, version 1. A snapshot is the document state, not its
// history: every span in document order (tombstones included, since later
// merges need their IDs, order and Lamport times, but not their text), each
// agent's delete runs (so Since can still answer from a loaded replica) and
// the live text once, at the end. Numbers are varints, mostly as deltas from
// a prediction that holds for ordinary typing, so a typical span costs two
// or three bytes; the whole body is then DEFLATE-compressed, which shrinks
// the text and the repetitive structure alike.
//
//	magic "WFT\x01"
//	uvarint bodyBytes
//	deflate(
//	  uvarint clock
//	  uvarint agents; per agent: key[16] uvarint next uvarint runs
//	      per delete run: uvarint seqGap zigzag lamportDelta uvarint n<<1|rev uvarint tagent zigzag tseqDelta
//	  uvarint spans; per span: flags [agent] zigzag seqDelta zigzag lamportDelta uvarint n [origin]
//	  uvarint textBytes text
//	)
const snapMagic = "WFT\x01"

const (
	fDeleted   = 1 << iota
	fSameAgent // agent equals the previous span's
	fContinue  // origin is (agent, seq-1)
	fAfterPrev // origin is the last character of the previous span
)

type snapWriter struct{ b []byte }

func (w *snapWriter) uv(x uint64) { w.b = binary.AppendUvarint(w.b, x) }
func (w *snapWriter) zz(x int64)  { w.b = binary.AppendVarint(w.b, x) }

// MarshalBinary encodes the replica as a compact snapshot that Load turns
// back into an equivalent replica (same text, same version, same answers to
// Since, same merge behaviour).
func (t *Text) MarshalBinary() ([]byte, error) {
	w := snapWriter{b: make([]byte, 0, len(t.spans)*4+64)}
	w.uv(t.clock)
	w.uv(uint64(len(t.agents)))
	for _, a := range t.agents {
		w.b = append(w.b, a.key[:]...)
		w.uv(uint64(a.next))
		w.uv(uint64(len(a.dels)))
		var end uint32
		var ld int64
		var tend uint32
		for _, r := range a.dels {
			w.uv(uint64(r.seq - end))
			d := int64(r.lamport) - int64(r.seq)
			w.zz(d - ld)
			ld = d
			rev := uint64(0)
			if r.rev {
				rev = 1
			}
			w.uv(uint64(r.n)<<1 | rev)
			w.uv(uint64(r.tagent))
			w.zz(int64(r.tseq) - int64(tend))
			end, tend = r.seq+r.n, r.target(r.n)
		}
	}
	// Spans, merging neighbours that continue each other.
	var text []byte
	var runs []span
	t.eachSpan(func(s *span) bool {
		if k := len(runs) - 1; k >= 0 {
			p := &runs[k]
			if p.agent == s.agent && p.seq+p.n == s.seq && p.lamport+uint64(p.n) == s.lamport &&
				s.oagent == s.agent && s.oseq == s.seq-1 && p.deleted == s.deleted {
				p.n += s.n
				if !s.deleted {
					text = append(text, t.buf[s.off:s.off+s.blen]...)
				}
				return true
			}
		}
		runs = append(runs, *s)
		if !s.deleted {
			text = append(text, t.buf[s.off:s.off+s.blen]...)
		}
		return true
	})
	w.uv(uint64(len(runs)))
	pred := make([]uint32, len(t.agents)) // next seq expected per agent
	ldiff := make([]int64, len(t.agents)) // lamport-seq of the agent's last span
	prev := span{agent: rootAgent}
	for _, s := range runs {
		var f byte
		if s.deleted {
			f |= fDeleted
		}
		if s.agent == prev.agent {
			f |= fSameAgent
		}
		switch {
		case s.oagent == s.agent && s.oseq == s.seq-1 && s.seq > 0:
			f |= fContinue
		case prev.agent != rootAgent && s.oagent == prev.agent && s.oseq == prev.seq+prev.n-1:
			f |= fAfterPrev
		}
		w.b = append(w.b, f)
		if f&fSameAgent == 0 {
			w.uv(uint64(s.agent))
		}
		w.zz(int64(s.seq) - int64(pred[s.agent]))
		d := int64(s.lamport) - int64(s.seq)
		w.zz(d - ldiff[s.agent])
		w.uv(uint64(s.n))
		if f&(fContinue|fAfterPrev) == 0 {
			if s.oagent == rootAgent {
				w.uv(0)
			} else {
				w.uv(uint64(s.oagent) + 1)
				w.uv(uint64(s.oseq))
			}
		}
		pred[s.agent] = s.seq + s.n
		ldiff[s.agent] = d
		prev = s
	}
	w.uv(uint64(len(text)))
	w.b = append(w.b, text...)

	var out bytes.Buffer
	out.Grow(len(w.b)/2 + 16)
	out.WriteString(snapMagic)
	out.Write(binary.AppendUvarint(nil, uint64(len(w.b))))
	zw, err := flate.NewWriter(&out, flate.BestCompression)
	if err != nil {
		return nil, fmt.Errorf("crdt: snapshot: %w", err)
	}
	if _, err := zw.Write(w.b); err != nil {
		return nil, fmt.Errorf("crdt: snapshot: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("crdt: snapshot: %w", err)
	}
	return out.Bytes(), nil
}

// maxSnapshotBody bounds the decompressed size of a snapshot so that a
// hostile one cannot exhaust memory.
const maxSnapshotBody = 1 << 30

type snapReader struct {
	b   []byte
	err error
}

func (r *snapReader) fail(why string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrCorrupt, why)
	}
}

func (r *snapReader) uv() uint64 {
	x, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		r.b = nil
		return 0
	}
	r.b = r.b[n:]
	return x
}

func (r *snapReader) zz() int64 {
	x, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		r.b = nil
		return 0
	}
	r.b = r.b[n:]
	return x
}

// count reads a count of items that each take at least min bytes, rejecting
// counts the remaining input cannot hold.
func (r *snapReader) count(min int) int {
	x := r.uv()
	if x > uint64(len(r.b)/min) {
		r.fail("count exceeds input")
		return 0
	}
	return int(x)
}

// Load decodes a snapshot made by MarshalBinary into a replica that edits as
// agent. It returns an error wrapping ErrCorrupt for any input it cannot
// fully verify; it never panics.
func Load(snapshot []byte, agent AgentKey) (*Text, error) {
	if len(snapshot) < len(snapMagic) || string(snapshot[:len(snapMagic)]) != snapMagic {
		return nil, fmt.Errorf("%w: bad magic", ErrCorrupt)
	}
	size, n := binary.Uvarint(snapshot[len(snapMagic):])
	if n <= 0 || size > maxSnapshotBody {
		return nil, fmt.Errorf("%w: bad body size", ErrCorrupt)
	}
	zr := flate.NewReader(bytes.NewReader(snapshot[len(snapMagic)+n:]))
	// DEFLATE expands at most ~1032:1, which bounds what a small hostile
	// input can make us allocate here.
	if size > uint64(len(snapshot))*1100 {
		return nil, fmt.Errorf("%w: body size %d for %d input bytes", ErrCorrupt, size, len(snapshot))
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(zr, body); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if k, _ := zr.Read(make([]byte, 1)); k != 0 {
		return nil, fmt.Errorf("%w: body longer than declared", ErrCorrupt)
	}
	t, err := decodeBody(body)
	if err != nil {
		return nil, err
	}
	t.self = t.intern(agent)
	return t, nil
}

func decodeBody(body []byte) (*Text, error) {
	r := snapReader{b: body}
	t := &Text{byKey: make(map[AgentKey]uint32)}
	t.clock = r.uv()
	na := r.count(18)
	t.agents = make([]agentState, 0, na+1)
	for i := 0; i < na && r.err == nil; i++ {
		if len(r.b) < 16 {
			r.fail("short agent key")
			break
		}
		var k AgentKey
		copy(k[:], r.b[:16])
		r.b = r.b[16:]
		if _, dup := t.byKey[k]; dup {
			r.fail("duplicate agent")
			break
		}
		a := t.intern(k)
		st := &t.agents[a]
		next := r.uv()
		nd := r.count(5)
		st.dels = make([]delRun, 0, nd)
		var end, tend uint32
		var ld int64
		for j := 0; j < nd && r.err == nil; j++ {
			gap, dl, nr, ta, td := r.uv(), r.zz(), r.uv(), r.uv(), r.zz()
			n, rev := nr>>1, nr&1 == 1
			seq := uint64(end) + gap
			d := ld + dl
			tseq := int64(tend) + td
			lam := int64(seq) + d
			if n == 0 || seq+n > next || ta >= uint64(na) || tseq < 0 || uint64(tseq)+n > MaxSeq ||
				rev && uint64(tseq)+1 < n || lam <= 0 || uint64(lam)+n > MaxLamport {
				r.fail("bad delete run")
				break
			}
			t.clock = max(t.clock, uint64(lam)+n-1)
			dr := delRun{lamport: uint64(lam), seq: uint32(seq), n: uint32(n), tagent: uint32(ta), tseq: uint32(tseq), rev: rev}
			st.dels = append(st.dels, dr)
			end, tend, ld = uint32(seq+n), dr.target(dr.n), d
		}
		if next > MaxSeq {
			r.fail("bad agent next")
		}
		st.next = uint32(next)
	}
	ns := r.count(4)
	if r.err != nil {
		return nil, r.err
	}
	t.spans = make([]span, 0, ns)
	pred := make([]uint32, na)
	ldiff := make([]int64, na)
	prev := span{agent: rootAgent}
	for i := 0; i < ns && r.err == nil; i++ {
		if len(r.b) == 0 {
			r.fail("short span")
			break
		}
		f := r.b[0]
		r.b = r.b[1:]
		var s span
		s.deleted = f&fDeleted != 0
		if f&fSameAgent != 0 {
			if prev.agent == rootAgent {
				r.fail("same-agent flag on the first span")
				break
			}
			s.agent = prev.agent
		} else {
			a := r.uv()
			if a >= uint64(na) {
				r.fail("agent out of range")
				break
			}
			s.agent = uint32(a)
		}
		seq := int64(pred[s.agent]) + r.zz()
		d := ldiff[s.agent] + r.zz()
		n := r.uv()
		lam := seq + d
		if seq < 0 || n == 0 || uint64(seq)+n > uint64(t.agents[s.agent].next) || lam <= 0 || uint64(lam)+n > MaxLamport {
			r.fail("bad span")
			break
		}
		s.seq, s.n, s.lamport = uint32(seq), uint32(n), uint64(lam)
		switch {
		case f&fContinue != 0:
			if s.seq == 0 {
				r.fail("continuation at seq 0")
			}
			s.oagent, s.oseq = s.agent, s.seq-1
		case f&fAfterPrev != 0:
			if prev.agent == rootAgent {
				r.fail("origin flag on the first span")
			}
			s.oagent, s.oseq = prev.agent, prev.seq+prev.n-1
		default:
			oa := r.uv()
			if oa == 0 {
				s.oagent = rootAgent
			} else if oa-1 >= uint64(na) {
				r.fail("origin agent out of range")
			} else {
				s.oagent = uint32(oa - 1)
				os := r.uv()
				if os > MaxSeq {
					r.fail("origin seq out of range")
				}
				s.oseq = uint32(os)
			}
		}
		pred[s.agent] = s.seq + s.n
		ldiff[s.agent] = d
		t.clock = max(t.clock, s.lamport+uint64(s.n)-1)
		t.spans = append(t.spans, s)
		prev = s
	}
	tl := r.count(1)
	if r.err != nil {
		return nil, r.err
	}
	t.buf = append(make([]byte, 0, tl), r.b[:tl]...)
	r.b = r.b[tl:]
	// Give live spans their text. ASCII text (most documents) needs no
	// decoding: a code point is a byte.
	off := 0
	ascii := isASCII(t.buf)
	for i := range t.spans {
		s := &t.spans[i]
		if s.deleted {
			continue
		}
		if ascii {
			if off+int(s.n) > len(t.buf) {
				return nil, fmt.Errorf("%w: text shorter than spans", ErrCorrupt)
			}
			s.off, s.blen = uint32(off), s.n
			off += int(s.n)
			continue
		}
		start := off
		for k := uint32(0); k < s.n; k++ {
			if off >= len(t.buf) {
				return nil, fmt.Errorf("%w: text shorter than spans", ErrCorrupt)
			}
			c := t.buf[off]
			if c < utf8.RuneSelf {
				off++
				continue
			}
			rr, sz := utf8.DecodeRune(t.buf[off:])
			if rr == utf8.RuneError && sz <= 1 {
				return nil, fmt.Errorf("%w: text is not UTF-8", ErrCorrupt)
			}
			off += sz
		}
		s.off, s.blen = uint32(start), uint32(off-start)
	}
	if off != len(t.buf) {
		return nil, fmt.Errorf("%w: text longer than spans", ErrCorrupt)
	}
	if err := t.rebuild(); err != nil {
		return nil, err
	}
	return t, nil
}

// rebuild builds the position tree and the ID indexes over t.spans, which
// are in document order, and verifies that the IDs tile each agent's seqs.
func (t *Text) rebuild() error {
	t.tree = tree{root: 0, first: 0, cLeaf: -1}
	per := leafCap
	nl := (len(t.spans) + per - 1) / per
	if nl == 0 {
		nl = 1
	}
	t.tree.leaves = make([]leaf, nl)
	for i := range t.tree.leaves {
		lo, hi := i*per, min((i+1)*per, len(t.spans))
		lf := &t.tree.leaves[i]
		lf.n = int32(hi - lo)
		for j := lo; j < hi; j++ {
			lf.arr[j-lo] = int32(j)
			s := &t.spans[j]
			s.leaf = int32(i)
			if !s.deleted {
				lf.width += int(s.n)
			}
		}
		lf.parent, lf.prev, lf.next = -1, int32(i-1), int32(i+1)
	}
	t.tree.leaves[nl-1].next = -1
	// Inner levels, bottom up.
	level := make([]int32, nl)
	widths := make([]int, nl)
	for i := range level {
		level[i] = int32(i)
		widths[i] = t.tree.leaves[i].width
	}
	leafKids := true
	for len(level) > 1 {
		var up []int32
		var upw []int
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
			up = append(up, h)
			upw = append(upw, w)
		}
		level, widths = up, upw
		leafKids = false
		t.tree.height++
	}
	t.tree.root = level[0]
	// ID indexes: each agent's spans sorted by seq must tile its insert seqs,
	// and together with its delete runs cover exactly [0, next).
	byAgent := make([][]idEntry, len(t.agents))
	for h := range t.spans {
		s := &t.spans[h]
		byAgent[s.agent] = append(byAgent[s.agent], idEntry{seq: s.seq, span: int32(h)})
	}
	// Origins that are the previous span in document order or in seq order
	// are verified here in O(1); checkOrigins looks up the rest.
	verified := make([]bool, len(t.spans))
	for h := 1; h < len(t.spans); h++ {
		s, p := &t.spans[h], &t.spans[h-1]
		if s.oagent == p.agent && s.oseq == p.seq+p.n-1 && p.lamport+uint64(p.n)-1 < s.lamport {
			verified[h] = true
		}
	}
	var scratch []idEntry
	for a, es := range byAgent {
		scratch = sortEntries(es, scratch)
		st := &t.agents[a]
		var cur uint32
		di := 0
		prev := int32(-1)
		for _, e := range es {
			for di < len(st.dels) && st.dels[di].seq == cur {
				cur += st.dels[di].n
				di++
				prev = -1
			}
			if e.seq != cur {
				return fmt.Errorf("%w: agent %s seqs do not tile at %d", ErrCorrupt, st.key, cur)
			}
			s := &t.spans[e.span]
			if prev >= 0 && s.oagent == uint32(a) && s.oseq == s.seq-1 {
				if p := &t.spans[prev]; p.lamport+uint64(p.n)-1 < s.lamport {
					verified[e.span] = true
				}
			}
			cur += s.n
			prev = e.span
		}
		for di < len(st.dels) && st.dels[di].seq == cur {
			cur += st.dels[di].n
			di++
		}
		if cur != st.next || di != len(st.dels) {
			return fmt.Errorf("%w: agent %s seqs do not tile at %d", ErrCorrupt, st.key, cur)
		}
		for i := 0; i < len(es); i += idChunkCap / 2 {
			j := min(i+idChunkCap/2, len(es))
			st.ins.chunks = append(st.ins.chunks, append(make([]idEntry, 0, idChunkCap+1), es[i:j]...))
			st.ins.firsts = append(st.ins.firsts, es[i].seq)
		}
	}
	return t.checkOrigins(verified)
}

// checkOrigins verifies, for a decoded replica, that every origin names an
// existing character with a smaller Lamport time and that delete runs name
// existing deleted characters, so that a corrupt snapshot cannot plant a
// state that later merges would treat inconsistently.
func (t *Text) checkOrigins(verified []bool) error {
	for h := range t.spans {
		s := &t.spans[h]
		if s.oagent == rootAgent || verified[h] {
			continue
		}
		oh, k, ok := t.findID(s.oagent, s.oseq)
		if !ok || t.spans[oh].lamport+uint64(k) >= s.lamport {
			return fmt.Errorf("%w: bad origin for span %d", ErrCorrupt, h)
		}
	}
	for _, st := range t.agents {
		for _, r := range st.dels {
			for cur, end := r.targets(); cur < end; {
				h, k, ok := t.findID(r.tagent, cur)
				if !ok || !t.spans[h].deleted {
					return fmt.Errorf("%w: delete run names a missing or live character", ErrCorrupt)
				}
				cur += min(end-cur, t.spans[h].n-k)
			}
		}
	}
	return nil
}

// sortEntries sorts es by seq with an LSD radix sort (11 bits per pass, as
// many passes as the largest seq needs): loading a snapshot sorts every
// span, and this is several times faster than a comparison sort. scratch is
// reused between calls and returned.
func sortEntries(es, scratch []idEntry) []idEntry {
	if len(es) < 64 {
		slices.SortFunc(es, func(x, y idEntry) int { return int(x.seq) - int(y.seq) })
		return scratch
	}
	var top uint32
	for _, e := range es {
		top = max(top, e.seq)
	}
	if cap(scratch) < len(es) {
		scratch = make([]idEntry, len(es))
	}
	src, dst := es, scratch[:len(es)]
	for shift := uint(0); shift < 32 && top>>shift > 0; shift += 11 {
		var count [1 << 11]int
		for _, e := range src {
			count[e.seq>>shift&(1<<11-1)]++
		}
		sum := 0
		for i, c := range count {
			count[i] = sum
			sum += c
		}
		for _, e := range src {
			b := e.seq >> shift & (1<<11 - 1)
			dst[count[b]] = e
			count[b]++
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
