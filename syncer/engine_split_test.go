package syncer_test

import (
	"strings"
	"testing"
	"time"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
	"github.com/weft-sync/weft/syncer"
)

// A change larger than one Update frame may carry (here a 1.2 MiB insert,
// over MaxOpTextBytes and half a frame) becomes several records, each a
// valid frame; members receive all of them and converge, and the edit's
// reply waits for the last one.
func TestEngine_LargeChangeSplitsIntoFrames(t *testing.T) {
	h := newEngineHarness(t, syncer.EngineOptions{})
	b := h.join("b", true, nil)
	text := strings.Repeat("héllo wörld, ", 1200<<10/14)
	h.step(syncer.EditIn{Edits: []syncer.Edit{{Pos: 0, Insert: text}}, Author: syncer.Author{Subject: "api"}, Token: 1})
	if len(h.log) < 2 {
		t.Fatalf("a %d-byte insert went into %d record(s), want several", len(text), len(h.log))
	}
	for _, f := range b.take() {
		if u, ok := f.(*protocol.Update); ok {
			if err := b.replica.Apply(u.Delta); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := b.replica.String(); got != text {
		t.Fatalf("member holds %d bytes, want %d", len(got), len(text))
	}
	if len(h.replies) != 0 {
		t.Fatalf("replied before the records were durable: %+v", h.replies)
	}
	h.persist(nil)
	if len(h.replies) != 1 || h.replies[0].Err != nil || h.replies[0].Seq != h.log[len(h.log)-1].Seq {
		t.Fatalf("replies %+v, want one for seq %d", h.replies, h.log[len(h.log)-1].Seq)
	}
	// A fresh replica rebuilt from the records alone holds the same text.
	r := crdt.New(testAgent(99))
	for _, rec := range h.log {
		f, err := protocol.Decode(rec.Data[len(rec.Data)-updateLen(t, rec.Data):])
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Apply(f.(*protocol.Update).Delta); err != nil {
			t.Fatal(err)
		}
	}
	if r.String() != text {
		t.Fatal("records do not rebuild the text")
	}
}

// updateLen finds the Update frame at the end of a log record by trying
// suffixes: the header before it is short.
func updateLen(t *testing.T, rec []byte) int {
	for i := 0; i < len(rec) && i < 1024; i++ {
		if f, err := protocol.Decode(rec[i:]); err == nil {
			if _, ok := f.(*protocol.Update); ok {
				return len(rec) - i
			}
		}
	}
	t.Fatal("no Update frame in record")
	return 0
}

// A session never receives its own presence: when a and b both publish in
// one relay window, each gets only the other's entry, and a bystander gets
// both.
func TestEngine_PresenceNotEchoed(t *testing.T) {
	h := newEngineHarness(t, syncer.EngineOptions{})
	a, b, c := h.join("a", true, nil), h.join("b", true, nil), h.join("c", true, nil)
	for _, m := range []*engineMember{a, b, c} {
		m.take()
	}
	for i, m := range []*engineMember{a, b} {
		h.step(syncer.PresenceIn{Session: m.id, Presence: &protocol.Presence{Doc: "doc", Clock: uint64(i + 1),
			User: protocol.User{Name: m.name}, Cursor: crdt.Anchor{Edge: -1}}})
	}
	h.tick(time.Second)
	sessions := func(m *engineMember) map[protocol.SessionID]bool {
		got := map[protocol.SessionID]bool{}
		for _, f := range m.take() {
			if pu, ok := f.(*protocol.PresenceUpdate); ok {
				for _, p := range pu.Peers {
					got[p.Session] = true
				}
			}
		}
		return got
	}
	if got := sessions(a); got[a.id] || !got[b.id] {
		t.Fatalf("a received %v, want b's entry only", got)
	}
	if got := sessions(b); got[b.id] || !got[a.id] {
		t.Fatalf("b received %v, want a's entry only", got)
	}
	if got := sessions(c); !got[a.id] || !got[b.id] || len(got) != 2 {
		t.Fatalf("c received %v, want a's and b's", got)
	}
}
