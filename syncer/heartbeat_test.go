package syncer_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lxzan/gws"

	"github.com/weft-sync/weft/protocol"
	"github.com/weft-sync/weft/syncer"
)

// memLog is an in-memory syncer.Log, for tests that run in a synctest
// bubble, where file I/O has no place.
type memLog struct {
	mu   sync.Mutex
	recs map[string][][]byte
}

func newMemLog() *memLog { return &memLog{recs: map[string][][]byte{}} }

func (l *memLog) Append(doc string, recs ...[]byte) (uint64, uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	first := uint64(len(l.recs[doc]) + 1)
	for _, r := range recs {
		l.recs[doc] = append(l.recs[doc], append([]byte(nil), r...))
	}
	return first, uint64(len(l.recs[doc])), nil
}

func (l *memLog) Range(doc string, from uint64, fn func(uint64, []byte) error) error {
	l.mu.Lock()
	recs := l.recs[doc]
	l.mu.Unlock()
	if recs == nil {
		return syncer.ErrUnknownDoc
	}
	for i := max(from, 1); i <= uint64(len(recs)); i++ {
		if err := fn(i, recs[i-1]); err != nil {
			return err
		}
	}
	return nil
}

func (l *memLog) SaveSnapshot(string, uint64, []byte) error   { return nil }
func (l *memLog) LoadSnapshot(string) (uint64, []byte, error) { return 0, nil, nil }
func (l *memLog) Stat(string) (syncer.DocMeta, error)         { return syncer.DocMeta{}, syncer.ErrUnknownDoc }
func (l *memLog) List() ([]syncer.DocMeta, error)             { return nil, nil }
func (l *memLog) Delete(string) error                         { return nil }

// pipeListener hands the server ends of net.Pipe connections to an
// http.Server: WebSockets without sockets, for synctest.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// dial returns the client end of a new connection.
func (l *pipeListener) dial() net.Conn {
	c, s := net.Pipe()
	l.conns <- s
	return c
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// pingCounter is a gws client handler that answers pings and counts them.
type pingCounter struct {
	gws.BuiltinEventHandler
	pings  atomic.Int64
	closed atomic.Bool
}

func (h *pingCounter) OnPing(c *gws.Conn, p []byte)          { h.pings.Add(1); _ = c.WritePong(p) }
func (h *pingCounter) OnClose(*gws.Conn, error)              { h.closed.Store(true) }
func (h *pingCounter) OnMessage(_ *gws.Conn, m *gws.Message) { m.Close() }

func wsRequest() string {
	return "GET /v1/ws HTTP/1.1\r\nHost: pipe\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Protocol: " + syncer.Subprotocol + "\r\n\r\n"
}

// TestServer_HeartbeatClosesSilentPeers runs the server over net.Pipe in a
// synctest bubble, so a minute of heartbeats takes no time: a client that
// never answers pings is closed after PingInterval+PongWait of silence,
// while a gws client, which answers them, stays connected.
func TestServer_HeartbeatClosesSilentPeers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const pingInterval, pongWait = 10 * time.Second, 5 * time.Second
		hub := syncer.NewHub(newMemLog(), syncer.Options{})
		srv := syncer.NewServer(hub, syncer.ServerOptions{PingInterval: pingInterval, PongWait: pongWait})
		mux := http.NewServeMux()
		mux.HandleFunc("GET /v1/ws", srv.ServeWS)
		ln := newPipeListener()
		hs := &http.Server{Handler: mux}
		served := make(chan struct{})
		go func() { defer close(served); _ = hs.Serve(ln) }()

		// The good client: gws over a pipe; it answers pings.
		good := &pingCounter{}
		gc, _, err := gws.NewClientFromConn(good, &gws.ClientOption{Addr: "ws://pipe/v1/ws",
			RequestHeader: http.Header{"Sec-WebSocket-Protocol": {syncer.Subprotocol}}}, ln.dial())
		if err != nil {
			t.Fatal(err)
		}
		go gc.ReadLoop()
		hello := func(write func([]byte) error) {
			b, err := protocol.Encode(nil, &protocol.Hello{Client: "pipe", Agent: newAgent()})
			if err != nil {
				t.Fatal(err)
			}
			if err := write(b); err != nil {
				t.Fatal(err)
			}
		}
		hello(func(b []byte) error { return gc.WriteMessage(gws.OpcodeBinary, b) })

		// The silent one: a hand-made client that reads everything and
		// answers nothing.
		sc := ln.dial()
		if _, err := io.WriteString(sc, wsRequest()); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(sc)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("silent upgrade: %v %v", resp, err)
		}
		hello(func(b []byte) error { _, err := sc.Write(maskedFrame(b)); return err })
		var silentClosedAt time.Time
		silentDone := make(chan struct{})
		go func() {
			defer close(silentDone)
			_, _ = io.Copy(io.Discard, br)
			silentClosedAt = time.Now()
		}()
		synctest.Wait()
		start := time.Now()
		if n := srv.Connections(); n != 2 {
			t.Fatalf("%d connections, want 2", n)
		}

		time.Sleep(time.Minute)
		synctest.Wait()
		<-silentDone
		if d := silentClosedAt.Sub(start); d < pingInterval+pongWait || d > pingInterval+pongWait+time.Second {
			t.Fatalf("silent client closed after %v, want %v", d, pingInterval+pongWait)
		}
		if good.closed.Load() || srv.Connections() != 1 {
			t.Fatalf("good client closed %v; %d connections", good.closed.Load(), srv.Connections())
		}
		if n := good.pings.Load(); n < 5 {
			t.Fatalf("good client saw %d pings in a minute", n)
		}

		_ = gc.WriteClose(1000, nil)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		_ = hs.Shutdown(ctx)
		_ = ln.Close()
		<-served
		_ = sc.Close()
		synctest.Wait()
	})
}
