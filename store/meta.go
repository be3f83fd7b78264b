package store

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Meta describes one document. It is a copy; changing it changes nothing
// in the store.
type Meta struct {
	Doc     string
	Created time.Time // first Append
	Updated time.Time // last Append or SaveSnapshot

	// LastSeq is the seq of the newest record ever appended; the next
	// Append gets LastSeq+1. Truncation never lowers it.
	LastSeq uint64
	// SnapSeq is the seq the saved snapshot covers (0: no snapshot).
	// Records with seq <= SnapSeq are compacted: Range refuses them.
	SnapSeq uint64
	// Records is how many log records are stored. Once a truncation has
	// finished it equals LastSeq-SnapSeq.
	Records uint64
	// Bytes is the size of the stored log records plus the snapshot,
	// without bbolt's per-key and per-page overhead.
	Bytes uint64
	// SnapshotBytes is the part of Bytes taken by the snapshot.
	SnapshotBytes uint64
}

// meta is the stored form of Meta. The log of a document holds exactly
// the seqs (lastSeq-records, lastSeq]; trimming removes from the front, so
// the oldest stored seq, and whether a truncation is unfinished, follow
// from meta alone without touching the log bucket.
type meta struct {
	created, updated int64 // unix nanoseconds
	lastSeq          uint64
	snapSeq          uint64
	records          uint64
	logBytes         uint64
	snapBytes        uint64
	// gen tells incarnations of one document ID apart: Delete and a new
	// Append give a new gen, so a chunked Range notices the swap.
	gen uint64
}

const (
	metaVersion = 1
	metaLen     = 1 + 8*8
)

// oldest returns the smallest stored seq, or 0 if the log is empty.
func (m *meta) oldest() uint64 {
	if m.records == 0 {
		return 0
	}
	return m.lastSeq - m.records + 1
}

// needsTrim reports whether records at or below snapSeq are still stored.
func (m *meta) needsTrim() bool {
	return m.records > 0 && m.oldest() <= m.snapSeq
}

func (m *meta) export(doc string) Meta {
	return Meta{
		Doc:           doc,
		Created:       time.Unix(0, m.created),
		Updated:       time.Unix(0, m.updated),
		LastSeq:       m.lastSeq,
		SnapSeq:       m.snapSeq,
		Records:       m.records,
		Bytes:         m.logBytes + m.snapBytes,
		SnapshotBytes: m.snapBytes,
	}
}

// encode returns a fresh buffer: bbolt keeps a reference to a value until
// the transaction ends, so the buffer must not be reused.
func (m *meta) encode() []byte {
	b := make([]byte, metaLen)
	b[0] = metaVersion
	be := binary.BigEndian
	be.PutUint64(b[1:], uint64(m.created))
	be.PutUint64(b[9:], uint64(m.updated))
	be.PutUint64(b[17:], m.lastSeq)
	be.PutUint64(b[25:], m.snapSeq)
	be.PutUint64(b[33:], m.records)
	be.PutUint64(b[41:], m.logBytes)
	be.PutUint64(b[49:], m.snapBytes)
	be.PutUint64(b[57:], m.gen)
	return b
}

func decodeMeta(b []byte) (meta, error) {
	if len(b) != metaLen || b[0] != metaVersion {
		return meta{}, fmt.Errorf("store: corrupt metadata (%d bytes, version %d)", len(b), firstByte(b))
	}
	be := binary.BigEndian
	m := meta{
		created:   int64(be.Uint64(b[1:])),
		updated:   int64(be.Uint64(b[9:])),
		lastSeq:   be.Uint64(b[17:]),
		snapSeq:   be.Uint64(b[25:]),
		records:   be.Uint64(b[33:]),
		logBytes:  be.Uint64(b[41:]),
		snapBytes: be.Uint64(b[49:]),
		gen:       be.Uint64(b[57:]),
	}
	if m.records > m.lastSeq || m.snapSeq > m.lastSeq {
		return meta{}, fmt.Errorf("store: corrupt metadata (records %d, snapSeq %d, lastSeq %d)", m.records, m.snapSeq, m.lastSeq)
	}
	return m, nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// seqKey encodes seq as a log key. Big-endian keeps byte order equal to
// numeric order, so a cursor Seek is a range scan.
func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

func keySeq(k []byte) (uint64, bool) {
	if len(k) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(k), true
}
