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

// A record is one entry of a document's op log: who changed what and when,
// followed by the exact Update frame that was broadcast for it. Storing the
// broadcast bytes means a delta is encoded once for the log and every
// subscriber, and the history endpoint reads the header without decoding
// any ops.
//
//	byte     recordVersion
//	uvarint  unix milliseconds
//	uvarint  ops, chars inserted, chars deleted
//	string   author subject, author name (uvarint length + UTF-8)
//	rest     an encoded protocol Update frame
//
// (The middle part is an audit entry, written by appendAudit; snapshots
// keep the audit trail in the same form.)
const recordVersion = 1

// maxAuthorBytes bounds the author strings kept per record.
const maxAuthorBytes = 256

var errBadRecord = errors.New("syncer: bad log record")

// Audit is one entry of a document's history.
type Audit struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Subject  string    `json:"author"`
	Name     string    `json:"name,omitempty"`
	Agent    string    `json:"agent"`
	Ops      int       `json:"ops"`
	Inserted int       `json:"inserted"`
	Deleted  int       `json:"deleted"`
}

// stats counts the ops and characters of a delta for the audit trail.
func stats(d crdt.Delta) (ops, ins, del int) {
	for i := range d.Ops {
		o := &d.Ops[i]
		if o.Kind == crdt.OpInsert {
			if o.Text != "" {
				ins += int(o.Len)
			}
		} else {
			del += int(o.Len)
		}
	}
	return len(d.Ops), ins, del
}

func clip(s string) string {
	if len(s) <= maxAuthorBytes {
		return s
	}
	s = s[:maxAuthorBytes]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// encodeRecord builds the log record for an Update frame already encoded in
// frame.
func encodeRecord(a Audit, frame []byte) []byte {
	b := make([]byte, 0, len(frame)+32+len(a.Subject)+len(a.Name))
	b = append(b, recordVersion)
	b = appendAudit(b, a)
	return append(b, frame...)
}

// decodeRecordHeader reads the audit part of a record and returns the rest
// (the Update frame).
func decodeRecordHeader(rec []byte) (Audit, []byte, error) {
	if len(rec) == 0 || rec[0] != recordVersion {
		return Audit{}, nil, fmt.Errorf("%w: version", errBadRecord)
	}
	a, rest, ok := readAudit(rec[1:])
	if !ok {
		return Audit{}, nil, fmt.Errorf("%w: header", errBadRecord)
	}
	return a, rest, nil
}

// appendAudit writes an audit entry's time, counts and author, the part a
// log record and a snapshot's audit trail share.
func appendAudit(b []byte, a Audit) []byte {
	for _, v := range []uint64{uint64(a.Time.UnixMilli()), uint64(a.Ops), uint64(a.Inserted), uint64(a.Deleted)} {
		b = binary.AppendUvarint(b, v)
	}
	b = appendString(b, clip(a.Subject))
	return appendString(b, clip(a.Name))
}

// readAudit reads what appendAudit wrote and returns the rest of b.
func readAudit(b []byte) (Audit, []byte, bool) {
	var a Audit
	var nums [4]uint64
	ok := true
	for i := range nums {
		nums[i], b, ok = readUvarint(b)
		if !ok {
			return a, nil, false
		}
	}
	if a.Subject, b, ok = readString(b); !ok {
		return a, nil, false
	}
	if a.Name, b, ok = readString(b); !ok {
		return a, nil, false
	}
	a.Time = time.UnixMilli(int64(nums[0])).UTC()
	a.Ops, a.Inserted, a.Deleted = int(nums[1]), int(nums[2]), int(nums[3])
	return a, b, true
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func readUvarint(b []byte) (uint64, []byte, bool) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, false
	}
	return v, b[n:], true
}

// readString reads a length-prefixed string of at most maxAuthorBytes.
func readString(b []byte) (string, []byte, bool) {
	l, rest, ok := readUvarint(b)
	if !ok || l > maxAuthorBytes || l > uint64(len(rest)) {
		return "", nil, false
	}
	return string(rest[:l]), rest[l:], true
}

// decodeRecord reads a whole record.
func decodeRecord(rec []byte) (Audit, *protocol.Update, error) {
	a, frame, err := decodeRecordHeader(rec)
	if err != nil {
		return a, nil, err
	}
	f, err := protocol.Decode(frame)
	if err != nil {
		return a, nil, fmt.Errorf("%w: %w", errBadRecord, err)
	}
	u, ok := f.(*protocol.Update)
	if !ok {
		return a, nil, fmt.Errorf("%w: holds a %s frame", errBadRecord, f.Kind())
	}
	a.Seq = u.Seq
	a.Agent = u.Author.String()
	return a, u, nil
}
