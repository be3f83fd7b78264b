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
	// left. Default 60 s.
	IdleTimeout time.Duration
	// MemoryBudget caps the estimated bytes of loaded documents; over it,
	// idle documents are unloaded least recently used first. Default 1 GiB.
	MemoryBudget int64
	// InboxSize bounds each document's queue of inputs. A sender blocks
	// when it is full, which pushes back on the connection that floods.
	// Default 1024.
	InboxSize int
	// PersistRetry is the pause before retrying a failed append (say, disk
	// full). Default 500 ms.
	PersistRetry time.Duration
	Logger       *slog.Logger
	Metrics      *Metrics
	// Now is the clock; tests may replace it. Default time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.MemoryBudget <= 0 {
		o.MemoryBudget = 1 << 30
	}
	if o.InboxSize <= 0 {
		o.InboxSize = 1024
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

	mu     sync.Mutex // guards docs, closed, and every actor's refs/idleAt
	docs   map[string]*actor
	closed bool

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
	h.mu.Unlock()
	select {
	case <-a.loaded:
	case <-a.done:
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
	var idle []*actor
	for _, a := range h.docs {
		if a.refs == 0 {
			idle = append(idle, a)
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
}

// Close stops accepting work, lets every document write what it holds,
// and waits for all of them to stop.
func (h *Hub) Close() error {
	h.mu.Lock()
	h.closed = true
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
// its goroutine.
type actor struct {
	hub    *Hub
	doc    string
	inbox  chan msg
	wake   chan struct{} // poke: re-check idleness
	stop   chan struct{} // shutdown or eviction requested
	loaded chan struct{} // closed once loading finished (see loadErr)
	done   chan struct{} // closed when the goroutine exits
	size   atomic.Int64

	loadErr error
	stopMu  sync.Once
	forced  atomic.Bool

	// guarded by hub.mu
	refs   int
	idleAt time.Time

	// owned by the actor goroutine
	eng      *Engine
	peers    map[protocol.SessionID]Peer
	leaving  map[protocol.SessionID]leavingPeer
	durable  uint64 // newest log seq known durable
	sinks    map[int64]chan<- SinkEvent
	replies  map[any]chan Reply
	queue    []Record // handed out by the engine, not yet durable
	snap     *Record
	inflight bool
	persist  chan persistDone
	retryAt  time.Time
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
		inbox:   make(chan msg, h.opts.InboxSize),
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		loaded:  make(chan struct{}),
		done:    make(chan struct{}),
		peers:   make(map[protocol.SessionID]Peer),
		leaving: make(map[protocol.SessionID]leavingPeer),
		sinks:   make(map[int64]chan<- SinkEvent),
		replies: make(map[any]chan Reply),
		persist: make(chan persistDone, 1),
	}
}

func (a *actor) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *actor) evict()    { a.forced.Store(true); a.poke() }
func (a *actor) shutdown() { a.stopMu.Do(func() { close(a.stop) }) }

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
	defer h.wg.Done()
	defer close(a.done)
	start := h.opts.Now()
	if err := a.load(); err != nil {
		a.loadErr = err
		h.opts.Logger.Error("load failed", "doc", a.doc, "err", err)
		h.mu.Lock()
		if h.docs[a.doc] == a {
			delete(h.docs, a.doc)
		}
		h.mu.Unlock()
		close(a.loaded)
		return
	}
	h.opts.Metrics.docLoads.Observe(h.opts.Now().Sub(start).Seconds())
	h.opts.Metrics.docsLoaded.Inc()
	defer h.opts.Metrics.docsLoaded.Dec()
	a.updateSize()
	defer func() { h.mem.Add(-a.size.Load()) }()
	close(a.loaded)
	h.overBudget()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	stopping := false
	stop := a.stop
	for {
		if !a.safe(a.flush) {
			a.crash()
			return
		}
		if a.maybeExit(stopping) {
			return
		}
		a.armTimer(timer)
		ok := true
		select {
		case m := <-a.inbox:
			ok = a.safe(func() {
				a.handle(m)
				// Drain what else is queued before flushing: one flush (one
				// append, one broadcast per peer) per burst.
				for n := 0; n < 256; n++ {
					select {
					case m := <-a.inbox:
						a.handle(m)
						continue
					default:
					}
					break
				}
			})
		case r := <-a.persist:
			ok = a.safe(func() { a.persisted(r) })
		case <-timer.C:
			ok = a.safe(func() { a.eng.Step(h.opts.Now(), TickIn{}) })
		case <-a.wake:
		case <-stop:
			stopping = true
			stop = nil
		}
		if !ok {
			a.crash()
			return
		}
	}
}

// safe runs fn and reports false if it panicked. A panic means a bug met
// input nobody foresaw; it must cost one document, not the process.
func (a *actor) safe(fn func()) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			a.hub.opts.Logger.Error("document crashed", "doc", a.doc, "panic", r, "stack", string(debug.Stack()))
			a.hub.opts.Metrics.errors.WithLabelValues("panic").Inc()
			ok = false
		}
	}()
	fn()
	return true
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

func (a *actor) armTimer(t *time.Timer) {
	now := a.hub.opts.Now()
	d := a.eng.Deadline()
	if !a.retryAt.IsZero() && (d.IsZero() || a.retryAt.Before(d)) {
		d = a.retryAt
	}
	// While unreferenced, wake at the idle deadline to unload.
	a.hub.mu.Lock()
	if a.refs == 0 && a.eng.Members() == 0 {
		idle := a.idleAt.Add(a.hub.opts.IdleTimeout)
		if d.IsZero() || idle.Before(d) {
			d = idle
		}
	}
	a.hub.mu.Unlock()
	wait := time.Hour
	if !d.IsZero() {
		wait = max(d.Sub(now), time.Millisecond)
	}
	t.Reset(wait)
}

func (a *actor) handle(m msg) {
	now := a.hub.opts.Now()
	switch m.kind {
	case mJoin:
		a.peers[m.session] = m.peer
		delete(a.leaving, m.session)
		a.eng.Step(now, m.in)
	case mLeave:
		a.eng.Step(now, LeaveIn{Session: m.session})
		if p := a.peers[m.session]; p != nil {
			a.leaving[m.session] = leavingPeer{peer: p, upto: a.eng.Seq()}
		}
		delete(a.peers, m.session)
	case mSink:
		if m.sink != nil {
			a.sinks[m.sinkID] = m.sink
			a.eng.Step(now, m.in)
		} else {
			delete(a.sinks, m.sinkID)
			a.eng.Step(now, SinkOutIn{Sink: m.sinkID})
		}
	case mCall:
		m.call(a.eng)
		close(m.done)
	default:
		if ei, ok := m.in.(EditIn); ok && m.reply != nil {
			a.replies[ei.Token] = m.reply
		}
		a.eng.Step(now, m.in)
	}
}

// flush carries out the engine's Ready.
func (a *actor) flush() {
	e := a.eng
	if !e.HasReady() {
		// Nothing new, but a failed append may be due for its retry.
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
	for id, l := range a.leaving {
		if a.durable >= l.upto {
			delete(a.leaving, id) // everything it is owed went out above
		}
	}
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
	for _, ev := range rd.Events {
		if ch := a.sinks[ev.Sink]; ch != nil {
			select {
			case ch <- ev:
			default:
				// A stream that cannot keep up is cut; it resumes with
				// Last-Event-ID.
				close(ch)
				delete(a.sinks, ev.Sink)
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

func (a *actor) updateSize() {
	n := int64(a.eng.Text().MemSize())
	old := a.size.Swap(n)
	a.hub.mem.Add(n - old)
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
			a.persist <- persistDone{upto: want, err: err, took: time.Since(start)}
		}()
		return
	}
	snap := a.snap
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		err := h.log.SaveSnapshot(doc, snap.Seq, snap.Data)
		a.persist <- persistDone{upto: snap.Seq, snap: true, err: err}
	}()
}

func (a *actor) persisted(r persistDone) {
	h := a.hub
	a.inflight = false
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
	a.queue = append(a.queue[:0], a.queue[k:]...)
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
