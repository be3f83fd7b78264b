package crdt

import (
	"errors"
	"fmt"
)

// AgentKey identifies an editing agent (a client replica) across documents and
// processes. It is a UUID's 16 bytes; crdt keeps it opaque so that the package
// imports nothing outside the standard library.
type AgentKey [16]byte

// String renders the key in the canonical 8-4-4-4-12 hex form so that logs and
// errors show the same text as a UUID library would.
func (k AgentKey) String() string {
	const hex = "0123456789abcdef"
	var b [36]byte
	j := 0
	for i, c := range k {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b[j] = '-'
			j++
		}
		b[j] = hex[c>>4]
		b[j+1] = hex[c&0xf]
		j += 2
	}
	return string(b[:])
}

// ID names one code point of a document, or one unit of a delete, for ever.
// Seqs are contiguous per agent, starting at 0, so that a replica can tell
// exactly which IDs it lacks from a version vector.
type ID struct {
	Agent AgentKey
	Seq   uint64
}

func (id ID) String() string { return fmt.Sprintf("%s:%d", id.Agent, id.Seq) }

// Version is a version vector: for each agent, the number of seqs of that agent
// a replica holds (so the next expected seq). Agents absent from the map count
// as zero. Because seqs are contiguous, a Version describes a replica's
// contents exactly.
type Version map[AgentKey]uint64

// Clone returns an independent copy.
func (v Version) Clone() Version {
	c := make(Version, len(v))
	for k, n := range v {
		c[k] = n
	}
	return c
}

// Covers reports whether v holds everything o holds.
func (v Version) Covers(o Version) bool {
	for k, n := range o {
		if v[k] < n {
			return false
		}
	}
	return true
}

// Equal reports whether both vectors describe the same set of IDs.
func (v Version) Equal(o Version) bool { return v.Covers(o) && o.Covers(v) }

// OpKind says what an Op does.
type OpKind uint8

const (
	// OpInsert inserts a run of code points after Origin.
	OpInsert OpKind = 1
	// OpDelete deletes a run of IDs starting at Target.
	OpDelete OpKind = 2
)

func (k OpKind) String() string {
	switch k {
	case OpInsert:
		return "insert"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// RootAgent is the agent index of a Ref that points at the start of the
// document (the virtual item every first character is inserted after).
const RootAgent = ^uint32(0)

// Ref points at an ID inside a Delta: Agent indexes Delta.Agents, or is
// RootAgent for the document start.
type Ref struct {
	Agent uint32
	Seq   uint64
}

// Op is one run-length encoded operation. It covers the seqs
// [Seq, Seq+Len) of its author and the Lamport times [Lamport, Lamport+Len).
//
// An insert places Len code points; code point k (k ≥ 1) has the previous
// code point of the same op as its origin, so only the first origin is sent.
// Text holds the code points, or is empty when they were deleted before the
// op was sent (the receiver then inserts them as tombstones).
//
// A delete removes the Len IDs Target.Seq, Target.Seq+1, ... of agent
// Target.Agent.
type Op struct {
	Kind    OpKind
	Agent   uint32 // author: index into Delta.Agents
	Seq     uint64
	Lamport uint64
	Len     uint64
	Origin  Ref    // OpInsert only
	Text    string // OpInsert only
	Target  Ref    // OpDelete only
}

// Delta is a batch of ops with its own agent table, so that each 16-byte key
// travels once per delta and ops refer to agents by a small index.
type Delta struct {
	Agents []AgentKey
	Ops    []Op
}

// Empty reports whether the delta carries no ops.
func (d Delta) Empty() bool { return len(d.Ops) == 0 }

// Change is a position-based edit in code points, the form editors and the
// HTTP API speak: delete Delete code points at Pos, then insert Insert there.
type Change struct {
	Pos    int
	Delete int
	Insert string
}

// Assoc says which neighbour a cursor anchor sticks to when text is inserted
// exactly at its position.
type Assoc int8

const (
	// AssocRight anchors to the character after the position (the default for
	// a caret: text typed by others at the caret pushes it right).
	AssocRight Assoc = 0
	// AssocLeft anchors to the character before the position.
	AssocLeft Assoc = -1
)

// Anchor is a position that survives concurrent edits: the ID of a character
// plus the side it sticks to. A zero ID with Start or End set names the document
// edges.
type Anchor struct {
	ID    ID
	Assoc Assoc
	// Edge is 0 for an ID anchor, -1 for the document start, +1 for the end.
	Edge int8
}

// Errors callers branch on.
var (
	// ErrInvalid marks a delta that can never be applied: bad indices, bad
	// UTF-8, lengths that disagree, counters that overflow, or Lamport times
	// that contradict causality. The replica is unchanged by the invalid op.
	ErrInvalid = errors.New("crdt: invalid op")
	// ErrMissing marks an op whose dependencies this replica lacks. It is
	// wrapped in a *MissingError naming the first missing ID.
	ErrMissing = errors.New("crdt: missing dependency")
	// ErrOutOfRange marks a local edit at a position outside the text.
	ErrOutOfRange = errors.New("crdt: position out of range")
	// ErrCorrupt marks a snapshot that does not decode.
	ErrCorrupt = errors.New("crdt: corrupt snapshot")
	// ErrCompacted marks a Between that would need the text of deleted
	// characters, which a replica loaded from a snapshot no longer holds.
	ErrCompacted = errors.New("crdt: deleted text compacted away")
)

// MissingError names the first ID an op needs and the replica lacks. Every
// other op of the delta was applied (or was already known); Pending lists the
// indices into Delta.Ops of those that had to wait, so a caller can park
// exactly them and apply them again once the gap is filled.
type MissingError struct {
	ID      ID
	Pending []int
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("crdt: missing dependency %s (%d ops waiting)", e.ID, len(e.Pending))
}

func (e *MissingError) Unwrap() error { return ErrMissing }
