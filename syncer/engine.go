package syncer

import (
	"errors"
	"fmt"
	"time"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// EngineOptions tune one document's engine. Zero values take the defaults
// documented on each field.
type EngineOptions struct {
	// MaxDocChars caps a document's live length in code points; a delta that
	// would exceed it is refused with CodeDocTooLarge. Default 8 Mi.
	MaxDocChars int
	// PresenceInterval is the least time between two presence relays of
	// one document (coalescing). Default 50 ms, at most 20 a second.
	PresenceInterval time.Duration
	// PresenceTTL expires a session's presence that was not refreshed.
	// Default 30 s.
	PresenceTTL time.Duration
	// MaxParkedOps bounds ops waiting for missing dependencies. Default 4096.
	MaxParkedOps int
	// ParkTimeout is how long an op may wait for its dependencies before its
	// sender gets CodeMissingDependency. Default 10 s.
	ParkTimeout time.Duration
	// SnapshotEvery is how many log records accumulate before the engine
	// asks for a snapshot, which truncates the log so cold loads read a
	// snapshot and a short tail. Default 500.
	SnapshotEvery uint64
	// MaxUnpersisted bounds records applied in memory but not yet durable
	// (say, while the disk is full). Beyond it, writes are refused with
	// CodeOverloaded until the log catches up. Default 4096.
	MaxUnpersisted int
	// AuditKeep is how many history entries a document keeps. Default 10000.
	AuditKeep int
	// SinkHistory is how many updates an SSE stream can resume across.
	// Default 512.
	SinkHistory int
	// SyncCacheBytes caps the encoded Sync frames a document keeps to
	// answer joins from scratch (an empty version) without rebuilding its
	// history each time. They are kept until the document changes or
	// unloads, count toward the hub's memory budget, and go when it is
	// exceeded and unloading idle documents was not enough. A longer
	// history is rebuilt for every such join; histories under 1,024 ops
	// are never kept. Default 32 MiB; negative: keep none.
	SyncCacheBytes int
}

func (o EngineOptions) withDefaults() EngineOptions {
	if o.MaxDocChars <= 0 {
		o.MaxDocChars = 8 << 20
	}
	if o.PresenceInterval <= 0 {
		o.PresenceInterval = 50 * time.Millisecond
	}
	if o.PresenceTTL <= 0 {
		o.PresenceTTL = 30 * time.Second
	}
	if o.MaxParkedOps <= 0 {
		o.MaxParkedOps = 4096
	}
	if o.ParkTimeout <= 0 {
		o.ParkTimeout = 10 * time.Second
	}
	if o.SnapshotEvery == 0 {
		o.SnapshotEvery = 500
	}
	if o.MaxUnpersisted <= 0 {
		o.MaxUnpersisted = 4096
	}
	if o.AuditKeep <= 0 {
		o.AuditKeep = 10000
	}
	if o.SinkHistory <= 0 {
		o.SinkHistory = 512
	}
	if o.SyncCacheBytes == 0 {
		o.SyncCacheBytes = 32 << 20
	}
	return o
}

// Member is a session subscribed to a document.
type Member struct {
	Session  protocol.SessionID
	Agent    crdt.AgentKey
	Subject  string // token subject, for the audit trail
	User     protocol.User
	CanWrite bool
}

// Author says who made an HTTP edit.
type Author struct {
	Subject, Name string
}

// Input is one event for the engine: the Step function's argument.
type Input interface{ isInput() }

// JoinIn subscribes a member; Version is what its replica holds.
type JoinIn struct {
	Member  Member
	Version crdt.Version
}

// LeaveIn unsubscribes a session (leave or disconnect).
type LeaveIn struct{ Session protocol.SessionID }

// DeltaIn is a member's Delta frame.
type DeltaIn struct {
	Session   protocol.SessionID
	ClientSeq uint64
	Delta     crdt.Delta
}

// PresenceIn is a member's Presence frame.
type PresenceIn struct {
	Session  protocol.SessionID
	Presence *protocol.Presence
}

// Edit is one position-based edit in code points: delete Delete code points
// at Pos, then insert Insert there.
type Edit struct {
	Pos    int    `json:"pos"`
	Delete int    `json:"delete"`
	Insert string `json:"insert"`
}

// EditIn applies position-based edits as the server agent, in order and
// all or nothing. With At set, Edits must be one insert, placed at the
// anchor instead of a position (streaming into a moving document).
type EditIn struct {
	Edits  []Edit
	At     *crdt.Anchor
	Author Author
	Token  any // returned in the Reply
}

// SinkIn subscribes a server-sent-events stream. From is the version (log
// seq) the stream already has, 0 for none.
type SinkIn struct {
	Sink int64
	From uint64
}

// SinkOutIn unsubscribes a stream.
type SinkOutIn struct{ Sink int64 }

// TickIn lets time pass: presence relays and expiries, parked-op timeouts.
type TickIn struct{}

// PersistedIn reports the outcome of the append of every record up to Seq
// handed out by Ready.
type PersistedIn struct {
	Seq uint64
	Err error
}

// SnapshotIn reports the outcome of a Ready.Snapshot.
type SnapshotIn struct {
	Seq uint64
	Err error
}

func (JoinIn) isInput()      {}
func (LeaveIn) isInput()     {}
func (DeltaIn) isInput()     {}
func (PresenceIn) isInput()  {}
func (EditIn) isInput()      {}
func (SinkIn) isInput()      {}
func (SinkOutIn) isInput()   {}
func (TickIn) isInput()      {}
func (PersistedIn) isInput() {}
func (SnapshotIn) isInput()  {}

// Record is an op-log record to append; Seq is the seq the log assigns it.
type Record struct {
	Seq  uint64
	Data []byte
}

// Send is a frame for one session.
type Send struct {
	To    protocol.SessionID
	Frame []byte
}

// Broadcast is a frame for every member but Except (zero: all).
type Broadcast struct {
	Except protocol.SessionID
	Frame  []byte
}

// Reply answers an EditIn once its record is durable, or at once if it
// failed.
type Reply struct {
	Token  any
	Seq    uint64
	Err    error
	Anchor crdt.Anchor // after a stream insert: where the next one goes
}

// SinkEvent is one server-sent event for one stream.
type SinkEvent struct {
	Sink int64
	Name string // "snapshot", "update" or "presence"
	Seq  uint64
	Data any // marshalled as JSON
}

// Ready is everything the engine wants done, in the order listed: append
// Records (in order), then deliver Sends and Broadcasts (they may go out
// before the records are durable: only acks wait), Replies and Events. An
// Ack is among the Sends only once its record is durable. Snapshot, when
// set, is to be saved (it covers every record up to Snapshot.Seq, all of
// them already durable).
type Ready struct {
	Records    []Record
	Sends      []Send
	Broadcasts []Broadcast
	Replies    []Reply
	Events     []SinkEvent
	Snapshot   *Record
	// Close lists sessions to disconnect after their Sends, with a code.
	Close []CloseReq
}

// CloseReq asks the transport to close a session's connection.
type CloseReq struct {
	Session protocol.SessionID
	Code    protocol.ErrorCode
	Reason  string
}

func (r *Ready) empty() bool {
	return len(r.Records) == 0 && len(r.Sends) == 0 && len(r.Broadcasts) == 0 && len(r.Replies) == 0 &&
		len(r.Events) == 0 && r.Snapshot == nil && len(r.Close) == 0
}

// Errors the engine reports in replies.
var (
	ErrOutOfRange  = errors.New("syncer: edit position out of range")
	ErrDocTooLarge = errors.New("syncer: document too large")
	ErrOverloaded  = errors.New("syncer: too many edits waiting for the disk")
)

type parked struct {
	session   protocol.SessionID
	clientSeq uint64
	delta     crdt.Delta
	since     time.Time
}

type ackWait struct {
	session   protocol.SessionID
	clientSeq uint64
	seq       uint64 // durable once persisted ≥ seq
	reply     *Reply // for HTTP edits instead of a session
}

type presEntry struct {
	peer protocol.Peer
	seen time.Time
}

type sinkUpdate struct {
	seq  uint64
	data updateEvent
}

type updateEvent struct {
	Edits   []Edit `json:"edits"`
	Version uint64 `json:"version"`
	Author  string `json:"author"`
}

// Engine is one document's state machine: the CRDT replica, its members,
// presence, acks waiting for the disk, and ops waiting for dependencies. It
// does no I/O, starts no goroutines and never reads the clock: the caller
// passes time in and carries out Ready. It is not safe for concurrent use.
//
// The loop (see doc.go):
//
//	e.Step(now, in)
//	rd := e.Ready()
//	append rd.Records; deliver the rest; e.Advance()
//	later: e.Step(now, PersistedIn{Seq, err})
type Engine struct {
	doc  string
	opts EngineOptions
	text *crdt.Text

	// Maps and slices are made when first needed and dropped when they
	// empty again: most loaded documents are idle, and an idle document
	// should hold little more than its text.
	members map[protocol.SessionID]*Member
	order   []protocol.SessionID // members in join order, for stable fan-out

	lastSeq   uint64 // newest record handed to Ready
	persisted uint64 // newest durable record
	inflight  uint64 // newest record handed out and not yet reported
	snapSeq   uint64 // newest snapshot
	snapping  bool

	acks    []ackWait
	parkedN int
	parked  []parked

	pres      map[protocol.SessionID]*presEntry
	dirty     map[protocol.SessionID]bool
	gone      []protocol.SessionID
	lastRelay time.Time

	audit []Audit

	sinks   map[int64]bool
	history []sinkUpdate

	cache *syncCache // encoded answer to a join from scratch (sync_cache.go)

	rd  Ready
	now time.Time
}

// NewEngine wraps a replica loaded at log seq lastSeq (all durable), with
// the audit trail it had.
func NewEngine(doc string, text *crdt.Text, lastSeq, snapSeq uint64, audit []Audit, opts EngineOptions) *Engine {
	opts = opts.withDefaults()
	return &Engine{
		doc: doc, opts: opts, text: text,
		lastSeq: lastSeq, persisted: lastSeq, inflight: lastSeq, snapSeq: snapSeq,
		audit: audit,
	}
}

// Doc returns the document ID.
func (e *Engine) Doc() string { return e.doc }

// Text returns the replica. Callers must not change it.
func (e *Engine) Text() *crdt.Text { return e.text }

// Seq returns the newest log seq (possibly not yet durable).
func (e *Engine) Seq() uint64 { return e.lastSeq }

// Members returns how many sessions are subscribed.
func (e *Engine) Members() int { return len(e.members) }

// Sinks returns how many event streams are subscribed.
func (e *Engine) Sinks() int { return len(e.sinks) }

// Busy reports whether records are waiting for the disk.
func (e *Engine) Busy() bool {
	return e.persisted < e.lastSeq || e.snapping || len(e.acks) > 0
}

// History returns up to limit audit entries with seq < before (0: any),
// newest first.
func (e *Engine) History(limit int, before uint64) []Audit {
	var out []Audit
	for i := len(e.audit) - 1; i >= 0 && len(out) < limit; i-- {
		if before == 0 || e.audit[i].Seq < before {
			out = append(out, e.audit[i])
		}
	}
	return out
}

// Deadline returns when the engine next needs a TickIn, or the zero time.
func (e *Engine) Deadline() time.Time {
	var d time.Time
	soon := func(t time.Time) {
		if d.IsZero() || t.Before(d) {
			d = t
		}
	}
	if len(e.dirty) > 0 || len(e.gone) > 0 {
		soon(e.lastRelay.Add(e.opts.PresenceInterval))
	}
	for _, p := range e.pres {
		soon(p.seen.Add(e.opts.PresenceTTL))
	}
	if len(e.parked) > 0 {
		soon(e.parked[0].since.Add(e.opts.ParkTimeout))
	}
	return d
}

// Step feeds one input to the engine.
func (e *Engine) Step(now time.Time, in Input) {
	e.now = now
	switch in := in.(type) {
	case JoinIn:
		e.join(in)
	case LeaveIn:
		e.leave(in.Session)
	case DeltaIn:
		e.delta(in)
	case PresenceIn:
		e.presence(in)
	case EditIn:
		e.edit(in)
	case SinkIn:
		e.sinkIn(in)
	case SinkOutIn:
		delete(e.sinks, in.Sink)
		if len(e.sinks) == 0 {
			e.sinks = nil
		}
	case TickIn:
		e.tick()
	case PersistedIn:
		e.persistedIn(in)
	case SnapshotIn:
		e.snapping = false
		if in.Err == nil && in.Seq > e.snapSeq {
			e.snapSeq = in.Seq
		}
	default:
		panic(fmt.Sprintf("syncer: unknown input %T", in))
	}
	e.maybeSnapshot()
}

// Ready returns what the engine wants done. Call Advance once it is done
// (or handed to something that will do it).
func (e *Engine) Ready() Ready { return e.rd }

// HasReady reports whether Ready holds anything.
func (e *Engine) HasReady() bool { return !e.rd.empty() }

// Advance clears what Ready returned.
func (e *Engine) Advance() {
	for _, r := range e.rd.Records {
		e.inflight = max(e.inflight, r.Seq)
	}
	e.rd = Ready{}
}

func (e *Engine) send(to protocol.SessionID, f protocol.Frame) {
	e.rd.Sends = append(e.rd.Sends, Send{To: to, Frame: encodeFrame(nil, f)})
}

func (e *Engine) sendErr(to protocol.SessionID, code protocol.ErrorCode, clientSeq uint64, retryMs uint32, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if len(msg) > protocol.MaxMessageBytes {
		msg = msg[:protocol.MaxMessageBytes]
	}
	e.send(to, &protocol.Error{Code: code, Message: msg, Doc: e.doc, ClientSeq: clientSeq, RetryAfterMs: retryMs})
}

// --- membership -------------------------------------------------------------

func (e *Engine) join(in JoinIn) {
	m := in.Member
	if _, ok := e.members[m.Session]; !ok {
		e.order = append(e.order, m.Session)
	}
	if e.members == nil {
		e.members = make(map[protocol.SessionID]*Member)
	}
	e.members[m.Session] = &m
	// What the client lacks, in frames within the protocol limits.
	for _, f := range e.syncFrames(in.Version) {
		e.rd.Sends = append(e.rd.Sends, Send{To: m.Session, Frame: f})
	}
	// Who is here already.
	if len(e.pres) > 0 {
		peers := make([]protocol.Peer, 0, len(e.pres))
		for _, p := range e.pres {
			peers = append(peers, p.peer)
		}
		for len(peers) > 0 {
			k := min(len(peers), protocol.MaxPresencePeers)
			e.send(m.Session, &protocol.PresenceUpdate{Doc: e.doc, Peers: peers[:k]})
			peers = peers[k:]
		}
	}
}

func (e *Engine) leave(s protocol.SessionID) {
	if _, ok := e.members[s]; !ok {
		return
	}
	delete(e.members, s)
	for i, x := range e.order {
		if x == s {
			e.order = append(e.order[:i], e.order[i+1:]...)
			break
		}
	}
	if len(e.members) == 0 {
		e.members, e.order = nil, nil
	}
	if _, ok := e.pres[s]; ok {
		delete(e.pres, s)
		delete(e.dirty, s)
		e.gone = append(e.gone, s)
		e.trimPresence()
	}
	// Its acks and parked ops stay: the edits still land; only the
	// frames to it are dropped by the transport.
}

// --- deltas -----------------------------------------------------------------

func (e *Engine) unpersisted() int { return int(e.lastSeq - e.persisted) }

func (e *Engine) delta(in DeltaIn) {
	m := e.members[in.Session]
	if m == nil {
		return // left meanwhile; the hub answers NotJoined before this
	}
	if !m.CanWrite {
		e.sendErr(in.Session, protocol.CodeForbidden, in.ClientSeq, 0, "read-only access to %q", e.doc)
		return
	}
	if e.unpersisted() >= e.opts.MaxUnpersisted {
		e.sendErr(in.Session, protocol.CodeOverloaded, in.ClientSeq, 1000, "the document's log is not keeping up")
		return
	}
	if e.text.Len()+inserted(in.Delta) > e.opts.MaxDocChars {
		e.sendErr(in.Session, protocol.CodeDocTooLarge, in.ClientSeq, 0, "document would exceed %d code points", e.opts.MaxDocChars)
		return
	}
	if err := e.plausible(in.Delta); err != nil {
		e.sendErr(in.Session, protocol.CodeInvalidDelta, in.ClientSeq, 0, "%v", err)
		return
	}
	seq, pending, err := e.apply(in.Delta, Author{Subject: m.Subject, Name: m.User.Name}, m.Agent, in.Session)
	switch {
	case err != nil:
		e.sendErr(in.Session, protocol.CodeInvalidDelta, in.ClientSeq, 0, "%v", err)
		return
	case len(pending.Ops) > 0:
		if e.parkedN+len(pending.Ops) > e.opts.MaxParkedOps {
			e.sendErr(in.Session, protocol.CodeMissingDependency, in.ClientSeq, 0, "too many ops waiting for dependencies")
			return
		}
		e.parked = append(e.parked, parked{session: in.Session, clientSeq: in.ClientSeq, delta: pending, since: e.now})
		e.parkedN += len(pending.Ops)
		return
	}
	e.acks = append(e.acks, ackWait{session: in.Session, clientSeq: in.ClientSeq, seq: seq})
	e.releaseAcks()
}

// plausible refuses client ops that no honest client can produce and that
// would harm everyone else: Lamport times far beyond anything the server
// has seen (they would exhaust the document's clock), runs longer than a
// document may be, and ops claiming the server's own agent.
func (e *Engine) plausible(d crdt.Delta) error {
	var total, maxEnd uint64
	for i := range d.Ops {
		o := &d.Ops[i]
		if o.Len > uint64(e.opts.MaxDocChars) {
			return fmt.Errorf("%w: op %d covers %d IDs", crdt.ErrInvalid, i, o.Len)
		}
		total += o.Len
		maxEnd = max(maxEnd, o.Lamport+o.Len-1)
		if int(o.Agent) < len(d.Agents) && d.Agents[o.Agent] == e.text.Agent() {
			return fmt.Errorf("%w: op %d claims the server's agent", crdt.ErrInvalid, i)
		}
	}
	// In a star topology a client has seen nothing the server has not,
	// except its own ops, which advance its clock by at most their length.
	// After a server crash clients may also resend ops of others that the
	// log lost, in later deltas; lamportSlack leaves room for that while
	// keeping the clock (2^53) out of reach: at the default rate limit a
	// client would need years of deltas to exhaust it.
	if maxEnd > e.text.Clock()+total+lamportSlack {
		return fmt.Errorf("%w: Lamport time %d far beyond the document's %d", crdt.ErrInvalid, maxEnd, e.text.Clock())
	}
	return nil
}

const lamportSlack = 1 << 20

func inserted(d crdt.Delta) int {
	n := 0
	for i := range d.Ops {
		if d.Ops[i].Kind == crdt.OpInsert && d.Ops[i].Text != "" {
			n += int(d.Ops[i].Len)
		}
	}
	return n
}

// apply merges a delta, logs and broadcasts what was new in it, and retries
// parked deltas that it may unblock. It returns the seq that covers the
// applied ops (a new record, or the newest one when nothing was new) and the
// ops that must wait.
func (e *Engine) apply(d crdt.Delta, who Author, agent crdt.AgentKey, from protocol.SessionID) (uint64, crdt.Delta, error) {
	// Which ops are new, judged before applying.
	before := make([]uint64, len(d.Agents))
	for i, k := range d.Agents {
		before[i] = e.text.Next(k)
	}
	var changes []crdt.Change
	var emit func(crdt.Change)
	if len(e.sinks) > 0 {
		emit = func(c crdt.Change) { changes = append(changes, c) }
	}
	err := e.text.ApplyChanges(d, emit)
	var pending crdt.Delta
	var skip []int
	var me *crdt.MissingError
	switch {
	case errors.As(err, &me):
		skip = me.Pending
		pending = protocol.SubDelta(d, skip)
	case err != nil:
		return 0, crdt.Delta{}, err
	}
	fresh := crdt.Delta{Agents: d.Agents}
	for i := range d.Ops {
		o := &d.Ops[i]
		if len(skip) > 0 && skip[0] == i {
			skip = skip[1:]
			continue
		}
		if o.Seq+o.Len > before[o.Agent] {
			fresh.Ops = append(fresh.Ops, *o)
		}
	}
	if len(fresh.Ops) == 0 {
		return e.lastSeq, pending, nil
	}
	seq := e.record(fresh, who, agent, from, changes)
	e.retryParked()
	return seq, pending, nil
}

// record logs and broadcasts ops just applied, returning their seq.
//
// A change too big for one Update frame (a long paste, a delete across a
// fragmented range, many authors) becomes several records, each within
// the protocol's limits; the returned seq is the last one.
func (e *Engine) record(d crdt.Delta, who Author, agent crdt.AgentKey, from protocol.SessionID, changes []crdt.Change) uint64 {
	e.dropSyncCache()
	for _, part := range protocol.SplitDelta(d, protocol.MaxOpsPerFrame, protocol.MaxFrameBytes/2) {
		e.recordPart(part, who, agent, from)
	}
	seq := e.lastSeq
	if len(e.sinks) > 0 {
		ev := updateEvent{Edits: toEdits(changes), Version: seq, Author: who.Subject}
		e.history = append(e.history, sinkUpdate{seq: seq, data: ev})
		if len(e.history) > e.opts.SinkHistory {
			e.history = append(e.history[:0], e.history[len(e.history)-e.opts.SinkHistory:]...)
		}
		for s := range e.sinks {
			e.rd.Events = append(e.rd.Events, SinkEvent{Sink: s, Name: "update", Seq: seq, Data: ev})
		}
	} else {
		e.history = nil
	}
	return seq
}

// recordPart logs and broadcasts one frame's worth of a change.
func (e *Engine) recordPart(d crdt.Delta, who Author, agent crdt.AgentKey, from protocol.SessionID) {
	e.lastSeq++
	seq := e.lastSeq
	// SplitDelta keeps every part within the limits.
	frame := encodeFrame(nil, &protocol.Update{Doc: e.doc, Seq: seq, Author: agent, Delta: d})
	ops, ins, del := stats(d)
	a := Audit{Seq: seq, Time: e.now.UTC(), Subject: who.Subject, Name: who.Name, Agent: agent.String(), Ops: ops, Inserted: ins, Deleted: del}
	e.rd.Records = append(e.rd.Records, Record{Seq: seq, Data: encodeRecord(a, frame)})
	e.audit = append(e.audit, a)
	if len(e.audit) > e.opts.AuditKeep {
		e.audit = append(e.audit[:0], e.audit[len(e.audit)-e.opts.AuditKeep:]...)
	}
	if len(e.members) > 0 && !(len(e.members) == 1 && e.members[from] != nil) {
		e.rd.Broadcasts = append(e.rd.Broadcasts, Broadcast{Except: from, Frame: frame})
	}
}

func toEdits(cs []crdt.Change) []Edit {
	out := make([]Edit, 0, len(cs))
	for _, c := range cs {
		// Merge a delete followed by an insert at the same place.
		if k := len(out) - 1; k >= 0 && c.Delete == 0 && out[k].Insert == "" && out[k].Pos == c.Pos {
			out[k].Insert = c.Insert
			continue
		}
		out = append(out, Edit{Pos: c.Pos, Delete: c.Delete, Insert: c.Insert})
	}
	return out
}

// retryParked applies parked deltas whose dependencies may have arrived.
func (e *Engine) retryParked() {
	for progress := true; progress && len(e.parked) > 0; {
		progress = false
		list := e.parked
		e.parked = nil
		e.parkedN = 0
		for _, p := range list {
			m := e.members[p.session]
			who, agent := Author{}, crdt.AgentKey{}
			if m != nil {
				who, agent = Author{Subject: m.Subject, Name: m.User.Name}, m.Agent
			}
			seq, pending, err := e.apply(p.delta, who, agent, p.session)
			switch {
			case err != nil:
				e.sendErr(p.session, protocol.CodeInvalidDelta, p.clientSeq, 0, "%v", err)
				progress = true
			case len(pending.Ops) < len(p.delta.Ops):
				progress = true
				fallthrough
			default:
				if len(pending.Ops) == 0 {
					e.acks = append(e.acks, ackWait{session: p.session, clientSeq: p.clientSeq, seq: seq})
					continue
				}
				p.delta = pending
				e.parked = append(e.parked, p)
				e.parkedN += len(pending.Ops)
			}
		}
	}
}

func (e *Engine) persistedIn(in PersistedIn) {
	if in.Err != nil {
		// Nothing up to in.Seq is durable; the caller keeps those records
		// and retries them. Acks wait, so no edit is acknowledged and lost.
		return
	}
	if in.Seq > e.persisted {
		e.persisted = in.Seq
	}
	e.releaseAcks()
}

func (e *Engine) releaseAcks() {
	k := 0
	for _, a := range e.acks {
		if a.seq > e.persisted {
			e.acks[k] = a
			k++
			continue
		}
		if a.reply != nil {
			a.reply.Seq = a.seq
			e.rd.Replies = append(e.rd.Replies, *a.reply)
			continue
		}
		e.send(a.session, &protocol.Ack{Doc: e.doc, ClientSeq: a.clientSeq, Seq: a.seq})
	}
	clear(e.acks[k:])
	e.acks = e.acks[:k]
	if k == 0 {
		e.acks = nil
	}
}

func (e *Engine) maybeSnapshot() {
	if e.snapping || e.persisted != e.lastSeq || e.lastSeq < e.snapSeq+e.opts.SnapshotEvery {
		return
	}
	data, err := encodeSnapshot(e.text, e.audit)
	if err != nil {
		return // the log still holds everything; try again later
	}
	e.snapping = true
	e.rd.Snapshot = &Record{Seq: e.lastSeq, Data: data}
}

// --- presence ---------------------------------------------------------------

func (e *Engine) presence(in PresenceIn) {
	m := e.members[in.Session]
	if m == nil {
		return
	}
	p := in.Presence
	cur := e.pres[in.Session]
	if cur != nil && p.Clock <= cur.peer.Clock {
		cur.seen = e.now // a heartbeat: same state, still here
		return
	}
	user := p.User
	if user.Name == "" {
		user = m.User
	}
	if e.pres == nil {
		e.pres = make(map[protocol.SessionID]*presEntry)
	}
	if e.dirty == nil {
		e.dirty = make(map[protocol.SessionID]bool)
	}
	e.pres[in.Session] = &presEntry{
		peer: protocol.Peer{Session: in.Session, Agent: m.Agent, User: user, Clock: p.Clock, Cursor: p.Cursor, Selections: p.Selections},
		seen: e.now,
	}
	e.dirty[in.Session] = true
	e.tick()
}

func (e *Engine) tick() {
	for s, p := range e.pres {
		if e.now.Sub(p.seen) >= e.opts.PresenceTTL {
			delete(e.pres, s)
			delete(e.dirty, s)
			e.gone = append(e.gone, s)
		}
	}
	e.trimPresence()
	if (len(e.dirty) > 0 || len(e.gone) > 0) && e.now.Sub(e.lastRelay) >= e.opts.PresenceInterval {
		e.relayPresence()
	}
	for len(e.parked) > 0 && e.now.Sub(e.parked[0].since) >= e.opts.ParkTimeout {
		p := e.parked[0]
		e.parked = e.parked[1:]
		if len(e.parked) == 0 {
			e.parked = nil
		}
		e.parkedN -= len(p.delta.Ops)
		e.sendErr(p.session, protocol.CodeMissingDependency, p.clientSeq, 0, "ops waited %s for dependencies; rejoin to resync", e.opts.ParkTimeout)
	}
}

// trimPresence drops the presence maps once they are empty.
func (e *Engine) trimPresence() {
	if len(e.pres) == 0 {
		e.pres = nil
	}
	if len(e.dirty) == 0 {
		e.dirty = nil
	}
}

func (e *Engine) relayPresence() {
	e.lastRelay = e.now
	var peers []protocol.Peer
	for s := range e.dirty {
		if p := e.pres[s]; p != nil {
			peers = append(peers, p.peer)
		}
	}
	gone := e.gone
	dirty := e.dirty
	e.dirty = nil
	e.gone = nil
	// A session never gets its own presence back (docs/protocol.md §7).
	// Members that published nothing share one encoding; each publisher
	// gets the others' entries only.
	all := e.presenceFrames(peers, gone, protocol.SessionID{})
	for _, id := range e.order {
		frames := all
		if dirty[id] {
			frames = e.presenceFrames(peers, gone, id)
		}
		for _, f := range frames {
			e.rd.Sends = append(e.rd.Sends, Send{To: id, Frame: f})
		}
	}
	if len(e.sinks) > 0 {
		data := e.presenceEvent()
		for s := range e.sinks {
			e.rd.Events = append(e.rd.Events, SinkEvent{Sink: s, Name: "presence", Seq: e.lastSeq, Data: data})
		}
	}
}

// presenceFrames encodes peers and gone, without skip's entry, in frames
// within MaxPresencePeers.
func (e *Engine) presenceFrames(peers []protocol.Peer, gone []protocol.SessionID, skip protocol.SessionID) [][]byte {
	if skip != (protocol.SessionID{}) {
		kept := make([]protocol.Peer, 0, len(peers))
		for _, p := range peers {
			if p.Session != skip {
				kept = append(kept, p)
			}
		}
		peers = kept
	}
	var out [][]byte
	for len(peers) > 0 || len(gone) > 0 {
		a, b := min(len(peers), protocol.MaxPresencePeers), min(len(gone), protocol.MaxPresencePeers)
		out = append(out, encodeFrame(nil, &protocol.PresenceUpdate{Doc: e.doc, Peers: peers[:a], Gone: gone[:b]}))
		peers, gone = peers[a:], gone[b:]
	}
	return out
}

// PresenceView is a peer's presence with anchors resolved to positions.
type PresenceView struct {
	Session string `json:"session"`
	Name    string `json:"name"`
	Color   string `json:"color"`
	Cursor  int    `json:"cursor"`
	// Selections are [anchor, head] position pairs.
	Selections [][2]int `json:"selections,omitempty"`
}

func (e *Engine) presenceEvent() []PresenceView {
	out := make([]PresenceView, 0, len(e.pres))
	for _, s := range e.order {
		p := e.pres[s]
		if p == nil {
			continue
		}
		v := PresenceView{Session: s.String(), Name: p.peer.User.Name, Color: p.peer.User.Color}
		v.Cursor, _ = e.text.Resolve(p.peer.Cursor)
		for _, sel := range p.peer.Selections {
			a, _ := e.text.Resolve(sel.Anchor)
			h, _ := e.text.Resolve(sel.Head)
			v.Selections = append(v.Selections, [2]int{a, h})
		}
		out = append(out, v)
	}
	return out
}

// --- HTTP edits and event streams --------------------------------------------

func (e *Engine) edit(in EditIn) {
	fail := func(err error) { e.rd.Replies = append(e.rd.Replies, Reply{Token: in.Token, Err: err}) }
	if e.unpersisted() >= e.opts.MaxUnpersisted {
		fail(ErrOverloaded)
		return
	}
	// Validate the whole batch against the lengths it produces first, so
	// that a bad edit applies nothing.
	n, grow := e.text.Len(), 0
	for i, ed := range in.Edits {
		if ed.Pos < 0 || ed.Delete < 0 || ed.Pos+ed.Delete > n {
			fail(fmt.Errorf("%w: edit %d deletes %d at %d in a text of %d", ErrOutOfRange, i, ed.Delete, ed.Pos, n))
			return
		}
		k := runeCount(ed.Insert)
		n += k - ed.Delete
		grow += k
	}
	if in.At != nil {
		if _, ok := e.text.Resolve(*in.At); !ok {
			fail(fmt.Errorf("%w: stream anchor no longer resolves", ErrOutOfRange))
			return
		}
	}
	if e.text.Len()+grow > e.opts.MaxDocChars {
		fail(ErrDocTooLarge)
		return
	}
	var all protocol.DeltaWriter
	var changes []crdt.Change
	var next crdt.Anchor
	for _, ed := range in.Edits {
		pos := ed.Pos
		if in.At != nil {
			pos, _ = e.text.Resolve(*in.At)
		}
		d, err := e.text.Replace(pos, ed.Delete, ed.Insert)
		if err != nil {
			// Validated above; a failure here is a bug.
			panic(fmt.Sprintf("syncer: validated edit failed: %v", err))
		}
		all.AddAll(&d)
		if ed.Delete > 0 || ed.Insert != "" {
			changes = append(changes, crdt.Change{Pos: pos, Delete: ed.Delete, Insert: ed.Insert})
		}
		if in.At != nil {
			next, _ = e.text.AnchorAt(pos+runeCount(ed.Insert), crdt.AssocLeft)
		}
	}
	if len(all.Delta().Ops) == 0 {
		e.acks = append(e.acks, ackWait{seq: e.lastSeq, reply: &Reply{Token: in.Token, Anchor: next}})
		e.releaseAcks()
		return
	}
	seq := e.record(all.Delta(), in.Author, e.text.Agent(), protocol.SessionID{}, changes)
	e.acks = append(e.acks, ackWait{seq: seq, reply: &Reply{Token: in.Token, Anchor: next}})
	e.retryParked()
	e.releaseAcks()
}

func (e *Engine) sinkIn(in SinkIn) {
	if e.sinks == nil {
		e.sinks = make(map[int64]bool)
	}
	e.sinks[in.Sink] = true
	// Resume from the history when it reaches back to in.From.
	if in.From > 0 && in.From <= e.lastSeq && len(e.history) > 0 && e.history[0].seq <= in.From+1 {
		for _, h := range e.history {
			if h.seq > in.From {
				e.rd.Events = append(e.rd.Events, SinkEvent{Sink: in.Sink, Name: "update", Seq: h.seq, Data: h.data})
			}
		}
	} else if in.From != e.lastSeq || in.From == 0 {
		e.rd.Events = append(e.rd.Events, SinkEvent{Sink: in.Sink, Name: "snapshot", Seq: e.lastSeq,
			Data: snapshotEvent{Text: e.text.String(), Version: e.lastSeq}})
	}
	if len(e.pres) > 0 {
		e.rd.Events = append(e.rd.Events, SinkEvent{Sink: in.Sink, Name: "presence", Seq: e.lastSeq, Data: e.presenceEvent()})
	}
}

type snapshotEvent struct {
	Text    string `json:"text"`
	Version uint64 `json:"version"`
}
