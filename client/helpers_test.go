package client_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weft-sync/weft/client"
	"github.com/weft-sync/weft/store"
	"github.com/weft-sync/weft/syncer"
	"github.com/weft-sync/weft/syncer/storelog"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	goleak.VerifyTestMain(m)
}

// testServer is a real weft server on a loopback port over a bbolt file.
// It can be stopped and started again on the same address and data.
type testServer struct {
	t     testing.TB
	addr  string
	dir   string
	hopts syncer.Options
	sopts syncer.ServerOptions

	mu   sync.Mutex
	db   *store.DB
	srv  *syncer.Server
	hs   *http.Server
	serv chan struct{} // closed when Serve returned
}

// newServer returns a server on a fresh loopback address, not started.
func newServer(t testing.TB, sopts syncer.ServerOptions) *testServer {
	t.Helper()
	ts := &testServer{t: t, addr: freeAddr(t), dir: t.TempDir(), sopts: sopts}
	t.Cleanup(ts.stop)
	return ts
}

func startServer(t testing.TB, sopts syncer.ServerOptions) *testServer {
	ts := newServer(t, sopts)
	ts.start()
	return ts
}

// freeAddr returns a loopback address nothing listens on (for now).
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func (ts *testServer) url() string { return "ws://" + ts.addr + "/v1/ws" }

func (ts *testServer) start() {
	ts.t.Helper()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	db, err := store.Open(ts.dir+"/weft.db", store.Options{})
	if err != nil {
		ts.t.Fatal(err)
	}
	hub := syncer.NewHub(storelog.Log{DB: db}, ts.hopts)
	srv := syncer.NewServer(hub, ts.sopts)
	mux := http.NewServeMux()
	mux.Handle("/v1/", srv.APIHandler()) // GET /v1/ws and the HTTP API
	var ln net.Listener
	for i := 0; ; i++ {
		ln, err = net.Listen("tcp", ts.addr)
		if err == nil {
			break
		}
		if i == 50 {
			ts.t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ts.db, ts.srv, ts.hs, ts.serv = db, srv, hs, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		_ = hs.Serve(ln)
	}(ts.serv)
}

// stop shuts the server down gracefully (GoingAway, then close).
func (ts *testServer) stop() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = ts.srv.Shutdown(ctx)
	_ = ts.hs.Shutdown(ctx)
	<-ts.serv
	_ = ts.db.Close()
	ts.srv = nil
}

// fastOptions reconnect quickly and notice dead links within a second.
func fastOptions() client.Options {
	return client.Options{
		Backoff:      client.Backoff{Base: 20 * time.Millisecond, Cap: 200 * time.Millisecond},
		PingInterval: 300 * time.Millisecond,
		PongWait:     500 * time.Millisecond,
	}
}

func mustDial(t testing.TB, url string, o client.Options) *client.Client {
	t.Helper()
	c, err := client.Dial(t.Context(), url, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func mustOpen(t testing.TB, c *client.Client, doc string) *client.Doc {
	t.Helper()
	d, err := c.Open(doc)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func waitSynced(t testing.TB, d *client.Doc, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := d.WaitSynced(ctx); err != nil {
		t.Fatalf("doc %s: %v (status %+v)", d.ID(), err, d.Status())
	}
}

// serverText reads a document as a fresh client sees it.
func serverText(t testing.TB, url, doc string) string {
	t.Helper()
	c := mustDial(t, url, fastOptions())
	defer func() { _ = c.Close() }()
	d := mustOpen(t, c, doc)
	waitSynced(t, d, 10*time.Second)
	return d.Text()
}

// waitFor polls cond until it holds, bounded in time.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// converged waits until every doc has the same text and version.
func converged(t testing.TB, within time.Duration, docs ...*client.Doc) string {
	t.Helper()
	for _, d := range docs {
		waitSynced(t, d, within)
	}
	var text string
	waitFor(t, within, "convergence", func() bool {
		text = docs[0].Text()
		v := docs[0].Version()
		for _, d := range docs[1:] {
			if d.Text() != text || !d.Version().Equal(v) {
				return false
			}
		}
		return true
	})
	return text
}

// randomEdit makes one random edit with some multi-byte text.
func randomEdit(r *rand.Rand, d *client.Doc) error {
	n := d.Len()
	if n > 0 && r.IntN(3) == 0 {
		pos := r.IntN(n)
		return d.Delete(pos, min(n-pos, 1+r.IntN(3)))
	}
	pieces := []string{"a", "é", "中", "🙂", "xyz", " ", "ß∂", "\n"}
	var b strings.Builder
	for k := 1 + r.IntN(3); k > 0; k-- {
		b.WriteString(pieces[r.IntN(len(pieces))])
	}
	return d.Insert(r.IntN(n+1), b.String())
}

// drainErrors collects a client's reported errors until it closes.
type errLog struct {
	mu   sync.Mutex
	errs []error
	wg   sync.WaitGroup
}

func collectErrors(c *client.Client) *errLog {
	l := &errLog{}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for err := range c.Errors() {
			l.mu.Lock()
			l.errs = append(l.errs, err)
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *errLog) list() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

// unexpected lists the errors that are not transient refusals.
func (l *errLog) unexpected() []error {
	var out []error
	for _, err := range l.list() {
		var e *client.Error
		if errors.As(err, &e) && e.RetryAfter > 0 {
			continue
		}
		out = append(out, err)
	}
	return out
}
