package client

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"time"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// Software is what the client reports in Hello.
const Software = "weft-go/0.1.0"

// Options configure a Client. Zero values take the documented defaults.
type Options struct {
	// Token is the bearer token sent on the WebSocket upgrade. Empty means
	// none (a server without auth), or ask TokenFunc.
	Token string
	// TokenFunc, when set, returns a fresh token. The client calls it when
	// it has no token, after the server refused the current one (HTTP 401,
	// close 1008 or 4001), and before the current one expires (at 80 % of
	// its lifetime, sending Refresh over the open socket). Without it, an
	// auth failure stops reconnecting until SetToken.
	TokenFunc func(ctx context.Context) (string, error)
	// Agent is the replica's agent key. Zero means a random UUID (v4).
	// With StatePath the key is stored with the state and reused by every
	// later process; a non-zero Agent that differs from the stored one is
	// ErrAgentMismatch.
	Agent crdt.AgentKey
	// User is the name and colour peers see with this client's presence.
	User protocol.User
	// StatePath, when set, names a bbolt file that keeps each opened
	// document's replica and its unacknowledged edits, so that edits made
	// offline survive a restart of the process and are sent once it
	// reconnects. See Doc.Insert for the durability guarantee.
	StatePath string
	// Backoff paces reconnects.
	Backoff Backoff
	// Logger receives diagnostics. Default: discard.
	Logger *slog.Logger
	// Dialer opens the TCP connection (for tests: a local address, a
	// timeout). Default: a net.Dialer with a 5 s timeout.
	Dialer *net.Dialer
	// HandshakeTimeout bounds the WebSocket upgrade. Default 5 s.
	HandshakeTimeout time.Duration
	// PingInterval is how long the connection may be silent before the
	// client sends a Ping frame; with no traffic for PingInterval+PongWait
	// the client drops the connection and reconnects. Defaults 15 s and
	// 10 s, like the server's.
	PingInterval, PongWait time.Duration
	// OnChange, when set, receives every change of every open document,
	// local and remote (see Event). Calls for one document come in the
	// order the changes were applied and never overlap; they run on the
	// goroutine that made the change (an edit call, or the connection's
	// reader), with no lock held, so OnChange may call Doc methods. A slow
	// OnChange delays reading from the server.
	OnChange func(Event)
	// OnPresence, when set, is called after a document's peers changed
	// (Doc.Peers has the new state). Same rules as OnChange.
	OnPresence func(d *Doc)
}

// Backoff is exponential backoff with full jitter: before reconnect
// attempt n (0, 1, 2, ...) the client sleeps a time drawn uniformly from
// [0, min(Cap, Base·2^n)], plus the server's retry-after hint when it gave
// one. n returns to 0 once a session has stayed up for ResetAfter.
type Backoff struct {
	Base       time.Duration // default 500 ms
	Cap        time.Duration // default 30 s
	ResetAfter time.Duration // default 30 s
}

func (b Backoff) withDefaults() Backoff {
	if b.Base <= 0 {
		b.Base = 500 * time.Millisecond
	}
	if b.Cap <= 0 {
		b.Cap = 30 * time.Second
	}
	if b.Cap < b.Base {
		b.Cap = b.Base
	}
	if b.ResetAfter <= 0 {
		b.ResetAfter = 30 * time.Second
	}
	return b
}

// Ceiling returns min(Cap, Base·2^n), the upper bound of attempt n's sleep.
func (b Backoff) Ceiling(n int) time.Duration {
	b = b.withDefaults()
	if n < 0 {
		n = 0
	}
	if n >= 62 || b.Base > b.Cap>>min(n, 62) {
		return b.Cap
	}
	return b.Base << n
}

// Delay draws attempt n's sleep: uniform in [0, Ceiling(n)].
func (b Backoff) Delay(n int) time.Duration {
	return time.Duration(rand.Int64N(int64(b.Ceiling(n)) + 1))
}

func (o Options) withDefaults() Options {
	o.Backoff = o.Backoff.withDefaults()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Dialer == nil {
		o.Dialer = &net.Dialer{Timeout: 5 * time.Second}
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 5 * time.Second
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 15 * time.Second
	}
	if o.PongWait <= 0 {
		o.PongWait = 10 * time.Second
	}
	return o
}
