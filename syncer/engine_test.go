package syncer_test

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
	"github.com/weft-sync/weft/syncer"
)

// engineHarness drives one Engine with fake time and plays the hub's part:
// it keeps the records Ready hands out until the test says they are
// persisted, and routes Sends and Broadcasts to per-session inboxes of
// decoded frames. Every step runs Ready/Advance, so a test reads what one
// input caused from the inboxes and counters.
type engineHarness struct {
	t   *testing.T
	e   *syncer.Engine
	now time.Time

	members  map[string]*engineMember // by name
	byID     map[protocol.SessionID]*engineMember
	log      []syncer.Record // handed out, in order
	durable  uint64          // newest seq reported persisted
	snaps    []syncer.Record
	replies  []syncer.Reply
	sessions int
}

type engineMember struct {
	name     string
	id       protocol.SessionID
	agent    crdt.AgentKey
	replica  *crdt.Text
	inbox    []protocol.Frame
	seq      uint64 // client seq of the last Delta
	canWrite bool
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newEngineHarness(t *testing.T, opts syncer.EngineOptions) *engineHarness {
	return &engineHarness{
		t: t, now: t0,
		e:       syncer.NewEngine("doc", crdt.New(serverAgent), 0, 0, nil, opts),
		members: map[string]*engineMember{}, byID: map[protocol.SessionID]*engineMember{},
	}
}

// step feeds one input and carries out Ready.
func (h *engineHarness) step(in syncer.Input) {
	h.t.Helper()
	h.e.Step(h.now, in)
	rd := h.e.Ready()
	h.e.Advance()
	h.log = append(h.log, rd.Records...)
	for _, s := range rd.Sends {
		if m := h.byID[s.To]; m != nil {
			m.inbox = append(m.inbox, h.decode(s.Frame))
		}
	}
	for _, b := range rd.Broadcasts {
		f := h.decode(b.Frame)
		for _, m := range h.members {
			if m.id != b.Except && h.byID[m.id] != nil {
				m.inbox = append(m.inbox, f)
			}
		}
	}
	h.replies = append(h.replies, rd.Replies...)
	if rd.Snapshot != nil {
		h.snaps = append(h.snaps, *rd.Snapshot)
	}
}

func (h *engineHarness) decode(b []byte) protocol.Frame {
	h.t.Helper()
	f, err := protocol.Decode(b)
	if err != nil {
		h.t.Fatalf("engine produced an undecodable frame: %v", err)
	}
	return f
}

// join subscribes a new member whose replica starts from replica (nil: empty).
func (h *engineHarness) join(name string, canWrite bool, replica *crdt.Text) *engineMember {
	h.t.Helper()
	h.sessions++
	m := &engineMember{name: name, agent: testAgent(byte(h.sessions)), canWrite: canWrite}
	m.id[0], m.id[15] = byte(h.sessions), 0xee
	m.replica = crdt.New(m.agent)
	if replica != nil {
		m.replica = replica
		m.agent = replica.Agent()
	}
	h.members[name] = m
	h.byID[m.id] = m
	h.step(syncer.JoinIn{
		Member:  syncer.Member{Session: m.id, Agent: m.agent, Subject: name, User: protocol.User{Name: name}, CanWrite: canWrite},
		Version: m.replica.Version(),
	})
	return m
}

func (h *engineHarness) leave(m *engineMember) {
	h.step(syncer.LeaveIn{Session: m.id})
	delete(h.byID, m.id)
	delete(h.members, m.name)
}

// edit makes a local edit in m's replica and returns the delta, unsent.
func (m *engineMember) edit(t *testing.T, fn func(r *crdt.Text) (crdt.Delta, error)) crdt.Delta {
	t.Helper()
	d, err := fn(m.replica)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// send steps a Delta from m with the next client seq and returns that seq.
func (h *engineHarness) send(m *engineMember, d crdt.Delta) uint64 {
	m.seq++
	h.step(syncer.DeltaIn{Session: m.id, ClientSeq: m.seq, Delta: d})
	return m.seq
}

// persist reports every record handed out as durable (or failed).
func (h *engineHarness) persist(err error) {
	h.t.Helper()
	if len(h.log) == 0 {
		h.t.Fatal("persist with no records handed out")
	}
	last := h.log[len(h.log)-1].Seq
	h.step(syncer.PersistedIn{Seq: last, Err: err})
	if err == nil {
		h.durable = last
	}
}

func (h *engineHarness) tick(d time.Duration) {
	h.now = h.now.Add(d)
	h.step(syncer.TickIn{})
}

// take returns and clears m's inbox.
func (m *engineMember) take() []protocol.Frame {
	fs := m.inbox
	m.inbox = nil
	return fs
}

func ofKind[F protocol.Frame](fs []protocol.Frame) []F {
	var out []F
	for _, f := range fs {
		if x, ok := f.(F); ok {
			out = append(out, x)
		}
	}
	return out
}

func testAgent(n byte) crdt.AgentKey {
	var k crdt.AgentKey
	k[0], k[15] = n, 0xaa
	return k
}

func mustCheckText(t *testing.T, r *crdt.Text, want string) {
	t.Helper()
	if got := r.String(); got != want {
		t.Fatalf("text %q, want %q", got, want)
	}
}

func TestEngine_JoinSyncsWhatClientLacks(t *testing.T) {
	h := newEngineHarness(t, syncer.EngineOptions{})
	a := h.join("a", true, nil)
	h.send(a, a.edit(t, func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "héllo 😀") }))
	h.persist(nil)
	a.take()

	// A client with nothing gets everything, and the server's version.
	b := h.join("b", true, nil)
	syncs := ofKind[*protocol.Sync](b.take())
	if len(syncs) != 1 || syncs[0].More {
		t.Fatalf("got %d syncs", len(syncs))
	}
	if err := b.replica.Apply(syncs[0].Delta); err != nil {
		t.Fatal(err)
	}
	mustCheckText(t, b.replica, "héllo 😀")
	if !syncs[0].Version.Equal(h.e.Text().Version()) || syncs[0].Seq != 1 {
		t.Fatalf("sync version %v seq %d, want %v seq 1", syncs[0].Version, syncs[0].Seq, h.e.Text().Version())
	}

	// A client that holds part of it gets exactly the rest.
	c := h.join("c", true, b.replica.Fork(testAgent(99)))
	h.send(a, a.edit(t, func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(r.Len(), "!") }))
	h.persist(nil)
	c.take()
	h.leave(c)
	h.byID[c.id], h.members["c"] = c, c
	h.step(syncer.JoinIn{Member: syncer.Member{Session: c.id, Agent: c.agent, CanWrite: true}, Version: c.replica.Version()})
	syncs = ofKind[*protocol.Sync](c.take())
	if len(syncs) != 1 || len(syncs[0].Delta.Ops) != 1 || syncs[0].Delta.Ops[0].Text != "!" {
		t.Fatalf("rejoin sync: %+v", syncs)
	}
	// And a client that is up to date gets an empty delta with the version.
	d := h.join("d", true, h.e.Text().Fork(testAgent(98)))
	syncs = ofKind[*protocol.Sync](d.take())
	if len(syncs) != 1 || !syncs[0].Delta.Empty() || !syncs[0].Version.Equal(h.e.Text().Version()) {
		t.Fatalf("up-to-date sync: %+v", syncs)
	}
}

func TestEngine_BroadcastAtOnceAckAfterPersist(t *testing.T) {
	h := newEngineHarness(t, syncer.EngineOptions{})
	a, b := h.join("a", true, nil), h.join("b", true, nil)
	a.take()
	b.take()
	seq := h.send(a, a.edit(t, func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "x") }))
	if len(h.log) != 1 || h.log[0].Seq != 1 {
		t.Fatalf("records %+v, want seq 1", h.log)
	}
	ups := ofKind[*protocol.Update](b.take())
	if len(ups) != 1 || ups[0].Seq != 1 || ups[0].Author != a.agent {
		t.Fatalf("b got %+v, want one update at seq 1 by a", ups)
	}
	if fs := a.take(); len(fs) != 0 {
		t.Fatalf("a got %v before its record is durable", fs)
	}
	if !h.e.Busy() {
		t.Fatal("engine not busy with an unpersisted record")
	}
	// A failed append releases nothing.
	h.persist(errors.New("disk full"))
	if fs := a.take(); len(fs) != 0 {
		t.Fatalf("a got %v after a failed append", fs)
	}
	h.persist(nil)
	acks := ofKind[*protocol.Ack](a.take())
	if len(acks) != 1 || acks[0].ClientSeq != seq || acks[0].Seq != 1 {
		t.Fatalf("a got %+v, want ack of %d at 1", acks, seq)
	}
	if h.e.Busy() {
		t.Fatal("engine busy after everything is durable")
	}

	// Acks are released in order of durability: persisting up to 2 of 3
	// releases two.
	for i := range 3 {
		h.send(a, a.edit(t, func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(r.Len(), fmt.Sprint(i)) }))
	}
	h.step(syncer.PersistedIn{Seq: 3})
	if acks := ofKind[*protocol.Ack](a.take()); len(acks) != 2 || acks[1].Seq != 3 {
		t.Fatalf("after persisting to 3: %+v", acks)
	}
	h.step(syncer.PersistedIn{Seq: 4})
	if acks := ofKind[*protocol.Ack](a.take()); len(acks) != 1 || acks[0].Seq != 4 {
		t.Fatalf("after persisting to 4: %+v", acks)
	}
	mustCheckText(t, h.e.Text(), "x012")
}

func TestEngine_DuplicateDeltaAckedWithoutRecord(t *testing.T) {
	h := newEngineHarness(t, syncer.EngineOptions{})
	a, b := h.join("a", true, nil), h.join("b", true, nil)
	d := a.edit(t, func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "once") })
	h.send(a, d)
	h.persist(nil)
	a.take()
	b.take()
	// Resent (say, after a reconnect the ack did not reach the client).
	seq := h.send(a, d)
	if len(h.log) != 1 {
		t.Fatalf("a duplicate made a record: %d records", len(h.log))
	}
	if acks := ofKind[*protocol.Ack](a.take()); len(acks) != 1 || acks[0].ClientSeq != seq || acks[0].Seq != 1 {
		t.Fatalf("duplicate ack: %+v", acks)
	}
	if fs := b.take(); len(fs) != 0 {
		t.Fatalf("a duplicate was broadcast: %v", fs)
	}
	mustCheckText(t, h.e.Text(), "once")
}

func TestEngine_MissingDependencyParkedThenApplied(t *testing.T) {
	h := newEngineHarness(t, syncer.EngineOptions{ParkTimeout: 5 * time.Second})
	a, b := h.join("a", true, nil), h.join("b", true, nil)
	first := a.edit(t, func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "ab") })
	second := a.edit(t, func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(2, "c") })
	a.take()
	b.take()

	s2 := h.send(a, second)
	if len(h.log) != 0 || len(a.inbox) != 0 || len(b.inbox) != 0 {
		t.Fatalf("a delta with missing deps had effects: %d records, a %v, b %v", len(h.log), a.inbox, b.inbox)
	}
	if dl := h.e.Deadline(); !dl.Equal(h.now.Add(5 * time.Second)) {
		t.Fatalf("deadline %v, want the park timeout", dl)
	}
	h.tick(time.Second) // not yet
	s1 := h.send(a, first)
	if len(h.log) != 2 {
		t.Fatalf("%d records after the dependency arrived, want 2", len(h.log))
	}
	if ups := ofKind[*protocol.Update](b.take()); len(ups) != 2 {
		t.Fatalf("b got %d updates, want 2", len(ups))
	}
	h.persist(nil)
	acks := ofKind[*protocol.Ack](a.take())
	got := []uint64{}
	for _, ack := range acks {
		got = append(got, ack.ClientSeq)
	}
	slices.Sort(got)
	if !slices.Equal(got, []uint64{s2, s1}) {
		t.Fatalf("acked client seqs %v, want %v", got, []uint64{s2, s1})
	}
	mustCheckText(t, h.e.Text(), "abc")
	// Nothing is left to time out.
	h.tick(time.Minute)
	if errs := ofKind[*protocol.Error](a.take()); len(errs) != 0 {
		t.Fatalf("errors after the parked delta applied: %+v", errs)
	}
}

func TestEngine_MissingDependencyTimesOut(t *testing.T) {
	h := newEngineHarness(t, syncer.EngineOptions{ParkTimeout: 5 * time.Second})
	a := h.join("a", true, nil)
	a.edit(t, func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "ab") }) // never sent
	second := a.edit(t, func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(2, "c") })
	a.take()
	seq := h.send(a, second)
	h.tick(5*time.Second - time.Millisecond)
	if fs := a.take(); len(fs) != 0 {
		t.Fatalf("before the timeout: %v", fs)
	}
	h.tick(time.Millisecond)
	errs := ofKind[*protocol.Error](a.take())
	if len(errs) != 1 || errs[0].Code != protocol.CodeMissingDependency || errs[0].ClientSeq != seq || errs[0].Doc != "doc" {
		t.Fatalf("after the timeout: %+v", errs)
	}
	if len(h.log) != 0 || h.e.Text().Len() != 0 {
		t.Fatal("a timed-out delta left effects")
	}
	if !h.e.Deadline().IsZero() {
		t.Fatalf("deadline %v with nothing pending", h.e.Deadline())
	}
}

func TestEngine_Refusals(t *testing.T) {
	t.Run("read-only", func(t *testing.T) {
		h := newEngineHarness(t, syncer.EngineOptions{})
		r := h.join("r", false, nil)
		w := h.join("w", true, nil)
		r.take()
		w.take()
		seq := h.send(r, r.edit(t, func(x *crdt.Text) (crdt.Delta, error) { return x.Insert(0, "no") }))
		errs := ofKind[*protocol.Error](r.take())
		if len(errs) != 1 || errs[0].Code != protocol.CodeForbidden || errs[0].ClientSeq != seq {
			t.Fatalf("read-only delta: %+v", errs)
		}
		if len(h.log) != 0 || len(w.take()) != 0 || h.e.Text().Len() != 0 {
			t.Fatal("a read-only delta had effects")
		}
	})
	t.Run("doc too large", func(t *testing.T) {
		h := newEngineHarness(t, syncer.EngineOptions{MaxDocChars: 5})
		a := h.join("a", true, nil)
		a.take()
		h.send(a, a.edit(t, func(x *crdt.Text) (crdt.Delta, error) { return x.Insert(0, "1234") }))
		seq := h.send(a, a.edit(t, func(x *crdt.Text) (crdt.Delta, error) { return x.Insert(0, "56") }))
		errs := ofKind[*protocol.Error](a.take())
		if len(errs) != 1 || errs[0].Code != protocol.CodeDocTooLarge || errs[0].ClientSeq != seq {
			t.Fatalf("oversized delta: %+v", errs)
		}
		if len(h.log) != 1 || h.e.Text().Len() != 4 {
			t.Fatalf("%d records, %d chars", len(h.log), h.e.Text().Len())
		}
	})
	t.Run("overloaded", func(t *testing.T) {
		h := newEngineHarness(t, syncer.EngineOptions{MaxUnpersisted: 2})
		a := h.join("a", true, nil)
		a.take()
		for i := range 2 {
			h.send(a, a.edit(t, func(x *crdt.Text) (crdt.Delta, error) { return x.Insert(0, fmt.Sprint(i)) }))
		}
		d := a.edit(t, func(x *crdt.Text) (crdt.Delta, error) { return x.Insert(0, "z") })
		seq := h.send(a, d)
		errs := ofKind[*protocol.Error](a.take())
		if len(errs) != 1 || errs[0].Code != protocol.CodeOverloaded || errs[0].ClientSeq != seq || errs[0].RetryAfterMs == 0 {
			t.Fatalf("third unpersisted delta: %+v", errs)
		}
		if len(h.log) != 2 {
			t.Fatalf("%d records, want 2", len(h.log))
		}
		// Once the log catches up, the resent delta goes through.
		h.persist(nil)
		a.take()
		seq = h.send(a, d)
		h.persist(nil)
		if acks := ofKind[*protocol.Ack](a.take()); len(acks) != 1 || acks[0].ClientSeq != seq {
			t.Fatalf("resent after catching up: %+v", acks)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		h := newEngineHarness(t, syncer.EngineOptions{})
		a := h.join("a", true, nil)
		a.take()
		d := a.edit(t, func(x *crdt.Text) (crdt.Delta, error) { return x.Insert(0, "ok") })
		d.Ops[0].Len = 7 // disagrees with the text
		seq := h.send(a, d)
		errs := ofKind[*protocol.Error](a.take())
		if len(errs) != 1 || errs[0].Code != protocol.CodeInvalidDelta || errs[0].ClientSeq != seq {
			t.Fatalf("invalid delta: %+v", errs)
		}
		if len(h.log) != 0 || h.e.Text().Len() != 0 {
			t.Fatal("an invalid delta had effects")
		}
	})
}

func presenceFrom(m *engineMember, clock uint64, pos int) *protocol.Presence {
	anc, _ := m.replica.AnchorAt(pos, crdt.AssocRight)
	return &protocol.Presence{Doc: "doc", Clock: clock, Cursor: anc}
}

func TestEngine_PresenceCoalescedExpiredAndGone(t *testing.T) {
	const interval, ttl = 100 * time.Millisecond, 2 * time.Second
	h := newEngineHarness(t, syncer.EngineOptions{PresenceInterval: interval, PresenceTTL: ttl})
	a, b := h.join("a", true, nil), h.join("b", true, nil)
	a.take()
	b.take()

	// The first update goes out at once.
	h.step(syncer.PresenceIn{Session: a.id, Presence: presenceFrom(a, 1, 0)})
	ups := ofKind[*protocol.PresenceUpdate](b.take())
	if len(ups) != 1 || len(ups[0].Peers) != 1 || ups[0].Peers[0].Clock != 1 || ups[0].Peers[0].User.Name != "a" {
		t.Fatalf("first presence: %+v", ups)
	}
	for _, u := range ofKind[*protocol.PresenceUpdate](a.take()) {
		if len(u.Peers) > 0 {
			t.Fatalf("a got its own presence back: %+v", u)
		}
	}

	// A burst within the interval is coalesced into one relay of the newest.
	relays := 0
	for i := range 10 {
		h.now = h.now.Add(interval / 20)
		h.step(syncer.PresenceIn{Session: a.id, Presence: presenceFrom(a, uint64(2+i), 0)})
		relays += len(ofKind[*protocol.PresenceUpdate](b.take()))
	}
	if relays != 0 {
		t.Fatalf("%d relays within one interval", relays)
	}
	dl := h.e.Deadline()
	if want := t0.Add(interval); !dl.Equal(want) {
		t.Fatalf("deadline %v, want %v", dl, want)
	}
	h.now = dl
	h.step(syncer.TickIn{})
	ups = ofKind[*protocol.PresenceUpdate](b.take())
	if len(ups) != 1 || len(ups[0].Peers) != 1 || ups[0].Peers[0].Clock != 11 {
		t.Fatalf("coalesced relay: %+v", ups)
	}
	// Over a longer stretch of updates every 10 ms, relays stay at most one
	// per interval.
	start := h.now
	for i := range 100 {
		h.now = h.now.Add(10 * time.Millisecond)
		h.step(syncer.PresenceIn{Session: a.id, Presence: presenceFrom(a, uint64(100+i), 0)})
		if dl := h.e.Deadline(); !dl.IsZero() && !dl.After(h.now) {
			h.step(syncer.TickIn{})
		}
	}
	n := len(ofKind[*protocol.PresenceUpdate](b.take()))
	if limit := int(h.now.Sub(start)/interval) + 1; n > limit || n == 0 {
		t.Fatalf("%d relays in %v, want 1..%d", n, h.now.Sub(start), limit)
	}
	a.take()

	// A heartbeat (same clock) keeps it alive without a relay.
	h.tick(ttl / 2)
	h.step(syncer.PresenceIn{Session: a.id, Presence: presenceFrom(a, 199, 0)})
	h.tick(ttl - time.Millisecond)
	if ups := ofKind[*protocol.PresenceUpdate](b.take()); len(ups) != 0 {
		t.Fatalf("presence expired early or a heartbeat was relayed: %+v", ups)
	}
	// Without one it expires after the TTL.
	h.tick(time.Millisecond)
	ups = ofKind[*protocol.PresenceUpdate](b.take())
	if len(ups) != 1 || len(ups[0].Gone) != 1 || ups[0].Gone[0] != a.id {
		t.Fatalf("expiry: %+v", ups)
	}

	// A member that leaves is removed at once: a joiner no longer sees it,
	// and Gone goes out at the next relay slot (at once when the last relay
	// is an interval ago, else when the engine's deadline says).
	h.tick(interval)
	h.step(syncer.PresenceIn{Session: a.id, Presence: presenceFrom(a, 500, 0)})
	h.step(syncer.PresenceIn{Session: b.id, Presence: presenceFrom(b, 1, 0)})
	a.take()
	h.leave(b)
	c := h.join("c", true, nil)
	ups = ofKind[*protocol.PresenceUpdate](c.take())
	if len(ups) != 1 || len(ups[0].Peers) != 1 || ups[0].Peers[0].Session != a.id {
		t.Fatalf("joiner's presence: %+v", ups)
	}
	dl = h.e.Deadline()
	if dl.IsZero() || dl.After(h.now.Add(interval)) {
		t.Fatalf("after leave the deadline is %v, now %v", dl, h.now)
	}
	h.now = dl
	h.step(syncer.TickIn{})
	ups = ofKind[*protocol.PresenceUpdate](a.take())
	if len(ups) != 1 || len(ups[0].Gone) != 1 || ups[0].Gone[0] != b.id {
		t.Fatalf("leave: %+v", ups)
	}
	h.tick(interval)
	h.leave(c)
	h.step(syncer.TickIn{})
	ups = ofKind[*protocol.PresenceUpdate](a.take())
	if len(ups) != 0 {
		t.Fatalf("a member without presence left and %+v was relayed", ups)
	}
}

func TestEngine_EditValidationAllOrNothing(t *testing.T) {
	h := newEngineHarness(t, syncer.EngineOptions{MaxDocChars: 20})
	a := h.join("a", true, nil)
	a.take()
	edit := func(token string, edits ...syncer.Edit) syncer.Reply {
		t.Helper()
		h.replies = nil
		h.step(syncer.EditIn{Edits: edits, Author: syncer.Author{Subject: "api"}, Token: token})
		if len(h.replies) == 0 && len(h.log) > 0 {
			h.persist(nil)
		}
		if len(h.replies) != 1 || h.replies[0].Token != token {
			t.Fatalf("replies %+v, want one for %s", h.replies, token)
		}
		return h.replies[0]
	}
	if r := edit("t1", syncer.Edit{Pos: 0, Insert: "hello"}, syncer.Edit{Pos: 5, Insert: " wörld"}); r.Err != nil || r.Seq != 1 {
		t.Fatalf("valid batch: %+v", r)
	}
	mustCheckText(t, h.e.Text(), "hello wörld")
	if ups := ofKind[*protocol.Update](a.take()); len(ups) != 1 || ups[0].Author != serverAgent {
		t.Fatalf("member saw %+v", ups)
	}
	for _, bad := range [][]syncer.Edit{
		{{Pos: 0, Insert: "A"}, {Pos: 13, Insert: "B"}},         // second is past the end after the first
		{{Pos: 0, Delete: 11}, {Pos: 0, Delete: 1}},             // nothing left to delete
		{{Pos: 0, Insert: "x"}, {Pos: -1}},                      // negative
		{{Pos: 0, Insert: "x"}, {Pos: 0, Insert: "0123456789"}}, // too large in total
	} {
		r := edit("bad", bad...)
		if r.Err == nil {
			t.Fatalf("batch %+v succeeded", bad)
		}
		if !errors.Is(r.Err, syncer.ErrOutOfRange) && !errors.Is(r.Err, syncer.ErrDocTooLarge) {
			t.Fatalf("batch %+v: %v", bad, r.Err)
		}
		mustCheckText(t, h.e.Text(), "hello wörld")
		if len(h.log) != 1 {
			t.Fatalf("a refused batch made a record")
		}
	}
	if fs := a.take(); len(fs) != 0 {
		t.Fatalf("refused batches were broadcast: %v", fs)
	}
	// Positions are code points, applied in order.
	if r := edit("t2", syncer.Edit{Pos: 7, Delete: 1, Insert: "o"}, syncer.Edit{Pos: 0, Delete: 1, Insert: "H"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	mustCheckText(t, h.e.Text(), "Hello world")
}

func TestEngine_SnapshotWhenDurable(t *testing.T) {
	h := newEngineHarness(t, syncer.EngineOptions{SnapshotEvery: 3})
	a := h.join("a", true, nil)
	for i := range 4 {
		h.send(a, a.edit(t, func(x *crdt.Text) (crdt.Delta, error) { return x.Insert(x.Len(), fmt.Sprint(i)) }))
	}
	h.step(syncer.PersistedIn{Seq: 3})
	if len(h.snaps) != 0 {
		t.Fatal("snapshot requested while a record is not durable")
	}
	h.step(syncer.PersistedIn{Seq: 4})
	if len(h.snaps) != 1 || h.snaps[0].Seq != 4 || len(h.snaps[0].Data) == 0 {
		t.Fatalf("snapshots %+v, want one at 4", h.snaps)
	}
	if !h.e.Busy() {
		t.Fatal("engine not busy while a snapshot is being saved")
	}
	// No second request while one is outstanding.
	for i := range 3 {
		h.send(a, a.edit(t, func(x *crdt.Text) (crdt.Delta, error) { return x.Insert(x.Len(), fmt.Sprint(i)) }))
	}
	h.persist(nil)
	if len(h.snaps) != 1 {
		t.Fatalf("%d snapshots while one is outstanding", len(h.snaps))
	}
	h.step(syncer.SnapshotIn{Seq: 4})
	// The next one comes SnapshotEvery records after the last.
	if len(h.snaps) != 2 || h.snaps[1].Seq != 7 {
		t.Fatalf("snapshots %+v, want a second at 7", h.snaps)
	}
	h.step(syncer.SnapshotIn{Seq: 7})
	if h.e.Busy() {
		t.Fatal("busy after the snapshot was saved")
	}
	// A failed snapshot is asked for again later.
	h.send(a, a.edit(t, func(x *crdt.Text) (crdt.Delta, error) { return x.Insert(0, "s") }))
	h.persist(nil)
	if len(h.snaps) != 2 {
		t.Fatal("snapshot before SnapshotEvery records")
	}
	for range 2 {
		h.send(a, a.edit(t, func(x *crdt.Text) (crdt.Delta, error) { return x.Insert(0, "s") }))
	}
	h.persist(nil)
	if len(h.snaps) != 3 || h.snaps[2].Seq != 10 {
		t.Fatalf("snapshots %+v, want a third at 10", h.snaps)
	}
	// A failed snapshot is asked for again (the hub paces the retries).
	h.step(syncer.SnapshotIn{Seq: 10, Err: errors.New("disk full")})
	if len(h.snaps) != 4 || h.snaps[3].Seq != 10 {
		t.Fatalf("snapshots %+v, want a retry at 10", h.snaps)
	}
	h.step(syncer.SnapshotIn{Seq: 10})
	if !strings.HasSuffix(h.e.Text().String(), "0123012") {
		t.Fatalf("text %q", h.e.Text().String())
	}
}

// TestEngine_Script replays a small interaction script in the raft
// InteractionEnv style: members edit concurrently and offline, leave and
// rejoin with their replica, and every replica ends equal to the engine's
// with every delta acknowledged once. Commands:
//
//	NAME join | leave | rejoin        membership (rejoin keeps the replica)
//	NAME ins POS TEXT | del POS N     a local edit, queued until deliver
//	deliver                           send queued edits of joined members, apply what they received
//	persist                           report every record durable
//	converged                         all replicas equal the engine's text
func TestEngine_Script(t *testing.T) {
	const script = `
a join
b join
a ins 0 hello
b ins 0 >>
deliver
persist
deliver
converged
a del 0 1
b ins 2 ✓
persist
b leave
a ins 0 🎉
b ins 0 𝄞
deliver
persist
b rejoin
deliver
persist
deliver
converged
`
	h := newEngineHarness(t, syncer.EngineOptions{})
	all := map[string]*engineMember{}
	pending := map[string][]crdt.Delta{}
	sent, acked := map[string]int{}, map[string]int{}
	for n, line := range strings.Split(strings.TrimSpace(script), "\n") {
		f := strings.Fields(line)
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("line %d %q: %s", n+1, line, fmt.Sprintf(format, args...))
		}
		switch {
		case f[0] == "deliver":
			for _, name := range slices.Sorted(maps.Keys(h.members)) {
				m := h.members[name]
				for _, d := range pending[name] {
					h.send(m, d)
					sent[name]++
				}
				pending[name] = nil
			}
			for _, m := range h.members {
				for _, fr := range m.take() {
					var err error
					switch fr := fr.(type) {
					case *protocol.Sync:
						err = m.replica.Apply(fr.Delta)
					case *protocol.Update:
						err = m.replica.Apply(fr.Delta)
					case *protocol.Ack:
						acked[m.name]++
					case *protocol.Error:
						fail("%s got %v", m.name, fr)
					}
					if err != nil {
						fail("%s apply: %v", m.name, err)
					}
				}
			}
		case f[0] == "persist":
			if len(h.log) > 0 && h.log[len(h.log)-1].Seq > h.durable {
				h.persist(nil)
			}
		case f[0] == "converged":
			want := h.e.Text().String()
			for _, m := range h.members {
				if got := m.replica.String(); got != want {
					fail("%s holds %q, engine %q", m.name, got, want)
				}
			}
			for name := range all {
				if len(pending[name]) > 0 || sent[name] != acked[name] {
					fail("%s: %d pending, %d sent, %d acked", name, len(pending[name]), sent[name], acked[name])
				}
			}
		case f[1] == "join":
			all[f[0]] = h.join(f[0], true, nil)
		case f[1] == "leave":
			h.leave(all[f[0]])
		case f[1] == "rejoin":
			m := all[f[0]]
			h.sessions++
			m.id[1] = byte(h.sessions) // a new connection
			m.seq = 0
			h.members[m.name], h.byID[m.id] = m, m
			h.step(syncer.JoinIn{Member: syncer.Member{Session: m.id, Agent: m.agent, CanWrite: true}, Version: m.replica.Version()})
		case f[1] == "ins" || f[1] == "del":
			m := all[f[0]]
			pos, _ := strconv.Atoi(f[2])
			d := m.edit(t, func(r *crdt.Text) (crdt.Delta, error) {
				if f[1] == "ins" {
					return r.Insert(pos, f[3])
				}
				k, _ := strconv.Atoi(f[3])
				return r.Delete(pos, k)
			})
			pending[m.name] = append(pending[m.name], d)
		default:
			fail("unknown command")
		}
	}
	if got := h.e.Text().String(); runeLen(got) != len([]rune("ello>>✓🎉𝄞")) {
		t.Fatalf("final text %q", got)
	}
}

func runeLen(s string) int { return len([]rune(s)) }

// serverAgent is the agent the engines under test edit as (a Hub picks a
// fresh one per process).
var serverAgent = crdt.AgentKey{'t', 'e', 's', 't', '-', 's', 'e', 'r', 'v', 'e', 'r'}
