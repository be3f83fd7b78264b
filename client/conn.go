package client

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"golang.org/x/time/rate"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// conn is one WebSocket connection and the protocol state that lives and
// dies with it: client seqs, deltas in flight, the server's limits. The
// gws reader goroutine calls its event methods; the client's run loop owns
// its lifetime; edit calls send through it.
//
// Lock order: Doc.mu before conn.mu; conn.mu is never held while taking a
// Doc's lock.
type conn struct {
	c    *Client
	ws   *gws.Conn
	dec  *protocol.Decoder // reader goroutine only
	done chan struct{}     // closed by OnClose
	poke chan struct{}     // wakes the run loop
	last atomic.Int64      // unix nanos of the last frame received

	mu        sync.Mutex
	enc       *protocol.Encoder
	seq       uint64 // last client seq used
	flights   map[uint64]*flight
	isWelcome bool
	limits    protocol.Limits
	expiresAt uint64    // token expiry, unix ms
	refreshAt time.Time // when to send Refresh; zero: never
	hint      time.Duration
	fatal     *protocol.Error // the Error that ends the session
	closeErr  error
	deleted   bool // a joined document was deleted (close 4004 follows)
	rejoin    map[*Doc]time.Time
	flushAt   map[*Doc]time.Time
	nonce     uint64
	// ops and bytes pace Delta frames to the rates the server advertised,
	// so that a large backlog goes out as fast as the server takes it
	// instead of being dropped as rate_limited. nil: unlimited.
	ops, bytes *rate.Limiter
}

// flight is a Delta frame waiting for its Ack.
type flight struct {
	doc     *Doc
	entries []*entry // nil for ops that are not pending entries (resync)
}

func newConn(c *Client) *conn {
	cn := &conn{
		c: c, dec: protocol.NewDecoder(), enc: protocol.NewEncoder(),
		done: make(chan struct{}), poke: make(chan struct{}, 1),
		flights: make(map[uint64]*flight), limits: protocol.DefaultLimits(),
		rejoin: make(map[*Doc]time.Time), flushAt: make(map[*Doc]time.Time),
	}
	cn.last.Store(time.Now().UnixNano())
	return cn
}

func (cn *conn) pokeLoop() {
	select {
	case cn.poke <- struct{}{}:
	default:
	}
}

func (cn *conn) welcomed() bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.isWelcome
}

func (cn *conn) presenceTTL() time.Duration {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.limits.PresenceTTLMs == 0 {
		return 30 * time.Second
	}
	return time.Duration(cn.limits.PresenceTTLMs) * time.Millisecond
}

func (cn *conn) presenceInterval() time.Duration {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.limits.PresenceMs == 0 {
		return 50 * time.Millisecond
	}
	return time.Duration(cn.limits.PresenceMs) * time.Millisecond
}

// frameLimits returns the ops and bytes one Delta frame may carry here.
func (cn *conn) frameLimits() (maxOps, maxBytes int) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	maxOps, maxBytes = protocol.MaxOpsPerFrame, protocol.MaxFrameBytes
	if l := int(cn.limits.MaxOpsPerFrame); l > 0 {
		maxOps = min(maxOps, l)
	}
	if l := int(cn.limits.MaxFrameBytes); l > 0 {
		maxBytes = min(maxBytes, l)
	}
	maxBytes /= 2
	if cn.ops != nil {
		maxOps = min(maxOps, cn.ops.Burst())
	}
	if cn.bytes != nil {
		maxBytes = min(maxBytes, cn.bytes.Burst()/2)
	}
	return maxOps, maxBytes
}

// admitLocked takes rate tokens for a frame of n ops and size bytes, or
// says how long to wait for them.
func (cn *conn) admitLocked(n, size int, now time.Time) time.Duration {
	var r *rate.Reservation
	if cn.ops != nil {
		r = cn.ops.ReserveN(now, min(n, cn.ops.Burst()))
		if d := r.DelayFrom(now); d > 0 {
			r.CancelAt(now)
			return d
		}
	}
	if cn.bytes != nil {
		rb := cn.bytes.ReserveN(now, min(size, cn.bytes.Burst()))
		if d := rb.DelayFrom(now); d > 0 {
			rb.CancelAt(now)
			if r != nil {
				r.CancelAt(now)
			}
			return d
		}
	}
	return 0
}

// write queues a frame. Frames go out in the order write is called.
func (cn *conn) write(f protocol.Frame) error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.writeLocked(f)
}

func (cn *conn) writeLocked(f protocol.Frame) error {
	b, err := cn.enc.Encode(nil, f)
	if err != nil {
		return err
	}
	cn.ws.WriteAsync(gws.OpcodeBinary, b, nil)
	return nil
}

// sendDelta sends ops of d under the next client seq, if the server's
// rates allow it now; otherwise it sends nothing and says how long to
// wait. entries are the pending entries it carries, acknowledged with it.
func (cn *conn) sendDelta(d *Doc, delta crdt.Delta, entries []*entry) time.Duration {
	cn.mu.Lock()
	b, err := cn.enc.Encode(nil, &protocol.Delta{Doc: d.id, ClientSeq: cn.seq + 1, Delta: delta})
	if err == nil {
		if wait := cn.admitLocked(len(delta.Ops), len(b), time.Now()); wait > 0 {
			cn.mu.Unlock()
			return wait
		}
		cn.seq++
		cn.flights[cn.seq] = &flight{doc: d, entries: entries}
		cn.ws.WriteAsync(gws.OpcodeBinary, b, nil)
	}
	cn.mu.Unlock()
	if err != nil {
		// A bug, not a condition: what cannot be encoded is never sent.
		cn.c.report(&Error{Doc: d.id, Err: err, Message: "cannot encode a delta"})
	}
	return 0
}

// requestFlush asks the run loop to send d's queue again after wait.
func (cn *conn) requestFlush(d *Doc, wait time.Duration) {
	cn.mu.Lock()
	at := time.Now().Add(wait)
	if cur, ok := cn.flushAt[d]; !ok || at.Before(cur) {
		cn.flushAt[d] = at
	}
	cn.mu.Unlock()
	cn.pokeLoop()
}

// requestRejoin asks the run loop to join d again after wait.
func (cn *conn) requestRejoin(d *Doc, wait time.Duration) {
	cn.mu.Lock()
	at := time.Now().Add(wait)
	if cur, ok := cn.rejoin[d]; !ok || at.Before(cur) {
		cn.rejoin[d] = at
	}
	cn.mu.Unlock()
	cn.pokeLoop()
}

// due takes the documents whose rejoin or flush is due and returns when
// the next one is.
func (cn *conn) due(now time.Time) (rejoins, flushes []*Doc, next time.Time) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	take := func(m map[*Doc]time.Time) []*Doc {
		var out []*Doc
		for d, at := range m {
			if !at.After(now) {
				out = append(out, d)
				delete(m, d)
			} else if next.IsZero() || at.Before(next) {
				next = at
			}
		}
		return out
	}
	return take(cn.rejoin), take(cn.flushAt), next
}

func (cn *conn) deadline() time.Time {
	o := &cn.c.opts
	return time.Now().Add(o.PingInterval + o.PongWait)
}

// closeNow sends a close frame without waiting long for a stuck writer.
func (cn *conn) closeNow(code protocol.CloseCode) {
	_ = cn.ws.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	_ = cn.ws.WriteClose(uint16(code), nil)
}

// --- gws events (the reader goroutine) ----------------------------------------

func (cn *conn) OnOpen(ws *gws.Conn) { _ = ws.SetReadDeadline(cn.deadline()) }

func (cn *conn) OnClose(_ *gws.Conn, err error) {
	cn.mu.Lock()
	cn.closeErr = err
	cn.mu.Unlock()
	close(cn.done)
}

func (cn *conn) OnPing(ws *gws.Conn, payload []byte) {
	cn.last.Store(time.Now().UnixNano())
	_ = ws.SetReadDeadline(cn.deadline())
	_ = ws.WritePong(payload)
}

func (cn *conn) OnPong(ws *gws.Conn, _ []byte) {
	cn.last.Store(time.Now().UnixNano())
	_ = ws.SetReadDeadline(cn.deadline())
}

func (cn *conn) OnMessage(ws *gws.Conn, m *gws.Message) {
	defer m.Close()
	now := time.Now()
	cn.last.Store(now.UnixNano())
	_ = ws.SetReadDeadline(cn.deadline())
	if m.Opcode != gws.OpcodeBinary {
		cn.c.report(&Error{Message: "server sent a text message"})
		_ = ws.WriteClose(uint16(protocol.CloseProtocol), nil)
		return
	}
	f, err := cn.dec.Decode(m.Bytes())
	if err != nil {
		if errors.Is(err, protocol.ErrUnknownKind) {
			return // a later revision's frame: ignore it (§11)
		}
		cn.c.report(&Error{Err: err, Message: "server sent a frame that does not decode"})
		_ = ws.WriteClose(uint16(protocol.CloseMalformed), nil)
		return
	}
	c := cn.c
	switch f := f.(type) {
	case *protocol.Welcome:
		cn.onWelcome(f, now)
	case *protocol.Sync:
		if d := c.doc(f.Doc); d != nil {
			d.onSync(cn, f)
		}
	case *protocol.Update:
		if d := c.doc(f.Doc); d != nil {
			d.onUpdate(cn, f)
		}
	case *protocol.Ack:
		cn.mu.Lock()
		fl := cn.flights[f.ClientSeq]
		delete(cn.flights, f.ClientSeq)
		cn.mu.Unlock()
		if fl != nil && len(fl.entries) > 0 {
			fl.doc.onAck(fl.entries)
		}
	case *protocol.PresenceUpdate:
		if d := c.doc(f.Doc); d != nil {
			d.onPresenceUpdate(cn, f, now)
		}
	case *protocol.Error:
		cn.onError(f)
	case *protocol.GoingAway:
		cn.mu.Lock()
		cn.hint = max(cn.hint, time.Duration(f.RetryAfterMs)*time.Millisecond)
		cn.mu.Unlock()
		c.stats.retryAfters.Add(1)
	case *protocol.Refreshed:
		cn.mu.Lock()
		cn.scheduleRefreshLocked(f.ExpiresAt, now)
		cn.mu.Unlock()
		cn.pokeLoop()
	case *protocol.Ping:
		_ = cn.write(&protocol.Pong{Nonce: f.Nonce})
	case *protocol.Pong:
	}
}

func (cn *conn) onWelcome(f *protocol.Welcome, now time.Time) {
	cn.mu.Lock()
	cn.isWelcome = true
	cn.limits = f.Limits
	if r := int(f.Limits.OpsPerSecond); r > 0 {
		// The server's bucket holds at least twice its rate; a bucket of
		// one second's worth stays inside it.
		cn.ops = rate.NewLimiter(rate.Limit(r), max(r, 1))
	}
	if r := int(f.Limits.BytesPerSecond); r > 0 {
		cn.bytes = rate.NewLimiter(rate.Limit(r), max(r, protocol.MaxFrameBytes/2))
	}
	cn.scheduleRefreshLocked(f.ExpiresAt, now)
	cn.mu.Unlock()
	c := cn.c
	if c.stats.connects.Add(1) > 1 {
		c.stats.reconnects.Add(1)
	}
	c.log.Debug("connected", "session", f.Session, "server", f.Server)
	for _, d := range c.docList() {
		d.mu.Lock()
		if d.conn == cn {
			d.ttl = cn.presenceTTL()
			d.notifyLocked()
		}
		d.mu.Unlock()
	}
	cn.pokeLoop()
}

// scheduleRefreshLocked plans the next Refresh, when the client can get
// new tokens: at 80 % of the token's remaining lifetime, but no later than
// min(half of it, 10 s) before it expires, so that a short-lived token
// leaves time for TokenFunc and the round trip.
func (cn *conn) scheduleRefreshLocked(expiresAt uint64, now time.Time) {
	cn.expiresAt = expiresAt
	cn.refreshAt = time.Time{}
	if expiresAt == 0 || cn.c.opts.TokenFunc == nil {
		return
	}
	left := time.UnixMilli(int64(expiresAt)).Sub(now)
	lead := max(left/5, min(left/2, 10*time.Second))
	cn.refreshAt = now.Add(left - lead)
}

// sessionEnding lists the codes after which the server closes the socket
// (§8); the run loop reports them once the close arrives.
func sessionEnding(c protocol.ErrorCode) bool {
	switch c {
	case protocol.CodeMalformed, protocol.CodeProtocol, protocol.CodeUnauthorized, protocol.CodeTokenExpired,
		protocol.CodeUnsupportedVersion, protocol.CodeSlowConsumer, protocol.CodeTimeout, protocol.CodeInternal,
		protocol.CodeGoingAway:
		return true
	}
	return false
}

func (cn *conn) onError(f *protocol.Error) {
	c := cn.c
	retry := time.Duration(f.RetryAfterMs) * time.Millisecond
	e := &Error{Code: f.Code, Doc: f.Doc, ClientSeq: f.ClientSeq, RetryAfter: retry, Message: f.Message}
	if retry > 0 {
		c.stats.retryAfters.Add(1)
	}
	switch {
	case f.ClientSeq != 0:
		// A Delta failed; its entries stay pending.
		cn.mu.Lock()
		fl := cn.flights[f.ClientSeq]
		delete(cn.flights, f.ClientSeq)
		cn.mu.Unlock()
		d := c.doc(f.Doc)
		if fl != nil {
			d = fl.doc
		}
		switch f.Code {
		case protocol.CodeRateLimited, protocol.CodeOverloaded, protocol.CodeMissingDependency,
			protocol.CodeInternal, protocol.CodeGoingAway:
			// Transient: resync the document (which resends everything
			// the server lacks) once the server says it may.
			if d != nil {
				cn.requestRejoin(d, max(retry, 100*time.Millisecond))
			}
		default:
			// invalid_delta, doc_too_large, forbidden, not_joined: the
			// server will not take these ops; stop sending until the
			// next connection, and say why in the document's status.
			if d != nil {
				d.refuse(cn, e)
			}
		}
		c.report(e)
	case f.Doc != "":
		// A join entry, or a document the token no longer grants.
		d := c.doc(f.Doc)
		switch f.Code {
		case protocol.CodeOverloaded, protocol.CodeInternal, protocol.CodeGoingAway, protocol.CodeMissingDependency:
			if d != nil {
				cn.requestRejoin(d, max(retry, 100*time.Millisecond))
			}
		case protocol.CodeNotFound:
			// The server deleted it, and ends the session (4004) since it
			// cannot make us leave one document; the others come back
			// with the next connection, this one stays deleted.
			cn.mu.Lock()
			cn.deleted = true
			cn.mu.Unlock()
			if d != nil {
				d.deleted(cn)
			}
		default:
			if d != nil {
				d.refuse(cn, e)
			}
		}
		c.report(e)
	default:
		if sessionEnding(f.Code) {
			cn.mu.Lock()
			cn.fatal = f
			cn.hint = max(cn.hint, retry)
			cn.mu.Unlock()
			return
		}
		c.report(e)
	}
}
