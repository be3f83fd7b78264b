package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	bolt "go.etcd.io/bbolt"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// Client is a connection to one weft server, shared by every document it
// opens. It is usable at once, online or not: it connects in the
// background and keeps reconnecting until Close. Its methods are safe for
// concurrent use.
type Client struct {
	url   string
	opts  Options
	agent crdt.AgentKey
	log   *slog.Logger
	st    *stateDB // nil without Options.StatePath

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the run loop and the readers
	wake   chan struct{}  // documents opened, token replaced, resumed

	halted atomic.Pointer[Error] // set while reconnecting is stopped
	stats  stats

	errMu     sync.Mutex
	errs      chan error
	errClosed bool

	mu      sync.Mutex
	docs    map[string]*Doc
	conn    *conn    // the live connection, or nil
	dialing net.Conn // the socket being upgraded, closed by Close
	token   string
	fresh   bool // token must be replaced before the next attempt
	closed  bool
}

type stats struct {
	dials, connects, reconnects, retryAfters, errors, dropped atomic.Int64
}

// Stats are counters over the client's lifetime.
type Stats struct {
	// Dials counts connection attempts; Connects those that got a
	// Welcome; Reconnects is Connects after the first.
	Dials, Connects, Reconnects int64
	// RetryAfters counts refusals that carried a retry-after hint (HTTP
	// 429 or 503, Error frames with retry_after_ms, GoingAway).
	RetryAfters int64
	// Errors counts errors reported on Errors; Dropped those lost because
	// nobody read the channel.
	Errors, Dropped int64
}

// Dial returns a client for the server at url (ws:// or wss://, e.g.
// ws://127.0.0.1:8080/v1/ws). It does not wait for the connection: the
// client connects in the background and keeps reconnecting. ctx bounds
// only Dial's own work (opening the state file); Close ends the client.
func Dial(ctx context.Context, rawURL string, opts Options) (*Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return nil, fmt.Errorf("client: url %q: scheme must be ws or wss", rawURL)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	c := &Client{
		url: rawURL, opts: opts, agent: opts.Agent, log: opts.Logger,
		wake: make(chan struct{}, 1), errs: make(chan error, 256),
		docs: make(map[string]*Doc), token: opts.Token,
	}
	if opts.StatePath != "" {
		st, agent, err := openState(opts.StatePath, opts.Agent, func(err error) { c.report(&Error{Err: err}) })
		if err != nil {
			return nil, err
		}
		c.st, c.agent = st, agent
	} else if c.agent == (crdt.AgentKey{}) {
		c.agent = newAgent()
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.run()
	return c, nil
}

// Agent returns the replica's agent key.
func (c *Client) Agent() crdt.AgentKey { return c.agent }

// Errors returns the channel on which the client reports failures, as
// *Error: refused upgrades, Error frames, close codes that stop
// reconnecting, and local state failures. Transport failures (a refused
// TCP connection, a dropped socket) are not errors: the client simply
// reconnects, and Status shows it offline. The channel is buffered and
// never blocks the client; when it is full, errors are dropped (counted in
// Stats). It is closed by Close.
func (c *Client) Errors() <-chan error { return c.errs }

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	s := &c.stats
	return Stats{Dials: s.dials.Load(), Connects: s.connects.Load(), Reconnects: s.reconnects.Load(),
		RetryAfters: s.retryAfters.Load(), Errors: s.errors.Load(), Dropped: s.dropped.Load()}
}

func (c *Client) report(e *Error) {
	c.log.Debug("client error", "err", e)
	c.errMu.Lock()
	defer c.errMu.Unlock()
	if c.errClosed {
		return
	}
	c.stats.errors.Add(1)
	select {
	case c.errs <- e:
	default:
		c.stats.dropped.Add(1)
	}
}

func (c *Client) wakeLoop() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Open returns the document docID, loading its state from the state file
// if there is one, and joins it on the server (now, if connected). Opening
// an open document returns the same *Doc.
func (c *Client) Open(docID string) (*Doc, error) {
	if !checkDocID(docID) {
		return nil, fmt.Errorf("%w: %q", ErrDocID, docID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if d := c.docs[docID]; d != nil {
		return d, nil
	}
	d := newDoc(c, docID, crdt.New(c.agent))
	if c.st != nil {
		// Let writes still queued for this document (a Close just before)
		// land first, so the state read is complete and its keys current.
		if err := c.st.submit(func(*bolt.Tx) error { return nil }, true); err != nil {
			return nil, err
		}
		sd, err := c.st.load(docID)
		if err == nil {
			err = d.restore(sd)
		}
		if err != nil {
			return nil, err
		}
	}
	c.docs[docID] = d
	c.wakeLoop()
	return d, nil
}

// StoredDocs lists the documents the state file holds (nil without one).
// A restarted process opens them to send the edits they still hold.
func (c *Client) StoredDocs() ([]string, error) {
	if c.st == nil {
		return nil, nil
	}
	return c.st.docs()
}

// Docs returns the open documents, sorted by ID.
func (c *Client) Docs() []*Doc {
	docs := c.docList()
	slices.SortFunc(docs, func(a, b *Doc) int { return strings.Compare(a.id, b.id) })
	return docs
}

func (c *Client) doc(id string) *Doc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.docs[id]
}

func (c *Client) docList() []*Doc {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Doc, 0, len(c.docs))
	for _, d := range c.docs {
		out = append(out, d)
	}
	return out
}

func (c *Client) forget(d *Doc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.docs[d.id] == d {
		delete(c.docs, d.id)
	}
}

// Status summarises every open document: Offline if any is offline,
// Pending if any is pending, Synced otherwise; Unacked is their sum.
func (c *Client) Status() Status {
	st := Status{State: Synced}
	if h := c.halted.Load(); h != nil {
		st.Err = h
	}
	docs := c.docList()
	if len(docs) == 0 {
		c.mu.Lock()
		cn := c.conn
		c.mu.Unlock()
		if cn == nil || !cn.welcomed() {
			st.State = Offline
		}
	}
	for _, d := range docs {
		ds := d.Status()
		st.State = min(st.State, ds.State)
		st.Unacked += ds.Unacked
		if st.Err == nil {
			st.Err = ds.Err
		}
	}
	return st
}

// WaitSynced waits until every open document is Synced (see
// Doc.WaitSynced).
func (c *Client) WaitSynced(ctx context.Context) error {
	for {
		done := true
		for _, d := range c.docList() {
			if err := d.WaitSynced(ctx); err != nil {
				return err
			}
		}
		for _, d := range c.docList() {
			if d.Status().State != Synced {
				done = false
			}
		}
		if done {
			return nil
		}
	}
}

// SetToken replaces the token used for the next connection (the current
// one, if any, keeps its token until it ends) and resumes reconnecting if
// an auth failure had stopped it.
func (c *Client) SetToken(token string) {
	c.mu.Lock()
	c.token = token
	c.fresh = false
	c.mu.Unlock()
	c.Reconnect()
}

// Reconnect resumes reconnecting after an error stopped it (Error.Halted).
func (c *Client) Reconnect() {
	if c.halted.Swap(nil) != nil {
		for _, d := range c.docList() {
			d.notify()
		}
	}
	c.wakeLoop()
}

// Close disconnects, waits for every goroutine of the client, writes each
// document's snapshot to the state file and closes it. Unacknowledged
// edits stay in the state file for the next process.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	if c.dialing != nil {
		_ = c.dialing.Close()
	}
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	var err error
	for _, d := range c.docList() {
		_ = d.Close()
	}
	if c.st != nil {
		err = c.st.close()
	}
	c.errMu.Lock()
	c.errClosed = true
	close(c.errs)
	c.errMu.Unlock()
	return err
}

// --- the run loop ---------------------------------------------------------------

// ending says how a connection attempt ended and what to do next.
type ending struct {
	retry    protocol.Retry
	hint     time.Duration // least wait before the next attempt
	err      *Error        // to report, if any
	upFor    time.Duration // how long the session lasted after Welcome
	welcomed bool
}

func (c *Client) sleep(d time.Duration) bool {
	if d <= 0 {
		return c.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// run connects, serves the connection until it ends, and reconnects with
// backoff, until Close.
func (c *Client) run() {
	defer c.wg.Done()
	attempt := 0
	var wait time.Duration
	for {
		if !c.sleep(wait) {
			return
		}
		for c.halted.Load() != nil {
			select {
			case <-c.wake:
			case <-c.ctx.Done():
				return
			}
		}
		tok, err := c.currentToken()
		var end ending
		if err != nil {
			end = ending{retry: protocol.RetryBackoff, err: &Error{Err: fmt.Errorf("token: %w", err)}}
		} else {
			end = c.connect(tok)
		}
		if c.ctx.Err() != nil {
			return
		}
		if end.welcomed && end.upFor >= c.opts.Backoff.ResetAfter {
			attempt = 0
		}
		switch end.retry {
		case protocol.RetryNewToken:
			if c.opts.TokenFunc != nil {
				c.mu.Lock()
				c.fresh = true
				c.mu.Unlock()
			} else {
				c.halt(end.err)
			}
		case protocol.RetryNever:
			c.halt(end.err)
		}
		if end.err != nil {
			c.report(end.err)
		}
		wait = c.opts.Backoff.Delay(attempt) + end.hint
		attempt = min(attempt+1, 62)
		c.log.Debug("reconnecting", "in", wait, "attempt", attempt)
	}
}

func (c *Client) halt(e *Error) {
	if e == nil {
		e = &Error{Message: "reconnecting stopped"}
	}
	e.Halted = true
	c.halted.Store(e)
	for _, d := range c.docList() {
		d.notify()
	}
}

// currentToken returns the token for the next attempt, asking TokenFunc
// when there is none or the last one was refused.
func (c *Client) currentToken() (string, error) {
	c.mu.Lock()
	tok, fresh := c.token, c.fresh
	c.mu.Unlock()
	if c.opts.TokenFunc == nil || (tok != "" && !fresh) {
		return tok, nil
	}
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	tok, err := c.opts.TokenFunc(ctx)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.token, c.fresh = tok, false
	c.mu.Unlock()
	return tok, nil
}

// dialer hands gws sockets dialed under the client's context, and keeps
// the one being upgraded where Close can reach it.
type dialer struct{ c *Client }

func (x dialer) Dial(network, addr string) (net.Conn, error) {
	nc, err := x.c.opts.Dialer.DialContext(x.c.ctx, network, addr)
	if err != nil {
		return nil, err
	}
	x.c.mu.Lock()
	defer x.c.mu.Unlock()
	if x.c.closed {
		_ = nc.Close()
		return nil, ErrClosed
	}
	x.c.dialing = nc
	return nc, nil
}

type gwsLogger struct{ l *slog.Logger }

func (g gwsLogger) Error(v ...any) { g.l.Error("gws", "msg", fmt.Sprint(v...)) }

// connect makes one connection attempt and serves it until it ends.
func (c *Client) connect(tok string) ending {
	cn := newConn(c)
	hdr := http.Header{}
	hdr.Set("Sec-WebSocket-Protocol", protocol.Subprotocol)
	if tok != "" {
		hdr.Set("Authorization", "Bearer "+tok)
	}
	c.stats.dials.Add(1)
	ws, resp, err := gws.NewClient(cn, &gws.ClientOption{
		Addr:                c.url,
		RequestHeader:       hdr,
		ReadMaxPayloadSize:  2 * protocol.MaxFrameBytes,
		WriteMaxPayloadSize: 2 * protocol.MaxFrameBytes,
		HandshakeTimeout:    c.opts.HandshakeTimeout,
		NewDialer:           func() (gws.Dialer, error) { return dialer{c}, nil },
		Logger:              gwsLogger{c.log},
	})
	c.mu.Lock()
	c.dialing = nil
	c.mu.Unlock()
	if err != nil {
		return c.refused(resp, err)
	}
	cn.ws = ws
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ws.ReadLoop()
	}()
	return c.serve(cn)
}

// refused classifies a failed upgrade.
func (c *Client) refused(resp *http.Response, err error) ending {
	if resp == nil {
		c.log.Debug("dial failed", "err", err)
		return ending{retry: protocol.RetryBackoff}
	}
	e := &Error{Status: resp.StatusCode, Err: err}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		e.Code = protocol.CodeUnauthorized
		return ending{retry: protocol.RetryNewToken, err: e}
	case http.StatusForbidden:
		e.Code = protocol.CodeForbidden
		return ending{retry: protocol.RetryNewToken, err: e}
	case http.StatusBadRequest:
		// The server does not speak weft.v1 (or refused the handshake).
		return ending{retry: protocol.RetryNever, err: e}
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"))
		c.stats.retryAfters.Add(1)
		return ending{retry: protocol.RetryBackoff, hint: e.RetryAfter, err: e}
	}
	return ending{retry: protocol.RetryBackoff, err: e}
}

// retryAfter parses a Retry-After header (seconds or an HTTP date); a
// missing or bad one means one second.
func retryAfter(h string) time.Duration {
	if s, err := strconv.Atoi(h); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(time.Until(t), 0)
	}
	return time.Second
}

// serve runs one connection: Hello, Join of every open document, then
// timers (pings, presence, rejoins, token refresh) until it ends.
func (c *Client) serve(cn *conn) ending {
	c.mu.Lock()
	c.conn = cn
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.conn = nil
		c.mu.Unlock()
		for _, d := range c.docList() {
			d.detach(cn)
		}
	}()
	_ = cn.write(&protocol.Hello{Client: Software, Agent: c.agent, User: c.opts.User})
	c.join(cn, c.docList())
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var welcomeAt time.Time
	var lastPing time.Time
	for {
		now := time.Now()
		if welcomeAt.IsZero() && cn.welcomed() {
			welcomeAt = now
		}
		next := c.tick(cn, now, &lastPing)
		timer.Reset(max(next.Sub(now), time.Millisecond))
		select {
		case <-cn.done:
			e := c.ended(cn)
			if !welcomeAt.IsZero() {
				e.welcomed, e.upFor = true, time.Since(welcomeAt)
			}
			return e
		case <-c.ctx.Done():
			cn.closeNow(protocol.CloseNormal)
			<-cn.done
			return ending{}
		case <-c.wake:
			var fresh []*Doc
			for _, d := range c.docList() {
				d.mu.Lock()
				if d.conn != cn && !d.closed {
					fresh = append(fresh, d)
				}
				d.mu.Unlock()
			}
			c.join(cn, fresh)
		case <-cn.poke:
		case <-timer.C:
		}
	}
}

// join attaches documents to cn and sends their versions in as few Join
// frames as the limits allow.
func (c *Client) join(cn *conn, docs []*Doc) {
	var batch []protocol.JoinDoc
	size := 0
	_, maxBytes := cn.frameLimits()
	flush := func() {
		if len(batch) > 0 {
			_ = cn.write(&protocol.Join{Docs: batch})
			batch, size = nil, 0
		}
	}
	for _, d := range docs {
		d.mu.Lock()
		if d.closed || errors.Is(d.broken, ErrAgentReused) || errors.Is(d.broken, ErrDeleted) {
			d.mu.Unlock()
			continue
		}
		d.attachLocked(cn)
		v := d.text.Version()
		d.mu.Unlock()
		n := len(d.id) + 24*len(v) + 8
		if len(batch) == protocol.MaxDocsPerFrame || (len(batch) > 0 && size+n > maxBytes) {
			flush()
		}
		batch = append(batch, protocol.JoinDoc{Doc: d.id, Version: v})
		size += n
	}
	flush()
}

// tick does the connection's timed work and returns when it is next due.
func (c *Client) tick(cn *conn, now time.Time, lastPing *time.Time) time.Time {
	o := &c.opts
	next := now.Add(o.PingInterval)
	soon := func(t time.Time) {
		if !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	// Liveness: ping when the line has been quiet. Writes get a deadline
	// that moves only while the server is heard from, so a write stuck on
	// a peer that stopped reading fails instead of blocking for ever.
	last := time.Unix(0, cn.last.Load())
	_ = cn.ws.SetWriteDeadline(last.Add(2 * (o.PingInterval + o.PongWait)))
	if now.Sub(last) >= o.PingInterval && now.Sub(*lastPing) >= o.PingInterval {
		cn.mu.Lock()
		cn.nonce++
		_ = cn.writeLocked(&protocol.Ping{Nonce: cn.nonce})
		cn.mu.Unlock()
		*lastPing = now
	}
	soon(last.Add(o.PingInterval))
	soon(lastPing.Add(o.PingInterval))
	// Rejoins the reader asked for, and sends the rates held back.
	rejoins, flushes, at := cn.due(now)
	if len(rejoins) > 0 {
		c.join(cn, rejoins)
	}
	for _, d := range flushes {
		d.flush(cn)
	}
	soon(at)
	// Token refresh.
	cn.mu.Lock()
	refreshAt := cn.refreshAt
	cn.mu.Unlock()
	if !refreshAt.IsZero() && !now.Before(refreshAt) {
		c.refresh(cn, now)
		cn.mu.Lock()
		refreshAt = cn.refreshAt
		cn.mu.Unlock()
	}
	soon(refreshAt)
	// Presence.
	if cn.welcomed() {
		interval := cn.presenceInterval()
		for _, d := range c.docList() {
			soon(d.presenceDue(cn, now, interval))
		}
	}
	return next
}

// refresh gets a new token and sends it over the open socket.
func (c *Client) refresh(cn *conn, now time.Time) {
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	tok, err := c.opts.TokenFunc(ctx)
	cancel()
	if err != nil || tok == "" {
		// Try again soon, while the current token still holds.
		cn.mu.Lock()
		cn.refreshAt = now.Add(time.Second)
		cn.mu.Unlock()
		if err != nil {
			c.report(&Error{Err: fmt.Errorf("token refresh: %w", err)})
		}
		return
	}
	c.mu.Lock()
	c.token = tok
	c.mu.Unlock()
	cn.mu.Lock()
	cn.refreshAt = time.Time{} // until Refreshed names the new expiry
	_ = cn.writeLocked(&protocol.Refresh{Token: tok})
	cn.mu.Unlock()
}

// ended classifies a connection that closed.
func (c *Client) ended(cn *conn) ending {
	cn.mu.Lock()
	closeErr, fatal, hint, deleted := cn.closeErr, cn.fatal, cn.hint, cn.deleted
	cn.mu.Unlock()
	code := protocol.CloseAbnormal
	var reason string
	var ce *gws.CloseError
	if errors.As(closeErr, &ce) {
		code, reason = protocol.CloseCode(ce.Code), string(ce.Reason)
	}
	if fatal != nil && (code == protocol.CloseAbnormal || code == protocol.CloseNormal) {
		code = fatal.Code.CloseCode()
	}
	end := ending{retry: code.Retry(), hint: hint}
	// The weft server closes a session it decided to end with a typed code,
	// after an Error frame. A bare 1000 comes from its WebSocket layer
	// giving up on the socket (a read deadline, a broken frame): like a
	// dropped connection, an offline-first client comes back.
	// Likewise a 4004 that follows the deletion of one document: that
	// document is marked deleted, the others rejoin.
	transport := code == protocol.CloseAbnormal || code == protocol.CloseNormal ||
		code == protocol.CloseGoingAway || code == protocol.CloseServiceRestart ||
		code == protocol.CloseNotFound && deleted
	switch {
	case fatal != nil:
		end.err = &Error{Code: fatal.Code, Close: code, Message: fatal.Message, RetryAfter: hint}
	case transport:
		end.retry = protocol.RetryBackoff
		c.log.Debug("connection ended", "close", code, "err", closeErr)
	default:
		end.err = &Error{Close: code, Message: reason, RetryAfter: hint}
	}
	if end.err != nil && end.err.Code == 0 && code > 4000 && code < 5000 {
		end.err.Code = protocol.ErrorCode(code - 4000)
	}
	return end
}
