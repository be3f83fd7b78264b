package syncer

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// Log is the durable op log the hub persists documents to. The store
// package provides it (through syncer/storelog); tests may use the same.
// Implementations must be safe for concurrent use; the hub calls Append for
// one document from one goroutine at a time and relies on seqs being
// assigned consecutively per document.
type Log interface {
	// Append stores records durably and returns the seqs they got.
	Append(doc string, recs ...[]byte) (first, last uint64, err error)
	// Range calls fn for every record with seq ≥ from, in order.
	Range(doc string, from uint64, fn func(seq uint64, rec []byte) error) error
	// SaveSnapshot stores a snapshot covering records ≤ seq; the log may
	// then drop them.
	SaveSnapshot(doc string, seq uint64, data []byte) error
	// LoadSnapshot returns the newest snapshot, or seq 0 and nil data.
	LoadSnapshot(doc string) (seq uint64, data []byte, err error)
	// Stat describes one document, or fails with ErrUnknownDoc.
	Stat(doc string) (DocMeta, error)
	// List describes every document, sorted by ID.
	List() ([]DocMeta, error)
	// Delete removes a document and its log.
	Delete(doc string) error
}

// DocMeta describes a stored document.
type DocMeta struct {
	Doc              string
	Created, Updated time.Time
	LastSeq          uint64
	Records, Bytes   uint64
}

// Errors callers of the hub branch on.
var (
	ErrUnknownDoc = errors.New("syncer: unknown document")
	ErrClosed     = errors.New("syncer: hub closed")
	ErrBusy       = errors.New("syncer: document busy")
)

// Peer is the hub's view of a connection: somewhere to queue frames. Send
// must not block; it returns false when the frame was not queued (the peer
// is gone or over its budget, in which case the transport closes it).
type Peer interface {
	Send(frame []byte) bool
	Close(code protocol.ErrorCode, reason string)
}

// Options configure a Hub. Zero values take the documented defaults.
type Options struct {
	Engine EngineOptions
	// IdleTimeout unloads a document this long after its last subscriber
	// left (or up to a sixteenth of it later: one timer serves every
	// document). Default 60 s.
	IdleTimeout time.Duration
	// MemoryBudget caps the estimated bytes of loaded documents; over it,
	// idle documents are unloaded least recently used first. Default 1 GiB.
	MemoryBudget int64
	// InboxSize bounds each document's queue of inputs. A sender blocks
	// when it is full, which pushes back on the connection that floods.
	// Default 8 (DefaultInboxSize).
	InboxSize int
	// PersistRetry is the pause before retrying a failed append (say, disk
	// full). Default 500 ms.
	PersistRetry time.Duration
	Logger       *slog.Logger
	Metrics      *Metrics
	// Now is the clock; tests may replace it. Default time.Now.
	Now func() time.Time
}

// DefaultInboxSize is the default Options.InboxSize.
//
// A channel's buffer is allocated when the channel is made, and a message
// is about 100 bytes, so the inbox used to be most of what an idle
// document costs: 1,024 slots made every loaded document about 100 KB.
// Eight slots cost under 1 KB and lose nothing in batching: a sender that
// finds the inbox full waits with its message, and the actor's drain takes
// waiting senders' messages as readily as buffered ones, so a burst from
// many connections is still handled, and flushed (one append, one
// broadcast per peer), as one. What changes is how far one connection may
// run ahead of its document before its reader blocks: 8 messages instead
// of 1,024, which is the backpressure the inbox is for. (Measured with
// 100 connections writing to one document: as many deltas per second with
// 8 slots as with 1,024.)
const DefaultInboxSize = 8

func (o Options) withDefaults() Options {
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.MemoryBudget <= 0 {
		o.MemoryBudget = 1 << 30
	}
	if o.InboxSize <= 0 {
		o.InboxSize = DefaultInboxSize
	}
	if o.PersistRetry <= 0 {
		o.PersistRetry = 500 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Engine = o.Engine.withDefaults()
	return o
}

// Hub owns the loaded documents: one goroutine (an actor) per document
// around its Engine. Sessions and HTTP handlers reach a document by
// acquiring it, which loads it once however many ask at the same time, and
// release it when done; an unreferenced document unloads after
// IdleTimeout, or sooner when memory is over budget.
type Hub struct {
	log  Log
	opts Options

	mu     sync.Mutex // guards docs, closed, the idle timer, and every actor's refs/idleAt
	docs   map[string]*actor
	closed bool

	// One timer for every unreferenced document's idle unload (sweepIdle),
	// rather than one per document; it is set for idleWake.
	idleTimer *time.Timer
	idleWake  time.Time

	mem atomic.Int64 // estimated bytes of loaded documents
	wg  sync.WaitGroup

	// agent is what the server edits as (HTTP edits). It is new for every
	// hub: updates are broadcast before they are durable, so after a crash
	// clients may hold server ops the log lost, and a server that reused
	// its agent would hand out those IDs again for different text.
	agent crdt.AgentKey
}

// NewHub returns a hub persisting to log.
func NewHub(log Log, opts Options) *Hub {
	h := &Hub{log: log, opts: opts.withDefaults(), docs: make(map[string]*actor)}
	h.agent = crdt.AgentKey(uuid.New())
	return h
}

// Agent returns the agent key the server edits documents as.
func (h *Hub) Agent() crdt.AgentKey { return h.agent }

// Options returns the options in force, defaults filled in.
func (h *Hub) Options() Options { return h.opts }

// Log returns the hub's log.
func (h *Hub) Log() Log { return h.log }

// Loaded returns the IDs of the loaded documents.
func (h *Hub) Loaded() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]string, 0, len(h.docs))
	for id := range h.docs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// acquire returns the document's actor, loading it if needed, with a
// reference the caller must release.
func (h *Hub) acquire(doc string) (*actor, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	a := h.docs[doc]
	if a == nil {
		a = newActor(h, doc)
		h.docs[doc] = a
		h.wg.Add(1)
		go a.run()
	}
	a.refs++
	loaded := a.loaded // nil once loading finished; loadErr is set then
	h.mu.Unlock()
	if loaded != nil {
		<-loaded
	}
	if a.loadErr != nil {
		h.release(a)
		return nil, a.loadErr
	}
	return a, nil
}

// release drops a reference; the last one starts the idle clock.
func (h *Hub) release(a *actor) {
	h.mu.Lock()
	a.refs--
	idle := a.refs == 0
	if idle {
		a.idleAt = h.opts.Now()
	}
	h.mu.Unlock()
	if idle {
		a.poke()
	}
}

// tryUnload removes a from the hub if nobody references it. It runs on the
// actor's goroutine, which has checked that nothing waits for the disk, so
// a later acquire loads the document fresh from a complete log.
func (h *Hub) tryUnload(a *actor, force bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if a.refs > 0 || (!force && h.opts.Now().Sub(a.idleAt) < h.opts.IdleTimeout) {
		return false
	}
	if h.docs[a.doc] == a {
		delete(h.docs, a.doc)
	}
	return true
}

// overBudget asks the least recently used idle documents to unload until
// the estimate fits the budget.
func (h *Hub) overBudget() {
	if h.mem.Load() <= h.opts.MemoryBudget {
		return
	}
	h.mu.Lock()
	var idle, cached []*actor
	for _, a := range h.docs {
		if a.refs == 0 {
			idle = append(idle, a)
		} else if a.cached.Load() > 0 {
			cached = append(cached, a)
		}
	}
	h.mu.Unlock()
	sort.Slice(idle, func(i, j int) bool { return idle[i].idleAt.Before(idle[j].idleAt) })
	over := h.mem.Load() - h.opts.MemoryBudget
	for _, a := range idle {
		if over <= 0 {
			break
		}
		over -= a.size.Load()
		a.evict()
	}
	// Documents in use keep their text, but not what they keep only to
	// answer joins sooner.
	for _, a := range cached {
		if over <= 0 {
			break
		}
		over -= a.cached.Load()
		a.dropCache()
	}
}

// idleSlack is how late an idle document may unload: sweeps for idle
// documents are at least this far apart.
func (h *Hub) idleSlack() time.Duration { return max(h.opts.IdleTimeout/16, time.Millisecond) }

// wakeIdle makes sure the hub sweeps for idle documents by a little after
// t. h.mu is held.
func (h *Hub) wakeIdle(t time.Time) {
	slack := h.idleSlack()
	if h.closed || !h.idleWake.IsZero() && !h.idleWake.After(t.Add(slack)) {
		return
	}
	h.idleWake = t
	d := max(t.Sub(h.opts.Now()), slack)
	if h.idleTimer == nil {
		h.idleTimer = time.AfterFunc(d, h.sweepIdle)
		return
	}
	h.idleTimer.Reset(d)
}

// sweepIdle pokes the documents unreferenced for IdleTimeout, which then
// unload (once nothing of theirs waits for the disk), and sets the timer
// for the next one.
func (h *Hub) sweepIdle() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.idleWake = time.Time{}
	now := h.opts.Now()
	var next time.Time
	for _, a := range h.docs {
		if a.refs > 0 {
			continue
		}
		if dl := a.idleAt.Add(h.opts.IdleTimeout); dl.After(now) {
			if next.IsZero() || dl.Before(next) {
				next = dl
			}
			continue
		}
		a.poke()
	}
	if !next.IsZero() {
		h.wakeIdle(next)
	}
}

// Close stops accepting work, lets every document write what it holds,
// and waits for all of them to stop.
func (h *Hub) Close() error {
	h.mu.Lock()
	h.closed = true
	if h.idleTimer != nil {
		h.idleTimer.Stop()
	}
	all := make([]*actor, 0, len(h.docs))
	for _, a := range h.docs {
		all = append(all, a)
	}
	h.mu.Unlock()
	for _, a := range all {
		a.shutdown()
	}
	h.wg.Wait()
	return nil
}

// --- the per-document actor -------------------------------------------------

type msgKind uint8

const (
	mInput msgKind = iota
	mJoin
	mLeave
	mSink
	mCall
)

type msg struct {
	kind    msgKind
	in      Input
	session protocol.SessionID
	peer    Peer
	sink    chan<- SinkEvent
	sinkID  int64
	reply   chan Reply
	call    func(e *Engine)
	done    chan struct{}
}

type persistDone struct {
	upto uint64
	snap bool
	err  error
	took time.Duration
}

// actor runs one document. Everything below the mutex line is owned by
// the goroutine that runs it; that goroutine changes (see loop), but one
// starts the next and stops, so only one runs the actor at a time.
//
// A loaded document mostly waits, and there are many of them, so an idle
// actor is kept small: maps and timers are made when needed and dropped
// when they empty, and the goroutine that waits is a fresh one with the
// smallest stack (see loop).
type actor struct {
	hub    *Hub
	doc    string
	inbox  chan msg
	wake   chan struct{} // poke: re-check flags, idleness and the timer
	loaded chan struct{} // closed once loading finished; nil after (hub.mu)
	done   chan struct{} // closed when the actor stops
	size   atomic.Int64  // estimated bytes, in hub.mem
	cached atomic.Int64  // of which the engine's join answer (sync_cache.go)

	loadErr error

	// Requests from other goroutines, each followed by a poke.
	forced    atomic.Bool // eviction
	stopReq   atomic.Bool // hub shutdown
	dropReq   atomic.Bool // drop the join answer: memory is short
	timerFire atomic.Bool // the timer went off

	// guarded by hub.mu
	refs   int
	idleAt time.Time

	// owned by the goroutine running the actor
	eng      *Engine
	peers    map[protocol.SessionID]Peer // nil while empty, as are the maps below
	leaving  map[protocol.SessionID]leavingPeer
	durable  uint64 // newest log seq known durable
	sinks    map[int64]chan<- SinkEvent
	replies  map[any]chan Reply
	queue    []Record // handed out by the engine, not yet durable
	snap     *Record
	inflight bool
	persist  chan persistDone // made per write; nil while none is in flight
	retryAt  time.Time
	timer    *time.Timer // nil while nothing is due
}

// leavingPeer is a session that left the document (but may still be
// connected): it gets no more broadcasts, but the acks and errors for the
// deltas it sent before leaving, all at seqs up to upto, still reach it
// (docs/protocol.md: deltas already sent are still acked). A delta that was
// still waiting for its dependencies is answered only if it lands by then.
type leavingPeer struct {
	peer Peer
	upto uint64
}

func newActor(h *Hub, doc string) *actor {
	return &actor{
		hub: h, doc: doc,
		inbox:  make(chan msg, h.opts.InboxSize),
		wake:   make(chan struct{}, 1),
		loaded: make(chan struct{}),
		done:   make(chan struct{}),
	}
}

func (a *actor) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *actor) evict()     { a.forced.Store(true); a.poke() }
func (a *actor) shutdown()  { a.stopReq.Store(true); a.poke() }
func (a *actor) dropCache() { a.dropReq.Store(true); a.poke() }
func (a *actor) fire()      { a.timerFire.Store(true); a.poke() }

// send queues a message, blocking while the inbox is full (backpressure
// for the sender) unless the actor is gone.
func (a *actor) send(m msg) error {
	select {
	case a.inbox <- m:
		return nil
	case <-a.done:
		return ErrClosed
	}
}

// load reads the snapshot and the log tail.
func (a *actor) load() error {
	h := a.hub
	snapSeq, data, err := h.log.LoadSnapshot(a.doc)
	if err != nil {
		return fmt.Errorf("syncer: load %s: %w", a.doc, err)
	}
	var text *crdt.Text
	var audit []Audit
	if data != nil {
		if text, audit, err = decodeSnapshot(data, h.agent); err != nil {
			return fmt.Errorf("syncer: load %s: %w", a.doc, err)
		}
	} else {
		text = crdt.New(h.agent)
	}
	last := snapSeq
	var pending []crdt.Delta
	err = h.log.Range(a.doc, snapSeq+1, func(seq uint64, rec []byte) error {
		au, u, err := decodeRecord(rec)
		if err != nil {
			return fmt.Errorf("record %d: %w", seq, err)
		}
		au.Seq = seq
		audit = append(audit, au)
		if err := text.Apply(u.Delta); err != nil {
			var me *crdt.MissingError
			if !errors.As(err, &me) {
				return fmt.Errorf("record %d: %w", seq, err)
			}
			pending = append(pending, protocol.SubDelta(u.Delta, me.Pending))
		}
		last = seq
		return nil
	})
	if err != nil && !errors.Is(err, ErrUnknownDoc) {
		return fmt.Errorf("syncer: load %s: %w", a.doc, err)
	}
	// Records are logged in the order they were applied, so dependencies
	// come first; this only matters for logs written by other tools.
	for progress := true; progress && len(pending) > 0; {
		progress = false
		rest := pending[:0]
		for _, d := range pending {
			if err := text.Apply(d); err != nil {
				rest = append(rest, d)
				continue
			}
			progress = true
		}
		pending = rest
	}
	if len(pending) > 0 {
		h.opts.Logger.Warn("document log holds ops with missing dependencies", "doc", a.doc, "deltas", len(pending))
	}
	if n := h.opts.Engine.AuditKeep; len(audit) > n {
		audit = audit[len(audit)-n:]
	}
	a.eng = NewEngine(a.doc, text, last, snapSeq, audit, h.opts.Engine)
	a.durable = last
	return nil
}

func (a *actor) run() {
	h := a.hub
	start := h.opts.Now()
	if err := a.load(); err != nil {
		a.loadErr = err
		h.opts.Logger.Error("load failed", "doc", a.doc, "err", err)
		h.mu.Lock()
		if h.docs[a.doc] == a {
			delete(h.docs, a.doc)
		}
		close(a.loaded)
		a.loaded = nil
		h.mu.Unlock()
		close(a.done)
		h.wg.Done()
		return
	}
	h.opts.Metrics.docLoads.Observe(h.opts.Now().Sub(start).Seconds())
	h.opts.Metrics.docsLoaded.Inc()
	a.updateSize()
	h.mu.Lock()
	close(a.loaded)
	a.loaded = nil
	h.mu.Unlock()
	h.overBudget()
	if !a.tend() {
		go a.loop() // on a fresh stack: loading may have grown this one
	}
}

// loop serves the document until it stops: wait for something, handle it,
// carry out what the engine wants. A goroutine's stack grows with the
// deepest work it did (a join of a long history, a big delta), and the
// garbage collector shrinks a waiting one only while it uses under a
// quarter of it, which a waiting actor's frames never do below 4 KiB. So
// after working, the loop hands itself to a new goroutine, whose stack
// starts small, and the old one ends with its stack: a document that waits
// holds the smallest stack the runtime gives. That is one goroutine start
// per burst of work, about a microsecond.
func (a *actor) loop() {
	if a.wait() || a.tend() {
		return
	}
	go a.loop()
}

// wait blocks until something happens and handles it. It reports whether
// the actor stopped (a panic took the document down).
func (a *actor) wait() (stopped bool) {
	ok := true
	select {
	case m := <-a.inbox:
		ok = a.burst(m)
	case r := <-a.persist:
		ok = a.safePersisted(r)
	case <-a.wake:
		ok = a.woken()
	}
	if !ok {
		a.crash()
		a.exit()
	}
	return !ok
}

// tend carries out what the engine wants, stops the actor when it may, and
// arms the timer for the engine's next deadline. It reports whether the
// actor stopped.
func (a *actor) tend() (stopped bool) {
	if !a.safe(a.flush) {
		a.crash()
		a.exit()
		return true
	}
	if a.maybeExit(a.stopReq.Load()) {
		a.exit()
		return true
	}
	a.armTimer()
	return false
}

// exit releases what the running actor holds in the hub; the actor's
// goroutine ends right after.
func (a *actor) exit() {
	h := a.hub
	a.stopTimer()
	h.mem.Add(-a.size.Load())
	h.opts.Metrics.docsLoaded.Dec()
	close(a.done)
	h.wg.Done()
}

// burst handles m and whatever else is queued (up to a bound) before the
// flush: one flush (one append, one broadcast per peer) per burst. It
// reports false if a handler panicked.
func (a *actor) burst(m msg) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			a.crashed(r)
			ok = false
		}
	}()
	a.handle(m)
	for n := 0; n < 256; n++ {
		select {
		case m := <-a.inbox:
			a.handle(m)
		default:
			return true
		}
	}
	return true
}

func (a *actor) safePersisted(r persistDone) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			a.crashed(r)
			ok = false
		}
	}()
	a.persisted(r)
	return true
}

// woken handles the requests that come with a poke.
func (a *actor) woken() bool {
	if a.dropReq.Swap(false) {
		a.eng.dropSyncCache()
		a.updateSize()
	}
	if a.timerFire.Swap(false) {
		return a.safe(func() { a.eng.Step(a.hub.opts.Now(), TickIn{}) })
	}
	return true
}

// safe runs fn and reports false if it panicked. A panic means a bug met
// input nobody foresaw; it must cost one document, not the process.
func (a *actor) safe(fn func()) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			a.crashed(r)
			ok = false
		}
	}()
	fn()
	return true
}

func (a *actor) crashed(r any) {
	a.hub.opts.Logger.Error("document crashed", "doc", a.doc, "panic", r, "stack", string(debug.Stack()))
	a.hub.opts.Metrics.errors.WithLabelValues("panic").Inc()
}

// crash takes a document that panicked out of service: its members are
// closed (they reconnect and reload it from the log), and what it had
// already handed to the log is still written, since those records came
// from steps that completed. Nothing the panicking step did is kept.
func (a *actor) crash() {
	h := a.hub
	h.mu.Lock()
	if h.docs[a.doc] == a {
		delete(h.docs, a.doc)
	}
	h.mu.Unlock()
	a.closeAll(protocol.CodeInternal, "document failed; reconnect")
	for a.inflight || len(a.queue) > 0 {
		if !a.inflight {
			a.retryAt = time.Time{}
			a.startPersist()
		}
		r := <-a.persist
		a.inflight = false
		if r.snap {
			a.snap = nil
			continue
		}
		if r.err != nil {
			h.opts.Logger.Error("crashed document: append failed, records dropped", "doc", a.doc, "err", r.err)
			return
		}
		k := 0
		for k < len(a.queue) && a.queue[k].Seq <= r.upto {
			k++
		}
		a.queue = a.queue[k:]
	}
}

// maybeExit decides whether the actor may stop: only with nothing waiting
// for the disk, and (unless the hub is shutting down) with no references.
func (a *actor) maybeExit(stopping bool) bool {
	if a.inflight || len(a.queue) > 0 || a.snap != nil || a.eng.Busy() {
		return false
	}
	if stopping {
		a.hub.mu.Lock()
		if a.hub.docs[a.doc] == a {
			delete(a.hub.docs, a.doc)
		}
		a.hub.mu.Unlock()
		a.closeAll(protocol.CodeGoingAway, "server shutting down")
		return true
	}
	if a.eng.Members() > 0 || a.eng.Sinks() > 0 {
		return false
	}
	if a.hub.tryUnload(a, a.forced.Load()) {
		if a.forced.Load() {
			a.hub.opts.Metrics.evictions.Inc()
		} else {
			a.hub.opts.Metrics.unloads.Inc()
		}
		return true
	}
	return false
}

// armTimer sets the timer for the engine's next deadline or a failed
// append's retry; with neither due there is no timer at all. While
// unreferenced, the hub's idle sweep wakes the actor to unload.
func (a *actor) armTimer() {
	h := a.hub
	h.mu.Lock()
	if a.refs == 0 && a.eng.Members() == 0 {
		h.wakeIdle(a.idleAt.Add(h.opts.IdleTimeout))
	}
	h.mu.Unlock()
	now := h.opts.Now()
	d := a.eng.Deadline()
	if !a.retryAt.IsZero() && (d.IsZero() || a.retryAt.Before(d)) {
		d = a.retryAt
	}
	if d.IsZero() {
		a.stopTimer()
		return
	}
	wait := max(d.Sub(now), time.Millisecond)
	if a.timer == nil {
		a.timer = time.AfterFunc(wait, a.fire)
		return
	}
	a.timer.Reset(wait)
}

func (a *actor) stopTimer() {
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
	}
}

func (a *actor) handle(m msg) {
	now := a.hub.opts.Now()
	switch m.kind {
	case mJoin:
		if a.peers == nil {
			a.peers = make(map[protocol.SessionID]Peer)
		}
		a.peers[m.session] = m.peer
		delete(a.leaving, m.session)
		a.eng.Step(now, m.in)
	case mLeave:
		a.eng.Step(now, LeaveIn{Session: m.session})
		if p := a.peers[m.session]; p != nil {
			if a.leaving == nil {
				a.leaving = make(map[protocol.SessionID]leavingPeer)
			}
			a.leaving[m.session] = leavingPeer{peer: p, upto: a.eng.Seq()}
		}
		delete(a.peers, m.session)
		if len(a.peers) == 0 {
			a.peers = nil
		}
	case mSink:
		if m.sink != nil {
			if a.sinks == nil {
				a.sinks = make(map[int64]chan<- SinkEvent)
			}
			a.sinks[m.sinkID] = m.sink
			a.eng.Step(now, m.in)
		} else {
			a.dropSink(m.sinkID)
			a.eng.Step(now, SinkOutIn{Sink: m.sinkID})
		}
	case mCall:
		m.call(a.eng)
		close(m.done)
	default:
		if ei, ok := m.in.(EditIn); ok && m.reply != nil {
			if a.replies == nil {
				a.replies = make(map[any]chan Reply)
			}
			a.replies[ei.Token] = m.reply
		}
		a.eng.Step(now, m.in)
	}
}

// pruneLeaving forgets the sessions that left and are owed nothing more:
// everything up to what they sent is durable, so their acks went out with
// the Sends just delivered. Kept longer, a departed session would keep its
// whole connection's memory alive with the document.
func (a *actor) pruneLeaving() {
	for id, l := range a.leaving {
		if a.durable >= l.upto {
			delete(a.leaving, id)
		}
	}
	if len(a.leaving) == 0 {
		a.leaving = nil
	}
}

func (a *actor) dropSink(id int64) {
	delete(a.sinks, id)
	if len(a.sinks) == 0 {
		a.sinks = nil
	}
}

// flush carries out the engine's Ready.
func (a *actor) flush() {
	e := a.eng
	if !e.HasReady() {
		// Nothing new, but a failed append may be due for its retry, and
		// sessions that left may be owed nothing any more.
		a.pruneLeaving()
		a.startPersist()
		return
	}
	rd := e.Ready()
	e.Advance()
	met := a.hub.opts.Metrics
	a.queue = append(a.queue, rd.Records...)
	if rd.Snapshot != nil {
		a.snap = rd.Snapshot
	}
	for _, s := range rd.Sends {
		if p := a.peers[s.To]; p != nil {
			p.Send(s.Frame)
		} else if l, ok := a.leaving[s.To]; ok {
			l.peer.Send(s.Frame)
		}
	}
	a.pruneLeaving()
	for _, b := range rd.Broadcasts {
		start := time.Now()
		for id, p := range a.peers {
			if id != b.Except {
				p.Send(b.Frame)
			}
		}
		met.broadcast.Observe(time.Since(start).Seconds())
	}
	for _, r := range rd.Replies {
		if ch := a.replies[r.Token]; ch != nil {
			delete(a.replies, r.Token)
			ch <- r
		}
	}
	if len(a.replies) == 0 {
		a.replies = nil
	}
	for _, ev := range rd.Events {
		if ch := a.sinks[ev.Sink]; ch != nil {
			select {
			case ch <- ev:
			default:
				// A stream that cannot keep up is cut; it resumes with
				// Last-Event-ID.
				close(ch)
				a.dropSink(ev.Sink)
				e.Step(a.hub.opts.Now(), SinkOutIn{Sink: ev.Sink})
			}
		}
	}
	for _, c := range rd.Close {
		if p := a.peers[c.Session]; p != nil {
			p.Close(c.Code, c.Reason)
		}
	}
	a.startPersist()
	a.updateSize()
}

// updateSize brings the hub's memory estimate up to date. A join answer
// just kept may take the hub over its budget, which then frees memory as
// a document load does.
func (a *actor) updateSize() {
	n := int64(a.eng.memSize())
	old := a.size.Swap(n)
	h := a.hub
	h.mem.Add(n - old)
	c := int64(a.eng.syncCacheBytes())
	if oc := a.cached.Swap(c); c > oc && h.mem.Load() > h.opts.MemoryBudget {
		h.overBudget()
	}
}

// startPersist hands the queued records (or else a snapshot) to a writer
// goroutine, one batch at a time so the log keeps the engine's order.
func (a *actor) startPersist() {
	if a.inflight || (len(a.queue) == 0 && a.snap == nil) {
		return
	}
	if !a.retryAt.IsZero() && a.hub.opts.Now().Before(a.retryAt) {
		return
	}
	a.retryAt = time.Time{}
	a.inflight = true
	if a.persist == nil {
		a.persist = make(chan persistDone, 1)
	}
	ch := a.persist
	h := a.hub
	doc := a.doc
	if len(a.queue) > 0 {
		batch := make([][]byte, len(a.queue))
		for i, r := range a.queue {
			batch[i] = r.Data
		}
		want := a.queue[len(a.queue)-1].Seq
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			start := time.Now()
			_, last, err := h.log.Append(doc, batch...)
			if err == nil && last != want {
				err = fmt.Errorf("syncer: log of %s at seq %d, engine expected %d", doc, last, want)
			}
			ch <- persistDone{upto: want, err: err, took: time.Since(start)}
		}()
		return
	}
	snap := a.snap
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		err := h.log.SaveSnapshot(doc, snap.Seq, snap.Data)
		ch <- persistDone{upto: snap.Seq, snap: true, err: err}
	}()
}

func (a *actor) persisted(r persistDone) {
	h := a.hub
	a.inflight = false
	a.persist = nil
	now := h.opts.Now()
	if r.snap {
		a.snap = nil
		if r.err != nil {
			h.opts.Logger.Warn("snapshot failed", "doc", a.doc, "seq", r.upto, "err", r.err)
			// The engine asks again at once; pace it like a failed append.
			a.retryAt = now.Add(h.opts.PersistRetry)
		}
		a.eng.Step(now, SnapshotIn{Seq: r.upto, Err: r.err})
		return
	}
	h.opts.Metrics.fsync.Observe(r.took.Seconds())
	if r.err != nil {
		h.opts.Metrics.persistErrors.Inc()
		h.opts.Logger.Error("append failed; retrying", "doc", a.doc, "upto", r.upto, "err", r.err)
		a.retryAt = now.Add(h.opts.PersistRetry)
		a.eng.Step(now, PersistedIn{Seq: r.upto, Err: r.err})
		return
	}
	k := 0
	for k < len(a.queue) && a.queue[k].Seq <= r.upto {
		k++
	}
	// Drop the written records, and their bytes with them.
	n := copy(a.queue, a.queue[k:])
	clear(a.queue[n:])
	a.queue = a.queue[:n]
	if n == 0 {
		a.queue = nil
	}
	a.durable = max(a.durable, r.upto)
	a.eng.Step(now, PersistedIn{Seq: r.upto})
}

func (a *actor) closeAll(code protocol.ErrorCode, reason string) {
	for _, p := range a.peers {
		p.Close(code, reason)
	}
	for id, ch := range a.sinks {
		close(ch)
		delete(a.sinks, id)
	}
	for tok, ch := range a.replies {
		ch <- Reply{Token: tok, Err: ErrClosed}
		delete(a.replies, tok)
	}
}
