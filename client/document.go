package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// snapEvery is how many log entries a document's state accumulates before
// the client writes a snapshot and drops them.
const snapEvery = 512

// State is a document's sync state.
type State uint8

const (
	// Offline: not joined on a live connection (or sync stopped, see
	// Status.Err). Edits are kept and sent later.
	Offline State = iota
	// Pending: connected, but the initial sync has not finished or some
	// local ops are not acknowledged yet.
	Pending
	// Synced: connected, caught up with the server as of the last sync,
	// and every local op is durable on the server.
	Synced
)

func (s State) String() string {
	switch s {
	case Offline:
		return "offline"
	case Pending:
		return "pending"
	case Synced:
		return "synced"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Status is a snapshot of a document's sync state.
type Status struct {
	State State
	// Unacked counts the local ops the server has not acknowledged as
	// durable.
	Unacked int
	// Err says why the document does not sync, when it cannot: a refused
	// join, a failed state file, a client that stopped reconnecting.
	Err error
}

// Origin says where a change came from.
type Origin uint8

const (
	// Local changes were made through this Doc's edit methods.
	Local Origin = 1
	// Remote changes came from the server: other clients' edits, or ops
	// this replica lacked when it (re)joined.
	Remote Origin = 2
)

func (o Origin) String() string {
	switch o {
	case Local:
		return "local"
	case Remote:
		return "remote"
	}
	return fmt.Sprintf("Origin(%d)", uint8(o))
}

// Event reports one change of a document, for Options.OnChange.
type Event struct {
	Doc    *Doc
	Origin Origin
	// Changes are the visible edits in code points, in order: applying
	// them to the text as it was before gives the text after.
	Changes []crdt.Change
	// Author is the agent of a remote Update (zero for a resync).
	Author crdt.AgentKey
	// Delta holds the ops: a local edit's ops, or the remote ops that
	// were new to this replica (parts it already held are cut away).
	Delta crdt.Delta
}

// Range is a selection in code points: Anchor is where it started, Head
// where the caret is.
type Range struct{ Anchor, Head int }

// PeerInfo is another session's presence in a document, resolved against
// this replica.
type PeerInfo struct {
	Session protocol.SessionID
	Agent   crdt.AgentKey
	User    protocol.User
	// Cursor and Selections are positions in code points. Resolved is
	// false when an anchor names a character this replica does not hold
	// yet; the positions are then 0 and the peer is best hidden.
	Cursor     int
	Selections []Range
	Resolved   bool
}

// entry is a local delta the server has not acknowledged.
type entry struct {
	key    uint64 // state file key, 0 without a state file
	delta  crdt.Delta
	lo, hi uint64 // own seqs covered
	ops    int
	done   bool  // acknowledged
	sent   *conn // the connection it was last sent on
}

type localPresence struct {
	set    bool
	cursor crdt.Anchor
	sels   []protocol.Selection
	user   protocol.User
	clock  uint64
	dirty  bool
	sentAt time.Time
}

type peer struct {
	p    protocol.Peer
	seen time.Time
}

// Doc is one open document: a local replica that accepts edits at once,
// online or not, and syncs with the server whenever the client is
// connected. Its methods are safe for concurrent use.
type Doc struct {
	c  *Client
	id string

	dispatchMu sync.Mutex // held by whoever delivers events

	mu          sync.Mutex
	text        *crdt.Text
	pending     []*entry     // in creation order, so in own-seq order
	unacked     int          // ops in pending
	nextKey     uint64       // last state key handed out
	logN        int          // log entries since the last snapshot
	conn        *conn        // the connection the doc is joined on, or nil
	synced      bool         // the last Sync part of the join on conn arrived
	outbox      []crdt.Delta // ops of others the server lacks, to send on conn
	lostChecked bool         // the join on conn was checked for lost acks
	err         *Error       // the join on conn was refused
	broken      error        // sync stopped for good (ErrState, ErrAgentReused)
	closed      bool
	changed     chan struct{} // closed and replaced on every status change
	events      []Event
	presOut     bool // OnPresence is due
	presence    localPresence
	peers       map[protocol.SessionID]*peer
	ttl         time.Duration
}

func newDoc(c *Client, id string, text *crdt.Text) *Doc {
	return &Doc{c: c, id: id, text: text, changed: make(chan struct{}), ttl: 30 * time.Second}
}

// restore rebuilds a document from the state file.
func (d *Doc) restore(sd *storedDoc) error {
	if sd.snap != nil {
		t, err := crdt.Load(sd.snap, d.c.agent)
		if err != nil {
			return fmt.Errorf("%w: snapshot of %q: %w", ErrState, d.id, err)
		}
		d.text = t
	}
	for _, k := range sd.log {
		delta, err := decodeDelta(k.data)
		if err != nil {
			return fmt.Errorf("%w: log entry %d of %q: %w", ErrState, k.key, d.id, err)
		}
		// Entries are stored in apply order, so each applies in full;
		// an op that was already missing when it arrived waits as before.
		if err := d.text.Apply(delta); err != nil && !errors.Is(err, crdt.ErrMissing) {
			return fmt.Errorf("%w: log entry %d of %q: %w", ErrState, k.key, d.id, err)
		}
		d.logN++
	}
	for _, k := range sd.pending {
		delta, err := decodeDelta(k.data)
		if err != nil {
			return fmt.Errorf("%w: pending entry %d of %q: %w", ErrState, k.key, d.id, err)
		}
		lo, hi := ownRange(&delta, d.c.agent)
		e := &entry{key: k.key, delta: delta, lo: lo, hi: hi, ops: len(delta.Ops)}
		d.pending = append(d.pending, e)
		d.unacked += e.ops
	}
	slices.SortFunc(d.pending, func(a, b *entry) int { return cmp.Compare(a.key, b.key) })
	// Every pending op must be in the replica, or this agent's next edit
	// would reuse its seqs.
	if n := len(d.pending); n > 0 && d.text.Next(d.c.agent) < d.pending[n-1].hi {
		return fmt.Errorf("%w: replica of %q lacks its own unacknowledged ops", ErrState, d.id)
	}
	d.nextKey = sd.maxKey
	return nil
}

// ID returns the document ID.
func (d *Doc) ID() string { return d.id }

// Text returns the current text.
func (d *Doc) Text() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.text.String()
}

// Len returns the length of the text in code points.
func (d *Doc) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.text.Len()
}

// Version returns the replica's version vector.
func (d *Doc) Version() crdt.Version {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.text.Version()
}

// Replica returns an independent copy of the replica, for inspection
// (anchors, IDs, versions); editing the copy changes nothing here.
func (d *Doc) Replica() *crdt.Text {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.text.Clone()
}

// AckedSeq returns how many of this client's own seqs in the document are
// durable on the server: every op of this agent with a seq below it was
// acknowledged.
func (d *Doc) AckedSeq() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ackedSeqLocked()
}

func (d *Doc) ackedSeqLocked() uint64 {
	if len(d.pending) > 0 {
		return d.pending[0].lo
	}
	return d.text.Next(d.c.agent)
}

// Insert inserts s at code-point position pos.
//
// Every edit is applied to the replica before the call returns, whether
// the client is connected or not, and sent as soon as the document is
// synced. With Options.StatePath the edit (with every remote op it was
// made on top of) is committed to the state file before the call returns
// and before it is sent: once Insert returns, the edit survives a crash of
// this process and is sent after the restart; if Insert fails with
// ErrState, the edit exists only in memory and is never sent.
func (d *Doc) Insert(pos int, s string) error {
	return d.edit(crdt.Change{Pos: pos, Insert: s}, func(t *crdt.Text) (crdt.Delta, error) { return t.Insert(pos, s) })
}

// Delete deletes n code points at pos. See Insert for the guarantees.
func (d *Doc) Delete(pos, n int) error {
	return d.edit(crdt.Change{Pos: pos, Delete: n}, func(t *crdt.Text) (crdt.Delta, error) { return t.Delete(pos, n) })
}

// Replace deletes n code points at pos and inserts s there, as one edit.
// See Insert for the guarantees.
func (d *Doc) Replace(pos, n int, s string) error {
	return d.edit(crdt.Change{Pos: pos, Delete: n, Insert: s}, func(t *crdt.Text) (crdt.Delta, error) { return t.Replace(pos, n, s) })
}

func (d *Doc) edit(ch crdt.Change, fn func(t *crdt.Text) (crdt.Delta, error)) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	if d.broken != nil {
		d.mu.Unlock()
		return d.broken
	}
	delta, err := fn(d.text)
	if err != nil || delta.Empty() {
		d.mu.Unlock()
		return err
	}
	parts := protocol.SplitDelta(delta, entryMaxOps, entryMaxBytes)
	entries := make([]*entry, len(parts))
	for i := range parts {
		lo, hi := ownRange(&parts[i], d.c.agent)
		entries[i] = &entry{delta: parts[i], lo: lo, hi: hi, ops: len(parts[i].Ops)}
	}
	if st := d.c.st; st != nil {
		if err := d.persistLocal(st, entries); err != nil {
			d.broken = err
			d.notifyLocked()
			d.mu.Unlock()
			d.c.report(&Error{Doc: d.id, Err: err})
			return err
		}
	}
	d.pending = append(d.pending, entries...)
	for _, e := range entries {
		d.unacked += e.ops
	}
	d.flushLocked()
	if d.c.opts.OnChange != nil {
		d.events = append(d.events, Event{Doc: d, Origin: Local, Changes: []crdt.Change{ch}, Delta: delta})
	}
	d.maybeSnapshotLocked()
	d.notifyLocked()
	d.mu.Unlock()
	d.dispatch()
	return nil
}

// persistLocal commits local entries to the log and the pending set and
// waits for the commit.
func (d *Doc) persistLocal(st *stateDB, entries []*entry) error {
	fns := make([]func(*bolt.Tx) error, 0, len(entries))
	for _, e := range entries {
		data, err := encodeDelta(d.id, e.delta)
		if err != nil {
			return fmt.Errorf("%w: encode: %w", ErrState, err)
		}
		d.nextKey++
		e.key = d.nextKey
		fns = append(fns, putLog(d.id, e.key, data, true))
	}
	err := st.submit(func(tx *bolt.Tx) error {
		for _, fn := range fns {
			if err := fn(tx); err != nil {
				return err
			}
		}
		return nil
	}, true)
	if err != nil {
		if !errors.Is(err, ErrState) && !errors.Is(err, ErrClosed) {
			err = fmt.Errorf("%w: %w", ErrState, err)
		}
		return err
	}
	d.logN += len(entries)
	return nil
}

// maybeSnapshotLocked compacts the document's log in the state file.
func (d *Doc) maybeSnapshotLocked() {
	if d.c.st == nil || d.logN < snapEvery || d.broken != nil {
		return
	}
	d.snapshotLocked()
}

func (d *Doc) snapshotLocked() {
	if d.logN == 0 {
		return
	}
	data, err := d.text.MarshalBinary()
	if err != nil {
		return
	}
	if d.c.st.submit(putSnap(d.id, data, d.nextKey), false) == nil {
		d.logN = 0
	}
}

// applyRemoteLocked merges ops from the server and returns the part that
// was new to this replica, the visible changes, and a *crdt.MissingError
// when some ops need IDs this replica lacks (the others are applied).
func (d *Doc) applyRemoteLocked(delta crdt.Delta) (crdt.Delta, []crdt.Change, error) {
	before := make([]uint64, len(delta.Agents))
	for i, k := range delta.Agents {
		before[i] = d.text.Next(k)
	}
	var changes []crdt.Change
	var emit func(crdt.Change)
	if d.c.opts.OnChange != nil {
		emit = func(c crdt.Change) { changes = append(changes, c) }
	}
	err := d.text.ApplyChanges(delta, emit)
	var skip []int
	if err != nil {
		var me *crdt.MissingError
		if !errors.As(err, &me) {
			return crdt.Delta{}, nil, err
		}
		skip = me.Pending
	}
	fresh := crdt.Delta{Agents: delta.Agents}
	for i, o := range delta.Ops {
		if len(skip) > 0 && skip[0] == i {
			skip = skip[1:]
			continue
		}
		b := before[o.Agent]
		if o.Seq+o.Len <= b {
			continue
		}
		if o.Seq < b {
			o = protocol.TrimOp(o, b-o.Seq)
		}
		fresh.Ops = append(fresh.Ops, o)
	}
	if st := d.c.st; st != nil && len(fresh.Ops) > 0 && d.broken == nil {
		data, eerr := encodeDelta(d.id, fresh)
		if eerr == nil {
			d.nextKey++
			eerr = st.submit(putLog(d.id, d.nextKey, data, false), false)
		}
		if eerr != nil {
			// Later local edits may depend on these ops; storing them
			// without would leave a state that does not replay.
			d.broken = fmt.Errorf("%w: %w", ErrState, eerr)
			d.c.report(&Error{Doc: d.id, Err: d.broken})
		} else {
			d.logN++
			d.maybeSnapshotLocked()
		}
	}
	return fresh, changes, err
}

// --- connection events (called by the conn) ---------------------------------

// attachLocked joins the document to cn: the Join that follows resyncs it.
func (d *Doc) attachLocked(cn *conn) {
	d.conn = cn
	d.synced = false
	d.err = nil
	d.outbox = nil
	d.lostChecked = false
	d.peers = nil
	d.ttl = cn.presenceTTL()
	if d.presence.set {
		d.presence.dirty = true
		d.presence.sentAt = time.Time{}
	}
	d.notifyLocked()
}

// detach forgets cn, which is gone.
func (d *Doc) detach(cn *conn) {
	d.mu.Lock()
	if d.conn != cn {
		d.mu.Unlock()
		return
	}
	d.conn = nil
	d.synced = false
	d.err = nil
	d.outbox = nil
	had := len(d.peers) > 0
	d.peers = nil
	if had && d.c.opts.OnPresence != nil {
		d.presOut = true
	}
	d.notifyLocked()
	d.mu.Unlock()
	d.dispatch()
}

func (d *Doc) onSync(cn *conn, f *protocol.Sync) {
	d.mu.Lock()
	if d.conn != cn || d.closed || d.broken != nil {
		d.mu.Unlock()
		return
	}
	me := d.c.agent
	if acked := d.ackedSeqLocked(); f.Version[me] < acked && !d.lostChecked {
		d.lostChecked = true
		d.c.report(&Error{Doc: d.id, Err: &LostAckedError{Doc: d.id, From: f.Version[me], To: acked}})
	}
	if f.Version[me] > d.text.Next(me) {
		// Checked on every part before applying it, so the first part
		// catches it: the server holds ops of ours we never made here.
		d.broken = fmt.Errorf("%w: server has %d seqs, replica %d", ErrAgentReused, f.Version[me], d.text.Next(me))
		d.notifyLocked()
		d.mu.Unlock()
		d.c.report(&Error{Doc: d.id, Err: d.broken})
		_ = cn.write(&protocol.Leave{Docs: []string{d.id}})
		return
	}
	fresh, changes, err := d.applyRemoteLocked(f.Delta)
	d.queueRemote(changes, fresh, crdt.AgentKey{})
	if err != nil && !errors.Is(err, crdt.ErrMissing) {
		d.mu.Unlock()
		d.c.report(&Error{Doc: d.id, Err: fmt.Errorf("server sent an invalid sync: %w", err)})
		cn.requestRejoin(d, time.Second)
		d.dispatch()
		return
	}
	if err != nil {
		cn.requestRejoin(d, 200*time.Millisecond)
	}
	if !f.More {
		d.synced = true
		d.outbox = d.lackingLocked(cn, f.Version)
		for _, e := range d.pending {
			e.sent = nil // the server may lack them: resend all
		}
		d.flushLocked()
		d.notifyLocked()
	}
	d.mu.Unlock()
	d.dispatch()
}

// lackingLocked returns the ops of other agents the server lacks
// (version sv), split into frames: ones it lost, say in a crash after
// relaying them to us. Our own ops the server lacks are pending entries,
// which go after them; if the server lost acknowledged ops of ours (it
// should not), they go here too.
func (d *Doc) lackingLocked(cn *conn, sv crdt.Version) []crdt.Delta {
	me := d.c.agent
	firstPending := d.text.Next(me)
	if len(d.pending) > 0 {
		firstPending = d.pending[0].lo
	}
	v := sv.Clone()
	if v[me] >= firstPending {
		v[me] = d.text.Next(me)
	}
	lacking := d.text.Since(v)
	if lacking.Empty() {
		return nil
	}
	maxOps, maxBytes := cn.frameLimits()
	return protocol.SplitDelta(lacking, maxOps, maxBytes)
}

// flushLocked sends, on the document's connection, what it owes the
// server: the outbox, then every pending entry not sent there yet, packed
// into as few frames as the limits allow and paced to the server's rates.
// When it must wait, it asks the run loop to call it again.
func (d *Doc) flushLocked() {
	cn := d.conn
	if cn == nil || !d.synced || d.err != nil || d.broken != nil {
		return
	}
	for len(d.outbox) > 0 {
		if wait := cn.sendDelta(d, d.outbox[0], nil); wait > 0 {
			cn.requestFlush(d, wait)
			return
		}
		d.outbox = d.outbox[1:]
	}
	maxOps, maxBytes := cn.frameLimits()
	var w protocol.DeltaWriter // merges the group's deltas once it has two
	var group []*entry
	ops, size := 0, 0
	send := func() bool {
		delta := group[0].delta
		if len(group) > 1 {
			delta = w.Delta()
		}
		if wait := cn.sendDelta(d, delta, group); wait > 0 {
			cn.requestFlush(d, wait)
			return false
		}
		for _, e := range group {
			e.sent = cn
		}
		w, group, ops, size = protocol.DeltaWriter{}, nil, 0, 0
		return true
	}
	for _, e := range d.pending {
		if e.done || e.sent == cn {
			continue
		}
		n := protocol.EstimateBytes(&e.delta)
		if len(group) > 0 && (ops+e.ops > maxOps || size+n > maxBytes) && !send() {
			return
		}
		if len(group) == 1 {
			w.AddAll(&group[0].delta)
		}
		if len(group) >= 1 {
			w.AddAll(&e.delta)
		}
		group = append(group, e)
		ops += e.ops
		size += n
	}
	if len(group) > 0 {
		send()
	}
}

// flush is flushLocked for the run loop.
func (d *Doc) flush(cn *conn) {
	d.mu.Lock()
	if d.conn == cn {
		d.flushLocked()
	}
	d.mu.Unlock()
}

func (d *Doc) onUpdate(cn *conn, f *protocol.Update) {
	d.mu.Lock()
	if d.conn != cn || d.closed || errors.Is(d.broken, ErrAgentReused) {
		d.mu.Unlock()
		return
	}
	fresh, changes, err := d.applyRemoteLocked(f.Delta)
	d.queueRemote(changes, fresh, f.Author)
	d.mu.Unlock()
	switch {
	case errors.Is(err, crdt.ErrMissing):
		// A correct server never sends this: our state is in doubt.
		cn.requestRejoin(d, 0)
	case err != nil:
		d.c.report(&Error{Doc: d.id, Err: fmt.Errorf("server sent an invalid update: %w", err)})
		cn.requestRejoin(d, time.Second)
	}
	d.dispatch()
}

func (d *Doc) queueRemote(changes []crdt.Change, fresh crdt.Delta, author crdt.AgentKey) {
	if d.c.opts.OnChange == nil || (len(changes) == 0 && len(fresh.Ops) == 0) {
		return
	}
	d.events = append(d.events, Event{Doc: d, Origin: Remote, Changes: changes, Author: author, Delta: fresh})
}

// onAck marks entries durable.
func (d *Doc) onAck(entries []*entry) {
	d.mu.Lock()
	var keys []uint64
	for _, e := range entries {
		if e.done {
			continue
		}
		e.done = true
		d.unacked -= e.ops
		if e.key != 0 {
			keys = append(keys, e.key)
		}
	}
	d.pending = slices.DeleteFunc(d.pending, func(e *entry) bool { return e.done })
	if len(keys) > 0 && d.c.st != nil && d.broken == nil {
		// Not waited for: losing it only means one duplicate resend.
		_ = d.c.st.submit(delPending(d.id, keys), false)
	}
	d.notifyLocked()
	d.mu.Unlock()
}

// deleted records that the server deleted the document.
func (d *Doc) deleted(cn *conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != cn || d.broken != nil {
		return
	}
	d.broken = ErrDeleted
	d.synced = false
	d.notifyLocked()
}

// refuse records that the server refused the join on cn, or refused the
// document's deltas: nothing more is sent for it on cn.
func (d *Doc) refuse(cn *conn, e *Error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != cn {
		return
	}
	d.synced = false
	d.err = e
	d.notifyLocked()
}

func (d *Doc) onPresenceUpdate(cn *conn, f *protocol.PresenceUpdate, now time.Time) {
	d.mu.Lock()
	if d.conn != cn {
		d.mu.Unlock()
		return
	}
	if d.peers == nil {
		d.peers = make(map[protocol.SessionID]*peer)
	}
	for _, p := range f.Peers {
		if cur := d.peers[p.Session]; cur != nil && cur.p.Clock >= p.Clock {
			cur.seen = now
			continue
		}
		d.peers[p.Session] = &peer{p: p, seen: now}
	}
	for _, s := range f.Gone {
		delete(d.peers, s)
	}
	if d.c.opts.OnPresence != nil {
		d.presOut = true
	}
	d.mu.Unlock()
	d.dispatch()
}

// presenceDue sends the local presence on cn when it is due and returns
// when it next will be (zero: nothing to send).
func (d *Doc) presenceDue(cn *conn, now time.Time, interval time.Duration) time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := &d.presence
	if d.conn != cn || !d.synced || !p.set || d.err != nil || d.broken != nil {
		return time.Time{}
	}
	due := p.sentAt.Add(d.ttl / 2)
	if p.dirty {
		due = p.sentAt.Add(interval)
	}
	if now.Before(due) {
		return due
	}
	p.clock++
	p.dirty = false
	p.sentAt = now
	_ = cn.write(&protocol.Presence{Doc: d.id, Clock: p.clock, User: p.user, Cursor: p.cursor, Selections: p.sels})
	return now.Add(d.ttl / 2)
}

// --- status ---------------------------------------------------------------

func (d *Doc) notifyLocked() {
	close(d.changed)
	d.changed = make(chan struct{})
}

func (d *Doc) notify() {
	d.mu.Lock()
	d.notifyLocked()
	d.mu.Unlock()
}

func (d *Doc) statusLocked() Status {
	st := Status{Unacked: d.unacked}
	switch {
	case d.closed:
		st.Err = ErrClosed
	case d.broken != nil:
		st.Err = d.broken
	case d.err != nil:
		st.Err = d.err
	case d.conn == nil || !d.conn.welcomed():
		if h := d.c.halted.Load(); h != nil {
			st.Err = h
		}
	case !d.synced || d.unacked > 0:
		st.State = Pending
	default:
		st.State = Synced
	}
	return st
}

// Status reports the document's sync state.
func (d *Doc) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.statusLocked()
}

// WaitSynced waits until the document is Synced, or returns the reason it
// cannot become so (Status.Err), or ctx's error.
func (d *Doc) WaitSynced(ctx context.Context) error {
	for {
		d.mu.Lock()
		st := d.statusLocked()
		ch := d.changed
		d.mu.Unlock()
		if st.State == Synced {
			return nil
		}
		if st.Err != nil {
			return st.Err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// --- presence ---------------------------------------------------------------

// SetPresence publishes this client's caret and selections, as positions
// in code points; they travel as anchors, so peers see them stay on their
// characters while others edit. user, when not nil, replaces Options.User
// for this document. Presence is sent at most once per the server's
// presence interval and refreshed while idle so that it does not expire.
func (d *Doc) SetPresence(cursor int, selections []Range, user *protocol.User) error {
	d.mu.Lock()
	c, err := d.text.AnchorAt(cursor, crdt.AssocRight)
	if err != nil {
		d.mu.Unlock()
		return err
	}
	sels := make([]protocol.Selection, 0, len(selections))
	for _, r := range selections {
		a, err := d.text.AnchorAt(r.Anchor, crdt.AssocRight)
		if err != nil {
			d.mu.Unlock()
			return err
		}
		h, err := d.text.AnchorAt(r.Head, crdt.AssocRight)
		if err != nil {
			d.mu.Unlock()
			return err
		}
		sels = append(sels, protocol.Selection{Anchor: a, Head: h})
	}
	d.mu.Unlock()
	return d.SetPresenceAnchors(c, sels, user)
}

// SetPresenceAnchors is SetPresence with anchors instead of positions.
func (d *Doc) SetPresenceAnchors(cursor crdt.Anchor, selections []protocol.Selection, user *protocol.User) error {
	if len(selections) > protocol.MaxSelections {
		return fmt.Errorf("client: %d selections, at most %d", len(selections), protocol.MaxSelections)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	p := &d.presence
	p.set = true
	p.cursor = cursor
	p.sels = slices.Clone(selections)
	p.user = d.c.opts.User
	if user != nil {
		p.user = *user
	}
	p.dirty = true
	cn := d.conn
	d.mu.Unlock()
	if cn != nil {
		cn.pokeLoop()
	}
	return nil
}

// Peers returns the presence of the other sessions in the document, in no
// particular order, leaving out entries not refreshed within the server's
// presence TTL.
func (d *Doc) Peers() []PeerInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	out := make([]PeerInfo, 0, len(d.peers))
	for _, p := range d.peers {
		if now.Sub(p.seen) > d.ttl {
			continue
		}
		pi := PeerInfo{Session: p.p.Session, Agent: p.p.Agent, User: p.p.User}
		var ok bool
		pi.Cursor, ok = d.text.Resolve(p.p.Cursor)
		pi.Resolved = ok
		for _, s := range p.p.Selections {
			a, ok1 := d.text.Resolve(s.Anchor)
			h, ok2 := d.text.Resolve(s.Head)
			pi.Resolved = pi.Resolved && ok1 && ok2
			pi.Selections = append(pi.Selections, Range{Anchor: a, Head: h})
		}
		if !pi.Resolved {
			pi.Cursor, pi.Selections = 0, nil
		}
		out = append(out, pi)
	}
	return out
}

// --- events ---------------------------------------------------------------

// dispatch delivers queued events in order. Whoever holds dispatchMu
// delivers; the others leave their events to it.
func (d *Doc) dispatch() {
	onChange, onPresence := d.c.opts.OnChange, d.c.opts.OnPresence
	if onChange == nil && onPresence == nil {
		return
	}
	for d.dispatchMu.TryLock() {
		for {
			d.mu.Lock()
			evs, pres := d.events, d.presOut
			d.events, d.presOut = nil, false
			d.mu.Unlock()
			if len(evs) == 0 && !pres {
				break
			}
			for _, e := range evs {
				onChange(e)
			}
			if pres {
				onPresence(d)
			}
		}
		d.dispatchMu.Unlock()
		d.mu.Lock()
		more := len(d.events) > 0 || d.presOut
		d.mu.Unlock()
		if !more {
			return
		}
	}
}

// Discard closes the document and deletes its state from the state file,
// unacknowledged edits included: the next Open starts from what the
// server has. Use it after ErrDeleted, or to drop local changes.
func (d *Doc) Discard() error {
	if err := d.Close(); err != nil {
		return err
	}
	if d.c.st == nil {
		return nil
	}
	return d.c.st.submit(func(tx *bolt.Tx) error {
		if tx.Bucket(bDocs).Bucket([]byte(d.id)) == nil {
			return nil
		}
		return tx.Bucket(bDocs).DeleteBucket([]byte(d.id))
	}, true)
}

// Close leaves the document on the server and forgets it locally; its
// state (and unacknowledged edits) stay in the state file for the next
// Open. Edits after Close fail with ErrClosed.
func (d *Doc) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	cn := d.conn
	d.conn = nil
	if d.c.st != nil && d.broken == nil {
		d.snapshotLocked()
	}
	d.notifyLocked()
	d.mu.Unlock()
	if cn != nil {
		_ = cn.write(&protocol.Leave{Docs: []string{d.id}})
	}
	d.c.forget(d)
	return nil
}
