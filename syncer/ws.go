package syncer

// This is the only file that knows gws. It adapts a *gws.Conn to Peer,
// enforces the per-connection send budget, renews read deadlines on any
// traffic (the server pings; browsers answer automatically), and turns the
// HTTP upgrade into a Session after admission and authentication have
// answered with proper HTTP statuses — gws's own Authorize hook runs after
// the hijack and can only say 400. Data frames do not go through gws's
// writer: ws_writer.go frames and writes them in batches, on gws's write
// queue.

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/lxzan/gws"

	"github.com/weft-sync/weft/auth"
	"github.com/weft-sync/weft/protocol"
)

// Subprotocol is the WebSocket subprotocol of protocol v1.
const Subprotocol = "weft.v1"

type wsTransport struct {
	srv *Server
	up  *gws.Upgrader
}

type sessionKey struct{}

func newWSTransport(srv *Server) *wsTransport {
	t := &wsTransport{srv: srv}
	// No PermessageDeflate: ws_writer.go writes data frames uncompressed,
	// past gws's compressor and its context-takeover window.
	t.up = gws.NewUpgrader(t, &gws.ServerOption{
		ReadMaxPayloadSize:  srv.opts.Limits.MaxFrameBytes,
		WriteMaxPayloadSize: protocol.MaxFrameBytes * 2,
		SubProtocols:        []string{Subprotocol},
		Recovery:            gws.Recovery,
		Logger:              slogAdapter{srv.opts.Logger},
		HandshakeTimeout:    5 * time.Second,
		Authorize: func(r *http.Request, ss gws.SessionStorage) bool {
			p, ok := r.Context().Value(sessionKey{}).(*wsPeer)
			if ok {
				ss.Store("peer", p)
			}
			return ok
		},
	})
	return t
}

// slogAdapter lets gws log (recovered panics, mostly) through slog.
type slogAdapter struct {
	l interface{ Error(string, ...any) }
}

func (a slogAdapter) Error(v ...any) { a.l.Error("gws", "msg", v) }

// httpError writes a JSON error before any upgrade, with Retry-After when
// the client should come back.
func httpError(w http.ResponseWriter, status int, code protocol.ErrorCode, retry time.Duration, msg string) {
	w.Header().Set("Content-Type", "application/json")
	if retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int((retry+time.Second-1)/time.Second))))
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": code.String(), "message": msg, "retry_after_ms": retry.Milliseconds()})
}

// ServeWS handles GET /v1/ws: admission, authentication, then the upgrade.
func (s *Server) ServeWS(w http.ResponseWriter, r *http.Request) {
	ip := clientIP(r)
	s.mu.Lock()
	draining := s.draining
	tooMany := s.perIP[ip] >= s.opts.MaxConnsPerIP
	s.mu.Unlock()
	if draining {
		s.met.rejected.WithLabelValues("draining").Inc()
		httpError(w, http.StatusServiceUnavailable, protocol.CodeGoingAway, s.opts.GoingAwayRetry, "server shutting down")
		return
	}
	if tooMany {
		s.met.rejected.WithLabelValues("per_ip").Inc()
		httpError(w, http.StatusTooManyRequests, protocol.CodeOverloaded, 5*time.Second, "too many connections from this address")
		return
	}
	if d, ok := allow(s.upgrades, s.opts.Now(), 1); !ok {
		s.met.rejected.WithLabelValues("upgrade").Inc()
		httpError(w, http.StatusTooManyRequests, protocol.CodeOverloaded, d, "too many new connections; retry later")
		return
	}
	claims, status, code, err := s.authenticate(r)
	if err != nil {
		s.met.rejected.WithLabelValues("auth").Inc()
		httpError(w, status, code, 0, err.Error())
		return
	}
	p := &wsPeer{srv: s, budget: s.opts.Limits.SendBudget, ip: ip}
	p.drainFn = p.drain
	p.sess = newSession(s, p, ip, claims)
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		httpError(w, http.StatusServiceUnavailable, protocol.CodeGoingAway, s.opts.GoingAwayRetry, "server shutting down")
		return
	}
	s.conns[p] = struct{}{}
	s.perIP[ip]++
	s.mu.Unlock()
	r = r.WithContext(context.WithValue(r.Context(), sessionKey{}, p))
	conn, err := s.ws.upgrade(w, r, p)
	if err != nil {
		// gws has answered the handshake error itself.
		p.sess.End()
		s.forget(p)
		return
	}
	p.conn.Store(conn)
	p.sess.armExpiry() // only now can the timers close the connection
	p.sess.armHello()
	s.met.connections.Inc()
	go conn.ReadLoop()
	if s.Draining() {
		// Shutdown began during the handshake and could not reach this
		// connection yet.
		p.goingAway("server shutting down", uint32(s.opts.GoingAwayRetry.Milliseconds()))
	}
}

// upgrade does what gws's Upgrade does, with the connection wrapped in a
// wsSocket, through which the peer's drains write (ws_writer.go), and a
// smaller read buffer.
func (t *wsTransport) upgrade(w http.ResponseWriter, r *http.Request, p *wsPeer) (*gws.Conn, error) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		httpError(w, http.StatusInternalServerError, protocol.CodeInternal, 0, "connection cannot be upgraded")
		return nil, errNotHijackable
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nil, err
	}
	p.sock = &wsSocket{Conn: nc}
	br := brw.Reader
	if br.Buffered() == 0 {
		// net/http's reader (4 KiB) would be held for the connection's
		// life; unless it holds bytes already, a small one will do.
		br = bufio.NewReaderSize(nc, readBufferSize)
	}
	return t.up.UpgradeFromConn(p.sock, br, r)
}

// readBufferSize is a connection's read buffer. Client frames are small
// (a typed character's Delta is about 50 bytes), and gws reads a payload
// longer than the buffer straight into the message. 1 KiB instead of
// 4 KiB saves 3.2 KB a connection (BenchmarkManyDocs heap-B/conn).
const readBufferSize = 1 << 10

var errNotHijackable = errors.New("syncer: response writer cannot hijack")

// authenticate returns the claims for a connection, or the HTTP status and
// code to refuse it with.
func (s *Server) authenticate(r *http.Request) (*auth.Claims, int, protocol.ErrorCode, error) {
	v := s.opts.Verifier
	if v == nil {
		name := r.URL.Query().Get("name")
		return auth.Anonymous(name), 0, 0, nil
	}
	tok, err := auth.TokenFromRequest(r)
	if err != nil {
		return nil, http.StatusUnauthorized, protocol.CodeUnauthorized, err
	}
	c, err := v.Verify(tok, s.opts.Now())
	switch {
	case errors.Is(err, auth.ErrExpired):
		return nil, http.StatusUnauthorized, protocol.CodeTokenExpired, err
	case err != nil:
		return nil, http.StatusUnauthorized, protocol.CodeUnauthorized, err
	}
	return c, 0, 0, nil
}

// clientIP is the peer address of the request. Deployments behind a proxy
// should terminate there; weft does not trust forwarding headers.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Server) forget(p *wsPeer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[p]; !ok {
		return
	}
	delete(s.conns, p)
	if s.perIP[p.ip]--; s.perIP[p.ip] <= 0 {
		delete(s.perIP, p.ip)
	}
	if s.draining && len(s.conns) == 0 {
		close(s.drained)
	}
}

// --- gws events (one handler for all connections) ----------------------------

func peerOf(c *gws.Conn) *wsPeer {
	v, _ := c.Session().Load("peer")
	p, _ := v.(*wsPeer)
	return p
}

func (t *wsTransport) deadline() time.Time {
	return time.Now().Add(t.srv.opts.PingInterval + t.srv.opts.PongWait)
}

func (t *wsTransport) OnOpen(c *gws.Conn) { _ = c.SetReadDeadline(t.deadline()) }

func (t *wsTransport) OnClose(c *gws.Conn, err error) {
	p := peerOf(c)
	if p == nil {
		return
	}
	p.closed.Store(true)
	p.sess.End()
	t.srv.met.connections.Dec()
	t.srv.forget(p)
}

// renew extends the read deadline on traffic, unless the connection is
// closing: then the deadline Close set bounds the wait for the client's
// close frame.
func (t *wsTransport) renew(c *gws.Conn) {
	if p := peerOf(c); p != nil && !p.closed.Load() {
		_ = c.SetReadDeadline(t.deadline())
	}
}

func (t *wsTransport) OnPing(c *gws.Conn, payload []byte) {
	t.renew(c)
	_ = c.WritePong(payload)
}

func (t *wsTransport) OnPong(c *gws.Conn, _ []byte) { t.renew(c) }

func (t *wsTransport) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	p := peerOf(c)
	if p == nil || p.closed.Load() {
		return // closing: frames that were already on their way are ignored
	}
	_ = c.SetReadDeadline(t.deadline())
	if m.Opcode != gws.OpcodeBinary {
		p.sess.fail(protocol.CodeMalformed, "", 0, 0, "protocol v1 frames are binary messages")
		return
	}
	// Decoders copy what they keep, so the pooled buffer can go back.
	p.sess.HandleFrame(m.Bytes())
}

// --- the Peer ------------------------------------------------------------------

// wsPeer queues frames on a gws connection within a byte budget: Send
// puts them in the outbox, and a drain on the connection's write queue
// writes them (ws_writer.go).
type wsPeer struct {
	srv     *Server
	conn    atomic.Pointer[gws.Conn] // set once the upgrade succeeded
	sess    *Session
	ip      string
	budget  int64
	pending atomic.Int64 // bytes queued and not yet written to the socket
	sock    *wsSocket    // set before conn
	out     outbox
	drainFn func() // p.drain, made once
	closed  atomic.Bool
	away    atomic.Bool // told to go away
}

func (p *wsPeer) Send(b []byte) bool {
	c := p.conn.Load()
	if p.closed.Load() || c == nil {
		return false
	}
	n := int64(len(b))
	if n > protocol.MaxFrameBytes*2 {
		// What gws refused as larger than WriteMaxPayloadSize: a bug.
		p.cutWith(protocol.CodeInternal, "frame too large")
		return false
	}
	if p.pending.Add(n) > p.budget {
		p.pending.Add(-n)
		p.srv.met.closes.WithLabelValues(protocol.CodeSlowConsumer.String()).Inc()
		p.cutWith(protocol.CodeSlowConsumer, "slow consumer: too many bytes queued")
		return false
	}
	if p.out.push(b) {
		c.Async(p.drainFn)
	}
	return true
}

// closeWait bounds how long a closing connection waits for the client's
// close frame.
const closeWait = 5 * time.Second

// Close queues a close frame after the frames already queued (an Error
// frame before it reaches the client first), then waits up to closeWait
// for the client's close frame, on which gws closes the socket. Closing the
// socket at once would reset it whenever the client's frames are still
// unread (a client that is sending), and the client would lose what was
// queued before the close, the Error or GoingAway frame and the close code
// included.
func (p *wsPeer) Close(code protocol.ErrorCode, reason string) {
	c := p.conn.Load()
	if c == nil || !p.closed.CompareAndSwap(false, true) {
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(closeWait))
	c.Async(func() {
		payload := binary.BigEndian.AppendUint16(nil, uint16(code.CloseCode()))
		r := reason[:min(len(reason), 123)] // a control frame holds 125 bytes
		for !utf8.ValidString(r) {
			r = r[:len(r)-1]
		}
		payload = append(payload, r...)
		_ = c.WriteMessage(gws.OpcodeCloseConnection, payload)
		_ = c.SetReadDeadline(time.Now().Add(closeWait))
	})
}

// cutWith closes at once, without waiting for the queue: for a peer that
// is not reading, waiting is the problem.
func (p *wsPeer) cutWith(code protocol.ErrorCode, reason string) {
	c := p.conn.Load()
	if c == nil || !p.closed.CompareAndSwap(false, true) {
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	p.srv.wg.Add(1)
	go func() {
		defer p.srv.wg.Done()
		_ = c.WriteClose(uint16(code.CloseCode()), []byte(reason))
	}()
}

func (p *wsPeer) cut() { p.cutWith(protocol.CodeGoingAway, "server shutting down") }

func (p *wsPeer) ping() {
	if c := p.conn.Load(); c != nil && !p.closed.Load() {
		c.WriteAsync(gws.OpcodePing, nil, nil)
	}
}

func (p *wsPeer) goingAway(reason string, retryMs uint32) {
	if p.conn.Load() == nil || !p.away.CompareAndSwap(false, true) {
		return
	}
	if b, err := protocol.Encode(nil, &protocol.GoingAway{Reason: reason, RetryAfterMs: retryMs}); err == nil {
		p.Send(b)
	}
	p.Close(protocol.CodeGoingAway, reason)
}
