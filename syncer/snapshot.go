package syncer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/weft-sync/weft/crdt"
)

func runeCount(s string) int { return utf8.RuneCountInString(s) }

// A document snapshot as the log stores it: the CRDT snapshot and the
// audit trail (which the truncated log records no longer carry).
//
//	magic "WFD1"
//	uvarint crdt bytes, crdt snapshot
//	uvarint audit entries; each: uvarint seq, an audit entry as a log
//	    record's header has it (appendAudit), string agent
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
		b = binary.AppendUvarint(b, a.Seq)
		b = appendAudit(b, a)
		b = appendString(b, a.Agent)
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
		seq, rest, ok := readUvarint(b)
		var a Audit
		if ok {
			a, rest, ok = readAudit(rest)
		}
		if ok {
			a.Agent, rest, ok = readString(rest)
		}
		if !ok {
			return nil, nil, fmt.Errorf("%w: audit", errBadSnapshot)
		}
		a.Seq, b = seq, rest
		audit = append(audit, a)
	}
	return t, audit, nil
}
