package syncer

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/weft-sync/weft/auth"
	"github.com/weft-sync/weft/protocol"
)

// Version is the server software version reported in Welcome.
const Version = "0.1.0"

// Verifier checks bearer tokens; *auth.Verifier is one.
type Verifier interface {
	Verify(token string, now time.Time) (*auth.Claims, error)
}

// Limits are the per-connection limits a Server enforces and advertises.
type Limits struct {
	// MaxFrameBytes caps one inbound WebSocket message. Default and
	// maximum protocol.MaxFrameBytes.
	MaxFrameBytes int
	// MaxDocsPerSocket caps documents joined at once. Default and maximum
	// protocol.MaxDocsPerSocket.
	MaxDocsPerSocket int
	// OpsPerSecond and OpsBurst bound CRDT ops a connection may send; 0
	// means unlimited. Default 2000/s with a burst of 4000.
	OpsPerSecond float64
	OpsBurst     int
	// BytesPerSecond and BytesBurst bound inbound Delta bytes; 0 means
	// unlimited. Default 2 MiB/s with a burst of 2 MiB.
	BytesPerSecond float64
	BytesBurst     int
	// PresencePerSecond bounds presence frames a connection may send;
	// excess ones are dropped. Default 30.
	PresencePerSecond int
	// SendBudget caps the bytes queued to one connection and not yet
	// written. A peer that falls this far behind is closed as a slow
	// consumer; it resyncs when it reconnects. Default 16 MiB.
	SendBudget int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxFrameBytes <= 0 || l.MaxFrameBytes > protocol.MaxFrameBytes {
		l.MaxFrameBytes = protocol.MaxFrameBytes
	}
	if l.MaxDocsPerSocket <= 0 || l.MaxDocsPerSocket > protocol.MaxDocsPerSocket {
		l.MaxDocsPerSocket = protocol.MaxDocsPerSocket
	}
	if l.OpsPerSecond == 0 {
		l.OpsPerSecond, l.OpsBurst = 2000, 4000
	}
	if l.OpsPerSecond < 0 {
		l.OpsPerSecond = 0
	}
	if l.OpsBurst <= 0 {
		l.OpsBurst = max(int(2*l.OpsPerSecond), protocol.MaxOpsPerFrame)
	}
	if l.BytesPerSecond == 0 {
		l.BytesPerSecond, l.BytesBurst = 2<<20, 2<<20
	}
	if l.BytesPerSecond < 0 {
		l.BytesPerSecond = 0
	}
	if l.BytesBurst <= 0 {
		l.BytesBurst = max(int(l.BytesPerSecond), protocol.MaxFrameBytes)
	}
	if l.PresencePerSecond <= 0 {
		l.PresencePerSecond = 30
	}
	if l.SendBudget <= 0 {
		l.SendBudget = 16 << 20
	}
	return l
}

// ServerOptions configure a Server. Zero values take the documented defaults.
type ServerOptions struct {
	// Verifier checks tokens. Nil means no auth: every connection gets
	// read-write access to every document, which is only safe on loopback
	// (cmd/weft refuses other addresses without --insecure).
	Verifier Verifier
	Limits   Limits
	// PingInterval is how often the server pings each connection; a
	// connection silent for PingInterval+PongWait is closed. Defaults 15 s
	// and 10 s.
	PingInterval, PongWait time.Duration
	// UpgradesPerSecond and UpgradeBurst admit new connections; over the
	// rate a client gets 429 with Retry-After, which absorbs reconnect
	// storms. Default 500/s, burst 1000.
	UpgradesPerSecond float64
	UpgradeBurst      int
	// JoinsPerSecond and JoinBurst admit document joins across the server;
	// over the rate a join gets CodeOverloaded with a retry-after. Default
	// 5000/s, burst 10000.
	JoinsPerSecond float64
	JoinBurst      int
	// MaxConnsPerIP caps concurrent connections from one address.
	// Default 1024.
	MaxConnsPerIP int
	// GoingAwayRetry is the retry-after a graceful shutdown advertises.
	// Default 2 s.
	GoingAwayRetry time.Duration
	// HelloTimeout closes a connection that sends no hello. Default 10 s.
	HelloTimeout time.Duration
	Logger       *slog.Logger
	Metrics      *Metrics
	Now          func() time.Time
}

func (o ServerOptions) withDefaults() ServerOptions {
	o.Limits = o.Limits.withDefaults()
	if o.PingInterval <= 0 {
		o.PingInterval = 15 * time.Second
	}
	if o.PongWait <= 0 {
		o.PongWait = 10 * time.Second
	}
	if o.UpgradesPerSecond <= 0 {
		o.UpgradesPerSecond = 500
	}
	if o.UpgradeBurst <= 0 {
		o.UpgradeBurst = int(2 * o.UpgradesPerSecond)
	}
	if o.JoinsPerSecond <= 0 {
		o.JoinsPerSecond = 5000
	}
	if o.JoinBurst <= 0 {
		o.JoinBurst = int(2 * o.JoinsPerSecond)
	}
	if o.MaxConnsPerIP <= 0 {
		o.MaxConnsPerIP = 1024
	}
	if o.GoingAwayRetry <= 0 {
		o.GoingAwayRetry = 2 * time.Second
	}
	if o.HelloTimeout <= 0 {
		o.HelloTimeout = 10 * time.Second
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
	return o
}

// Server speaks protocol v1 to WebSocket clients on top of a Hub. It owns
// the connections: admission, authentication before the upgrade,
// heartbeats, slow-consumer budgets and graceful shutdown.
type Server struct {
	hub  *Hub
	opts ServerOptions
	met  *Metrics

	upgrades *rate.Limiter
	joins    *rate.Limiter

	mu       sync.Mutex // guards conns, perIP, draining
	conns    map[*wsPeer]struct{}
	perIP    map[string]int
	draining bool
	drained  chan struct{} // closed when draining and conns is empty

	stop chan struct{}
	wg   sync.WaitGroup // heartbeat and close goroutines
	ws   *wsTransport
}

// NewServer returns a server over hub. Call Shutdown to stop it.
func NewServer(hub *Hub, opts ServerOptions) *Server {
	opts = opts.withDefaults()
	s := &Server{
		hub: hub, opts: opts, met: opts.Metrics,
		upgrades: rate.NewLimiter(rate.Limit(opts.UpgradesPerSecond), opts.UpgradeBurst),
		joins:    rate.NewLimiter(rate.Limit(opts.JoinsPerSecond), opts.JoinBurst),
		conns:    make(map[*wsPeer]struct{}),
		perIP:    make(map[string]int),
		drained:  make(chan struct{}),
		stop:     make(chan struct{}),
	}
	s.ws = newWSTransport(s)
	s.wg.Add(1)
	go s.heartbeat()
	return s
}

// Hub returns the server's hub.
func (s *Server) Hub() *Hub { return s.hub }

// Connections returns the number of open sessions.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) advertised() protocol.Limits {
	l := s.opts.Limits
	return protocol.Limits{
		MaxFrameBytes:    uint32(l.MaxFrameBytes),
		MaxOpsPerFrame:   protocol.MaxOpsPerFrame,
		MaxDocsPerSocket: uint32(l.MaxDocsPerSocket),
		OpsPerSecond:     uint32(l.OpsPerSecond),
		BytesPerSecond:   uint32(l.BytesPerSecond),
		PresenceMs:       uint32(s.hub.opts.Engine.PresenceInterval.Milliseconds()),
		PresenceTTLMs:    uint32(s.hub.opts.Engine.PresenceTTL.Milliseconds()),
	}
}

// admitJoin takes a token from the join limiter, or says when to retry.
func (s *Server) admitJoin() (time.Duration, bool) {
	d, ok := allow(s.joins, s.opts.Now(), 1)
	if !ok {
		s.met.rejected.WithLabelValues("join").Inc()
	}
	return d, ok
}

func newSessionID() protocol.SessionID { return protocol.SessionID(uuid.New()) }

func (s *Server) heartbeat() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.mu.Lock()
			for p := range s.conns {
				p.ping()
			}
			s.mu.Unlock()
		}
	}
}

// Shutdown stops accepting connections, tells every client to go away and
// come back after GoingAwayRetry, waits for the connections to close (or
// ctx to end, then cuts them), and closes the hub, which writes everything
// it holds to the log.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.draining {
		s.draining = true
		if len(s.conns) == 0 {
			close(s.drained)
		}
	}
	peers := make([]*wsPeer, 0, len(s.conns))
	for p := range s.conns {
		peers = append(peers, p)
	}
	s.mu.Unlock()
	retry := uint32(s.opts.GoingAwayRetry.Milliseconds())
	for _, p := range peers {
		p.goingAway("server shutting down", retry)
	}
	var err error
	select {
	case <-s.drained:
	case <-ctx.Done():
		err = ctx.Err()
		for _, p := range peers {
			p.cut()
		}
		<-s.drained
	}
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.wg.Wait()
	if cerr := s.hub.Close(); err == nil {
		err = cerr
	}
	return err
}

// Draining reports whether Shutdown has begun.
func (s *Server) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}
