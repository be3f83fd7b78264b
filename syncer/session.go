package syncer

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/weft-sync/weft/auth"
	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// Session is the protocol state of one connection: its identity and
// token, the documents it joined, its client-seq order and its rate limits.
// The transport calls HandleFrame for every inbound frame, in order, from
// one goroutine, and End once when the connection is gone.
type Session struct {
	srv  *Server
	id   protocol.SessionID
	peer Peer
	ip   string
	dec  *protocol.Decoder
	enc  *protocol.Encoder

	mu      sync.Mutex // guards claims and timers, which a token refresh and the timers share
	claims  *auth.Claims
	expiry  *time.Timer
	greet   *time.Timer // closes the connection if no hello arrives in time
	greeted atomic.Bool

	hello   bool
	agent   crdt.AgentKey
	user    protocol.User
	docs    map[string]*actor
	lastSeq uint64
	ended   bool

	ops, bytes, pres *rate.Limiter
}

func newSession(srv *Server, peer Peer, ip string, claims *auth.Claims) *Session {
	l := srv.opts.Limits
	s := &Session{
		srv: srv, id: newSessionID(), peer: peer, ip: ip, claims: claims,
		dec: protocol.NewDecoder(), enc: protocol.NewEncoder(),
		docs: make(map[string]*actor),
		pres: rate.NewLimiter(rate.Limit(l.PresencePerSecond), l.PresencePerSecond),
	}
	if l.OpsPerSecond > 0 {
		s.ops = rate.NewLimiter(rate.Limit(l.OpsPerSecond), l.OpsBurst)
	}
	if l.BytesPerSecond > 0 {
		s.bytes = rate.NewLimiter(rate.Limit(l.BytesPerSecond), l.BytesBurst)
	}
	return s
}

// ID returns the session ID.
func (s *Session) ID() protocol.SessionID { return s.id }

func (s *Session) write(f protocol.Frame) {
	b, err := s.enc.Encode(nil, f)
	if err != nil {
		s.srv.opts.Logger.Error("encode failed", "kind", f.Kind(), "err", err)
		return
	}
	s.peer.Send(b)
}

func (s *Session) fail(code protocol.ErrorCode, doc string, clientSeq uint64, retry time.Duration, format string, args ...any) {
	s.srv.met.errors.WithLabelValues(code.String()).Inc()
	msg := fmt.Sprintf(format, args...)
	if len(msg) > protocol.MaxMessageBytes {
		msg = msg[:protocol.MaxMessageBytes]
	}
	s.write(&protocol.Error{Code: code, Message: msg, Doc: doc, ClientSeq: clientSeq, RetryAfterMs: uint32(retry.Milliseconds())})
}

// kill reports a fatal error and closes the connection.
func (s *Session) kill(code protocol.ErrorCode, format string, args ...any) {
	s.fail(code, "", 0, 0, format, args...)
	s.srv.met.closes.WithLabelValues(code.String()).Inc()
	s.peer.Close(code, fmt.Sprintf(format, args...))
}

// armHello gives the client HelloTimeout to say hello; a socket that
// never does only holds resources.
func (s *Session) armHello() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.greet = time.AfterFunc(s.srv.opts.HelloTimeout, func() {
		if s.greeted.Load() {
			return
		}
		if b, err := protocol.Encode(nil, &protocol.Error{Code: protocol.CodeTimeout, Message: "no hello"}); err == nil {
			s.peer.Send(b)
		}
		s.srv.met.closes.WithLabelValues(protocol.CodeTimeout.String()).Inc()
		s.peer.Close(protocol.CodeTimeout, "no hello")
	})
}

func (s *Session) armExpiry() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.expiry != nil {
		s.expiry.Stop()
		s.expiry = nil
	}
	if s.claims == nil || s.claims.ExpiresAt.IsZero() {
		return
	}
	d := s.claims.ExpiresIn(s.srv.opts.Now())
	s.expiry = time.AfterFunc(max(d, 0), func() {
		// Runs on a timer goroutine: s.enc belongs to the reader, so encode
		// with the package's pooled encoder.
		if b, err := protocol.Encode(nil, &protocol.Error{Code: protocol.CodeTokenExpired,
			Message: "token expired; reconnect or refresh with a new token"}); err == nil {
			s.peer.Send(b)
		}
		s.srv.met.errors.WithLabelValues(protocol.CodeTokenExpired.String()).Inc()
		s.srv.met.closes.WithLabelValues(protocol.CodeTokenExpired.String()).Inc()
		s.peer.Close(protocol.CodeTokenExpired, "token expired")
	})
}

func (s *Session) perm(doc string) auth.Perm {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claims.Can(doc)
}

func (s *Session) subject() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claims.Subject
}

// HandleFrame processes one inbound frame.
func (s *Session) HandleFrame(frame []byte) {
	if s.ended {
		return
	}
	f, err := s.dec.Decode(frame)
	if err != nil {
		s.badFrame(frame, err)
		return
	}
	s.srv.met.frames.WithLabelValues(f.Kind().String()).Inc()
	if !f.Kind().FromClient() {
		s.fail(protocol.CodeProtocol, "", 0, 0, "%s is a server frame", f.Kind())
		return
	}
	if !s.hello {
		h, ok := f.(*protocol.Hello)
		if !ok {
			s.kill(protocol.CodeProtocol, "the first frame must be hello, not %s", f.Kind())
			return
		}
		s.onHello(h)
		return
	}
	if s.srv.Draining() {
		// Say why nothing is applied any more; GoingAway is on its way.
		var seq uint64
		var doc string
		if d, ok := f.(*protocol.Delta); ok {
			seq, doc = d.ClientSeq, d.Doc
		}
		s.fail(protocol.CodeGoingAway, doc, seq, s.srv.opts.GoingAwayRetry, "server shutting down")
		return
	}
	switch f := f.(type) {
	case *protocol.Hello:
		s.fail(protocol.CodeProtocol, "", 0, 0, "hello sent twice")
	case *protocol.Join:
		s.onJoin(f)
	case *protocol.Leave:
		for _, d := range f.Docs {
			s.leave(d)
		}
	case *protocol.Delta:
		s.onDelta(f, len(frame))
	case *protocol.Presence:
		s.onPresence(f)
	case *protocol.Refresh:
		s.onRefresh(f)
	case *protocol.Ping:
		s.write(&protocol.Pong{Nonce: f.Nonce})
	case *protocol.Pong:
	}
}

// badFrame answers a frame that does not decode. The connection stays open
// (one bad frame harms nothing else) unless it came before hello.
func (s *Session) badFrame(frame []byte, err error) {
	code := protocol.CodeOf(err)
	if k, kerr := protocol.PeekKind(frame); kerr == nil {
		s.srv.met.frames.WithLabelValues("bad_" + k.String()).Inc()
	}
	s.fail(code, "", 0, 0, "%v", err)
	if !s.hello {
		s.srv.met.closes.WithLabelValues(code.String()).Inc()
		s.peer.Close(code, "bad first frame")
	}
}

func (s *Session) onHello(h *protocol.Hello) {
	if h.Token != "" {
		if !s.refreshClaims(h.Token) {
			return
		}
	}
	if h.Agent == (crdt.AgentKey{}) {
		s.kill(protocol.CodeProtocol, "hello needs an agent key")
		return
	}
	s.hello = true
	s.greeted.Store(true)
	s.agent = h.Agent
	s.user = h.User
	s.mu.Lock()
	if s.user.Name == "" {
		s.user.Name = s.claims.Name
	}
	if s.user.Color == "" {
		s.user.Color = s.claims.Color
	}
	var exp uint64
	if !s.claims.ExpiresAt.IsZero() {
		exp = uint64(s.claims.ExpiresAt.UnixMilli())
	}
	s.mu.Unlock()
	s.write(&protocol.Welcome{Server: "weft/" + Version, Session: s.id, ExpiresAt: exp, Limits: s.srv.advertised()})
}

// refreshClaims verifies a token and installs it; on failure it closes the
// session with the code that tells the client what to do.
func (s *Session) refreshClaims(token string) bool {
	v := s.srv.opts.Verifier
	if v == nil {
		return true // no auth configured: tokens are ignored
	}
	c, err := v.Verify(token, s.srv.opts.Now())
	switch {
	case errors.Is(err, auth.ErrExpired):
		s.kill(protocol.CodeTokenExpired, "token expired")
		return false
	case err != nil:
		s.kill(protocol.CodeUnauthorized, "token rejected: %v", err)
		return false
	}
	s.mu.Lock()
	s.claims = c
	s.mu.Unlock()
	s.armExpiry()
	return true
}

func (s *Session) onRefresh(f *protocol.Refresh) {
	if !s.refreshClaims(f.Token) {
		return
	}
	s.mu.Lock()
	var exp uint64
	if !s.claims.ExpiresAt.IsZero() {
		exp = uint64(s.claims.ExpiresAt.UnixMilli())
	}
	s.mu.Unlock()
	// A narrower token may revoke documents already joined.
	for doc := range s.docs {
		if !s.perm(doc).Allows(auth.Read) {
			s.fail(protocol.CodeForbidden, doc, 0, 0, "the new token does not grant %q", doc)
			s.leave(doc)
		}
	}
	s.write(&protocol.Refreshed{ExpiresAt: exp})
}

func (s *Session) member(doc string) Member {
	return Member{Session: s.id, Agent: s.agent, Subject: s.subject(), User: s.user, CanWrite: s.perm(doc).Allows(auth.Write)}
}

func (s *Session) onJoin(f *protocol.Join) {
	for _, jd := range f.Docs {
		doc := jd.Doc
		if !s.perm(doc).Allows(auth.Read) {
			s.fail(protocol.CodeForbidden, doc, 0, 0, "no access to %q", doc)
			continue
		}
		a := s.docs[doc]
		if a == nil {
			if len(s.docs) >= s.srv.opts.Limits.MaxDocsPerSocket {
				s.fail(protocol.CodeTooManyDocs, doc, 0, 0, "at most %d documents per connection", s.srv.opts.Limits.MaxDocsPerSocket)
				continue
			}
			if wait, ok := s.srv.admitJoin(); !ok {
				s.fail(protocol.CodeOverloaded, doc, 0, wait, "too many joins right now")
				continue
			}
			var err error
			if a, err = s.srv.hub.acquire(doc); err != nil {
				s.fail(codeFor(err), doc, 0, time.Second, "cannot open %q: %v", doc, err)
				continue
			}
			s.docs[doc] = a
		}
		if err := a.send(msg{kind: mJoin, session: s.id, peer: s.peer, in: JoinIn{Member: s.member(doc), Version: jd.Version}}); err != nil {
			s.dropDoc(doc)
			s.fail(protocol.CodeInternal, doc, 0, time.Second, "document closed; join again")
		}
	}
}

func codeFor(err error) protocol.ErrorCode {
	switch {
	case errors.Is(err, ErrClosed):
		return protocol.CodeGoingAway
	default:
		return protocol.CodeInternal
	}
}

func (s *Session) dropDoc(doc string) {
	if a := s.docs[doc]; a != nil {
		delete(s.docs, doc)
		s.srv.hub.release(a)
	}
}

func (s *Session) leave(doc string) {
	a := s.docs[doc]
	if a == nil {
		return
	}
	_ = a.send(msg{kind: mLeave, session: s.id})
	s.dropDoc(doc)
}

func (s *Session) onDelta(f *protocol.Delta, size int) {
	met := s.srv.met
	a := s.docs[f.Doc]
	if a == nil {
		s.fail(protocol.CodeNotJoined, f.Doc, f.ClientSeq, 0, "join %q before sending deltas", f.Doc)
		return
	}
	if f.ClientSeq <= s.lastSeq {
		s.fail(protocol.CodeProtocol, f.Doc, f.ClientSeq, 0, "client seq %d does not follow %d", f.ClientSeq, s.lastSeq)
		return
	}
	s.lastSeq = f.ClientSeq
	if !s.perm(f.Doc).Allows(auth.Write) {
		met.ops.WithLabelValues("forbidden").Add(float64(len(f.Delta.Ops)))
		s.fail(protocol.CodeForbidden, f.Doc, f.ClientSeq, 0, "read-only access to %q", f.Doc)
		return
	}
	now := s.srv.opts.Now()
	if wait, ok := allow(s.ops, now, len(f.Delta.Ops)); !ok {
		met.ops.WithLabelValues("rate_limited").Add(float64(len(f.Delta.Ops)))
		s.fail(protocol.CodeRateLimited, f.Doc, f.ClientSeq, wait, "over %v ops per second", s.ops.Limit())
		return
	}
	if wait, ok := allow(s.bytes, now, size); !ok {
		met.ops.WithLabelValues("rate_limited").Add(float64(len(f.Delta.Ops)))
		s.fail(protocol.CodeRateLimited, f.Doc, f.ClientSeq, wait, "over %v bytes per second", s.bytes.Limit())
		return
	}
	met.ops.WithLabelValues("received").Add(float64(len(f.Delta.Ops)))
	_ = a.send(msg{kind: mInput, in: DeltaIn{Session: s.id, ClientSeq: f.ClientSeq, Delta: f.Delta}})
}

// allow takes n tokens from l, or says how long to wait for them. A nil
// limiter allows everything; a request larger than the burst can never
// pass and waits a second (the client should split it).
func allow(l *rate.Limiter, now time.Time, n int) (time.Duration, bool) {
	if l == nil {
		return 0, true
	}
	if n > l.Burst() {
		return time.Second, false
	}
	r := l.ReserveN(now, n)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}

func (s *Session) onPresence(f *protocol.Presence) {
	a := s.docs[f.Doc]
	if a == nil {
		s.fail(protocol.CodeNotJoined, f.Doc, 0, 0, "join %q before sending presence", f.Doc)
		return
	}
	if !s.pres.AllowN(s.srv.opts.Now(), 1) {
		return // presence is ephemeral: excess updates are dropped, the next one wins
	}
	_ = a.send(msg{kind: mInput, in: PresenceIn{Session: s.id, Presence: f}})
}

// End leaves every document; the transport calls it once when the
// connection is closed.
func (s *Session) End() {
	if s.ended {
		return
	}
	s.ended = true
	s.mu.Lock()
	if s.expiry != nil {
		s.expiry.Stop()
	}
	if s.greet != nil {
		s.greet.Stop()
	}
	s.mu.Unlock()
	for doc := range s.docs {
		s.leave(doc)
	}
}
