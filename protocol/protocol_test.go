package protocol

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/weft-sync/weft/crdt"
)

func key(i int) crdt.AgentKey {
	var k crdt.AgentKey
	k[0], k[14], k[15] = 0xa9, byte(i>>8), byte(i)
	return k
}

func insert(agent uint32, seq, lamport uint64, origin crdt.Ref, text string) crdt.Op {
	return crdt.Op{Kind: crdt.OpInsert, Agent: agent, Seq: seq, Lamport: lamport,
		Len: uint64(utf8.RuneCountInString(text)), Origin: origin, Text: text}
}

func del(agent uint32, seq, lamport, n uint64, target crdt.Ref) crdt.Op {
	return crdt.Op{Kind: crdt.OpDelete, Agent: agent, Seq: seq, Lamport: lamport, Len: n, Target: target}
}

// kb returns key(i) as a slice, for raw frames.
func kb(i int) []byte {
	k := key(i)
	return k[:]
}

var root = crdt.Ref{Agent: crdt.RootAgent}

func roundTrip(t *testing.T, f Frame) []byte {
	t.Helper()
	b := mustEncode(t, f)
	got := mustDecode(t, b)
	if !equalFrames(got, f) {
		t.Fatalf("round trip of %s changed the frame:\n got %#v\nwant %#v", f.Kind(), got, f)
	}
	if again := mustEncode(t, got); !bytes.Equal(again, b) {
		t.Fatalf("re-encoding %s differs:\n got % x\nwant % x", f.Kind(), again, b)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	for _, f := range goldenFrames() {
		t.Run(f.Kind().String(), func(t *testing.T) { roundTrip(t, f) })
	}
}

func TestRoundTripEdgeCases(t *testing.T) {
	maxOps := make([]crdt.Op, MaxOpsPerFrame)
	for i := range maxOps {
		maxOps[i] = insert(0, uint64(i), uint64(i), crdt.Ref{Agent: 0, Seq: uint64(i) - 1}, "x")
	}
	maxOps[0].Origin = root
	maxAgents := make([]crdt.AgentKey, MaxAgentsPerDelta)
	maxAgentOps := make([]crdt.Op, MaxAgentsPerDelta)
	for i := range maxAgents {
		maxAgents[i] = key(i)
		maxAgentOps[i] = del(uint32(i), 0, 1, 1, crdt.Ref{Agent: uint32(MaxAgentsPerDelta - 1 - i)})
	}
	bigVersion := make(crdt.Version, MaxVersionEntries)
	for i := range MaxVersionEntries {
		bigVersion[key(i)] = uint64(i + 1)
	}
	maxDocs := make([]string, MaxDocsPerFrame)
	maxJoin := make([]JoinDoc, MaxDocsPerFrame)
	for i := range maxDocs {
		maxDocs[i] = strings.Repeat("d", i+1)
		maxJoin[i].Doc = maxDocs[i]
	}
	longDoc := strings.Repeat("é", MaxDocIDBytes/2)
	edge := crdt.Anchor{Edge: 1, Assoc: crdt.AssocLeft}
	maxSel := make([]Selection, MaxSelections)
	for i := range maxSel {
		maxSel[i] = Selection{Anchor: crdt.Anchor{ID: crdt.ID{Agent: key(i), Seq: MaxCounter}}, Head: edge}
	}
	maxPeers := make([]Peer, MaxPresencePeers)
	maxGone := make([]SessionID, MaxPresencePeers)
	for i := range maxPeers {
		maxPeers[i] = Peer{Session: SessionID(key(i)), Agent: key(i), Clock: uint64(i), Cursor: edge, Selections: maxSel[:2]}
		maxGone[i] = SessionID(key(1000 + i))
	}
	// Text of exactly MaxOpTextBytes: 4-byte code points.
	bigText := strings.Repeat("🙂", MaxOpTextBytes/4)

	cases := []struct {
		name string
		f    Frame
	}{
		{"empty delta", &Delta{Doc: "d", ClientSeq: 1}},
		{"agents but no ops", &Delta{Doc: "d", ClientSeq: 1, Delta: crdt.Delta{Agents: []crdt.AgentKey{key(1)}}}},
		{"root origin", &Delta{Doc: "d", ClientSeq: 2, Delta: crdt.Delta{
			Agents: []crdt.AgentKey{key(1)}, Ops: []crdt.Op{insert(0, 0, 0, root, "a")}}}},
		{"multi-byte text", &Update{Doc: "文書", Seq: 3, Author: key(2), Delta: crdt.Delta{
			Agents: []crdt.AgentKey{key(1), key(2)},
			Ops:    []crdt.Op{insert(1, 10, 40, crdt.Ref{Agent: 0, Seq: 9}, "héllo 🙂 世界\u200d")}}}},
		{"tombstone insert", &Sync{Doc: "d", Delta: crdt.Delta{
			Agents: []crdt.AgentKey{key(1)},
			Ops:    []crdt.Op{{Kind: crdt.OpInsert, Seq: 0, Lamport: 0, Len: 1000, Origin: root}}}}},
		{"counters at MaxCounter", &Delta{Doc: "d", ClientSeq: MaxCounter, Delta: crdt.Delta{
			Agents: []crdt.AgentKey{key(1), key(2)},
			Ops: []crdt.Op{
				insert(0, MaxCounter-1, MaxCounter-1, crdt.Ref{Agent: 1, Seq: MaxCounter}, "z"),
				del(1, MaxCounter-5, MaxCounter-5, 5, crdt.Ref{Agent: 0, Seq: MaxCounter - 5}),
			}}}},
		{"MaxOpsPerFrame ops", &Delta{Doc: "d", ClientSeq: 1, Delta: crdt.Delta{Agents: []crdt.AgentKey{key(0)}, Ops: maxOps}}},
		{"MaxAgentsPerDelta agents", &Update{Doc: "d", Delta: crdt.Delta{Agents: maxAgents, Ops: maxAgentOps}}},
		{"MaxOpTextBytes text", &Delta{Doc: "d", ClientSeq: 1, Delta: crdt.Delta{
			Agents: []crdt.AgentKey{key(0)}, Ops: []crdt.Op{insert(0, 0, 0, root, bigText)}}}},
		{"MaxVersionEntries", &Sync{Doc: "d", Seq: 1, Version: bigVersion, More: true}},
		{"MaxDocsPerFrame join", &Join{Docs: maxJoin}},
		{"MaxDocsPerFrame leave", &Leave{Docs: maxDocs}},
		{"MaxDocIDBytes", &Ack{Doc: longDoc, ClientSeq: 1, Seq: MaxCounter}},
		{"long strings", &Hello{Client: strings.Repeat("c", MaxSoftwareBytes), Token: strings.Repeat("t", MaxTokenBytes),
			User: User{Name: strings.Repeat("n", MaxNameBytes), Color: strings.Repeat("#", MaxColorBytes)}}},
		{"empty strings", &Hello{}},
		{"MaxSelections", &Presence{Doc: "d", Cursor: crdt.Anchor{Edge: -1}, Selections: maxSel}},
		{"MaxPresencePeers", &PresenceUpdate{Doc: "d", Peers: maxPeers, Gone: maxGone}},
		{"empty presence update", &PresenceUpdate{Doc: "d"}},
		{"error without doc", &Error{Code: CodeUnauthorized, Message: strings.Repeat("m", MaxMessageBytes)}},
		{"unknown error code", &Error{Code: 999}},
		{"zero limits", &Welcome{}},
		{"max uint32 limits", &Welcome{Limits: Limits{^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0)}}},
		{"going away", &GoingAway{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { roundTrip(t, c.f) })
	}
}

// TestVersionEncoding checks that version vectors encode deterministically
// although Go randomises map order, and that zero entries are left out.
func TestVersionEncoding(t *testing.T) {
	v := crdt.Version{}
	for i := range 50 {
		v[key(i)] = uint64(i)
	}
	f := &Join{Docs: []JoinDoc{{Doc: "d", Version: v}}}
	first := mustEncode(t, f)
	for range 20 {
		if b := mustEncode(t, f); !bytes.Equal(b, first) {
			t.Fatal("encoding a version vector is not deterministic")
		}
	}
	got := mustDecode(t, first).(*Join).Docs[0].Version
	if len(got) != 49 || !got.Equal(v) {
		t.Fatalf("decoded %d entries, want the 49 non-zero ones", len(got))
	}
	if _, ok := got[key(0)]; ok {
		t.Fatal("zero entry survived")
	}
	// A zero entry on the wire is accepted and dropped.
	z := raw(t, KindJoin, []any{[]any{"d", []any{[]any{kb(1), 0}, []any{kb(2), 7}}}})
	if got := mustDecode(t, z).(*Join).Docs[0].Version; len(got) != 1 || got[key(2)] != 7 {
		t.Fatalf("got %v", got)
	}
}

func TestEncodeAppends(t *testing.T) {
	dst := []byte("prefix")
	out, err := Encode(dst, &Ping{Nonce: 1})
	if err != nil {
		t.Fatal(err)
	}
	if string(out[:6]) != "prefix" || !bytes.Equal(out[6:], []byte{0x92, 0x10, 0x01}) {
		t.Fatalf("got % x", out)
	}
	bad, err := Encode(dst, &Ping{Nonce: MaxCounter + 1})
	if !errors.Is(err, ErrTooLarge) || len(bad) != len(dst) {
		t.Fatalf("got %q, %v", bad, err)
	}
}

// TestTrailingElements checks forward compatibility: elements appended to the
// frame or to any record by a later revision are skipped.
func TestTrailingElements(t *testing.T) {
	k1, k2 := kb(1), kb(2)
	extra := []any{map[string]any{"x": []any{1.5, nil, true}}, "future", []byte{1, 2}}
	anchorID := []any{0, -1, k1, 4}
	sel := []any{[]any{-1, 0, nil, 0}, anchorID}
	cases := []struct {
		name  string
		plain []byte
		more  []byte
	}{
		{"frame", raw(t, KindAck, "d", 1, 2), raw(t, append([]any{KindAck, "d", 1, 2}, extra...)...)},
		{"op and delta",
			raw(t, KindDelta, "d", 1, []any{[]any{k1}, []any{[]any{1, 0, 0, 0, 1, -1, 0, "a"}, []any{2, 0, 1, 1, 1, 0, 0}}}),
			raw(t, KindDelta, "d", 1, []any{[]any{k1}, []any{
				append([]any{1, 0, 0, 0, 1, -1, 0, "a"}, extra...),
				append([]any{2, 0, 1, 1, 1, 0, 0}, extra...),
			}, "more"})},
		{"version entry and join entry",
			raw(t, KindJoin, []any{[]any{"d", []any{[]any{k1, 3}}}}),
			raw(t, KindJoin, []any{[]any{"d", []any{[]any{k1, 3, "x"}}, 9}}, 9)},
		{"anchor, selection and user",
			raw(t, KindPresence, "d", 1, []any{"n", "c"}, anchorID, []any{sel}),
			raw(t, KindPresence, "d", 1, []any{"n", "c", 0}, append(anchorID, extra...), []any{append(sel, extra...)})},
		{"peer",
			raw(t, KindPresenceUpdate, "d", []any{[]any{k1, k2, []any{"n", "c"}, 1, anchorID, []any{}}}, []any{k2}),
			raw(t, KindPresenceUpdate, "d", []any{[]any{k1, k2, []any{"n", "c"}, 1, anchorID, []any{}, extra}}, []any{k2}, extra)},
		{"limits",
			raw(t, KindWelcome, 1, "s", k1, 0, []any{1, 2, 3, 4, 5, 6, 7}),
			raw(t, KindWelcome, 1, "s", k1, 0, []any{1, 2, 3, 4, 5, 6, 7, 8, 9})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := mustDecode(t, c.plain)
			got := mustDecode(t, c.more)
			if !equalFrames(got, want) {
				t.Fatalf("got %#v\nwant %#v", got, want)
			}
		})
	}
}

func TestMalformed(t *testing.T) {
	k1, k2 := kb(1), kb(2)
	delta := func(ops ...any) []byte { return raw(t, KindDelta, "d", 1, []any{[]any{k1, k2}, ops}) }
	cases := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"empty", nil, ErrMalformed},
		{"not an array", []byte{0x01}, ErrMalformed},
		{"empty array", []byte{0x90}, ErrMalformed},
		{"kind not a fixint", raw(t, uint64(KindAck)+0x100, "d", 1, 1), ErrMalformed},
		{"kind as a string", raw(t, "ack"), ErrMalformed},
		{"unknown kind", raw(t, 0x7f, 1, 2), ErrUnknownKind},
		{"zero kind", raw(t, 0), ErrUnknownKind},
		{"trailing bytes", append(raw(t, KindPing, 1), 0xc0), ErrMalformed},
		{"missing field", raw(t, KindAck, "d", 1), ErrMalformed},
		{"nil for uint", raw(t, KindAck, "d", nil, 1), ErrMalformed},
		{"negative uint", raw(t, KindAck, "d", -1, 1), ErrMalformed},
		{"float for uint", raw(t, KindAck, "d", 1.0, 1), ErrMalformed},
		{"bin for string", raw(t, KindAck, []byte("d"), 1, 1), ErrMalformed},
		{"string for key", raw(t, KindUpdate, "d", 1, string(k1), []any{[]any{}, []any{}}), ErrMalformed},
		{"short key", raw(t, KindUpdate, "d", 1, k1[:15], []any{[]any{}, []any{}}), ErrMalformed},
		{"empty doc", raw(t, KindAck, "", 1, 1), ErrMalformed},
		{"control char in doc", raw(t, KindAck, "a\nb", 1, 1), ErrMalformed},
		{"invalid UTF-8 doc", raw(t, KindAck, "a\xffb", 1, 1), ErrMalformed},
		{"zero client seq", raw(t, KindAck, "d", 0, 1), ErrMalformed},
		{"empty join", raw(t, KindJoin, []any{}), ErrMalformed},
		{"duplicate join doc", raw(t, KindJoin, []any{[]any{"d", []any{}}, []any{"d", []any{}}}), ErrMalformed},
		{"duplicate leave doc", raw(t, KindLeave, []any{"d", "e", "d"}), ErrMalformed},
		{"duplicate version key", raw(t, KindJoin, []any{[]any{"d", []any{[]any{k1, 1}, []any{k1, 2}}}}), ErrMalformed},
		{"duplicate agent", raw(t, KindDelta, "d", 1, []any{[]any{k1, k1}, []any{}}), ErrMalformed},
		{"agent index out of range", delta([]any{1, 2, 0, 0, 1, -1, 0, "a"}), ErrMalformed},
		{"origin index out of range", delta([]any{1, 0, 0, 0, 1, 2, 0, "a"}), ErrMalformed},
		{"origin below root", delta([]any{1, 0, 0, 0, 1, -2, 0, "a"}), ErrMalformed},
		{"root origin with seq", delta([]any{1, 0, 0, 0, 1, -1, 3, "a"}), ErrMalformed},
		{"root delete target", delta([]any{2, 0, 0, 0, 1, -1, 0}), ErrMalformed},
		{"unknown op kind", delta([]any{3, 0, 0, 0, 1, 0, 0}), ErrMalformed},
		{"insert without text", delta([]any{1, 0, 0, 0, 1, -1, 0}), ErrMalformed},
		{"zero length", delta([]any{2, 0, 0, 0, 0, 1, 0}), ErrMalformed},
		{"text length mismatch", delta([]any{1, 0, 0, 0, 2, -1, 0, "é"}), ErrMalformed},
		{"invalid UTF-8 text", delta([]any{1, 0, 0, 0, 1, -1, 0, "\xc3"}), ErrMalformed},
		{"bad edge", raw(t, KindPresence, "d", 1, []any{"", ""}, []any{2, 0, nil, 0}, []any{}), ErrMalformed},
		{"bad assoc", raw(t, KindPresence, "d", 1, []any{"", ""}, []any{0, 1, k1, 0}, []any{}), ErrMalformed},
		{"edge with key", raw(t, KindPresence, "d", 1, []any{"", ""}, []any{1, 0, k1, 0}, []any{}), ErrMalformed},
		{"edge with seq", raw(t, KindPresence, "d", 1, []any{"", ""}, []any{1, 0, nil, 4}, []any{}), ErrMalformed},
		{"id anchor without key", raw(t, KindPresence, "d", 1, []any{"", ""}, []any{0, 0, nil, 4}, []any{}), ErrMalformed},
		{"hello version 2", raw(t, KindHello, 2, "c", "t", k1, []any{"", ""}), ErrUnsupportedVersion},
		{"welcome version 0", raw(t, KindWelcome, 0, "s", k1, 0, []any{1, 2, 3, 4, 5, 6, 7}), ErrUnsupportedVersion},
		{"empty refresh token", raw(t, KindRefresh, ""), ErrMalformed},
		{"zero error code", raw(t, KindError, 0, "", "", 0, 0), ErrMalformed},
		{"more not a bool", raw(t, KindSync, "d", 1, []any{}, []any{[]any{}, []any{}}, 1), ErrMalformed},
		{"reserved code in skipped element", append(raw(t, KindPing, 1)[:0:0], 0x93, 0x10, 0x01, 0xc1), ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := Decode(c.frame)
			if !errors.Is(err, c.want) {
				t.Fatalf("Decode(% x) = %v, %v; want %v", c.frame, f, err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "protocol: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
		})
	}
}

// TestEncodeRejects checks that the encoder refuses what the decoder would.
func TestEncodeRejects(t *testing.T) {
	one := []crdt.AgentKey{key(1)}
	cases := []struct {
		name string
		f    Frame
		want error
	}{
		{"empty doc", &Ack{ClientSeq: 1}, ErrMalformed},
		{"zero client seq", &Delta{Doc: "d"}, ErrMalformed},
		{"invalid UTF-8", &Hello{Client: "\xff"}, ErrMalformed},
		{"agent index", &Delta{Doc: "d", ClientSeq: 1, Delta: crdt.Delta{Agents: one, Ops: []crdt.Op{insert(1, 0, 0, root, "a")}}}, ErrMalformed},
		{"duplicate agent", &Delta{Doc: "d", ClientSeq: 1, Delta: crdt.Delta{Agents: []crdt.AgentKey{key(1), key(1)}}}, ErrMalformed},
		{"text mismatch", &Delta{Doc: "d", ClientSeq: 1, Delta: crdt.Delta{Agents: one,
			Ops: []crdt.Op{{Kind: crdt.OpInsert, Len: 2, Origin: root, Text: "a"}}}}, ErrMalformed},
		{"delete at root", &Delta{Doc: "d", ClientSeq: 1, Delta: crdt.Delta{Agents: one,
			Ops: []crdt.Op{del(0, 0, 0, 1, root)}}}, ErrMalformed},
		{"bad assoc", &Presence{Doc: "d", Cursor: crdt.Anchor{Assoc: 3}}, ErrMalformed},
		{"empty join", &Join{}, ErrMalformed},
		{"duplicate join", &Join{Docs: []JoinDoc{{Doc: "a"}, {Doc: "a"}}}, ErrMalformed},
		{"zero error code", &Error{}, ErrMalformed},
		{"empty refresh", &Refresh{}, ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Encode(nil, c.f); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

// TestLimits checks every limit on both sides: the encoder refuses a frame
// one over it, and the decoder refuses the bytes with ErrTooLarge.
func TestLimits(t *testing.T) {
	k1 := kb(1)
	over := func(n int) string { return strings.Repeat("x", n+1) }
	opsArr := func(n int) []any {
		ops := make([]any, n)
		for i := range ops {
			ops[i] = []any{2, 0, i, i, 1, 0, 0}
		}
		return ops
	}
	manyOps := make([]crdt.Op, MaxOpsPerFrame+1)
	for i := range manyOps {
		manyOps[i] = del(0, uint64(i), uint64(i), 1, crdt.Ref{})
	}
	manyAgents := make([]crdt.AgentKey, MaxAgentsPerDelta+1)
	agentsArr := make([]any, MaxAgentsPerDelta+1)
	for i := range manyAgents {
		manyAgents[i] = key(i)
		agentsArr[i] = kb(i)
	}
	bigVersion := make(crdt.Version)
	versionArr := make([]any, MaxVersionEntries+1)
	for i := range MaxVersionEntries + 1 {
		bigVersion[key(i)] = 1
		versionArr[i] = []any{kb(i), 1}
	}
	manyDocs := make([]string, MaxDocsPerFrame+1)
	manyJoin := make([]JoinDoc, MaxDocsPerFrame+1)
	docsArr := make([]any, MaxDocsPerFrame+1)
	joinArr := make([]any, MaxDocsPerFrame+1)
	for i := range manyDocs {
		manyDocs[i] = strings.Repeat("d", i+1)
		manyJoin[i].Doc = manyDocs[i]
		docsArr[i] = manyDocs[i]
		joinArr[i] = []any{manyDocs[i], []any{}}
	}
	edge := crdt.Anchor{Edge: 1}
	edgeArr := []any{1, 0, nil, 0}
	manySel := make([]Selection, MaxSelections+1)
	selArr := make([]any, MaxSelections+1)
	for i := range manySel {
		manySel[i] = Selection{Anchor: edge, Head: edge}
		selArr[i] = []any{edgeArr, edgeArr}
	}
	manyPeers := make([]Peer, MaxPresencePeers+1)
	peersArr := make([]any, MaxPresencePeers+1)
	manyGone := make([]SessionID, MaxPresencePeers+1)
	goneArr := make([]any, MaxPresencePeers+1)
	for i := range manyPeers {
		manyPeers[i] = Peer{Cursor: edge}
		peersArr[i] = []any{k1, k1, []any{"", ""}, 0, edgeArr, []any{}}
		manyGone[i] = SessionID(key(i))
		goneArr[i] = kb(i)
	}
	hugeText := strings.Repeat("x", MaxOpTextBytes+1)
	textOps := make([]crdt.Op, 17) // 17 × 64 KiB > MaxFrameBytes
	for i := range textOps {
		textOps[i] = insert(0, uint64(i)*MaxOpTextBytes, uint64(i)*MaxOpTextBytes, root, hugeText[1:])
	}
	user := []any{"", ""}

	cases := []struct {
		name  string
		f     Frame  // refused by Encode
		frame []byte // refused by Decode
	}{
		{"MaxFrameBytes",
			&Delta{Doc: "d", ClientSeq: 1, Delta: crdt.Delta{Agents: []crdt.AgentKey{key(0)}, Ops: textOps}},
			append(raw(t, KindPing, 1), make([]byte, MaxFrameBytes)...)},
		{"MaxOpsPerFrame",
			&Delta{Doc: "d", ClientSeq: 1, Delta: crdt.Delta{Agents: []crdt.AgentKey{key(0)}, Ops: manyOps}},
			raw(t, KindDelta, "d", 1, []any{[]any{k1}, opsArr(MaxOpsPerFrame + 1)})},
		{"MaxAgentsPerDelta",
			&Update{Doc: "d", Delta: crdt.Delta{Agents: manyAgents}},
			raw(t, KindUpdate, "d", 1, k1, []any{agentsArr, []any{}})},
		{"MaxVersionEntries",
			&Sync{Doc: "d", Version: bigVersion},
			raw(t, KindSync, "d", 1, versionArr, []any{[]any{}, []any{}}, false)},
		{"MaxDocsPerFrame join", &Join{Docs: manyJoin}, raw(t, KindJoin, joinArr)},
		{"MaxDocsPerFrame leave", &Leave{Docs: manyDocs}, raw(t, KindLeave, docsArr)},
		{"MaxDocIDBytes", &Ack{Doc: over(MaxDocIDBytes), ClientSeq: 1}, raw(t, KindAck, over(MaxDocIDBytes), 1, 1)},
		{"MaxTokenBytes", &Refresh{Token: over(MaxTokenBytes)}, raw(t, KindRefresh, over(MaxTokenBytes))},
		{"MaxSoftwareBytes", &Hello{Client: over(MaxSoftwareBytes)}, raw(t, KindHello, 1, over(MaxSoftwareBytes), "", k1, user)},
		{"MaxNameBytes", &Hello{User: User{Name: over(MaxNameBytes)}}, raw(t, KindHello, 1, "", "", k1, []any{over(MaxNameBytes), ""})},
		{"MaxColorBytes", &Hello{User: User{Color: over(MaxColorBytes)}}, raw(t, KindHello, 1, "", "", k1, []any{"", over(MaxColorBytes)})},
		{"MaxMessageBytes", &Error{Code: CodeInternal, Message: over(MaxMessageBytes)}, raw(t, KindError, 1, over(MaxMessageBytes), "", 0, 0)},
		{"MaxMessageBytes reason", &GoingAway{Reason: over(MaxMessageBytes)}, raw(t, KindGoingAway, over(MaxMessageBytes), 0)},
		{"MaxOpTextBytes",
			&Delta{Doc: "d", ClientSeq: 1, Delta: crdt.Delta{Agents: []crdt.AgentKey{key(0)}, Ops: []crdt.Op{insert(0, 0, 0, root, hugeText)}}},
			raw(t, KindDelta, "d", 1, []any{[]any{k1}, []any{[]any{1, 0, 0, 0, len(hugeText), -1, 0, hugeText}}})},
		{"MaxSelections", &Presence{Doc: "d", Cursor: edge, Selections: manySel}, raw(t, KindPresence, "d", 0, user, edgeArr, selArr)},
		{"MaxPresencePeers", &PresenceUpdate{Doc: "d", Peers: manyPeers}, raw(t, KindPresenceUpdate, "d", peersArr, []any{})},
		{"MaxPresencePeers gone", &PresenceUpdate{Doc: "d", Gone: manyGone}, raw(t, KindPresenceUpdate, "d", []any{}, goneArr)},
		{"MaxCounter client seq", &Delta{Doc: "d", ClientSeq: MaxCounter + 1}, raw(t, KindDelta, "d", uint64(MaxCounter+1), []any{[]any{}, []any{}})},
		{"MaxCounter seq+len",
			&Delta{Doc: "d", ClientSeq: 1, Delta: crdt.Delta{Agents: []crdt.AgentKey{key(0)}, Ops: []crdt.Op{del(0, MaxCounter, 0, 1, crdt.Ref{})}}},
			raw(t, KindDelta, "d", 1, []any{[]any{k1}, []any{[]any{2, 0, uint64(MaxCounter), 0, 1, 0, 0}}})},
		{"MaxCounter lamport+len",
			&Delta{Doc: "d", ClientSeq: 1, Delta: crdt.Delta{Agents: []crdt.AgentKey{key(0)}, Ops: []crdt.Op{del(0, 0, MaxCounter-1, 2, crdt.Ref{})}}},
			raw(t, KindDelta, "d", 1, []any{[]any{k1}, []any{[]any{2, 0, 0, uint64(MaxCounter - 1), 2, 0, 0}}})},
		{"MaxCounter version", &Join{Docs: []JoinDoc{{Doc: "d", Version: crdt.Version{key(1): MaxCounter + 1}}}},
			raw(t, KindJoin, []any{[]any{"d", []any{[]any{k1, uint64(MaxCounter + 1)}}}})},
		{"MaxCounter anchor", &Presence{Doc: "d", Cursor: crdt.Anchor{ID: crdt.ID{Seq: MaxCounter + 1}}},
			raw(t, KindPresence, "d", 0, user, []any{0, 0, k1, uint64(MaxCounter + 1)}, []any{})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Encode(nil, c.f); !errors.Is(err, ErrTooLarge) {
				t.Errorf("Encode: got %v, want ErrTooLarge", err)
			}
			if _, err := Decode(c.frame); !errors.Is(err, ErrTooLarge) {
				t.Errorf("Decode: got %v, want ErrTooLarge", err)
			}
		})
	}
}

// allocated returns the bytes f allocates on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestHostileCounts feeds headers that claim 2^32-1 elements or bytes, which
// make msgpack v5.4.1's own slice decoding allocate gigabytes (deps.md §3).
// Each must fail at once with a typed error and allocate almost nothing.
func TestHostileCounts(t *testing.T) {
	huge := func(code byte) []byte { return []byte{code, 0xff, 0xff, 0xff, 0xff} }
	k1 := kb(1)
	// head encodes the start of a frame: an array header claiming n
	// elements, then vals; the hostile header follows as the next element.
	head := func(n int, vals ...any) []byte {
		b := raw(t, vals...)
		b[0] = 0x90 | byte(n) // raw's header counts only vals
		return b
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	cases := []struct {
		name  string
		frame []byte
	}{
		{"whole frame array32", huge(0xdd)},
		{"whole frame map32", huge(0xdf)},
		{"whole frame str32", huge(0xdb)},
		{"frame header claims 2^32-1 fields", cat(huge(0xdd), []byte{byte(KindPing), 1})},
		{"ops array32", cat(head(4, KindDelta, "d", 1), []byte{0x92, 0x91}, raw(t, k1)[1:], huge(0xdd))},
		{"agents array32", cat(head(4, KindDelta, "d", 1), []byte{0x92}, huge(0xdd))},
		{"ops array32 in update", cat(head(5, KindUpdate, "d", 1, k1), []byte{0x92, 0x90}, huge(0xdd))},
		{"version array32", cat(head(6, KindSync, "d", 1), huge(0xdd))},
		{"version entry array32", cat(head(6, KindSync, "d", 1), []byte{0x91}, huge(0xdd))},
		{"join docs array32", cat(head(2, KindJoin), huge(0xdd))},
		{"leave docs array16", cat(head(2, KindLeave), []byte{0xdc, 0xff, 0xff})},
		{"selections array32", cat(head(6, KindPresence, "d", 0, []any{"", ""}, []any{1, 0, nil, 0}), huge(0xdd))},
		{"peers array32", cat(head(4, KindPresenceUpdate, "d"), huge(0xdd))},
		{"gone array32", cat(head(4, KindPresenceUpdate, "d", []any{}), huge(0xdd))},
		{"doc str32", cat(head(4, KindAck), huge(0xdb))},
		{"token str32", cat(head(2, KindRefresh), huge(0xdb))},
		{"op text str32", cat(head(4, KindDelta, "d", 1), []byte{0x92, 0x91}, raw(t, k1)[1:], []byte{0x91, 0x98}, raw(t, 1, 0, 0, 0, 1, -1, 0)[1:], huge(0xdb))},
		{"key bin32", cat(head(5, KindUpdate, "d", 1), huge(0xc6))},
		{"skipped trailing array32", cat(head(3, KindPing, 1), huge(0xdd))},
		{"skipped trailing map32", cat(head(3, KindPing, 1), huge(0xdf))},
		{"skipped trailing bin32", cat(head(3, KindPing, 1), huge(0xc6))},
		{"skipped trailing ext32", cat(head(3, KindPing, 1), huge(0xc9))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var err error
			d := NewDecoder()
			n := allocated(func() { _, err = d.Decode(c.frame) })
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Decode(% x) = %v, want ErrMalformed or ErrTooLarge", c.frame, err)
			}
			if n >= 64<<10 {
				t.Fatalf("allocated %d bytes", n)
			}
			t.Logf("% x: %v (%d bytes allocated)", c.frame, err, n)
		})
	}
}

// TestDeepNesting checks that skipping unknown elements does not recurse: a
// frame of nested one-element arrays costs no stack or heap per level.
func TestDeepNesting(t *testing.T) {
	// [0x10, 1, [[[...[nil]...]]]]: a Ping with one trailing element.
	b := raw(t, KindPing, 1, nil)
	b = b[:len(b)-1]
	nest := bytes.Repeat([]byte{0x91}, MaxFrameBytes-len(b)-1)
	frame := append(append(b, nest...), 0xc0)
	var err error
	n := allocated(func() { _, err = Decode(frame) })
	if err != nil {
		t.Fatalf("nested arrays: %v", err)
	}
	if n >= 64<<10 {
		t.Fatalf("allocated %d bytes for %d levels", n, len(nest))
	}
	// Cut short, the same frame owes values it cannot hold.
	if _, err := Decode(frame[:len(frame)-1]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated nesting: %v", err)
	}
}

func TestPeekKind(t *testing.T) {
	for _, f := range goldenFrames() {
		k, err := PeekKind(mustEncode(t, f))
		if err != nil || k != f.Kind() {
			t.Fatalf("PeekKind = %v, %v; want %v", k, err, f.Kind())
		}
	}
	for _, b := range [][]byte{nil, {0x90}, {0x91}, {0x91, 0xcc}, {0x01}, {0xdc, 0x00}} {
		if _, err := PeekKind(b); !errors.Is(err, ErrMalformed) {
			t.Fatalf("PeekKind(% x) = %v", b, err)
		}
	}
}

func TestKinds(t *testing.T) {
	ks := Kinds()
	if len(ks) != 16 {
		t.Fatalf("%d kinds", len(ks))
	}
	for _, k := range ks {
		if k > codePosFixintMax || newFrame(k) == nil || newFrame(k).Kind() != k || strings.HasPrefix(k.String(), "Kind(") {
			t.Errorf("kind %#x is inconsistent", uint8(k))
		}
		if !k.FromClient() && !k.FromServer() {
			t.Errorf("nobody sends %s", k)
		}
	}
	if !KindDelta.FromClient() || KindDelta.FromServer() || KindSync.FromClient() || !KindPing.FromClient() || !KindPing.FromServer() {
		t.Error("direction ranges are wrong")
	}
	if Kind(0x7e).String() != "Kind(0x7e)" || Kind(0x7e).Known() {
		t.Error(Kind(0x7e).String())
	}
}

func TestErrorCodes(t *testing.T) {
	seen := make(map[CloseCode]ErrorCode)
	for c := ErrorCode(1); c <= CodeGoingAway; c++ {
		if strings.HasPrefix(c.String(), "ErrorCode(") {
			t.Errorf("code %d has no name", c)
		}
		cc := c.CloseCode()
		if cc < 1000 || cc >= 5000 || cc == CloseAbnormal {
			t.Errorf("%s closes with %d", c, cc)
		}
		if prev, dup := seen[cc]; dup && cc >= 4000 {
			t.Errorf("%s and %s share close code %d", prev, c, cc)
		}
		seen[cc] = c
	}
	if ErrorCode(999).String() != "ErrorCode(999)" || ErrorCode(999).CloseCode() != CloseInternal {
		t.Error("unknown codes")
	}
	for _, c := range []struct {
		code  ErrorCode
		close CloseCode
		retry Retry
	}{
		{CodeTokenExpired, 4001, RetryNewToken},
		{CodeUnauthorized, 1008, RetryNewToken},
		{CodeForbidden, 4003, RetryNever},
		{CodeUnsupportedVersion, 4002, RetryNever},
		{CodeMalformed, 4005, RetryNever},
		{CodeTooLarge, 1009, RetryBackoff},
		{CodeInternal, 1011, RetryBackoff},
		{CodeRateLimited, 1013, RetryBackoff},
		{CodeOverloaded, 1013, RetryBackoff},
		{CodeSlowConsumer, 4008, RetryBackoff},
		{CodeMissingDependency, 4010, RetryBackoff},
		{CodeTimeout, 4013, RetryBackoff},
		{CodeGoingAway, 1001, RetryBackoff},
	} {
		if got := c.code.CloseCode(); got != c.close {
			t.Errorf("%s closes with %d, want %d", c.code, got, c.close)
		}
		if got := c.close.Retry(); got != c.retry {
			t.Errorf("close %d (%s): retry %s, want %s", c.close, c.close, got, c.retry)
		}
	}
	for _, c := range []CloseCode{CloseNormal, 4999, CloseAbnormal, CloseServiceRestart} {
		want := RetryBackoff
		if c == CloseNormal {
			want = RetryNever
		}
		if got := c.Retry(); got != want {
			t.Errorf("close %d: %s", c, got)
		}
	}
	if CloseTokenExpired.String() != "token_expired" || CloseCode(4999).String() != "CloseCode(4999)" {
		t.Error(CloseTokenExpired.String(), CloseCode(4999).String())
	}

	for err, want := range map[error]ErrorCode{
		malformed("x", "y"):                   CodeMalformed,
		tooLarge("x", 2, 1):                   CodeTooLarge,
		errorf(ErrUnknownKind, "x", "y"):      CodeUnknownKind,
		errorf(ErrUnsupportedVersion, "", ""): CodeUnsupportedVersion,
		crdt.ErrInvalid:                       CodeInvalidDelta,
		&crdt.MissingError{}:                  CodeMissingDependency,
		errors.New("disk full"):               CodeInternal,
	} {
		if got := CodeOf(err); got != want {
			t.Errorf("CodeOf(%v) = %s, want %s", err, got, want)
		}
	}
	e := &Error{Code: CodeForbidden, Doc: "d", Message: "read only"}
	var target *Error
	if err := error(e); !errors.As(err, &target) || err.Error() != "protocol: server error forbidden (doc d): read only" {
		t.Errorf("Error() = %q", e.Error())
	}
}

// TestAllocs pins the allocation counts of the hot paths.
func TestAllocs(t *testing.T) {
	f := benchDelta(1)
	enc := NewEncoder()
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() {
		buf, _ = enc.Encode(buf[:0], f)
	}); n != 0 {
		t.Errorf("encoding a delta allocates %.0f times", n)
	}
	dec := NewDecoder()
	frame := mustEncode(t, f)
	// The frame struct, the doc string, the agent table, the op slice and the
	// op's text.
	if n := testing.AllocsPerRun(100, func() { _, _ = dec.Decode(frame) }); n > 5 {
		t.Errorf("decoding a 1-op delta allocates %.0f times", n)
	}
}
