// Command yorkie-load runs the scenarios of weft's bench/ against a Yorkie
// server, with Yorkie's own Go client SDK at the server's version:
//
//	fanout   one document, N clients typing one character per change at a
//	         fixed rate: delivery latency p50/p99, delivered %, server CPU
//	memory   N documents of 1 KB, one client each: server RSS per document
//	join     the automerge-paper trace written into one document, then fresh
//	         clients attach it and hold the whole text: p50 ms
//
// Each scenario starts its own server process (bin/yorkie server, memory
// database, RPC on a free 127.0.0.1 port) and prints one JSON line
// {"scenario": ..., "result": ...} or {"scenario": ..., "error": ...}, like
// ../hocuspocus/run.mjs, so that the same table can show both.
//
// Sync mode: every client attaches with client.WithRealtimeSync(), Yorkie's
// intended mode. The SDK keeps a Watch stream per document (server push of
// "document changed" events, no content) and a sync loop that every 50 ms
// (the SDK default, as in the JS SDK) calls PushPullChanges when there are
// local changes or a change event arrived. Delivery of an edit is therefore
// push-pull: writer's loop tick → PushPull → event on the readers' Watch
// streams → readers' loop tick → PushPull. Latency is timed from the local
// Update at the writer to the moment the change is in an observer's document.
package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf16"

	"go.uber.org/zap"

	"github.com/yorkie-team/yorkie/client"
	"github.com/yorkie-team/yorkie/pkg/document"
	yjson "github.com/yorkie-team/yorkie/pkg/document/json"
	"github.com/yorkie-team/yorkie/pkg/key"
	"github.com/yorkie-team/yorkie/server/logging"
)

var (
	serverBin = flag.String("server", "", "yorkie binary (default: bin/yorkie beside this binary)")
	rate      = flag.Float64("rate", 5, "ops/s per typing client")
	dur       = flag.Duration("dur", 10*time.Second, "measured fan-out duration")
	clientsF  = flag.String("clients", "10,100", "fan-out client counts")
	observers = flag.Int("observers", 20, "clients per fan-out run that time what they receive")
	pollEvery = flag.Duration("poll", 2*time.Millisecond, "how often an observer looks at its document")
	docsF     = flag.Int("docs", 1000, "documents in the memory scenario")
	samples   = flag.Int("samples", 5, "joins in the join scenario")
	joinMode  = flag.String("join-mode", "history", "join: history (every edit of the trace, 100 per change) or final (the end text as one insert)")
	traces    = flag.String("traces", "", "directory of the editing traces (default: shared/traces beside the repository, found from this binary in bench/peers/yorkie/bin)")
	deadline  = flag.Duration("deadline", 20*time.Minute, "give up on a scenario after this long")
)

const textKey = "t"

func main() {
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: yorkie-load [flags] [fanout|memory|join ...]   (default: all)\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	setupTransport()
	go stopServersOnSignal()
	if f := os.Getenv("YORKIE_LOAD_CPUPROFILE"); f != "" {
		if pf, err := os.Create(f); err == nil && pprof.StartCPUProfile(pf) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	scenarios := map[string]func(context.Context) (any, error){"fanout": fanout, "memory": memory, "join": join}
	want := flag.Args()
	if len(want) == 0 {
		want = []string{"fanout", "memory", "join"}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	for _, name := range want {
		fn := scenarios[name]
		if fn == nil {
			fmt.Fprintf(os.Stderr, "unknown scenario %s\n", name)
			os.Exit(2)
		}
		ctx, cancel := context.WithTimeout(context.Background(), *deadline)
		t0, load0 := time.Now(), loadAvg()
		r, err := fn(ctx)
		cancel()
		line := outLine{Scenario: name, Yorkie: yorkieVersion(), Seconds: time.Since(t0).Seconds(), LoadAvg: [2]string{load0, loadAvg()}}
		if err != nil {
			line.Error = err.Error()
		} else {
			line.Result = r
		}
		_ = enc.Encode(line)
	}
}

// outLine is one line of output, in the shape of ../hocuspocus/run.mjs's.
type outLine struct {
	Scenario string    `json:"scenario"`
	Result   any       `json:"result,omitempty"`
	Error    string    `json:"error,omitempty"`
	Yorkie   string    `json:"yorkie"`
	Seconds  float64   `json:"seconds"`
	LoadAvg  [2]string `json:"loadavg"` // /proc/loadavg's 1-minute figure before and after: other work on the machine
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	return strings.Fields(string(b))[0]
}

func yorkieVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/yorkie-team/yorkie" {
				return d.Version
			}
		}
	}
	return "unknown"
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "yorkie-load: "+format+"\n", args...)
}

// --- wire accounting and connection pooling ---------------------------------

// The SDK builds its own http.Client{} over http.DefaultTransport (there is
// no option to pass one), so every client in this process shares that pool.
// Its default of 2 idle connections per host would make concurrent clients
// reconnect on almost every request; a separate user has a pool of its own,
// so the limit is lifted. The dialer counts TCP payload bytes both ways.
var wireRx, wireTx atomic.Int64

type countConn struct{ net.Conn }

func (c countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	wireRx.Add(int64(n))
	return n, err
}

func (c countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	wireTx.Add(int64(n))
	return n, err
}

// rpcErrs counts failed RPCs (transport errors and HTTP statuses ≥ 400)
// while counting is on; the SDK only logs a failed sync, at warn level,
// which is turned off because every sync cancelled by Close logs one too.
var rpcErrs atomic.Int64
var countErrs atomic.Bool

type errCountingTransport struct{ base http.RoundTripper }

func (t errCountingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if countErrs.Load() && ((err != nil && r.Context().Err() == nil) || (err == nil && resp.StatusCode >= 400)) {
		if rpcErrs.Add(1) <= 5 {
			if err != nil {
				logf("%s: %v", r.URL.Path, err)
			} else {
				logf("%s: HTTP %s", r.URL.Path, resp.Status)
			}
		}
	}
	return resp, err
}

func setupTransport() {
	_ = logging.SetLogLevel("error")
	tr := http.DefaultTransport.(*http.Transport)
	tr.MaxIdleConns = 0
	tr.MaxIdleConnsPerHost = 100000
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countConn{c}, nil
	}
	http.DefaultTransport = errCountingTransport{tr}
}

// --- the server process ------------------------------------------------------

// running holds the server processes, so that a signal (run.sh's timeout,
// ^C) stops them before this process exits.
var running sync.Map // *server → struct{}

func stopServersOnSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	sig := <-ch
	logf("%v: stopping the Yorkie server and exiting", sig)
	running.Range(func(k, _ any) bool { k.(*server).stop(); return true })
	os.Exit(1)
}

type server struct {
	cmd  *exec.Cmd
	port int
	addr string
	log  string
	done chan struct{}
}

func freePort() (int, error) {
	for range 50 {
		p := 20000 + 2*rand.IntN(10000)
		ok := true
		for _, q := range []int{p, p + 1} {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", q))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return p, nil
		}
	}
	return 0, errors.New("no free port pair on 127.0.0.1")
}

func binPath() string {
	if *serverBin != "" {
		return *serverBin
	}
	exe, err := os.Executable()
	if err != nil {
		return "bin/yorkie"
	}
	return filepath.Join(filepath.Dir(exe), "yorkie")
}

// startServer runs `yorkie server` with the memory database (no
// --mongo-connection-uri) on 127.0.0.1 (see build.sh for the overlay that
// binds loopback only) and waits until its RPC port accepts connections.
func startServer(ctx context.Context) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logFile, err := os.CreateTemp("", "yorkie-server-*.log")
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(binPath(), "server",
		"--rpc-port", strconv.Itoa(port),
		"--profiling-port", strconv.Itoa(port+1),
		"--backend-rpc-addr", addr,
		"--backend-gateway-addr", addr,
		"--log-level", "warn",
		"--pprof-enabled") // for /debug/pprof/heap?gc=1, to collect before reading the heap
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Should this process die without stopping it, the kernel ends it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", binPath(), err)
	}
	s := &server{cmd: cmd, port: port, addr: addr, log: logFile.Name(), done: make(chan struct{})}
	running.Store(s, struct{}{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(s.done) }()
	until := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("yorkie server exited at start: %s", tail(s.log))
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(until) {
			s.stop()
			return nil, fmt.Errorf("yorkie server not listening on %s after 30 s: %s", addr, tail(s.log))
		}
	}
	logf("server pid %d on %s, log %s", cmd.Process.Pid, addr, s.log)
	return s, nil
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

func (s *server) stop() {
	defer running.Delete(s)
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	os.Remove(s.log)
}

// cpu is the server's user+system CPU time (clock ticks of 10 ms).
func (s *server) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// rss is the server's VmRSS in bytes.
func (s *server) rss() int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// heap is the server's live heap: go_memstats_heap_alloc_bytes from its
// /metrics right after a garbage collection (which its heap profile
// endpoint runs when asked with gc=1).
func (s *server) heap() int64 {
	c := http.Client{Timeout: 30 * time.Second}
	if resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", s.port+1)); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", s.port+1))
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_alloc_bytes "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int64(f)
		}
	}
	return 0
}

// --- clients -----------------------------------------------------------------

var nop = zap.NewNop()

type peer struct {
	cli    *client.Client
	doc    *document.Document
	errs   atomic.Int64 // watch stream errors and failed updates
	closed atomic.Bool  // the watch stream ended while attached
}

// newPeer activates a client and attaches docKey in realtime sync mode;
// if create, it first makes the text (only one client of a document may,
// or the last one's text would replace the others').
func newPeer(ctx, life context.Context, s *server, docKey string, create bool) (*peer, error) {
	cli, err := client.Dial(s.addr, client.WithLogger(nop))
	if err != nil {
		return nil, err
	}
	// The SDK runs its sync loop under the context given to Activate, so
	// that one lives as long as the peer; ctx bounds the RPCs of attaching.
	if err := callWithin(ctx, func() error { return cli.Activate(life) }); err != nil {
		return nil, fmt.Errorf("activate: %w", err)
	}
	p := &peer{cli: cli, doc: document.New(key.Key(docKey))}
	if err := cli.Attach(ctx, p.doc, client.WithRealtimeSync()); err != nil {
		_ = cli.Deactivate(context.Background())
		return nil, fmt.Errorf("attach: %w", err)
	}
	if create {
		if err := p.doc.Update(func(root *yjson.Object, _ *document.Presence) error {
			root.SetNewText(textKey)
			return nil
		}); err != nil {
			p.close()
			return nil, err
		}
		if err := cli.Sync(ctx); err != nil {
			p.close()
			return nil, fmt.Errorf("sync: %w", err)
		}
	}
	stream, _, err := cli.WatchStream(p.doc)
	if err == nil && stream != nil {
		go func() {
			for r := range stream {
				if r.Err != nil {
					p.errs.Add(1)
				}
			}
			if p.cli.IsActive() {
				p.closed.Store(true)
			}
		}()
	}
	return p, nil
}

// callWithin runs fn and gives up waiting when ctx ends.
func callWithin(ctx context.Context, fn func() error) error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *peer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = callWithin(ctx, func() error { return p.cli.Close() })
}

// text reads the text under the document's lock (the sync loop applies
// remote changes under the same lock). With changedSince, it returns ""
// and false when the checkpoint has not moved.
func (p *peer) text(changedSince *int64) (string, bool) {
	var s string
	read := false
	_ = p.doc.Update(func(root *yjson.Object, _ *document.Presence) error {
		if changedSince != nil {
			cp := p.doc.Checkpoint().ServerSeq
			if cp == *changedSince {
				return nil
			}
			*changedSince = cp
		}
		if t := root.GetText(textKey); t != nil {
			s, read = t.String(), true
		}
		return nil
	})
	return s, read
}

func connectAll(ctx, life context.Context, s *server, n int, docOf func(int) string, create func(int) bool) ([]*peer, error) {
	peers := make([]*peer, n)
	for i := 0; i < n; i += 20 {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var first error
		for j := i; j < min(n, i+20); j++ {
			wg.Go(func() {
				p, err := newPeer(ctx, life, s, docOf(j), create(j))
				mu.Lock()
				defer mu.Unlock()
				if err != nil && first == nil {
					first = fmt.Errorf("client %d: %w", j, err)
				}
				peers[j] = p
			})
		}
		wg.Wait()
		if first != nil {
			closeAll(peers)
			return nil, first
		}
	}
	return peers, nil
}

func closeAll(peers []*peer) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for _, p := range peers {
		if p == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() { defer func() { <-sem }(); p.close() })
	}
	wg.Wait()
}

func pct(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func genCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// --- fanout ------------------------------------------------------------------

// Writer i types rune base+i, so an observer can tell how many of each
// writer's ops it holds by counting runes; one writer's changes arrive in
// order, so those are the first ones it sent.
const base = 0x100

type fanoutResult struct {
	Clients            int     `json:"clients"`
	Observers          int     `json:"observers"`
	Rate               float64 `json:"rate"`
	Total              float64 `json:"total"`
	Sent               int     `json:"sent"`
	SentOpsPerSec      float64 `json:"sentOpsPerSec"`
	DeliveredPct       float64 `json:"deliveredPct"`
	DeliveredOpsPerSec float64 `json:"deliveredOpsPerSec"`
	P50                float64 `json:"p50"`
	P99                float64 `json:"p99"`
	Max                float64 `json:"max"`
	SrvCPUSPer1kOps    float64 `json:"srvCpuSPer1kOps"`
	SrvCPUS            float64 `json:"srvCpuS"`
	ElapsedS           float64 `json:"elapsedS"` // sending phase; CPU figures also cover the drain after it
	GenCPUS            float64 `json:"genCpuS"`
	WireBPerOp         float64 `json:"wireBPerOp"`
	Closed             int     `json:"closed"`
	Errors             int64   `json:"errors"`
	SyncMode           string  `json:"syncMode"`
	PollMs             float64 `json:"pollMs"`
}

func fanout(ctx context.Context) (any, error) {
	if *rate <= 0 || *rate > 1000 || *dur <= 0 || *dur > 10*time.Minute || *pollEvery <= 0 {
		return nil, errors.New("-rate must be in (0, 1000], -dur in (0, 10m], -poll > 0")
	}
	var out []fanoutResult
	for _, f := range strings.Split(*clientsF, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 || n > 5000 {
			return out, fmt.Errorf("bad client count %q", f)
		}
		r, err := fanoutRun(ctx, n)
		if err != nil {
			return out, fmt.Errorf("clients=%d: %w", n, err)
		}
		logf("fanout clients=%d: p50 %.1f ms, p99 %.1f ms, delivered %.2f %%", n, r.P50, r.P99, r.DeliveredPct)
		out = append(out, r)
	}
	return out, nil
}

func fanoutRun(ctx context.Context, n int) (fanoutResult, error) {
	s, err := startServer(ctx)
	if err != nil {
		return fanoutResult{}, err
	}
	defer s.stop()
	life, stopLife := context.WithCancel(context.Background())
	defer stopLife()
	docKey := fmt.Sprintf("fanout-%d-%d", n, rand.Uint32())
	// The first client makes the text; the others attach once it is there.
	first, err := connectAll(ctx, life, s, 1, func(int) string { return docKey }, func(int) bool { return true })
	if err != nil {
		return fanoutResult{}, err
	}
	rest, err := connectAll(ctx, life, s, n-1, func(int) string { return docKey }, func(int) bool { return false })
	if err != nil {
		closeAll(first)
		return fanoutResult{}, err
	}
	peers := append(first, rest...)
	defer closeAll(peers)
	for i, p := range peers {
		if _, ok := p.text(nil); !ok {
			return fanoutResult{}, fmt.Errorf("client %d attached without the text", i)
		}
	}

	interval := time.Duration(float64(time.Second) / *rate)
	maxOps := int((dur.Seconds()+3)**rate*1.5) + 100
	sentAt := make([][]atomic.Int64, n) // unix ns of writer i's k-th op
	sentN := make([]atomic.Int64, n)
	for i := range sentAt {
		sentAt[i] = make([]atomic.Int64, maxOps)
	}
	nObs := min(n, *observers)
	type obs struct {
		mu    sync.Mutex
		got   []int // ops of each writer held
		lat   []float64
		count int // measured ops delivered
	}
	obsv := make([]*obs, nObs)
	for i := range obsv {
		obsv[i] = &obs{got: make([]int, n)}
	}
	var measureFrom atomic.Int64 // unix ns; ops sent before are warm-up
	measureFrom.Store(1<<63 - 1)

	stopObs := make(chan struct{})
	var obsWg sync.WaitGroup
	for oi := range nObs {
		obsWg.Go(func() {
			o, p := obsv[oi], peers[oi]
			seq := int64(-1)
			counts := make([]int, n)
			tick := time.NewTicker(*pollEvery)
			defer tick.Stop()
			for {
				select {
				case <-stopObs:
					return
				case <-tick.C:
				}
				txt, ok := p.text(&seq)
				if !ok {
					continue
				}
				now := time.Now().UnixNano()
				clear(counts)
				for _, r := range txt {
					if w := int(r) - base; w >= 0 && w < n {
						counts[w]++
					}
				}
				from := measureFrom.Load()
				o.mu.Lock()
				for w, c := range counts {
					if w == oi {
						continue
					}
					for k := o.got[w]; k < c && k < maxOps; k++ {
						at := sentAt[w][k].Load()
						if at >= from {
							o.lat = append(o.lat, float64(now-at)/1e6)
							o.count++
						}
					}
					o.got[w] = max(o.got[w], c)
				}
				o.mu.Unlock()
			}
		})
	}
	defer func() { close(stopObs); obsWg.Wait() }()

	var updErrs atomic.Int64
	step := func(d time.Duration) (time.Time, time.Time) {
		start := time.Now().Add(50 * time.Millisecond)
		end := start.Add(d)
		var wg sync.WaitGroup
		for i, p := range peers {
			wg.Go(func() {
				next := start.Add(time.Duration(rand.Int64N(int64(interval))))
				ch := string(rune(base + i))
				for next.Before(end) {
					time.Sleep(time.Until(next))
					k := sentN[i].Load()
					if k >= int64(maxOps) {
						return
					}
					sentAt[i][k].Store(time.Now().UnixNano())
					err := p.doc.Update(func(root *yjson.Object, _ *document.Presence) error {
						t := root.GetText(textKey)
						at := len(utf16.Encode([]rune(t.String())))
						t.Edit(at, at, ch)
						return nil
					})
					if err != nil {
						updErrs.Add(1)
						return
					}
					sentN[i].Add(1)
					next = next.Add(interval)
				}
			})
		}
		wg.Wait()
		return start, time.Now()
	}

	step(time.Second) // warm-up
	time.Sleep(500 * time.Millisecond)
	sent0 := make([]int64, n)
	for i := range sent0 {
		sent0[i] = sentN[i].Load()
	}
	for _, o := range obsv {
		o.mu.Lock()
		o.lat, o.count = nil, 0
		o.mu.Unlock()
	}
	rx0, tx0 := wireRx.Load(), wireTx.Load()
	cpu0, gen0 := s.cpu(), genCPU()
	errs0 := rpcErrs.Load()
	countErrs.Store(true)
	measureFrom.Store(time.Now().UnixNano())
	start, sendEnd := step(*dur)
	var sentBy []int64
	var sent int64
	for i := range sentN {
		sentBy = append(sentBy, sentN[i].Load()-sent0[i])
		sent += sentBy[i]
	}
	expectedAt := func(oi int) int { return int(sent - sentBy[oi]) }
	drainUntil := time.Now().Add(10 * time.Second)
	for time.Now().Before(drainUntil) && ctx.Err() == nil {
		done := true
		for oi, o := range obsv {
			o.mu.Lock()
			if o.count < expectedAt(oi) {
				done = false
			}
			o.mu.Unlock()
		}
		if done {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cpu, gen := s.cpu()-cpu0, genCPU()-gen0
	rx, tx := wireRx.Load()-rx0, wireTx.Load()-tx0
	countErrs.Store(false)

	var lat []float64
	delivered, expected := 0, 0
	for oi, o := range obsv {
		o.mu.Lock()
		lat = append(lat, o.lat...)
		delivered += o.count
		expected += expectedAt(oi)
		o.mu.Unlock()
	}
	elapsed := sendEnd.Sub(start).Seconds()
	frac := 0.0
	if expected > 0 {
		frac = float64(delivered) / float64(expected)
	}
	r := fanoutResult{
		Clients: n, Observers: nObs, Rate: *rate, Total: *rate * float64(n), Sent: int(sent),
		SentOpsPerSec:      float64(sent) / elapsed,
		DeliveredPct:       100 * frac,
		DeliveredOpsPerSec: float64(sent) * float64(n-1) * frac / elapsed,
		P50:                pct(lat, 0.5), P99: pct(lat, 0.99), Max: pct(lat, 1),
		GenCPUS:  gen.Seconds(),
		SrvCPUS:  cpu.Seconds(),
		ElapsedS: elapsed,
		SyncMode: "realtime (Watch stream + 50 ms push-pull loop)",
		PollMs:   float64(*pollEvery) / 1e6,
		Errors:   updErrs.Load() + rpcErrs.Load() - errs0,
	}
	if sent > 0 {
		r.SrvCPUSPer1kOps = cpu.Seconds() / float64(sent) * 1000
		r.WireBPerOp = float64(rx+tx) / float64(sent)
	}
	for _, p := range peers {
		r.Errors += p.errs.Load()
		if p.closed.Load() {
			r.Closed++
		}
	}
	return r, nil
}

// --- memory ------------------------------------------------------------------

type memoryResult struct {
	Docs        int     `json:"docs"`
	Conns       int     `json:"conns"`
	RSSBefore   int64   `json:"rssBefore"`
	RSSAfter    int64   `json:"rssAfter"`
	RSSPerDoc   float64 `json:"rssPerDoc"`
	HeapPerDoc  float64 `json:"heapPerDoc"`
	CreateSecs  float64 `json:"createSeconds"`
	DocBytes    int     `json:"docBytes"`
	SettleSecs  float64 `json:"settleSeconds"`
	Description string  `json:"description"`
}

func memory(ctx context.Context) (any, error) {
	docs := *docsF
	if docs < 1 || docs > 20000 {
		return nil, fmt.Errorf("bad -docs %d", docs)
	}
	s, err := startServer(ctx)
	if err != nil {
		return nil, err
	}
	defer s.stop()
	life, stopLife := context.WithCancel(context.Background())
	defer stopLife()
	text := strings.Repeat("lorem ipsum dolor sit amet, consectetur adipiscing elit. ", 20)[:1024]
	run := rand.Uint32()
	mk := func(prefix string, n int) ([]*peer, error) {
		peers, err := connectAll(ctx, life, s, n, func(i int) string { return fmt.Sprintf("%s-%d-%d", prefix, run, i) }, func(int) bool { return true })
		if err != nil {
			return nil, err
		}
		var wg sync.WaitGroup
		var failed atomic.Int64
		sem := make(chan struct{}, 20)
		for _, p := range peers {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if err := p.doc.Update(func(root *yjson.Object, _ *document.Presence) error {
					root.GetText(textKey).Edit(0, 0, text)
					return nil
				}); err != nil {
					failed.Add(1)
					return
				}
				if err := p.cli.Sync(ctx); err != nil {
					failed.Add(1)
				}
			})
		}
		wg.Wait()
		if f := failed.Load(); f > 0 {
			closeAll(peers)
			return nil, fmt.Errorf("%d documents failed to write", f)
		}
		return peers, nil
	}
	// Warm up (connection pools, caches, the default project), then measure.
	warm, err := mk("warm", 20)
	if err != nil {
		return nil, err
	}
	defer closeAll(warm)
	const settle = 3 * time.Second
	time.Sleep(settle)
	rss0 := s.rss()
	heap0 := s.heap()
	t0 := time.Now()
	peers, err := mk("mem", docs)
	if err != nil {
		return nil, err
	}
	defer closeAll(peers)
	created := time.Since(t0)
	time.Sleep(settle)
	rss1 := s.rss()
	heap1 := s.heap()
	return memoryResult{
		Docs: docs, Conns: docs, RSSBefore: rss0, RSSAfter: rss1,
		RSSPerDoc:  float64(rss1-rss0) / float64(docs),
		HeapPerDoc: float64(heap1-heap0) / float64(docs),
		CreateSecs: created.Seconds(), DocBytes: len(text), SettleSecs: settle.Seconds(),
		Description: "each document written by its own client (realtime attach: Watch stream + sync loop), which stays attached; " +
			"RSS is VmRSS of the server process 3 s after the last write; heap is go_memstats_heap_alloc_bytes from its /metrics right after that, following a forced GC (/debug/pprof/heap?gc=1)",
	}, nil
}

// --- join --------------------------------------------------------------------

type joinResult struct {
	Chars      int       `json:"chars"`
	Edits      int       `json:"edits"`
	Mode       string    `json:"mode"`
	Changes    int       `json:"changes"`
	WriteSecs  float64   `json:"writeSeconds"`
	ColdP50    float64   `json:"coldP50"`
	ColdMax    float64   `json:"coldMax"`
	First      float64   `json:"first"`
	Samples    []float64 `json:"samples"`
	AttachOnly float64   `json:"attachOnlyP50"`
	Note       string    `json:"note"`
}

type trace struct {
	StartContent string `json:"startContent"`
	EndContent   string `json:"endContent"`
	Txns         []struct {
		Patches [][3]any `json:"patches"`
	} `json:"txns"`
}

type patch struct {
	pos, del int
	ins      string
}

func tracesDir() string {
	if *traces != "" {
		return *traces
	}
	exe, err := os.Executable()
	if err != nil {
		return "../../../../shared/traces"
	}
	// bin/yorkie-load → bench/peers/yorkie → repository → its parent.
	return filepath.Join(filepath.Dir(exe), "..", "..", "..", "..", "..", "shared", "traces")
}

func loadTrace() (string, []patch, error) {
	path := filepath.Join(tracesDir(), "automerge-paper.json.gz")
	f, err := os.Open(path)
	if err != nil {
		return "", nil, fmt.Errorf("editing trace missing: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return "", nil, err
	}
	var t trace
	if err := json.NewDecoder(zr).Decode(&t); err != nil {
		return "", nil, fmt.Errorf("%s: %w", path, err)
	}
	if t.StartContent != "" {
		return "", nil, errors.New("trace has a start content; not supported")
	}
	var ps []patch
	for _, tx := range t.Txns {
		for _, p := range tx.Patches {
			pos, ok1 := p[0].(float64)
			del, ok2 := p[1].(float64)
			ins, ok3 := p[2].(string)
			if !ok1 || !ok2 || !ok3 {
				return "", nil, fmt.Errorf("bad patch %v", p)
			}
			ps = append(ps, patch{int(pos), int(del), ins})
		}
	}
	return t.EndContent, ps, nil
}

func join(ctx context.Context) (any, error) {
	end, patches, err := loadTrace()
	if err != nil {
		return nil, err
	}
	for _, r := range end {
		if r > 0xFFFF {
			return nil, errors.New("trace has characters beyond the BMP; positions would need converting to UTF-16")
		}
	}
	s, err := startServer(ctx)
	if err != nil {
		return nil, err
	}
	defer s.stop()
	life, stopLife := context.WithCancel(context.Background())
	defer stopLife()
	docKey := fmt.Sprintf("automerge-paper-%d", rand.Uint32())

	// Write the document through the server with a manually synced client.
	w, err := client.Dial(s.addr, client.WithLogger(nop))
	if err != nil {
		return nil, err
	}
	if err := callWithin(ctx, func() error { return w.Activate(life) }); err != nil {
		return nil, fmt.Errorf("activate: %w", err)
	}
	wd := document.New(key.Key(docKey))
	if err := w.Attach(ctx, wd); err != nil {
		return nil, fmt.Errorf("attach: %w", err)
	}
	t0 := time.Now()
	const perChange, changesPerSync = 100, 10
	changes := 0
	if err := wd.Update(func(root *yjson.Object, _ *document.Presence) error {
		t := root.SetNewText(textKey)
		if *joinMode == "final" {
			t.Edit(0, 0, end)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	changes++
	if *joinMode == "history" {
		for i := 0; i < len(patches); i += perChange {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			batch := patches[i:min(i+perChange, len(patches))]
			if err := wd.Update(func(root *yjson.Object, _ *document.Presence) error {
				t := root.GetText(textKey)
				for _, p := range batch {
					t.Edit(p.pos, p.pos+p.del, p.ins)
				}
				return nil
			}); err != nil {
				return nil, fmt.Errorf("edit %d: %w", i, err)
			}
			changes++
			if changes%changesPerSync == 0 {
				if err := w.Sync(ctx); err != nil {
					return nil, fmt.Errorf("sync after edit %d: %w", i, err)
				}
			}
		}
	} else if *joinMode != "final" {
		return nil, fmt.Errorf("bad -join-mode %q", *joinMode)
	}
	if err := w.Sync(ctx); err != nil {
		return nil, fmt.Errorf("sync: %w", err)
	}
	wrote := time.Since(t0)
	var got string
	_ = wd.Update(func(root *yjson.Object, _ *document.Presence) error {
		got = root.GetText(textKey).String()
		return nil
	})
	if got != end {
		return nil, fmt.Errorf("the writer's text differs from the trace's end content (%d vs %d chars)", len(got), len(end))
	}
	// The writer leaves, so that no client holds the document.
	if err := w.Detach(ctx, wd); err != nil {
		return nil, fmt.Errorf("detach: %w", err)
	}
	_ = w.Close()
	if *joinMode == "final" {
		logf("join: wrote the end text (%d chars) as one insert in %v", len([]rune(end)), wrote.Round(time.Millisecond))
	} else {
		logf("join: wrote %d edits as %d changes in %v", len(patches), changes, wrote.Round(time.Millisecond))
	}

	var took, attachOnly []float64
	for range max(1, *samples) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t0 := time.Now()
		c, err := client.Dial(s.addr, client.WithLogger(nop))
		if err != nil {
			return nil, err
		}
		if err := callWithin(ctx, func() error { return c.Activate(life) }); err != nil {
			return nil, fmt.Errorf("activate: %w", err)
		}
		t1 := time.Now()
		d := document.New(key.Key(docKey))
		if err := c.Attach(ctx, d, client.WithRealtimeSync()); err != nil {
			return nil, fmt.Errorf("attach: %w", err)
		}
		var txt string
		_ = d.Update(func(root *yjson.Object, _ *document.Presence) error {
			if t := root.GetText(textKey); t != nil {
				txt = t.String()
			}
			return nil
		})
		now := time.Now()
		if txt != end {
			return nil, fmt.Errorf("the joined text differs from the trace's end content (%d vs %d chars)", len(txt), len(end))
		}
		took = append(took, float64(now.Sub(t0))/1e6)
		attachOnly = append(attachOnly, float64(now.Sub(t1))/1e6)
		ctx2, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = c.Detach(ctx2, d)
		cancel()
		_ = c.Close()
		time.Sleep(200 * time.Millisecond)
	}
	edits := len(patches)
	if *joinMode == "final" {
		edits = 1
	}
	return joinResult{
		Chars: len([]rune(end)), Edits: edits, Mode: *joinMode, Changes: changes, WriteSecs: wrote.Seconds(),
		ColdP50: pct(took, 0.5), ColdMax: pct(took, 1), First: took[0], Samples: took, AttachOnly: pct(attachOnly, 0.5),
		Note: "fresh client: activate + attach (realtime) until it holds the whole text; the memory database cannot survive a restart, " +
			"so the server is not restarted before a join (it builds the document from its stored snapshot and changes)",
	}, nil
}
