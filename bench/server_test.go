package bench

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/weft-sync/weft/store"
	"github.com/weft-sync/weft/syncer"
	"github.com/weft-sync/weft/syncer/storelog"
)

// serverConfig is what a benchmark sets on its server. Zero values are
// the server's own defaults, which the benchmarks keep unless a scenario
// needs otherwise (and then says so).
type serverConfig struct {
	hub   syncer.Options
	srv   syncer.ServerOptions
	store store.Options
}

// server is the real weft server in this process: a bbolt file with
// fsync, the hub, and the WebSocket endpoint GET /v1/ws on 127.0.0.1.
type server struct {
	tb   testing.TB
	cfg  serverConfig
	dir  string
	db   *store.DB
	hub  *syncer.Hub
	srv  *syncer.Server
	hs   *http.Server
	ln   net.Listener
	url  string
	done chan struct{}
}

func startServer(tb testing.TB, dir string, cfg serverConfig) *server {
	tb.Helper()
	db, err := store.Open(filepath.Join(dir, "weft.db"), cfg.store)
	if err != nil {
		tb.Fatal(err)
	}
	hub := syncer.NewHub(storelog.Log{DB: db}, cfg.hub)
	srv := syncer.NewServer(hub, cfg.srv)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ws", srv.ServeWS)
	lc := net.ListenConfig{}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &server{tb: tb, cfg: cfg, dir: dir, db: db, hub: hub, srv: srv, ln: ln,
		hs:   &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		url:  "ws://" + ln.Addr().String() + "/v1/ws",
		done: make(chan struct{})}
	go func() {
		defer close(s.done)
		_ = s.hs.Serve(ln)
	}()
	tb.Cleanup(s.stop)
	return s
}

// stop shuts the server down gracefully and closes the store. It may be
// called more than once.
func (s *server) stop() {
	if s.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s.hs.SetKeepAlivesEnabled(false)
	_ = s.ln.Close()
	<-s.done
	if err := s.srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		s.tb.Errorf("server shutdown: %v", err)
	}
	_ = s.hs.Close()
	if err := s.db.Close(); err != nil {
		s.tb.Errorf("store close: %v", err)
	}
	s.srv = nil
}

// restart stops the server and starts a fresh one on the same directory:
// nothing is loaded, every document comes from disk.
func (s *server) restart() *server {
	s.tb.Helper()
	s.stop()
	return startServer(s.tb, s.dir, s.cfg)
}

// waitConns waits until the server holds n connections, bounded in time.
func (s *server) waitConns(n int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for s.srv.Connections() != n {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// cpuTime is this process's user plus system CPU time. The benchmarks run
// their clients in a child process, so this is the server's.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// memAfterGC returns the live heap and the goroutine stacks in use after
// two collections.
func memAfterGC() (heap, stack uint64) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, ms.StackInuse
}
