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
// frame, and returns it with the audit entry it describes.
func encodeRecord(a Audit, frame []byte) []byte {
	b := make([]byte, 0, len(frame)+32+len(a.Subject)+len(a.Name))
	b = append(b, recordVersion)
	b = binary.AppendUvarint(b, uint64(a.Time.UnixMilli()))
	b = binary.AppendUvarint(b, uint64(a.Ops))
	b = binary.AppendUvarint(b, uint64(a.Inserted))
	b = binary.AppendUvarint(b, uint64(a.Deleted))
	for _, s := range []string{clip(a.Subject), clip(a.Name)} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return append(b, frame...)
}

// decodeRecordHeader reads the audit part of a record and returns the rest
// (the Update frame).
func decodeRecordHeader(rec []byte) (Audit, []byte, error) {
	var a Audit
	if len(rec) == 0 || rec[0] != recordVersion {
		return a, nil, fmt.Errorf("%w: version", errBadRecord)
	}
	b := rec[1:]
	var nums [4]uint64
	for i := range nums {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return a, nil, fmt.Errorf("%w: header", errBadRecord)
		}
		nums[i], b = v, b[n:]
	}
	var strs [2]string
	for i := range strs {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > maxAuthorBytes || uint64(len(b)-n) < l {
			return a, nil, fmt.Errorf("%w: author", errBadRecord)
		}
		strs[i], b = string(b[n:n+int(l)]), b[n+int(l):]
	}
	a.Time = time.UnixMilli(int64(nums[0])).UTC()
	a.Ops, a.Inserted, a.Deleted = int(nums[1]), int(nums[2]), int(nums[3])
	a.Subject, a.Name = strs[0], strs[1]
	return a, b, nil
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
