package client

import (
	"unicode/utf8"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// Limits for one pending entry. An edit larger than this (a big paste) is
// kept as several entries, each of which fits a Delta frame of any server
// that advertises at least these limits.
const (
	entryMaxOps   = 4096
	entryMaxBytes = 256 << 10
)

// ownRange returns the seqs [lo, hi) of agent me that d's ops cover.
func ownRange(d *crdt.Delta, me crdt.AgentKey) (lo, hi uint64) {
	first := true
	for i := range d.Ops {
		o := &d.Ops[i]
		if d.Agents[o.Agent] != me {
			continue
		}
		if first || o.Seq < lo {
			lo = o.Seq
		}
		if first || o.Seq+o.Len > hi {
			hi = o.Seq + o.Len
		}
		first = false
	}
	return lo, hi
}

// checkDocID applies the protocol's rules for document IDs.
func checkDocID(id string) bool {
	if id == "" || len(id) > protocol.MaxDocIDBytes || !utf8.ValidString(id) {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}
