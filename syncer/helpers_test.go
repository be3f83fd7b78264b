package syncer_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
	"github.com/weft-sync/weft/store"
	"github.com/weft-sync/weft/syncer"
	"github.com/weft-sync/weft/syncer/storelog"
)

// testServer is a real server on 127.0.0.1 over a real bbolt file.
type testServer struct {
	t    testing.TB
	db   *store.DB
	hub  *syncer.Hub
	srv  *syncer.Server
	http *httptest.Server
	url  string
	dir  string
}

func startServer(t testing.TB, dir string, hopts syncer.Options, sopts syncer.ServerOptions) *testServer {
	t.Helper()
	db, err := store.Open(dir+"/weft.db", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hub := syncer.NewHub(storelog.Log{DB: db}, hopts)
	srv := syncer.NewServer(hub, sopts)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ws", srv.ServeWS)
	hs := httptest.NewServer(mux)
	ts := &testServer{t: t, db: db, hub: hub, srv: srv, http: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1/ws", dir: dir}
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) stop() {
	if ts.srv == nil {
		return
	}
	ts.http.Config.SetKeepAlivesEnabled(false)
	_ = ts.srv.Shutdown(ts.t.Context())
	ts.http.Close()
	_ = ts.db.Close()
	ts.srv = nil
}

// wsClient is a minimal protocol client for server tests: it records every
// frame it receives and keeps a CRDT replica per joined document.
type wsClient struct {
	t     testing.TB
	conn  *gws.Conn
	agent crdt.AgentKey
	seq   uint64

	mu      sync.Mutex
	frames  []protocol.Frame
	docs    map[string]*crdt.Text
	acked   map[uint64]uint64 // client seq → server seq
	closed  error
	changed chan struct{}
}

type clientHandler struct {
	gws.BuiltinEventHandler
	c *wsClient
}

func (h clientHandler) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	f, err := protocol.Decode(m.Bytes())
	c := h.c
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.notify()
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
		c.acked[f.ClientSeq] = f.Seq
	}
}

func (h clientHandler) OnClose(_ *gws.Conn, err error) {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
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

var agentN uint32

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

var agentMu sync.Mutex

func dial(t testing.TB, url string, header http.Header) (*wsClient, error) {
	c := &wsClient{t: t, agent: newAgent(), docs: map[string]*crdt.Text{}, acked: map[uint64]uint64{}, changed: make(chan struct{}, 1)}
	if header == nil {
		header = http.Header{}
	}
	header.Set("Sec-WebSocket-Protocol", syncer.Subprotocol)
	conn, _, err := gws.NewClient(clientHandler{c: c}, &gws.ClientOption{Addr: url, RequestHeader: header, ReadMaxPayloadSize: 4 << 20})
	if err != nil {
		return nil, err
	}
	c.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { _ = conn.WriteClose(1000, nil) })
	return c, nil
}

func mustDial(t testing.TB, url string) *wsClient {
	t.Helper()
	c, err := dial(t, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.send(&protocol.Hello{Client: "test", Agent: c.agent, User: protocol.User{Name: "tester"}})
	c.waitFor(func() bool { return c.has(protocol.KindWelcome) }, "welcome")
	return c
}

func (c *wsClient) send(f protocol.Frame) {
	c.t.Helper()
	b, err := protocol.Encode(nil, f)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.conn.WriteMessage(gws.OpcodeBinary, b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *wsClient) has(k protocol.Kind) bool {
	for _, f := range c.frames {
		if f.Kind() == k {
			return true
		}
	}
	return false
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
			c.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (c *wsClient) join(docs ...string) {
	c.t.Helper()
	j := &protocol.Join{}
	for _, d := range docs {
		c.mu.Lock()
		var v crdt.Version
		if r := c.docs[d]; r != nil {
			v = r.Version()
		} else {
			c.docs[d] = crdt.New(c.agent)
		}
		c.mu.Unlock()
		j.Docs = append(j.Docs, protocol.JoinDoc{Doc: d, Version: v})
	}
	c.send(j)
	for _, d := range docs {
		c.waitFor(func() bool {
			for _, f := range c.frames {
				if s, ok := f.(*protocol.Sync); ok && s.Doc == d && !s.More {
					return true
				}
			}
			return false
		}, "sync of "+d)
	}
}

// edit applies a local edit and sends it, returning the client seq.
func (c *wsClient) edit(doc string, fn func(r *crdt.Text) (crdt.Delta, error)) uint64 {
	c.t.Helper()
	c.mu.Lock()
	d, err := fn(c.docs[doc])
	c.seq++
	seq := c.seq
	c.mu.Unlock()
	if err != nil {
		c.t.Fatal(err)
	}
	c.send(&protocol.Delta{Doc: doc, ClientSeq: seq, Delta: d})
	return seq
}

func (c *wsClient) text(doc string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.docs[doc].String()
}
