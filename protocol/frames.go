package protocol

import (
	"math"

	"github.com/weft-sync/weft/crdt"
)

// Frame is one protocol message: a msgpack array whose first element is the
// Kind. The implementations are the pointer types *Hello, *Join, *Leave,
// *Delta, *Presence, *Refresh, *Ping, *Pong, *Welcome, *Sync, *Ack, *Update,
// *PresenceUpdate, *Refreshed, *Error and *GoingAway; Decode returns them,
// Encode takes them. The set is closed: v1 is defined by docs/protocol.md.
type Frame interface {
	Kind() Kind
	// encode writes the whole frame, header included.
	encode(e *Encoder) error
	// decode reads the n array elements after the kind.
	decode(r *reader, n int) error
}

func newFrame(k Kind) Frame {
	switch k {
	case KindHello:
		return new(Hello)
	case KindJoin:
		return new(Join)
	case KindLeave:
		return new(Leave)
	case KindDelta:
		return new(Delta)
	case KindPresence:
		return new(Presence)
	case KindRefresh:
		return new(Refresh)
	case KindPing:
		return new(Ping)
	case KindPong:
		return new(Pong)
	case KindWelcome:
		return new(Welcome)
	case KindSync:
		return new(Sync)
	case KindAck:
		return new(Ack)
	case KindUpdate:
		return new(Update)
	case KindPresenceUpdate:
		return new(PresenceUpdate)
	case KindRefreshed:
		return new(Refreshed)
	case KindError:
		return new(Error)
	case KindGoingAway:
		return new(GoingAway)
	}
	return nil
}

// need checks that a frame has the fields this version knows; each decode
// method ends by skipping the ones a later revision appended.
func need(k Kind, n, known int) error {
	if n < known {
		return malformed(k.String(), "%d fields, want at least %d", n+1, known+1)
	}
	return nil
}

// SessionID names one connection (one Hello/Welcome exchange). Presence is
// keyed by it, because one agent may have several sockets open.
type SessionID [16]byte

// String renders the ID like a UUID.
func (s SessionID) String() string { return crdt.AgentKey(s).String() }

// User is what peers see of a session: a display name and a CSS colour.
// Wire form: [name, color].
type User struct {
	Name  string // ≤ MaxNameBytes
	Color string // ≤ MaxColorBytes, e.g. "#e4572e"
}

// Selection is one selected range: Anchor is where it started and Head where
// the caret is (they are equal for a caret without selection). Wire form:
// [anchor, head].
type Selection struct {
	Anchor crdt.Anchor
	Head   crdt.Anchor
}

// Hello opens a session; it must be the client's first frame.
//
//	[0x01, version, client, token, agent, user]
type Hello struct {
	Client string // client software and version, ≤ MaxSoftwareBytes
	// Token is the bearer token, or "" when the HTTP upgrade carried it.
	Token string
	// Agent is the client replica's key (a UUID). It must be stable for the
	// replica's lifetime, including across restarts with persisted state,
	// and never shared by two replicas.
	Agent crdt.AgentKey
	User  User
}

func (*Hello) Kind() Kind { return KindHello }

func (f *Hello) encode(e *Encoder) error {
	e.header(KindHello, 6)
	e.uint(Version)
	if err := e.str("hello.client", f.Client, MaxSoftwareBytes); err != nil {
		return err
	}
	if err := e.str("hello.token", f.Token, MaxTokenBytes); err != nil {
		return err
	}
	e.key((*[16]byte)(&f.Agent))
	return e.user(&f.User)
}

func (f *Hello) decode(r *reader, n int) (err error) {
	if err := need(KindHello, n, 5); err != nil {
		return err
	}
	if err := r.version1("hello.version"); err != nil {
		return err
	}
	if f.Client, err = r.str("hello.client", MaxSoftwareBytes); err != nil {
		return err
	}
	if f.Token, err = r.str("hello.token", MaxTokenBytes); err != nil {
		return err
	}
	if f.Agent, err = r.key("hello.agent"); err != nil {
		return err
	}
	if err := r.user(&f.User); err != nil {
		return err
	}
	return r.skip("hello", n-5)
}

// version1 reads a protocol version that must equal Version.
func (r *reader) version1(what string) error {
	v, err := r.uint(what, math.MaxUint64)
	if err != nil {
		return err
	}
	if v != Version {
		return errorf(ErrUnsupportedVersion, what, "version %d, this side speaks %d", v, Version)
	}
	return nil
}

// JoinDoc names one document to join and what the client already holds.
// Wire form: [doc, version].
type JoinDoc struct {
	Doc     string
	Version crdt.Version // nil for a client that holds nothing
}

// Join subscribes to documents. The server answers each with Sync frames
// (or an Error naming the document).
//
//	[0x02, [[doc, version], ...]]
type Join struct {
	Docs []JoinDoc // 1 to MaxDocsPerFrame distinct documents
}

func (*Join) Kind() Kind { return KindJoin }

func (f *Join) encode(e *Encoder) error {
	if len(f.Docs) == 0 {
		return malformed("join.docs", "no documents")
	}
	if len(f.Docs) > MaxDocsPerFrame {
		return tooLarge("join.docs", uint64(len(f.Docs)), MaxDocsPerFrame)
	}
	e.header(KindJoin, 2)
	e.array(len(f.Docs))
	for i := range f.Docs {
		d := &f.Docs[i]
		for j := range i {
			if f.Docs[j].Doc == d.Doc {
				return malformed("join.docs", "document %q named twice", d.Doc)
			}
		}
		e.array(2)
		if err := e.doc("join.doc", d.Doc); err != nil {
			return err
		}
		if err := e.version(d.Version); err != nil {
			return err
		}
	}
	return nil
}

func (f *Join) decode(r *reader, n int) error {
	if err := need(KindJoin, n, 1); err != nil {
		return err
	}
	// An entry is at least a fixarray, a one-byte fixstr and an empty array.
	nd, err := r.arrayLen("join.docs", MaxDocsPerFrame, 1+2+1)
	if err != nil {
		return err
	}
	if nd == 0 {
		return malformed("join.docs", "no documents")
	}
	f.Docs = make([]JoinDoc, nd)
	for i := range f.Docs {
		d := &f.Docs[i]
		m, err := r.fields("join.docs entry", 2)
		if err != nil {
			return err
		}
		if d.Doc, err = r.doc("join.doc"); err != nil {
			return err
		}
		for j := range i {
			if f.Docs[j].Doc == d.Doc {
				return malformed("join.docs", "document %q named twice", d.Doc)
			}
		}
		if d.Version, err = r.version(); err != nil {
			return err
		}
		if err := r.skip("join.docs entry", m-2); err != nil {
			return err
		}
	}
	return r.skip("join", n-1)
}

// Leave unsubscribes from documents and withdraws the session's presence in
// them. Deltas already sent are still acknowledged.
//
//	[0x03, [doc, ...]]
type Leave struct {
	Docs []string // 1 to MaxDocsPerFrame distinct documents
}

func (*Leave) Kind() Kind { return KindLeave }

func (f *Leave) encode(e *Encoder) error {
	if err := checkDocs("leave.docs", f.Docs); err != nil {
		return err
	}
	e.header(KindLeave, 2)
	e.array(len(f.Docs))
	for _, d := range f.Docs {
		e.rawString(d)
	}
	return nil
}

func (f *Leave) decode(r *reader, n int) (err error) {
	if err := need(KindLeave, n, 1); err != nil {
		return err
	}
	if f.Docs, err = r.docs("leave.docs"); err != nil {
		return err
	}
	return r.skip("leave", n-1)
}

// Delta carries a client's ops for one joined document.
//
//	[0x04, doc, client seq, delta]
type Delta struct {
	Doc string
	// ClientSeq numbers the client's Delta frames on this connection,
	// starting at 1 and increasing by 1 per frame across all documents. Ack
	// and Error echo it.
	ClientSeq uint64
	Delta     crdt.Delta
}

func (*Delta) Kind() Kind { return KindDelta }

func (f *Delta) encode(e *Encoder) error {
	e.header(KindDelta, 4)
	if err := e.doc("delta.doc", f.Doc); err != nil {
		return err
	}
	if f.ClientSeq == 0 {
		return malformed("delta.client_seq", "zero")
	}
	if err := e.counter("delta.client_seq", f.ClientSeq); err != nil {
		return err
	}
	return e.delta(&f.Delta)
}

func (f *Delta) decode(r *reader, n int) (err error) {
	if err := need(KindDelta, n, 3); err != nil {
		return err
	}
	if f.Doc, err = r.doc("delta.doc"); err != nil {
		return err
	}
	if f.ClientSeq, err = r.counter("delta.client_seq"); err != nil {
		return err
	}
	if f.ClientSeq == 0 {
		return malformed("delta.client_seq", "zero")
	}
	if err := r.delta(&f.Delta); err != nil {
		return err
	}
	return r.skip("delta", n-3)
}

// Presence publishes the client's cursor and selections in one joined
// document. It is ephemeral: never stored, coalesced by the server, and
// expired after Limits.PresenceTTLMs without a new one.
//
//	[0x05, doc, clock, user, cursor, [selection, ...]]
type Presence struct {
	Doc string
	// Clock increases with every Presence the session sends for Doc;
	// receivers keep the entry with the highest clock.
	Clock      uint64
	User       User
	Cursor     crdt.Anchor
	Selections []Selection // ≤ MaxSelections
}

func (*Presence) Kind() Kind { return KindPresence }

func (f *Presence) encode(e *Encoder) error {
	e.header(KindPresence, 6)
	if err := e.doc("presence.doc", f.Doc); err != nil {
		return err
	}
	if err := e.counter("presence.clock", f.Clock); err != nil {
		return err
	}
	if err := e.user(&f.User); err != nil {
		return err
	}
	if err := e.anchor(&f.Cursor); err != nil {
		return err
	}
	return e.selections(f.Selections)
}

func (f *Presence) decode(r *reader, n int) (err error) {
	if err := need(KindPresence, n, 5); err != nil {
		return err
	}
	if f.Doc, err = r.doc("presence.doc"); err != nil {
		return err
	}
	if f.Clock, err = r.counter("presence.clock"); err != nil {
		return err
	}
	if err := r.user(&f.User); err != nil {
		return err
	}
	if err := r.anchor(&f.Cursor); err != nil {
		return err
	}
	if f.Selections, err = r.selections(); err != nil {
		return err
	}
	return r.skip("presence", n-5)
}

// Refresh replaces the session's token before it expires. The server
// answers Refreshed, or Error and keeps the old token's grants until it
// expires.
//
//	[0x06, token]
type Refresh struct {
	Token string // 1 to MaxTokenBytes bytes
}

func (*Refresh) Kind() Kind { return KindRefresh }

func (f *Refresh) encode(e *Encoder) error {
	if f.Token == "" {
		return malformed("refresh.token", "empty")
	}
	e.header(KindRefresh, 2)
	return e.str("refresh.token", f.Token, MaxTokenBytes)
}

func (f *Refresh) decode(r *reader, n int) (err error) {
	if err := need(KindRefresh, n, 1); err != nil {
		return err
	}
	if f.Token, err = r.str("refresh.token", MaxTokenBytes); err != nil {
		return err
	}
	if f.Token == "" {
		return malformed("refresh.token", "empty")
	}
	return r.skip("refresh", n-1)
}

// Ping asks the other side for a Pong with the same nonce. Browsers cannot
// send WebSocket pings; this lets a client measure round trips and detect a
// dead connection itself.
//
//	[0x10, nonce]
type Ping struct{ Nonce uint64 }

func (*Ping) Kind() Kind { return KindPing }

func (f *Ping) encode(e *Encoder) error {
	e.header(KindPing, 2)
	return e.counter("ping.nonce", f.Nonce)
}

func (f *Ping) decode(r *reader, n int) (err error) {
	if f.Nonce, err = nonceFrame(r, KindPing, n); err != nil {
		return err
	}
	return nil
}

// Pong answers a Ping.
//
//	[0x11, nonce]
type Pong struct{ Nonce uint64 }

func (*Pong) Kind() Kind { return KindPong }

func (f *Pong) encode(e *Encoder) error {
	e.header(KindPong, 2)
	return e.counter("pong.nonce", f.Nonce)
}

func (f *Pong) decode(r *reader, n int) (err error) {
	if f.Nonce, err = nonceFrame(r, KindPong, n); err != nil {
		return err
	}
	return nil
}

func nonceFrame(r *reader, k Kind, n int) (uint64, error) {
	if err := need(k, n, 1); err != nil {
		return 0, err
	}
	v, err := r.counter(k.String() + ".nonce")
	if err != nil {
		return 0, err
	}
	return v, r.skip(k.String(), n-1)
}

// Welcome accepts a Hello.
//
//	[0x20, version, server, session, expires at, limits]
type Welcome struct {
	Server  string // server software and version, ≤ MaxSoftwareBytes
	Session SessionID
	// ExpiresAt is when the token expires, in Unix milliseconds, or 0 if it
	// does not. A client sends Refresh before then.
	ExpiresAt uint64
	Limits    Limits
}

func (*Welcome) Kind() Kind { return KindWelcome }

func (f *Welcome) encode(e *Encoder) error {
	e.header(KindWelcome, 6)
	e.uint(Version)
	if err := e.str("welcome.server", f.Server, MaxSoftwareBytes); err != nil {
		return err
	}
	e.key((*[16]byte)(&f.Session))
	if err := e.counter("welcome.expires_at", f.ExpiresAt); err != nil {
		return err
	}
	l := &f.Limits
	e.array(7)
	for _, v := range [...]uint32{l.MaxFrameBytes, l.MaxOpsPerFrame, l.MaxDocsPerSocket,
		l.OpsPerSecond, l.BytesPerSecond, l.PresenceMs, l.PresenceTTLMs} {
		e.uint(uint64(v))
	}
	return nil
}

func (f *Welcome) decode(r *reader, n int) (err error) {
	if err := need(KindWelcome, n, 5); err != nil {
		return err
	}
	if err := r.version1("welcome.version"); err != nil {
		return err
	}
	if f.Server, err = r.str("welcome.server", MaxSoftwareBytes); err != nil {
		return err
	}
	if f.Session, err = r.key("welcome.session"); err != nil {
		return err
	}
	if f.ExpiresAt, err = r.counter("welcome.expires_at"); err != nil {
		return err
	}
	m, err := r.fields("welcome.limits", 7)
	if err != nil {
		return err
	}
	l := &f.Limits
	for _, p := range [...]*uint32{&l.MaxFrameBytes, &l.MaxOpsPerFrame, &l.MaxDocsPerSocket,
		&l.OpsPerSecond, &l.BytesPerSecond, &l.PresenceMs, &l.PresenceTTLMs} {
		v, err := r.uint("welcome.limits", math.MaxUint32)
		if err != nil {
			return err
		}
		*p = uint32(v)
	}
	if err := r.skip("welcome.limits", m-7); err != nil {
		return err
	}
	return r.skip("welcome", n-5)
}

// Sync answers a Join for one document: the ops the client lacks and the
// server's version. A large answer is split into several Sync frames for the
// document with More set on all but the last; the client applies each and,
// after the last, sends as Delta frames what Version shows the server lacks.
//
//	[0x21, doc, seq, version, delta, more]
type Sync struct {
	Doc string
	// Seq is the server's op-log sequence number for Doc that this sync
	// brings the client up to; Updates that follow carry higher ones.
	Seq uint64
	// Version is the server's version vector once every part is applied.
	Version crdt.Version
	Delta   crdt.Delta
	More    bool
}

func (*Sync) Kind() Kind { return KindSync }

func (f *Sync) encode(e *Encoder) error {
	e.header(KindSync, 6)
	if err := e.doc("sync.doc", f.Doc); err != nil {
		return err
	}
	if err := e.counter("sync.seq", f.Seq); err != nil {
		return err
	}
	if err := e.version(f.Version); err != nil {
		return err
	}
	if err := e.delta(&f.Delta); err != nil {
		return err
	}
	e.bool(f.More)
	return nil
}

func (f *Sync) decode(r *reader, n int) (err error) {
	if err := need(KindSync, n, 5); err != nil {
		return err
	}
	if f.Doc, err = r.doc("sync.doc"); err != nil {
		return err
	}
	if f.Seq, err = r.counter("sync.seq"); err != nil {
		return err
	}
	if f.Version, err = r.version(); err != nil {
		return err
	}
	if err := r.delta(&f.Delta); err != nil {
		return err
	}
	if f.More, err = r.bool("sync.more"); err != nil {
		return err
	}
	return r.skip("sync", n-5)
}

// Ack confirms that the Delta numbered ClientSeq is durable: its content is
// in the server's op log and fsynced, at or before Seq. It is never sent
// earlier, so an acknowledged edit survives a server crash.
//
//	[0x22, doc, client seq, seq]
type Ack struct {
	Doc       string
	ClientSeq uint64
	Seq       uint64 // the server's op-log seq for Doc covering the delta
}

func (*Ack) Kind() Kind { return KindAck }

func (f *Ack) encode(e *Encoder) error {
	e.header(KindAck, 4)
	if err := e.doc("ack.doc", f.Doc); err != nil {
		return err
	}
	if f.ClientSeq == 0 {
		return malformed("ack.client_seq", "zero")
	}
	if err := e.counter("ack.client_seq", f.ClientSeq); err != nil {
		return err
	}
	return e.counter("ack.seq", f.Seq)
}

func (f *Ack) decode(r *reader, n int) (err error) {
	if err := need(KindAck, n, 3); err != nil {
		return err
	}
	if f.Doc, err = r.doc("ack.doc"); err != nil {
		return err
	}
	if f.ClientSeq, err = r.counter("ack.client_seq"); err != nil {
		return err
	}
	if f.ClientSeq == 0 {
		return malformed("ack.client_seq", "zero")
	}
	if f.Seq, err = r.counter("ack.seq"); err != nil {
		return err
	}
	return r.skip("ack", n-3)
}

// Update broadcasts ops another session (or the server's HTTP API) applied to
// a joined document. It is sent before the ops are durable; only the author
// waits for its Ack.
//
//	[0x23, doc, seq, author, delta]
type Update struct {
	Doc string
	// Seq is the server's op-log seq for Doc after these ops. Consecutive
	// Updates of one document have increasing seqs; a client that sees a
	// gap larger than its own acked deltas explain may rejoin to resync.
	Seq    uint64
	Author crdt.AgentKey // the agent of the session that sent the ops
	Delta  crdt.Delta
}

func (*Update) Kind() Kind { return KindUpdate }

func (f *Update) encode(e *Encoder) error {
	e.header(KindUpdate, 5)
	if err := e.doc("update.doc", f.Doc); err != nil {
		return err
	}
	if err := e.counter("update.seq", f.Seq); err != nil {
		return err
	}
	e.key((*[16]byte)(&f.Author))
	return e.delta(&f.Delta)
}

func (f *Update) decode(r *reader, n int) (err error) {
	if err := need(KindUpdate, n, 4); err != nil {
		return err
	}
	if f.Doc, err = r.doc("update.doc"); err != nil {
		return err
	}
	if f.Seq, err = r.counter("update.seq"); err != nil {
		return err
	}
	if f.Author, err = r.key("update.author"); err != nil {
		return err
	}
	if err := r.delta(&f.Delta); err != nil {
		return err
	}
	return r.skip("update", n-4)
}

// Peer is one session's presence in a PresenceUpdate.
// Wire form: [session, agent, user, clock, cursor, [selection, ...]].
type Peer struct {
	Session    SessionID
	Agent      crdt.AgentKey
	User       User
	Clock      uint64
	Cursor     crdt.Anchor
	Selections []Selection
}

// PresenceUpdate relays, for one document, the latest presence of sessions
// that changed since the last one, and the sessions whose presence ended
// (they left, disconnected or expired).
//
//	[0x24, doc, [peer, ...], [gone session, ...]]
type PresenceUpdate struct {
	Doc   string
	Peers []Peer      // ≤ MaxPresencePeers
	Gone  []SessionID // ≤ MaxPresencePeers
}

func (*PresenceUpdate) Kind() Kind { return KindPresenceUpdate }

func (f *PresenceUpdate) encode(e *Encoder) error {
	if len(f.Peers) > MaxPresencePeers {
		return tooLarge("presence_update.peers", uint64(len(f.Peers)), MaxPresencePeers)
	}
	if len(f.Gone) > MaxPresencePeers {
		return tooLarge("presence_update.gone", uint64(len(f.Gone)), MaxPresencePeers)
	}
	e.header(KindPresenceUpdate, 4)
	if err := e.doc("presence_update.doc", f.Doc); err != nil {
		return err
	}
	e.array(len(f.Peers))
	for i := range f.Peers {
		p := &f.Peers[i]
		e.array(6)
		e.key((*[16]byte)(&p.Session))
		e.key((*[16]byte)(&p.Agent))
		if err := e.user(&p.User); err != nil {
			return err
		}
		if err := e.counter("presence_update.clock", p.Clock); err != nil {
			return err
		}
		if err := e.anchor(&p.Cursor); err != nil {
			return err
		}
		if err := e.selections(p.Selections); err != nil {
			return err
		}
	}
	e.array(len(f.Gone))
	for i := range f.Gone {
		e.key((*[16]byte)(&f.Gone[i]))
	}
	return nil
}

func (f *PresenceUpdate) decode(r *reader, n int) (err error) {
	if err := need(KindPresenceUpdate, n, 3); err != nil {
		return err
	}
	if f.Doc, err = r.doc("presence_update.doc"); err != nil {
		return err
	}
	// A peer is at least a fixarray, two bin keys, a user of two empty
	// strings, a fixint, an edge anchor and an empty array.
	np, err := r.arrayLen("presence_update.peers", MaxPresencePeers, 1+18+18+3+1+5+1)
	if err != nil {
		return err
	}
	if np > 0 {
		f.Peers = make([]Peer, np)
	}
	for i := range f.Peers {
		p := &f.Peers[i]
		m, err := r.fields("presence_update.peer", 6)
		if err != nil {
			return err
		}
		if p.Session, err = r.key("presence_update.session"); err != nil {
			return err
		}
		if p.Agent, err = r.key("presence_update.agent"); err != nil {
			return err
		}
		if err := r.user(&p.User); err != nil {
			return err
		}
		if p.Clock, err = r.counter("presence_update.clock"); err != nil {
			return err
		}
		if err := r.anchor(&p.Cursor); err != nil {
			return err
		}
		if p.Selections, err = r.selections(); err != nil {
			return err
		}
		if err := r.skip("presence_update.peer", m-6); err != nil {
			return err
		}
	}
	ng, err := r.arrayLen("presence_update.gone", MaxPresencePeers, 18)
	if err != nil {
		return err
	}
	if ng > 0 {
		f.Gone = make([]SessionID, ng)
	}
	for i := range f.Gone {
		if f.Gone[i], err = r.key("presence_update.gone"); err != nil {
			return err
		}
	}
	return r.skip("presence_update", n-3)
}

// Refreshed accepts a Refresh.
//
//	[0x25, expires at]
type Refreshed struct {
	ExpiresAt uint64 // the new token's expiry in Unix milliseconds, or 0
}

func (*Refreshed) Kind() Kind { return KindRefreshed }

func (f *Refreshed) encode(e *Encoder) error {
	e.header(KindRefreshed, 2)
	return e.counter("refreshed.expires_at", f.ExpiresAt)
}

func (f *Refreshed) decode(r *reader, n int) (err error) {
	if err := need(KindRefreshed, n, 1); err != nil {
		return err
	}
	if f.ExpiresAt, err = r.counter("refreshed.expires_at"); err != nil {
		return err
	}
	return r.skip("refreshed", n-1)
}

// Error reports a typed error. Unless the server then closes the socket, it
// concerns only the frame or document it names.
//
//	[0x26, code, message, doc, client seq, retry after ms]
type Error struct {
	Code    ErrorCode // never 0
	Message string    // for people, ≤ MaxMessageBytes; clients branch on Code
	Doc     string    // the document concerned, or "" for the session
	// ClientSeq is the Delta frame that failed, or 0.
	ClientSeq uint64
	// RetryAfterMs is the least time to wait before retrying, or 0.
	RetryAfterMs uint32
}

func (*Error) Kind() Kind { return KindError }

// Error makes the frame usable as a Go error on the client side.
func (f *Error) Error() string {
	s := "protocol: server error " + f.Code.String()
	if f.Doc != "" {
		s += " (doc " + f.Doc + ")"
	}
	if f.Message != "" {
		s += ": " + f.Message
	}
	return s
}

func (f *Error) encode(e *Encoder) error {
	if f.Code == 0 {
		return malformed("error.code", "zero")
	}
	e.header(KindError, 6)
	e.uint(uint64(f.Code))
	if err := e.str("error.message", f.Message, MaxMessageBytes); err != nil {
		return err
	}
	if f.Doc == "" {
		e.rawString("")
	} else if err := e.doc("error.doc", f.Doc); err != nil {
		return err
	}
	if err := e.counter("error.client_seq", f.ClientSeq); err != nil {
		return err
	}
	e.uint(uint64(f.RetryAfterMs))
	return nil
}

func (f *Error) decode(r *reader, n int) (err error) {
	if err := need(KindError, n, 5); err != nil {
		return err
	}
	c, err := r.uint("error.code", math.MaxUint16)
	if err != nil {
		return err
	}
	if c == 0 {
		return malformed("error.code", "zero")
	}
	f.Code = ErrorCode(c)
	if f.Message, err = r.str("error.message", MaxMessageBytes); err != nil {
		return err
	}
	if f.Doc, err = r.str("error.doc", MaxDocIDBytes); err != nil {
		return err
	}
	if f.Doc != "" {
		if err := checkDoc("error.doc", f.Doc); err != nil {
			return err
		}
	}
	if f.ClientSeq, err = r.counter("error.client_seq"); err != nil {
		return err
	}
	ms, err := r.uint("error.retry_after_ms", math.MaxUint32)
	if err != nil {
		return err
	}
	f.RetryAfterMs = uint32(ms)
	return r.skip("error", n-5)
}

// GoingAway announces a graceful shutdown. The server stops taking deltas,
// acks what it has made durable, and closes with 1001. Clients reconnect
// (to any node) no sooner than RetryAfterMs, with jitter, and resync.
//
//	[0x27, reason, retry after ms]
type GoingAway struct {
	Reason       string // for people, ≤ MaxMessageBytes
	RetryAfterMs uint32
}

func (*GoingAway) Kind() Kind { return KindGoingAway }

func (f *GoingAway) encode(e *Encoder) error {
	e.header(KindGoingAway, 3)
	if err := e.str("going_away.reason", f.Reason, MaxMessageBytes); err != nil {
		return err
	}
	e.uint(uint64(f.RetryAfterMs))
	return nil
}

func (f *GoingAway) decode(r *reader, n int) (err error) {
	if err := need(KindGoingAway, n, 2); err != nil {
		return err
	}
	if f.Reason, err = r.str("going_away.reason", MaxMessageBytes); err != nil {
		return err
	}
	ms, err := r.uint("going_away.retry_after_ms", math.MaxUint32)
	if err != nil {
		return err
	}
	f.RetryAfterMs = uint32(ms)
	return r.skip("going_away", n-2)
}
