package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/weft-sync/weft/crdt"
)

// Decoder turns frames into values. It reuses its msgpack decoder between
// calls. A Decoder is not safe for concurrent use; Decode uses a pool of them.
//
// Decoding is bounded: every array, string and bin length read off the wire
// is checked against the bytes left in the frame and against its documented
// limit before anything is allocated, so the memory a frame can cost is a
// small multiple of its length (see deps.md §3 on msgpack's own slice
// decoding, which does not do this).
type Decoder struct{ r reader }

// NewDecoder returns a Decoder ready for use.
func NewDecoder() *Decoder {
	d := new(Decoder)
	// A *bytes.Reader is an io.ByteScanner, so msgpack reads it directly
	// instead of through a bufio.Reader that would read ahead: br.Len() is
	// then exactly the number of undecoded bytes.
	d.r.dec = msgpack.NewDecoder(&d.r.br)
	return d
}

// Decode decodes one frame. The result is one of the pointer types listed
// under Frame, and shares no memory with frame. Trailing array elements a
// later minor revision may add are skipped; trailing bytes after the frame
// are an error.
func (d *Decoder) Decode(frame []byte) (Frame, error) {
	if len(frame) > MaxFrameBytes {
		return nil, tooLarge("frame bytes", uint64(len(frame)), MaxFrameBytes)
	}
	r := &d.r
	r.reset(frame)
	defer r.reset(nil) // pooled decoders must not keep frames alive
	n, err := r.fields("frame", 1)
	if err != nil {
		return nil, err
	}
	k, err := r.kind()
	if err != nil {
		return nil, err
	}
	f := newFrame(k)
	if f == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownKind, k)
	}
	if err := f.decode(r, n-1); err != nil {
		return nil, err
	}
	if r.br.Len() != 0 {
		return nil, malformed(k.String(), "%d bytes after the frame", r.br.Len())
	}
	return f, nil
}

var decoders = sync.Pool{New: func() any { return NewDecoder() }}

// Decode decodes one frame using a pooled Decoder.
func Decode(frame []byte) (Frame, error) {
	d := decoders.Get().(*Decoder)
	f, err := d.Decode(frame)
	decoders.Put(d)
	return f, err
}

// PeekKind returns the kind of a frame from its first two bytes without
// decoding it, for routing. It does not validate the rest of the frame.
func PeekKind(frame []byte) (Kind, error) {
	i := 0
	switch {
	case len(frame) == 0:
		return 0, malformed("frame", "empty")
	case frame[0] >= 0x91 && frame[0] <= 0x9f:
		i = 1
	case frame[0] == codeArray16:
		i = 3
	case frame[0] == codeArray32:
		i = 5
	default:
		return 0, malformed("frame", "not a non-empty array")
	}
	if i >= len(frame) {
		return 0, malformed("frame", "truncated")
	}
	if frame[i] > codePosFixintMax {
		return 0, malformed("frame kind", "not a positive fixint")
	}
	return Kind(frame[i]), nil
}

// msgpack format codes (the msgpcode package has them as variables).
const (
	codePosFixintMax = 0x7f
	codeNegFixintMin = 0xe0
	codeFixmapMin    = 0x80
	codeFixmapMax    = 0x8f
	codeFixarrayMin  = 0x90
	codeFixarrayMax  = 0x9f
	codeFixstrMin    = 0xa0
	codeFixstrMax    = 0xbf
	codeNil          = 0xc0
	codeFalse        = 0xc2
	codeTrue         = 0xc3
	codeBin8         = 0xc4
	codeBin16        = 0xc5
	codeBin32        = 0xc6
	codeExt8         = 0xc7
	codeExt16        = 0xc8
	codeExt32        = 0xc9
	codeFloat32      = 0xca
	codeFloat64      = 0xcb
	codeUint8        = 0xcc
	codeUint16       = 0xcd
	codeUint32       = 0xce
	codeUint64       = 0xcf
	codeInt8         = 0xd0
	codeInt16        = 0xd1
	codeInt32        = 0xd2
	codeInt64        = 0xd3
	codeFixext1      = 0xd4
	codeFixext16     = 0xd8
	codeStr8         = 0xd9
	codeStr16        = 0xda
	codeStr32        = 0xdb
	codeArray16      = 0xdc
	codeArray32      = 0xdd
	codeMap16        = 0xde
	codeMap32        = 0xdf
)

// reader reads one frame through a msgpack decoder over a *bytes.Reader.
// Its methods peek at the next format code before decoding, so a value of
// the wrong type is ErrMalformed rather than a lenient conversion (msgpack
// would read nil as 0 and a negative int as a huge uint), and they check
// every length before reading or allocating. The one-byte forms (fixint,
// fixarray, fixstr) and fixed-width integers are read from the frame
// directly, which halves the cost of an op; msgpack decodes the long array,
// str and bin headers. Both stay in step because the decoder has no buffer of
// its own: br's position is the only cursor.
type reader struct {
	frame []byte
	br    bytes.Reader // over frame; br.Len() is what is left
	dec   *msgpack.Decoder
}

func (r *reader) reset(frame []byte) {
	r.frame = frame
	r.br.Reset(frame)
	r.dec.ResetReader(&r.br) // keeps the decoder's flags, unlike Reset
}

func (r *reader) pos() int { return len(r.frame) - r.br.Len() }

// fail wraps an error from msgpack or the reader as ErrMalformed.
func (r *reader) fail(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return malformed(what, "truncated")
	}
	return malformed(what, "%v", err)
}

// peek returns the next format code without consuming it. It reads the
// frame directly: cheaper than msgpack's PeekCode (ReadByte + UnreadByte).
func (r *reader) peek(what string) (byte, error) {
	if r.br.Len() == 0 {
		return 0, malformed(what, "truncated")
	}
	return r.frame[r.pos()], nil
}

func codeName(c byte) string {
	switch {
	case c <= codePosFixintMax || c >= codeNegFixintMin || (c >= codeUint8 && c <= codeInt64):
		return "integer"
	case c >= codeFixmapMin && c <= codeFixmapMax, c == codeMap16, c == codeMap32:
		return "map"
	case c >= codeFixarrayMin && c <= codeFixarrayMax, c == codeArray16, c == codeArray32:
		return "array"
	case c >= codeFixstrMin && c <= codeFixstrMax, c >= codeStr8 && c <= codeStr32:
		return "string"
	case c == codeNil:
		return "nil"
	case c == codeFalse, c == codeTrue:
		return "bool"
	case c >= codeBin8 && c <= codeBin32:
		return "bin"
	case c == codeFloat32, c == codeFloat64:
		return "float"
	}
	return fmt.Sprintf("code %#02x", c)
}

// kind reads the frame kind, which must be a positive fixint.
func (r *reader) kind() (Kind, error) {
	c, err := r.peek("frame kind")
	if err != nil {
		return 0, err
	}
	if c > codePosFixintMax {
		return 0, malformed("frame kind", "want a positive fixint, got %s", codeName(c))
	}
	_, _ = r.br.ReadByte()
	return Kind(c), nil
}

// arrayLen reads an array header of at most limit elements, each of which
// needs at least minBytes bytes. Both checks come before the caller
// allocates: a count over the limit is ErrTooLarge, a count the rest of the
// frame cannot hold is ErrMalformed.
func (r *reader) arrayLen(what string, limit, minBytes int) (int, error) {
	c, err := r.peek(what)
	if err != nil {
		return 0, err
	}
	if !(c >= codeFixarrayMin && c <= codeFixarrayMax) && c != codeArray16 && c != codeArray32 {
		return 0, malformed(what, "want an array, got %s", codeName(c))
	}
	var n int
	if c <= codeFixarrayMax { // the common case: the count is in the code
		_, _ = r.br.ReadByte()
		n = int(c & 0x0f)
	} else if n, err = r.dec.DecodeArrayLen(); err != nil {
		return 0, r.fail(what, err)
	}
	if n > limit {
		return 0, tooLarge(what, uint64(n), uint64(limit))
	}
	if n*minBytes > r.br.Len() {
		return 0, malformed(what, "%d elements in %d bytes", n, r.br.Len())
	}
	return n, nil
}

// fields reads the array header of a record with at least min fields.
// Records may carry more fields than this version knows; the caller skips
// them with skip.
func (r *reader) fields(what string, min int) (int, error) {
	n, err := r.arrayLen(what, MaxFrameBytes, 1)
	if err != nil {
		return 0, err
	}
	if n < min {
		return 0, malformed(what, "%d fields, want at least %d", n, min)
	}
	return n, nil
}

// fixed reads the w-byte big-endian payload that follows the code of a
// fixed-width integer, straight from the frame.
func (r *reader) fixed(what string, w int) (uint64, error) {
	p := r.pos() + 1
	if w > len(r.frame)-p {
		return 0, malformed(what, "truncated")
	}
	var n uint64
	for _, b := range r.frame[p : p+w] {
		n = n<<8 | uint64(b)
	}
	_, _ = r.br.Seek(int64(p+w), io.SeekStart)
	return n, nil
}

// signed reads an int8/16/32/64 (code c) and sign-extends it.
func (r *reader) signed(what string, c byte) (int64, error) {
	w := 1 << (c - codeInt8)
	u, err := r.fixed(what, w)
	shift := 64 - 8*w
	return int64(u<<shift) >> shift, err
}

// uint reads a non-negative integer in any msgpack width, at most max.
func (r *reader) uint(what string, max uint64) (uint64, error) {
	c, err := r.peek(what)
	if err != nil {
		return 0, err
	}
	var n uint64
	switch {
	case c <= codePosFixintMax: // the common case: one byte
		_, _ = r.br.ReadByte()
		n = uint64(c)
	case c >= codeUint8 && c <= codeUint64:
		if n, err = r.fixed(what, 1<<(c-codeUint8)); err != nil {
			return 0, err
		}
	case c >= codeInt8 && c <= codeInt64:
		i, err := r.signed(what, c)
		if err != nil {
			return 0, err
		}
		if i < 0 {
			return 0, malformed(what, "negative value %d", i)
		}
		n = uint64(i)
	default:
		return 0, malformed(what, "want an unsigned integer, got %s", codeName(c))
	}
	if n > max {
		return 0, tooLarge(what, n, max)
	}
	return n, nil
}

// int reads an integer in [lo, hi] in any msgpack width.
func (r *reader) int(what string, lo, hi int64) (int64, error) {
	c, err := r.peek(what)
	if err != nil {
		return 0, err
	}
	var n int64
	switch {
	case c <= codePosFixintMax, c >= codeNegFixintMin: // one byte
		_, _ = r.br.ReadByte()
		n = int64(int8(c))
	case c >= codeUint8 && c <= codeUint64:
		u, err := r.fixed(what, 1<<(c-codeUint8))
		if err != nil {
			return 0, err
		}
		if hi < 0 || u > uint64(hi) {
			return 0, malformed(what, "%d out of range [%d, %d]", u, lo, hi)
		}
		n = int64(u)
	case c >= codeInt8 && c <= codeInt64:
		if n, err = r.signed(what, c); err != nil {
			return 0, err
		}
	default:
		return 0, malformed(what, "want an integer, got %s", codeName(c))
	}
	if n < lo || n > hi {
		return 0, malformed(what, "%d out of range [%d, %d]", n, lo, hi)
	}
	return n, nil
}

func (r *reader) bool(what string) (bool, error) {
	c, err := r.peek(what)
	if err != nil {
		return false, err
	}
	if c != codeFalse && c != codeTrue {
		return false, malformed(what, "want a bool, got %s", codeName(c))
	}
	_, _ = r.br.ReadByte()
	return c == codeTrue, nil
}

// payload reads the header of a str or bin (code c, peeked and checked by
// the caller), checks the length against limit and against the bytes left,
// and returns the payload as a view into the frame.
func (r *reader) payload(what string, c byte, limit int) ([]byte, error) {
	var n int
	if c >= codeFixstrMin && c <= codeFixstrMax { // the length is in the code
		_, _ = r.br.ReadByte()
		n = int(c & 0x1f)
	} else {
		var err error
		if n, err = r.dec.DecodeBytesLen(); err != nil {
			return nil, r.fail(what, err)
		}
	}
	if n > limit {
		return nil, tooLarge(what+" bytes", uint64(n), uint64(limit))
	}
	if n > r.br.Len() {
		return nil, malformed(what, "%d bytes with %d left", n, r.br.Len())
	}
	p := r.pos()
	_, _ = r.br.Seek(int64(n), io.SeekCurrent)
	return r.frame[p : p+n : p+n], nil
}

// str reads a UTF-8 string of at most limit bytes. It allocates exactly the
// string, after the checks.
func (r *reader) str(what string, limit int) (string, error) {
	c, err := r.peek(what)
	if err != nil {
		return "", err
	}
	if !(c >= codeFixstrMin && c <= codeFixstrMax) && !(c >= codeStr8 && c <= codeStr32) {
		return "", malformed(what, "want a string, got %s", codeName(c))
	}
	b, err := r.payload(what, c, limit)
	if err != nil {
		return "", err
	}
	if !utf8.Valid(b) {
		return "", malformed(what, "invalid UTF-8")
	}
	return string(b), nil
}

func (r *reader) doc(what string) (string, error) {
	s, err := r.str(what, MaxDocIDBytes)
	if err != nil {
		return "", err
	}
	return s, checkDoc(what, s)
}

func (r *reader) counter(what string) (uint64, error) { return r.uint(what, MaxCounter) }

// key reads a 16-byte bin into an array, without allocating.
func (r *reader) key(what string) (k [16]byte, err error) {
	c, err := r.peek(what)
	if err != nil {
		return k, err
	}
	if c < codeBin8 || c > codeBin32 {
		return k, malformed(what, "want a 16-byte bin, got %s", codeName(c))
	}
	b, err := r.payload(what, c, MaxFrameBytes)
	if err != nil {
		return k, err
	}
	if len(b) != len(k) {
		return k, malformed(what, "bin of %d bytes, want 16", len(b))
	}
	copy(k[:], b)
	return k, nil
}

// isNil consumes a nil if one is next.
func (r *reader) isNil() bool {
	if c, err := r.peek(""); err == nil && c == codeNil {
		_, _ = r.br.ReadByte()
		return true
	}
	return false
}

// skip skips n values of any type. It walks the bytes itself instead of
// calling msgpack's Skip, which recurses once per nesting level and reads
// payloads into a buffer: here nesting costs a counter, and every element
// still owed must fit in the bytes left, so a forged count fails at once.
func (r *reader) skip(what string, n int) error {
	b, p := r.frame, r.pos()
	for owed := n; owed > 0; owed-- {
		if p >= len(b) {
			return malformed(what, "truncated")
		}
		c := b[p]
		p++
		lenBytes, size, children := 0, 0, 0
		switch {
		case c <= codePosFixintMax, c >= codeNegFixintMin, c == codeNil, c == codeFalse, c == codeTrue:
		case c >= codeFixmapMin && c <= codeFixmapMax:
			children = 2 * int(c&0x0f)
		case c >= codeFixarrayMin && c <= codeFixarrayMax:
			children = int(c & 0x0f)
		case c >= codeFixstrMin && c <= codeFixstrMax:
			size = int(c & 0x1f)
		case c == codeBin8, c == codeStr8:
			lenBytes = 1
		case c == codeBin16, c == codeStr16, c == codeArray16, c == codeMap16:
			lenBytes = 2
		case c == codeBin32, c == codeStr32, c == codeArray32, c == codeMap32:
			lenBytes = 4
		case c == codeExt8:
			lenBytes, size = 1, 1 // the type byte
		case c == codeExt16:
			lenBytes, size = 2, 1
		case c == codeExt32:
			lenBytes, size = 4, 1
		case c >= codeFixext1 && c <= codeFixext16:
			size = 1 + 1<<(c-codeFixext1)
		case c == codeUint8, c == codeInt8:
			size = 1
		case c == codeUint16, c == codeInt16:
			size = 2
		case c == codeUint32, c == codeInt32, c == codeFloat32:
			size = 4
		case c == codeUint64, c == codeInt64, c == codeFloat64:
			size = 8
		default: // 0xc1 is never used
			return malformed(what, "invalid msgpack code %#02x", c)
		}
		if lenBytes > len(b)-p {
			return malformed(what, "truncated")
		}
		l := 0
		for _, x := range b[p : p+lenBytes] {
			l = l<<8 | int(x)
		}
		p += lenBytes
		switch c {
		case codeArray16, codeArray32:
			children = l
		case codeMap16, codeMap32:
			children = 2 * l
		default:
			size += l
		}
		if size > len(b)-p {
			return malformed(what, "truncated")
		}
		p += size
		if owed += children; owed-1 > len(b)-p {
			return malformed(what, "%d values owed with %d bytes left", owed-1, len(b)-p)
		}
	}
	_, _ = r.br.Seek(int64(p), io.SeekStart)
	return nil
}

// Decoders of crdt values and shared records; each mirrors an Encoder method.

func (r *reader) user(u *User) (err error) {
	n, err := r.fields("user", 2)
	if err != nil {
		return err
	}
	if u.Name, err = r.str("user.name", MaxNameBytes); err != nil {
		return err
	}
	if u.Color, err = r.str("user.color", MaxColorBytes); err != nil {
		return err
	}
	return r.skip("user", n-2)
}

// version reads [[key, n], ...]. Zero entries are dropped; a key listed
// twice is ErrMalformed. An empty vector decodes as nil.
func (r *reader) version() (crdt.Version, error) {
	// An entry is at least a fixarray, a 16-byte bin8 and a fixint.
	n, err := r.arrayLen("version", MaxVersionEntries, 1+2+16+1)
	if err != nil || n == 0 {
		return nil, err
	}
	v := make(crdt.Version, n)
	for range n {
		m, err := r.fields("version entry", 2)
		if err != nil {
			return nil, err
		}
		k, err := r.key("version agent")
		if err != nil {
			return nil, err
		}
		c, err := r.counter("version count")
		if err != nil {
			return nil, err
		}
		if _, dup := v[k]; dup {
			return nil, malformed("version", "agent %s listed twice", crdt.AgentKey(k))
		}
		if err := r.skip("version entry", m-2); err != nil {
			return nil, err
		}
		v[k] = c
	}
	// Zero entries were kept until now to catch duplicates among them.
	for k, c := range v {
		if c == 0 {
			delete(v, k)
		}
	}
	if len(v) == 0 {
		return nil, nil
	}
	return v, nil
}

// delta reads [[agent keys...], [ops...]].
func (r *reader) delta(d *crdt.Delta) error {
	n, err := r.fields("delta", 2)
	if err != nil {
		return err
	}
	na, err := r.arrayLen("delta.agents", MaxAgentsPerDelta, 2+16)
	if err != nil {
		return err
	}
	if na > 0 {
		d.Agents = make([]crdt.AgentKey, na)
		for i := range d.Agents {
			if d.Agents[i], err = r.key("delta.agents"); err != nil {
				return err
			}
		}
		if err := checkAgents("delta.agents", d.Agents); err != nil {
			return err
		}
	}
	// The smallest op is a delete of seven fixints in a fixarray.
	no, err := r.arrayLen("delta.ops", MaxOpsPerFrame, 8)
	if err != nil {
		return err
	}
	if no > 0 {
		d.Ops = make([]crdt.Op, no)
		for i := range d.Ops {
			if err := r.op(&d.Ops[i], na); err != nil {
				return err
			}
		}
	}
	return r.skip("delta", n-2)
}

// op reads an insert [1, agent, seq, lamport, len, origin agent, origin seq,
// text] or a delete [2, agent, seq, lamport, len, target agent, target seq].
func (r *reader) op(op *crdt.Op, agents int) error {
	const what = "op"
	n, err := r.fields(what, 7)
	if err != nil {
		return err
	}
	k, err := r.uint("op.kind", 0xff)
	if err != nil {
		return err
	}
	op.Kind = crdt.OpKind(k)
	known := 7
	switch op.Kind {
	case crdt.OpInsert:
		known = 8
		if n < known {
			return malformed(what, "insert of %d fields", n)
		}
	case crdt.OpDelete:
	default:
		return malformed(what, "unknown op kind %d", k)
	}
	a, err := r.uint("op.agent", math.MaxUint64)
	if err != nil {
		return err
	}
	if a >= uint64(agents) {
		return malformed(what, "agent index %d outside a table of %d", a, agents)
	}
	op.Agent = uint32(a)
	if op.Seq, err = r.counter("op.seq"); err != nil {
		return err
	}
	if op.Lamport, err = r.counter("op.lamport"); err != nil {
		return err
	}
	if op.Len, err = r.counter("op.len"); err != nil {
		return err
	}
	ra, err := r.int("op.ref_agent", -1, int64(agents)-1)
	if err != nil {
		return err
	}
	ref := crdt.Ref{Agent: uint32(ra)}
	if ra < 0 {
		ref.Agent = crdt.RootAgent
	}
	if ref.Seq, err = r.counter("op.ref_seq"); err != nil {
		return err
	}
	if op.Kind == crdt.OpInsert {
		if ra < 0 && ref.Seq != 0 {
			return malformed(what, "document start with seq %d", ref.Seq)
		}
		op.Origin = ref
		if op.Text, err = r.str("op.text", MaxOpTextBytes); err != nil {
			return err
		}
	} else {
		op.Target = ref
	}
	// Index range, lengths and counter overflow, shared with the encoder.
	if err := checkOp(what, op, agents, false); err != nil {
		return err
	}
	return r.skip(what, n-known)
}

// anchor reads [edge, assoc, key|nil, seq].
func (r *reader) anchor(a *crdt.Anchor) error {
	const what = "anchor"
	n, err := r.fields(what, 4)
	if err != nil {
		return err
	}
	edge, err := r.int("anchor.edge", -1, 1)
	if err != nil {
		return err
	}
	assoc, err := r.int("anchor.assoc", int64(crdt.AssocLeft), int64(crdt.AssocRight))
	if err != nil {
		return err
	}
	a.Edge, a.Assoc = int8(edge), crdt.Assoc(assoc)
	if edge != 0 {
		if !r.isNil() {
			return malformed(what, "document edge with an agent")
		}
		s, err := r.counter("anchor.seq")
		if err != nil {
			return err
		}
		if s != 0 {
			return malformed(what, "document edge with seq %d", s)
		}
	} else {
		if a.ID.Agent, err = r.key("anchor.agent"); err != nil {
			return err
		}
		if a.ID.Seq, err = r.counter("anchor.seq"); err != nil {
			return err
		}
	}
	return r.skip(what, n-4)
}

func (r *reader) selections() ([]Selection, error) {
	const what = "selections"
	// A selection is at least a fixarray and two edge anchors of five bytes.
	n, err := r.arrayLen(what, MaxSelections, 1+5+5)
	if err != nil || n == 0 {
		return nil, err
	}
	s := make([]Selection, n)
	for i := range s {
		m, err := r.fields(what, 2)
		if err != nil {
			return nil, err
		}
		if err := r.anchor(&s[i].Anchor); err != nil {
			return nil, err
		}
		if err := r.anchor(&s[i].Head); err != nil {
			return nil, err
		}
		if err := r.skip(what, m-2); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (r *reader) docs(what string) ([]string, error) {
	// A document ID is at least a fixstr of one byte.
	n, err := r.arrayLen(what, MaxDocsPerFrame, 2)
	if err != nil {
		return nil, err
	}
	docs := make([]string, n)
	for i := range docs {
		if docs[i], err = r.doc(what); err != nil {
			return nil, err
		}
	}
	return docs, checkDocs(what, docs)
}
