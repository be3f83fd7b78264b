package syncer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/weft-sync/weft/crdt"
)

func runeCount(s string) int { return utf8.RuneCountInString(s) }

// A document snapshot as the log stores it: the CRDT snapshot and the
// audit trail (which the truncated log records no longer carry).
//
//	magic "WFD1"
//	uvarint crdt bytes, crdt snapshot
//	uvarint audit entries; each: uvarint seq, unix ms, ops, inserted,
//	    deleted; string subject, name, agent
const docSnapMagic = "WFD1"

var errBadSnapshot = errors.New("syncer: bad document snapshot")

func encodeSnapshot(t *crdt.Text, audit []Audit) ([]byte, error) {
	cs, err := t.MarshalBinary()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(cs)+len(audit)*48+16)
	b = append(b, docSnapMagic...)
	b = binary.AppendUvarint(b, uint64(len(cs)))
	b = append(b, cs...)
	b = binary.AppendUvarint(b, uint64(len(audit)))
	for _, a := range audit {
		for _, v := range []uint64{a.Seq, uint64(a.Time.UnixMilli()), uint64(a.Ops), uint64(a.Inserted), uint64(a.Deleted)} {
			b = binary.AppendUvarint(b, v)
		}
		for _, s := range []string{clip(a.Subject), clip(a.Name), a.Agent} {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
	}
	return b, nil
}

func decodeSnapshot(data []byte, agent crdt.AgentKey) (*crdt.Text, []Audit, error) {
	if len(data) < len(docSnapMagic) || string(data[:len(docSnapMagic)]) != docSnapMagic {
		return nil, nil, fmt.Errorf("%w: magic", errBadSnapshot)
	}
	b := data[len(docSnapMagic):]
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return nil, nil, fmt.Errorf("%w: crdt length", errBadSnapshot)
	}
	t, err := crdt.Load(b[n:n+int(l)], agent)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errBadSnapshot, err)
	}
	b = b[n+int(l):]
	cnt, n := binary.Uvarint(b)
	if n <= 0 || cnt > uint64(len(b)) {
		return nil, nil, fmt.Errorf("%w: audit count", errBadSnapshot)
	}
	b = b[n:]
	audit := make([]Audit, 0, cnt)
	for range cnt {
		var v [5]uint64
		for i := range v {
			x, n := binary.Uvarint(b)
			if n <= 0 {
				return nil, nil, fmt.Errorf("%w: audit", errBadSnapshot)
			}
			v[i], b = x, b[n:]
		}
		var s [3]string
		for i := range s {
			x, n := binary.Uvarint(b)
			if n <= 0 || x > maxAuthorBytes || x > uint64(len(b)-n) {
				return nil, nil, fmt.Errorf("%w: audit", errBadSnapshot)
			}
			s[i], b = string(b[n:n+int(x)]), b[n+int(x):]
		}
		audit = append(audit, Audit{Seq: v[0], Time: time.UnixMilli(int64(v[1])).UTC(), Ops: int(v[2]), Inserted: int(v[3]), Deleted: int(v[4]),
			Subject: s[0], Name: s[1], Agent: s[2]})
	}
	return t, audit, nil
}
