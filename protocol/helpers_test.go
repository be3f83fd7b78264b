package protocol

import (
	"encoding/hex"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/weft-sync/weft/crdt"
)

// Fixed identities used by the golden frames and the docs.
var (
	agentA  = crdt.AgentKey{0x01, 0x93, 0x4a, 0x1e, 0x7c, 0x00, 0x70, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xaa}
	agentB  = crdt.AgentKey{0x01, 0x93, 0x4a, 0x1e, 0x7c, 0x00, 0x70, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xbb}
	session = SessionID{0x01, 0x93, 0x4a, 0x1f, 0x00, 0x00, 0x70, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01}
	peerS   = SessionID{0x01, 0x93, 0x4a, 0x1f, 0x00, 0x00, 0x70, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02}
	goneS   = SessionID{0x01, 0x93, 0x4a, 0x1f, 0x00, 0x00, 0x70, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03}
)

// goldenFrames returns one frame of every kind, in kind order. Their bytes
// are the compatibility contract (testdata/golden) and the examples in
// docs/protocol.md; change them only together with both.
func goldenFrames() []Frame {
	return []Frame{
		&Hello{Client: "weft-ts/0.1.0", Token: "tok", Agent: agentA, User: User{Name: "Ada", Color: "#e4572e"}},
		&Join{Docs: []JoinDoc{
			{Doc: "notes", Version: crdt.Version{agentA: 5, agentB: 3}},
			{Doc: "todo"},
		}},
		&Leave{Docs: []string{"todo"}},
		&Delta{Doc: "notes", ClientSeq: 1, Delta: crdt.Delta{
			Agents: []crdt.AgentKey{agentA, agentB},
			Ops: []crdt.Op{
				// "hé" typed by A after B's third code point.
				{Kind: crdt.OpInsert, Agent: 0, Seq: 5, Lamport: 8, Len: 2, Origin: crdt.Ref{Agent: 1, Seq: 2}, Text: "hé"},
				// A deletes B's first code point.
				{Kind: crdt.OpDelete, Agent: 0, Seq: 7, Lamport: 10, Len: 1, Target: crdt.Ref{Agent: 1, Seq: 0}},
			},
		}},
		&Presence{Doc: "notes", Clock: 7, User: User{Name: "Ada", Color: "#e4572e"},
			Cursor: crdt.Anchor{ID: crdt.ID{Agent: agentA, Seq: 6}, Assoc: crdt.AssocLeft},
			Selections: []Selection{{
				Anchor: crdt.Anchor{Edge: -1},
				Head:   crdt.Anchor{ID: crdt.ID{Agent: agentA, Seq: 6}, Assoc: crdt.AssocLeft},
			}},
		},
		&Refresh{Token: "tok2"},
		&Ping{Nonce: 42},
		&Pong{Nonce: 42},
		&Welcome{Server: "weft/0.1.0", Session: session, ExpiresAt: 1767225600000, Limits: DefaultLimits()},
		&Sync{Doc: "notes", Seq: 12, Version: crdt.Version{agentA: 7, agentB: 3}, Delta: crdt.Delta{
			Agents: []crdt.AgentKey{agentB},
			Ops: []crdt.Op{
				{Kind: crdt.OpInsert, Agent: 0, Seq: 0, Lamport: 1, Len: 3, Origin: crdt.Ref{Agent: crdt.RootAgent}, Text: "abc"},
			},
		}},
		&Ack{Doc: "notes", ClientSeq: 1, Seq: 13},
		&Update{Doc: "notes", Seq: 14, Author: agentB, Delta: crdt.Delta{
			Agents: []crdt.AgentKey{agentB},
			Ops: []crdt.Op{
				{Kind: crdt.OpInsert, Agent: 0, Seq: 3, Lamport: 11, Len: 1, Origin: crdt.Ref{Agent: 0, Seq: 2}, Text: "!"},
			},
		}},
		&PresenceUpdate{Doc: "notes",
			Peers: []Peer{{Session: peerS, Agent: agentB, User: User{Name: "Grace", Color: "#17bebb"}, Clock: 3,
				Cursor: crdt.Anchor{Edge: 1}}},
			Gone: []SessionID{goneS},
		},
		&Refreshed{ExpiresAt: 1767229200000},
		&Error{Code: CodeRateLimited, Message: "slow down", Doc: "notes", ClientSeq: 2, RetryAfterMs: 1500},
		&GoingAway{Reason: "restart", RetryAfterMs: 5000},
	}
}

// raw builds a msgpack value from Go values with the reflective encoder. It
// makes frames the checking Encoder refuses to produce.
func raw(tb testing.TB, v ...any) []byte {
	tb.Helper()
	if k, ok := v[0].(Kind); ok {
		v[0] = int(k) // a fixint, not msgpack's uint8 form
	}
	b, err := msgpack.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func mustEncode(tb testing.TB, f Frame) []byte {
	tb.Helper()
	b, err := Encode(nil, f)
	if err != nil {
		tb.Fatalf("encode %s: %v", f.Kind(), err)
	}
	return b
}

func mustDecode(tb testing.TB, b []byte) Frame {
	tb.Helper()
	f, err := Decode(b)
	if err != nil {
		tb.Fatalf("decode % x: %v", b, err)
	}
	return f
}

func equalFrames(a, b Frame) bool { return reflect.DeepEqual(a, b) }

// hexDump renders bytes as docs/protocol.md shows them: 16 per line.
func hexDump(b []byte) string {
	var s strings.Builder
	for i, c := range b {
		switch {
		case i == 0:
		case i%16 == 0:
			s.WriteByte('\n')
		default:
			s.WriteByte(' ')
		}
		s.WriteString(hex.EncodeToString([]byte{c}))
	}
	return s.String()
}
