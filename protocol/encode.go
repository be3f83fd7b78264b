package protocol

import (
	"bytes"
	"slices"
	"sync"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/weft-sync/weft/crdt"
)

// Encoder turns frames into bytes. It keeps a msgpack encoder with compact
// integers and a scratch slice between calls, so encoding allocates nothing
// once dst has room. An Encoder is not safe for concurrent use; Encode uses a
// pool of them.
type Encoder struct {
	w   appendWriter
	enc *msgpack.Encoder // writes into w; flags set once in NewEncoder
	// keys is scratch for sorting version vectors, which makes encoding
	// deterministic although crdt.Version is a map.
	keys []crdt.AgentKey
}

// appendWriter appends to a caller's slice. It implements msgpack's writer
// interface (io.Writer plus WriteByte), so the msgpack encoder uses it
// directly instead of wrapping it, and it cannot fail.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

func (w *appendWriter) WriteByte(c byte) error {
	w.b = append(w.b, c)
	return nil
}

// NewEncoder returns an Encoder ready for use.
func NewEncoder() *Encoder {
	e := new(Encoder)
	e.enc = msgpack.NewEncoder(&e.w)
	// Every integer goes through EncodeUint/EncodeInt, which are compact
	// anyway; the flag guards any fixed-width call added later. The writer
	// never changes, so Reset (which would clear the flag) is never needed.
	e.enc.UseCompactInts(true)
	return e
}

// Encode appends the encoding of f to dst and returns the extended slice. The
// bytes are deterministic: equal frames encode identically. It checks f
// against the same rules and limits Decode applies, so whatever it returns
// decodes again; on error it returns dst unchanged in length.
func (e *Encoder) Encode(dst []byte, f Frame) ([]byte, error) {
	start := len(dst)
	e.w.b = dst
	err := f.encode(e)
	out := e.w.b
	e.w.b = nil
	if err != nil {
		return dst, err
	}
	if n := len(out) - start; n > MaxFrameBytes {
		return dst, tooLarge(f.Kind().String()+" frame bytes", uint64(n), MaxFrameBytes)
	}
	return out, nil
}

var encoders = sync.Pool{New: func() any { return NewEncoder() }}

// Encode appends the encoding of f to dst using a pooled Encoder.
func Encode(dst []byte, f Frame) ([]byte, error) {
	e := encoders.Get().(*Encoder)
	out, err := e.Encode(dst, f)
	encoders.Put(e)
	return out, err
}

// The write helpers ignore msgpack's errors: they come only from the writer,
// and appendWriter never fails.

func (e *Encoder) array(n int)        { _ = e.enc.EncodeArrayLen(n) }
func (e *Encoder) uint(n uint64)      { _ = e.enc.EncodeUint(n) }
func (e *Encoder) int(n int64)        { _ = e.enc.EncodeInt(n) }
func (e *Encoder) bool(b bool)        { _ = e.enc.EncodeBool(b) }
func (e *Encoder) nil()               { _ = e.enc.EncodeNil() }
func (e *Encoder) rawString(s string) { _ = e.enc.EncodeString(s) }

// header writes the frame's array header and kind.
func (e *Encoder) header(k Kind, fields int) {
	e.array(fields)
	e.uint(uint64(k))
}

// key writes a 16-byte bin. It takes a pointer so that slicing does not make
// a heap copy of the array.
func (e *Encoder) key(k *[16]byte) { _ = e.enc.EncodeBytes(k[:]) }

// str writes a UTF-8 string after checking it against limit.
func (e *Encoder) str(what, s string, limit int) error {
	if err := checkString(what, s, limit); err != nil {
		return err
	}
	e.rawString(s)
	return nil
}

func (e *Encoder) doc(what, s string) error {
	if err := checkDoc(what, s); err != nil {
		return err
	}
	e.rawString(s)
	return nil
}

func (e *Encoder) counter(what string, n uint64) error {
	if n > MaxCounter {
		return tooLarge(what, n, MaxCounter)
	}
	e.uint(n)
	return nil
}

func (e *Encoder) user(u *User) error {
	e.array(2)
	if err := e.str("user.name", u.Name, MaxNameBytes); err != nil {
		return err
	}
	return e.str("user.color", u.Color, MaxColorBytes)
}

// version writes [[key, n], ...] sorted by key bytes, leaving out zero
// entries, which mean the same as absent ones.
func (e *Encoder) version(v crdt.Version) error {
	keys := e.keys[:0]
	for k, n := range v {
		if n == 0 {
			continue
		}
		if n > MaxCounter {
			return tooLarge("version entry", n, MaxCounter)
		}
		keys = append(keys, k)
	}
	e.keys = keys
	if len(keys) > MaxVersionEntries {
		return tooLarge("version entries", uint64(len(keys)), MaxVersionEntries)
	}
	slices.SortFunc(keys, func(a, b crdt.AgentKey) int { return bytes.Compare(a[:], b[:]) })
	e.array(len(keys))
	for i := range keys {
		e.array(2)
		e.key((*[16]byte)(&keys[i]))
		e.uint(v[keys[i]])
	}
	return nil
}

// delta writes [[agent keys...], [ops...]].
func (e *Encoder) delta(d *crdt.Delta) error {
	if len(d.Agents) > MaxAgentsPerDelta {
		return tooLarge("delta.agents", uint64(len(d.Agents)), MaxAgentsPerDelta)
	}
	if len(d.Ops) > MaxOpsPerFrame {
		return tooLarge("delta.ops", uint64(len(d.Ops)), MaxOpsPerFrame)
	}
	if err := checkAgents("delta.agents", d.Agents); err != nil {
		return err
	}
	e.array(2)
	e.array(len(d.Agents))
	for i := range d.Agents {
		e.key((*[16]byte)(&d.Agents[i]))
	}
	e.array(len(d.Ops))
	for i := range d.Ops {
		op := &d.Ops[i]
		if err := checkOp("op", op, len(d.Agents), true); err != nil {
			return err
		}
		switch op.Kind {
		case crdt.OpInsert:
			e.array(8)
		default:
			e.array(7)
		}
		e.uint(uint64(op.Kind))
		e.uint(uint64(op.Agent))
		e.uint(op.Seq)
		e.uint(op.Lamport)
		e.uint(op.Len)
		switch op.Kind {
		case crdt.OpInsert:
			e.ref(op.Origin)
			e.rawString(op.Text)
		default:
			e.ref(op.Target)
		}
	}
	return nil
}

// ref writes an agent index (-1 for the document start) and a seq.
func (e *Encoder) ref(r crdt.Ref) {
	if r.Agent == crdt.RootAgent {
		e.int(-1)
		e.uint(0)
		return
	}
	e.uint(uint64(r.Agent))
	e.uint(r.Seq)
}

// anchor writes [edge, assoc, key|nil, seq].
func (e *Encoder) anchor(a *crdt.Anchor) error {
	if err := checkAnchor("anchor", a); err != nil {
		return err
	}
	e.array(4)
	e.int(int64(a.Edge))
	e.int(int64(a.Assoc))
	if a.Edge != 0 {
		e.nil()
		e.uint(0)
		return nil
	}
	e.key((*[16]byte)(&a.ID.Agent))
	e.uint(a.ID.Seq)
	return nil
}

func (e *Encoder) selections(s []Selection) error {
	if len(s) > MaxSelections {
		return tooLarge("selections", uint64(len(s)), MaxSelections)
	}
	e.array(len(s))
	for i := range s {
		e.array(2)
		if err := e.anchor(&s[i].Anchor); err != nil {
			return err
		}
		if err := e.anchor(&s[i].Head); err != nil {
			return err
		}
	}
	return nil
}

// Checks shared by the encoder and the decoder, so that each accepts exactly
// what the other produces.

func checkString(what, s string, limit int) error {
	if len(s) > limit {
		return tooLarge(what+" bytes", uint64(len(s)), uint64(limit))
	}
	if !utf8.ValidString(s) {
		return malformed(what, "invalid UTF-8")
	}
	return nil
}

// checkDoc enforces the document ID rules: 1 to MaxDocIDBytes bytes of UTF-8
// without control characters.
func checkDoc(what, s string) error {
	if s == "" {
		return malformed(what, "empty document ID")
	}
	if err := checkString(what, s, MaxDocIDBytes); err != nil {
		return err
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return malformed(what, "control character %#02x in document ID", c)
		}
	}
	return nil
}

func checkDocs(what string, docs []string) error {
	if len(docs) == 0 {
		return malformed(what, "no documents")
	}
	if len(docs) > MaxDocsPerFrame {
		return tooLarge(what, uint64(len(docs)), MaxDocsPerFrame)
	}
	for i, d := range docs {
		if err := checkDoc(what, d); err != nil {
			return err
		}
		// Quadratic, but bounded by MaxDocsPerFrame² = 65536 comparisons.
		if slices.Contains(docs[:i], d) {
			return malformed(what, "document %q named twice", d)
		}
	}
	return nil
}

// checkAgents rejects a table that names one agent twice: ops would then have
// two indices for one author and receivers could disagree.
func checkAgents(what string, agents []crdt.AgentKey) error {
	if len(agents) <= 16 {
		for i := range agents {
			if slices.Contains(agents[:i], agents[i]) {
				return malformed(what, "agent %s listed twice", agents[i])
			}
		}
		return nil
	}
	seen := make(map[crdt.AgentKey]struct{}, len(agents))
	for _, k := range agents {
		if _, dup := seen[k]; dup {
			return malformed(what, "agent %s listed twice", k)
		}
		seen[k] = struct{}{}
	}
	return nil
}

// checkOp enforces the structural rules of an op. The CRDT checks the rest
// (causality, matching Lamport times). Fields the wire form of op.Kind does
// not carry (Target of an insert; Origin and Text of a delete) are ignored.
// checkUTF8 is false when the decoder has already validated the text.
func checkOp(what string, op *crdt.Op, agents int, checkUTF8 bool) error {
	if int64(op.Agent) >= int64(agents) {
		return malformed(what, "agent index %d outside a table of %d", op.Agent, agents)
	}
	if op.Len == 0 {
		return malformed(what, "zero length")
	}
	if op.Seq > MaxCounter || op.Len > MaxCounter-op.Seq {
		return tooLarge(what+" seq+len", op.Seq+op.Len, MaxCounter)
	}
	if op.Lamport > MaxCounter || op.Len > MaxCounter-op.Lamport {
		return tooLarge(what+" lamport+len", op.Lamport+op.Len, MaxCounter)
	}
	switch op.Kind {
	case crdt.OpInsert:
		// The document start travels with seq 0 whatever Origin.Seq holds.
		if op.Origin.Agent != crdt.RootAgent {
			if int64(op.Origin.Agent) >= int64(agents) {
				return malformed(what, "origin agent index %d outside a table of %d", op.Origin.Agent, agents)
			}
			if op.Origin.Seq > MaxCounter {
				return tooLarge(what+" origin seq", op.Origin.Seq, MaxCounter)
			}
		}
		if len(op.Text) > MaxOpTextBytes {
			return tooLarge(what+" text bytes", uint64(len(op.Text)), MaxOpTextBytes)
		}
		if checkUTF8 && !utf8.ValidString(op.Text) {
			return malformed(what, "text is not valid UTF-8")
		}
		if op.Text != "" && uint64(utf8.RuneCountInString(op.Text)) != op.Len {
			return malformed(what, "text of %d code points for length %d", utf8.RuneCountInString(op.Text), op.Len)
		}
	case crdt.OpDelete:
		if op.Target.Agent == crdt.RootAgent || int64(op.Target.Agent) >= int64(agents) {
			return malformed(what, "target agent index %d outside a table of %d", op.Target.Agent, agents)
		}
		if op.Target.Seq > MaxCounter || op.Len > MaxCounter-op.Target.Seq {
			return tooLarge(what+" target seq+len", op.Target.Seq+op.Len, MaxCounter)
		}
	default:
		return malformed(what, "unknown op kind %d", op.Kind)
	}
	return nil
}

func checkAnchor(what string, a *crdt.Anchor) error {
	if a.Assoc != crdt.AssocLeft && a.Assoc != crdt.AssocRight {
		return malformed(what, "association %d", a.Assoc)
	}
	switch a.Edge {
	case 0:
		if a.ID.Seq > MaxCounter {
			return tooLarge(what+" seq", a.ID.Seq, MaxCounter)
		}
	case -1, 1:
		// An edge carries no ID; the encoder ignores a.ID.
	default:
		return malformed(what, "edge %d", a.Edge)
	}
	return nil
}
