package syncer_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
	"github.com/weft-sync/weft/store"
	"github.com/weft-sync/weft/syncer"
	"github.com/weft-sync/weft/syncer/storelog"
)

var seedFlag = flag.Uint64("seed", 0, "replay the randomised syncer tests with this seed (0: a fresh one)")

// newRand returns a seeded source and logs the seed, so that a failure can
// be replayed with -seed.
func newRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (replay with -seed=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// waitFor polls cond until it holds, failing the test after a bound. It is
// for state the test cannot be notified of (hub.Loaded, store contents);
// client frames use wsClient.waitFor.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for delay := time.Millisecond; !cond(); delay = min(2*delay, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(delay)
	}
}

// serverConfig is everything a test may set on a test server.
type serverConfig struct {
	hub   syncer.Options
	srv   syncer.ServerOptions
	store store.Options
}

// testServer is a real server on 127.0.0.1 over a real bbolt file.
type testServer struct {
	t    testing.TB
	cfg  serverConfig
	db   *store.DB
	hub  *syncer.Hub
	srv  *syncer.Server
	http *httptest.Server
	url  string
	dir  string
	reg  *prometheus.Registry
}

func startServer(t testing.TB, dir string, hopts syncer.Options, sopts syncer.ServerOptions) *testServer {
	t.Helper()
	return startServerWith(t, dir, serverConfig{hub: hopts, srv: sopts})
}

func startServerWith(t testing.TB, dir string, cfg serverConfig) *testServer {
	t.Helper()
	db, err := store.Open(dir+"/weft.db", cfg.store)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	met := syncer.NewMetrics(reg)
	hopts, sopts := cfg.hub, cfg.srv
	hopts.Metrics, sopts.Metrics = met, met
	hub := syncer.NewHub(storelog.Log{DB: db}, hopts)
	srv := syncer.NewServer(hub, sopts)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ws", srv.ServeWS)
	hs := httptest.NewServer(mux)
	ts := &testServer{t: t, cfg: cfg, db: db, hub: hub, srv: srv, http: hs, reg: reg,
		url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1/ws", dir: dir}
	t.Cleanup(ts.stop)
	return ts
}

// stop shuts the server down gracefully and closes the store. It may be
// called more than once.
func (ts *testServer) stop() {
	if ts.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ts.http.Config.SetKeepAlivesEnabled(false)
	if err := ts.srv.Shutdown(ctx); err != nil {
		ts.t.Errorf("shutdown: %v", err)
	}
	ts.http.Close()
	if err := ts.db.Close(); err != nil {
		ts.t.Errorf("store close: %v", err)
	}
	ts.srv = nil
}

// restart stops the server and starts a new one on the same directory.
func (ts *testServer) restart() *testServer {
	ts.t.Helper()
	ts.stop()
	return startServerWith(ts.t, ts.dir, ts.cfg)
}

// metric returns the sum of a counter or gauge family's values.
func (ts *testServer) metric(name string) float64 {
	ts.t.Helper()
	mfs, err := ts.reg.Gather()
	if err != nil {
		ts.t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += metricValue(m)
		}
	}
	return sum
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// wsClient is a protocol client for server tests: it records every frame
// it receives and keeps a CRDT replica per joined document. It can
// reconnect with the same replicas (the same agent), as an offline client
// does; edits made while offline wait in unsent until flushUnsent.
type wsClient struct {
	t     testing.TB
	url   string
	agent crdt.AgentKey
	// block, when set, makes OnMessage wait on it: a reader that stalls.
	block chan struct{}

	mu      sync.Mutex
	conn    *gws.Conn
	gen     int // connection generation; events of older ones are ignored
	seq     uint64
	frames  []protocol.Frame
	docs    map[string]*crdt.Text
	acked   map[uint64]uint64 // client seq → server seq
	sent    map[uint64]crdt.Delta
	unsent  []*protocol.Delta
	closed  error
	changed chan struct{}
}

type clientHandler struct {
	gws.BuiltinEventHandler
	c   *wsClient
	gen int
}

func (h clientHandler) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	c := h.c
	if c.block != nil {
		<-c.block
	}
	f, err := protocol.Decode(m.Bytes())
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.notify()
	if h.gen != c.gen {
		return
	}
	if err != nil {
		c.t.Errorf("client got an undecodable frame: %v", err)
		return
	}
	c.frames = append(c.frames, f)
	switch f := f.(type) {
	case *protocol.Sync:
		c.apply(f.Doc, f.Delta)
	case *protocol.Update:
		c.apply(f.Doc, f.Delta)
	case *protocol.Ack:
		if _, dup := c.acked[f.ClientSeq]; dup {
			c.t.Errorf("client seq %d acked twice", f.ClientSeq)
		}
		c.acked[f.ClientSeq] = f.Seq
	}
}

func (h clientHandler) OnClose(_ *gws.Conn, err error) {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	if h.gen != h.c.gen {
		return
	}
	if err == nil {
		err = errors.New("closed")
	}
	h.c.closed = err
	h.c.notify()
}

func (c *wsClient) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *wsClient) apply(doc string, d crdt.Delta) {
	r := c.docs[doc]
	if r == nil {
		r = crdt.New(c.agent)
		c.docs[doc] = r
	}
	if err := r.Apply(d); err != nil {
		c.t.Errorf("client apply: %v", err)
	}
}

var (
	agentMu sync.Mutex
	agentN  uint32
)

func newAgent() crdt.AgentKey {
	var k crdt.AgentKey
	agentMu.Lock()
	agentN++
	n := agentN
	agentMu.Unlock()
	k[0], k[1], k[2], k[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	k[15] = 0x77
	return k
}

func newClient(t testing.TB, url string) *wsClient {
	return &wsClient{t: t, url: url, agent: newAgent(), docs: map[string]*crdt.Text{},
		acked: map[uint64]uint64{}, sent: map[uint64]crdt.Delta{}, changed: make(chan struct{}, 1)}
}

// dial opens a connection without sending Hello. An HTTP refusal comes
// back as the error, with the response when there was one.
func dial(t testing.TB, url string, header http.Header) (*wsClient, error) {
	c := newClient(t, url)
	_, err := c.connect(header)
	return c, err
}

func (c *wsClient) connect(header http.Header) (*http.Response, error) {
	if header == nil {
		header = http.Header{}
	}
	header.Set("Sec-WebSocket-Protocol", syncer.Subprotocol)
	c.mu.Lock()
	c.gen++
	gen := c.gen
	c.frames, c.closed, c.seq = nil, nil, 0
	c.acked, c.sent = map[uint64]uint64{}, map[uint64]crdt.Delta{}
	c.mu.Unlock()
	conn, resp, err := gws.NewClient(clientHandler{c: c, gen: gen}, &gws.ClientOption{
		Addr: c.url, RequestHeader: header, ReadMaxPayloadSize: 4 << 20, WriteMaxPayloadSize: 4 << 20})
	if err != nil {
		return resp, err
	}
	c.mu.Lock()
	c.conn = conn
	c.mu.Unlock()
	go conn.ReadLoop()
	c.t.Cleanup(func() { _ = conn.WriteClose(1000, nil) })
	return resp, nil
}

func (c *wsClient) hello(token string) {
	c.t.Helper()
	c.send(&protocol.Hello{Client: "test", Token: token, Agent: c.agent, User: protocol.User{Name: "tester"}})
	c.waitFor(func() bool { return c.has(protocol.KindWelcome) }, "welcome")
}

func mustDial(t testing.TB, url string) *wsClient {
	t.Helper()
	c, err := dial(t, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.hello("")
	return c
}

// reconnect closes the connection and opens a new one with the same agent
// and replicas, then says hello.
func (c *wsClient) reconnect() {
	c.t.Helper()
	c.disconnect()
	if _, err := c.connect(nil); err != nil {
		c.t.Fatal(err)
	}
	c.hello("")
}

// disconnect closes the connection and waits until the client saw it end.
func (c *wsClient) disconnect() {
	c.t.Helper()
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	_ = conn.WriteClose(1000, nil)
	c.waitFor(func() bool { return c.closed != nil }, "the connection to close")
}

func (c *wsClient) send(f protocol.Frame) {
	c.t.Helper()
	if err := c.trySend(f); err != nil {
		c.t.Fatal(err)
	}
}

// trySend is send for goroutines other than the test's, which must not
// call Fatal.
func (c *wsClient) trySend(f protocol.Frame) error {
	b, err := protocol.Encode(nil, f)
	if err != nil {
		return err
	}
	return c.sendRaw(b)
}

func (c *wsClient) sendRaw(b []byte) error {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	return conn.WriteMessage(gws.OpcodeBinary, b)
}

func (c *wsClient) has(k protocol.Kind) bool {
	for _, f := range c.frames {
		if f.Kind() == k {
			return true
		}
	}
	return false
}

// errs returns the Error frames received on this connection (c.mu held).
func (c *wsClient) errs() []*protocol.Error { return ofKind[*protocol.Error](c.frames) }

// errCode returns the first Error with code, or nil (c.mu held).
func (c *wsClient) errCode(code protocol.ErrorCode) *protocol.Error {
	for _, e := range c.errs() {
		if e.Code == code {
			return e
		}
	}
	return nil
}

// waitErr waits for an Error frame with code and returns it.
func (c *wsClient) waitErr(code protocol.ErrorCode) *protocol.Error {
	c.t.Helper()
	var e *protocol.Error
	c.waitFor(func() bool { e = c.errCode(code); return e != nil }, "error "+code.String())
	return e
}

// closeCode returns the close code the server sent, 0 if the connection
// is open or ended without one (c.mu held).
func (c *wsClient) closeCode() uint16 {
	var ce *gws.CloseError
	if errors.As(c.closed, &ce) {
		return ce.Code
	}
	return 0
}

// waitFor polls cond (called with c.mu held) until it holds, bounded in time.
func (c *wsClient) waitFor(cond func() bool, what string) {
	c.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-c.changed:
		case <-deadline:
			c.mu.Lock()
			defer c.mu.Unlock()
			c.t.Fatalf("timed out waiting for %s (closed: %v, errors: %v)", what, c.closed, c.errs())
		}
	}
}

// joinSent sends one Join for docs with the replicas' versions.
func (c *wsClient) joinSent(docs ...string) {
	c.t.Helper()
	j := &protocol.Join{}
	c.mu.Lock()
	for _, d := range docs {
		var v crdt.Version
		if r := c.docs[d]; r != nil {
			v = r.Version()
		} else {
			c.docs[d] = crdt.New(c.agent)
		}
		j.Docs = append(j.Docs, protocol.JoinDoc{Doc: d, Version: v})
	}
	c.mu.Unlock()
	c.send(j)
}

func (c *wsClient) synced(doc string) bool {
	for _, f := range c.frames {
		if s, ok := f.(*protocol.Sync); ok && s.Doc == doc && !s.More {
			return true
		}
	}
	return false
}

// join joins docs in one Join frame and waits for every Sync.
func (c *wsClient) join(docs ...string) {
	c.t.Helper()
	c.joinSent(docs...)
	for _, d := range docs {
		c.waitFor(func() bool { return c.synced(d) }, "sync of "+d)
	}
}

// edit applies a local edit and sends it, returning the client seq.
func (c *wsClient) edit(doc string, fn func(r *crdt.Text) (crdt.Delta, error)) uint64 {
	c.t.Helper()
	seq, err := c.tryEdit(doc, fn)
	if err != nil {
		c.t.Fatal(err)
	}
	return seq
}

// tryEdit is edit for goroutines other than the test's.
func (c *wsClient) tryEdit(doc string, fn func(r *crdt.Text) (crdt.Delta, error)) (uint64, error) {
	c.mu.Lock()
	d, err := fn(c.docs[doc])
	if err != nil {
		c.mu.Unlock()
		return 0, err
	}
	c.seq++
	seq := c.seq
	c.sent[seq] = d
	c.mu.Unlock()
	return seq, c.trySend(&protocol.Delta{Doc: doc, ClientSeq: seq, Delta: d})
}

// editOffline applies a local edit and keeps it for flushUnsent.
func (c *wsClient) editOffline(doc string, fn func(r *crdt.Text) (crdt.Delta, error)) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	d, err := fn(c.docs[doc])
	if err != nil {
		c.t.Fatal(err)
	}
	c.unsent = append(c.unsent, &protocol.Delta{Doc: doc, Delta: d})
}

// flushUnsent sends the offline edits with fresh client seqs.
func (c *wsClient) flushUnsent() {
	c.t.Helper()
	c.mu.Lock()
	list := c.unsent
	c.unsent = nil
	for _, f := range list {
		c.seq++
		f.ClientSeq = c.seq
		c.sent[f.ClientSeq] = f.Delta
	}
	c.mu.Unlock()
	for _, f := range list {
		c.send(f)
	}
}

// waitAcked waits until every delta sent on this connection is acked.
func (c *wsClient) waitAcked() {
	c.t.Helper()
	c.waitFor(func() bool { return len(c.acked) == int(c.seq) }, "every delta to be acked")
}

func (c *wsClient) text(doc string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.docs[doc].String()
}

func (c *wsClient) version(doc string) crdt.Version {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.docs[doc].Version()
}

// readBack joins docs from a fresh connection and returns their texts.
func readBack(t testing.TB, url string, docs ...string) map[string]*crdt.Text {
	t.Helper()
	c := mustDial(t, url)
	c.join(docs...)
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]*crdt.Text{}
	for _, d := range docs {
		out[d] = c.docs[d].Clone()
	}
	_ = c.conn.WriteClose(1000, nil)
	return out
}

// alphabet mixes ASCII, multi-byte and astral code points (surrogate pairs
// in UTF-16) and a joiner.
var alphabet = []string{"a", "b", "z", " ", "\n", "é", "ß", "中", "😀", "𝄞", "\u200d", "\U0010FFFF"}

func randText(r *rand.Rand, max int) string {
	var b strings.Builder
	for range 1 + r.IntN(max) {
		b.WriteString(alphabet[r.IntN(len(alphabet))])
	}
	return b.String()
}

// randEdit is a random insert (2/3) or delete in r.
func randEdit(rng *rand.Rand, r *crdt.Text) (crdt.Delta, error) {
	n := r.Len()
	if n > 0 && rng.IntN(3) == 0 {
		pos := rng.IntN(n)
		return r.Delete(pos, 1+rng.IntN(min(4, n-pos)))
	}
	return r.Insert(rng.IntN(n+1), randText(rng, 6))
}

// rawConn is a WebSocket client written by hand, for peers gws would not
// be: one that never reads, or never answers pings.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

// dialRaw upgrades a raw TCP connection; rcvBuf > 0 shrinks its kernel
// receive buffer before connecting.
func dialRaw(t testing.TB, wsURL string, rcvBuf int) *rawConn {
	t.Helper()
	addr := strings.TrimPrefix(strings.SplitN(strings.TrimPrefix(wsURL, "ws://"), "/", 2)[0], "")
	d := net.Dialer{Timeout: 5 * time.Second}
	if rcvBuf > 0 {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvBuf)
			})
			return errors.Join(err, serr)
		}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	key := base64.StdEncoding.EncodeToString([]byte("weft-test-key-16"))
	path := "/" + strings.SplitN(strings.TrimPrefix(wsURL, "ws://"), "/", 2)[1]
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n",
		path, addr, key, syncer.Subprotocol)
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatal(err)
	}
	rc := &rawConn{Conn: nc, br: bufio.NewReader(nc)}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("raw upgrade: %s", resp.Status)
	}
	_ = nc.SetReadDeadline(time.Time{})
	return rc
}

// writeFrame sends one masked binary frame.
func (rc *rawConn) writeFrame(t testing.TB, f protocol.Frame) {
	t.Helper()
	b, err := protocol.Encode(nil, f)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Write(maskedFrame(b)); err != nil {
		t.Fatal(err)
	}
}

// drainUntilClosed reads (and discards) until the server closes the
// connection, bounded in time; it reports whether it closed.
func (rc *rawConn) drainUntilClosed() bool {
	_ = rc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, rc.br)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// closeCode reads server frames until a close frame and returns its code,
// bounded in time.
func (rc *rawConn) closeCode(t testing.TB) uint16 {
	t.Helper()
	_ = rc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for range 100 {
		var h [2]byte
		if _, err := io.ReadFull(rc.br, h[:]); err != nil {
			t.Fatalf("reading for a close frame: %v", err)
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			_, _ = io.ReadFull(rc.br, b[:])
			n = uint64(b[0])<<8 | uint64(b[1])
		case 127:
			var b [8]byte
			_, _ = io.ReadFull(rc.br, b[:])
			n = 0
			for _, x := range b {
				n = n<<8 | uint64(x)
			}
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(rc.br, payload); err != nil {
			t.Fatalf("reading a frame: %v", err)
		}
		if h[0]&0x0f == 0x8 {
			if len(payload) < 2 {
				return 0
			}
			return uint16(payload[0])<<8 | uint16(payload[1])
		}
	}
	t.Fatal("no close frame in 100 frames")
	return 0
}

// maskedFrame frames b as one masked (client) binary WebSocket message.
func maskedFrame(b []byte) []byte {
	hdr := []byte{0x82}
	switch n := len(b); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	mask := [4]byte{1, 2, 3, 4}
	hdr = append(hdr, mask[:]...)
	for i := range b {
		hdr = append(hdr, b[i]^mask[i%4])
	}
	return hdr
}
