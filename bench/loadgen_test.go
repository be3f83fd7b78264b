package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// The load generator is this test binary run again with envLoadgen set to
// a JSON genConfig. It connects its clients, answers "ready" on stdout,
// then carries out the commands the benchmark writes on its stdin, one
// JSON line each, answering each with one JSON line. It exits on "quit" or
// when stdin closes.

const envLoadgen = "WEFT_BENCH_LOADGEN"

type genConfig struct {
	Scenario  string // "fanout", "hold", "durable" or "storm"
	URL       string
	Run       uint32 // distinguishes agent keys of different runs
	Clients   int
	Docs      int    // client i joins document i % Docs
	DocPrefix string // documents are DocPrefix + index
	PerIP     int    // clients per source address
	TextBytes int    // the first client of each document writes this much text once joined
	Window    int    // durable: deltas in flight per client
	MaxOps    int    // fanout: ops one client may send in all (size of its timing table)
}

type genCmd struct {
	Cmd  string        // "step", "durable", "close", "storm", "quit"
	Rate float64       // step: ops per second per client
	Dur  time.Duration // step, durable
}

// genReply is every answer of the generator; fields not concerned stay zero.
type genReply struct {
	Error string `json:",omitempty"`

	Clients   int     // connected
	ConnectMs float64 // time to connect and join them all
	Refused   int64   // upgrades refused (HTTP 429/503) or joins answered overloaded
	Errors    int64   // failed dials, Error frames other than overloaded, unexpected closes
	Closed    int64   // connections the server closed during the command
	ErrSample string  `json:",omitempty"`

	Sent       int64 // deltas (each one op) sent
	Acked      int64
	Delivered  int64 // ops received in Updates, over all clients
	Expected   int64 // ops that should have been delivered
	P50, P99   float64
	Max        float64
	RxBytes    int64 // bytes received by the clients (server → client), framing included
	TxBytes    int64
	ElapsedMs  float64
	GenLagP99  float64 // how late the generator's senders were, ms
	GenCPUms   float64 // the generator's CPU time during the command
	RejoinP50  float64
	RejoinP99  float64
	RejoinAll  float64 // storm: until every client rejoined, ms
	Unfinished int     // storm: clients that had not rejoined at the bound
}

// --- the parent's side -------------------------------------------------------

type loadgen struct {
	tb     testing.TB
	cmd    *exec.Cmd
	in     io.WriteCloser
	lines  chan []byte
	stderr *capBuffer
	done   chan struct{}
}

// capBuffer keeps the first 64 KiB written to it.
type capBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (c *capBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := 64<<10 - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

// startLoadgen starts the generator and waits for its ready answer.
func startLoadgen(tb testing.TB, cfg genConfig, within time.Duration) (*loadgen, genReply) {
	tb.Helper()
	js, err := json.Marshal(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envLoadgen+"="+string(js))
	g := &loadgen{tb: tb, cmd: cmd, lines: make(chan []byte, 16), stderr: &capBuffer{}, done: make(chan struct{})}
	cmd.Stderr = g.stderr
	if g.in, err = cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		defer close(g.lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			g.lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	go func() {
		_ = cmd.Wait()
		close(g.done)
	}()
	tb.Cleanup(g.stop)
	return g, g.reply(within)
}

func (g *loadgen) reply(within time.Duration) genReply {
	g.tb.Helper()
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case line, ok := <-g.lines:
		if !ok {
			<-g.done
			g.tb.Fatalf("load generator exited: %v\n%s", g.cmd.ProcessState, g.stderr)
		}
		var r genReply
		if err := json.Unmarshal(line, &r); err != nil {
			g.tb.Fatalf("load generator said %q: %v", line, err)
		}
		if r.Error != "" {
			g.tb.Fatalf("load generator: %s\n%s", r.Error, g.stderr)
		}
		return r
	case <-t.C:
		g.tb.Fatalf("load generator did not answer within %v\n%s", within, g.stderr)
	}
	return genReply{}
}

// call sends a command and waits for its answer.
func (g *loadgen) call(c genCmd, within time.Duration) genReply {
	g.tb.Helper()
	js, _ := json.Marshal(c)
	if _, err := g.in.Write(append(js, '\n')); err != nil {
		g.tb.Fatalf("load generator: %v\n%s", err, g.stderr)
	}
	return g.reply(within)
}

// stop ends the generator: quit, then a kill if it does not go.
func (g *loadgen) stop() {
	_, _ = g.in.Write([]byte(`{"Cmd":"quit"}` + "\n"))
	_ = g.in.Close()
	select {
	case <-g.done:
	case <-time.After(30 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.done
	}
}

// --- the generator's side ----------------------------------------------------

type genClient struct {
	*wsClient
	g       *gen
	doc     string
	text    *crdt.Text     // own edits only: enough to make valid deltas
	sentAt  []atomic.Int64 // by own op seq: ns since gen.base, 0 = not sent
	ackAt   []atomic.Int64 // durable: by client seq
	synced  chan bool      // a join was answered: true synced, false refused
	acks    chan struct{}  // durable: window slots
	firstOK chan struct{}  // hold: the text write was acked

	hmu  sync.Mutex
	hist hist
	lag  hist

	delivered atomic.Int64
	acked     atomic.Int64
	errs      atomic.Int64
	refused   atomic.Int64
	errSample atomic.Pointer[string]
}

type gen struct {
	cfg     genConfig
	base    time.Time
	clients []*genClient
	out     *json.Encoder
	closed  atomic.Int64
	quiet   atomic.Bool // closes are expected (close and storm commands)
	counted atomic.Bool // count deliveries and latencies
}

func loadgenMain(cfgJSON string) int {
	raiseNoFile()
	g := &gen{base: time.Now(), out: json.NewEncoder(os.Stdout)}
	fail := func(err error) int {
		_ = g.out.Encode(genReply{Error: err.Error()})
		return 1
	}
	if err := json.Unmarshal([]byte(cfgJSON), &g.cfg); err != nil {
		return fail(err)
	}
	if g.cfg.PerIP <= 0 {
		g.cfg.PerIP = 500
	}
	if g.cfg.Docs <= 0 {
		g.cfg.Docs = 1
	}
	start := time.Now()
	if err := g.connectAll(); err != nil {
		return fail(err)
	}
	r := genReply{Clients: len(g.clients), ConnectMs: ms(time.Since(start))}
	g.sum(&r)
	_ = g.out.Encode(r)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var c genCmd
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			return fail(err)
		}
		var r genReply
		cpu0 := cpuTime()
		switch c.Cmd {
		case "quit":
			g.closeAll()
			return 0
		case "step":
			r = g.step(c.Rate, c.Dur)
		case "durable":
			r = g.durable(c.Dur)
		case "close":
			g.quiet.Store(true)
			g.closeAll()
		case "storm":
			r = g.storm()
		default:
			r.Error = "unknown command " + c.Cmd
		}
		r.GenCPUms = ms(cpuTime() - cpu0)
		if err := g.out.Encode(r); err != nil {
			return 1
		}
	}
	g.closeAll()
	return 0
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func (g *gen) now() int64 { return int64(time.Since(g.base)) }

func (g *gen) docOf(i int) string { return fmt.Sprintf("%s%d", g.cfg.DocPrefix, i%g.cfg.Docs) }

// connectAll connects and joins every client, 64 at a time, retrying
// refusals after the server's Retry-After.
func (g *gen) connectAll() error {
	g.clients = make([]*genClient, g.cfg.Clients)
	for i := range g.clients {
		c := &genClient{g: g, doc: g.docOf(i), text: crdt.New(agentKey(g.cfg.Run, i)), synced: make(chan bool, 1),
			acks: make(chan struct{}, max(g.cfg.Window, 1)), firstOK: make(chan struct{}, 1)}
		c.wsClient = &wsClient{id: i, agent: agentKey(g.cfg.Run, i)}
		if g.cfg.MaxOps > 0 {
			c.sentAt = make([]atomic.Int64, g.cfg.MaxOps)
		}
		if g.cfg.Window > 0 {
			c.ackAt = make([]atomic.Int64, 1<<16)
		}
		g.clients[i] = c
	}
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for _, c := range g.clients {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := c.join(time.Now().Add(5 * time.Minute)); err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	// The first client of each document writes its text, and waits for
	// the Ack: afterwards every document holds TextBytes, durably.
	if g.cfg.TextBytes > 0 {
		text := strings.Repeat("lorem ipsum dolor sit amet, consectetur adipiscing elit. ", g.cfg.TextBytes/56+1)[:g.cfg.TextBytes]
		for _, c := range g.clients[:min(g.cfg.Docs, len(g.clients))] {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				d, err := c.text.Insert(c.text.Len(), text)
				if err == nil {
					_, err = c.sendDelta(c.doc, d, nil)
				}
				if err == nil {
					select {
					case <-c.firstOK:
					case <-time.After(time.Minute):
						err = errors.New("no ack for the document text")
					}
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			})
		}
		wg.Wait()
	}
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return nil
}

// join connects the client and joins its document, retrying refusals with
// full-jitter backoff (never sooner than the server's retry hint) until
// the deadline. It reports the final error, if any.
func (c *genClient) join(deadline time.Time) error {
	const base, ceiling = 500 * time.Millisecond, 30 * time.Second
	var last error
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		if attempt > 0 {
			wait := time.Duration(rand.Int64N(int64(min(ceiling, base<<min(attempt-1, 10)))))
			var re *refusedError
			if errors.As(last, &re) {
				wait = max(wait, re.retry)
			}
			time.Sleep(min(wait, time.Until(deadline)))
		}
		ok, err := c.tryJoin()
		if ok {
			return nil
		}
		last = err
		var re *refusedError
		if errors.As(err, &re) {
			c.refused.Add(1)
		} else {
			c.errs.Add(1)
			c.noteErr(err)
		}
	}
	return fmt.Errorf("client %d did not join: %w", c.id, last)
}

func (c *genClient) tryJoin() (bool, error) {
	for len(c.synced) > 0 {
		<-c.synced
	}
	w, err := dial(dialOpts{url: c.g.cfg.URL, src: srcIP(c.id, c.g.cfg.PerIP), agent: c.agent, id: c.id,
		recv: c.recv, closed: c.onClose})
	if err != nil {
		return false, err
	}
	// Keep the counters across reconnections.
	w.rx.Add(c.wsClient.rx.Load())
	w.tx.Add(c.wsClient.tx.Load())
	c.wsClient = w
	if err := w.send(&protocol.Join{Docs: []protocol.JoinDoc{{Doc: c.doc}}}); err != nil {
		w.abort()
		return false, err
	}
	t := time.NewTimer(60 * time.Second)
	defer t.Stop()
	select {
	case ok := <-c.synced:
		if !ok {
			w.close()
			return false, &refusedError{status: 0, retry: time.Second}
		}
		return true, nil
	case <-w.done:
		return false, w.err
	case <-t.C:
		w.abort()
		return false, errors.New("timed out waiting for sync")
	}
}

func (c *genClient) noteErr(err error) {
	msg := err.Error()
	c.errSample.CompareAndSwap(nil, &msg)
}

func (c *genClient) onClose(w *wsClient, err error) {
	if c.g.quiet.Load() {
		return
	}
	c.g.closed.Add(1)
	c.noteErr(fmt.Errorf("connection closed: %w", err))
}

// recv runs on the client's read goroutine.
func (c *genClient) recv(w *wsClient, k protocol.Kind, frame []byte) {
	switch k {
	case protocol.KindUpdate:
		if !c.g.counted.Load() {
			return
		}
		now := c.g.now()
		c.hmu.Lock()
		ok := skimUpdate(frame, func(author []byte, seq, n uint64) {
			c.delivered.Add(int64(n))
			j, ok := clientOf(author)
			if !ok || j >= len(c.g.clients) {
				return
			}
			sent := c.g.clients[j].sentAt
			for s := seq; s < seq+n && s < uint64(len(sent)); s++ {
				if t := sent[s].Load(); t > 0 {
					c.hist.add(time.Duration(now - t))
				}
			}
		})
		c.hmu.Unlock()
		if !ok {
			c.errs.Add(1)
			c.noteErr(errors.New("update frame did not parse"))
		}
	case protocol.KindAck:
		cs, _ := ackSeq(frame)
		c.acked.Add(1)
		if c.ackAt != nil && cs < uint64(len(c.ackAt)) {
			if t := c.ackAt[cs].Load(); t > 0 {
				d := time.Duration(c.g.now() - t)
				c.hmu.Lock()
				c.hist.add(d)
				c.hmu.Unlock()
			}
		}
		select {
		case c.firstOK <- struct{}{}:
		default:
		}
		select {
		case c.acks <- struct{}{}:
		default:
		}
	case protocol.KindSync:
		f, err := protocol.Decode(frame)
		if err != nil {
			c.errs.Add(1)
			c.noteErr(err)
			return
		}
		if s := f.(*protocol.Sync); !s.More {
			select {
			case c.synced <- true:
			default:
			}
		}
	case protocol.KindError:
		f, err := protocol.Decode(frame)
		if err != nil {
			c.errs.Add(1)
			c.noteErr(err)
			return
		}
		e := f.(*protocol.Error)
		if e.Code == protocol.CodeOverloaded {
			c.refused.Add(1)
			if e.ClientSeq == 0 {
				select {
				case c.synced <- false: // the join was refused: retry it
				default:
				}
			}
			return
		}
		c.errs.Add(1)
		c.noteErr(e)
	}
}

// sum adds the counters of every client to r.
func (g *gen) sum(r *genReply) {
	var h hist
	for _, c := range g.clients {
		r.Refused += c.refused.Swap(0)
		r.Errors += c.errs.Swap(0)
		r.Delivered += c.delivered.Swap(0)
		r.Acked += c.acked.Swap(0)
		r.RxBytes += c.rx.Swap(0)
		r.TxBytes += c.tx.Swap(0)
		if s := c.errSample.Swap(nil); s != nil && r.ErrSample == "" {
			r.ErrSample = *s
		}
		c.hmu.Lock()
		h.merge(&c.hist)
		c.hist = hist{}
		c.hmu.Unlock()
	}
	r.Closed = g.closed.Swap(0)
	r.P50, r.P99, r.Max = h.quantile(0.5), h.quantile(0.99), h.maxMs()
}

func (g *gen) resetCounters() {
	var r genReply
	g.sum(&r)
}

// step makes every client type one character at rate per second for dur
// (open loop, phases spread at random), then waits up to 5 s for the
// deliveries and acks to arrive.
func (g *gen) step(rate float64, dur time.Duration) genReply {
	g.resetCounters()
	g.counted.Store(true)
	defer g.counted.Store(false)
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now().Add(50 * time.Millisecond)
	end := start.Add(dur)
	perDoc := make(map[string]int)
	for _, c := range g.clients {
		perDoc[c.doc]++
	}
	var sent, expected atomic.Int64
	var wg sync.WaitGroup
	for _, c := range g.clients {
		wg.Go(func() {
			at := start.Add(time.Duration(rand.Int64N(int64(interval))))
			var lag hist
			n := int64(0)
			for ; at.Before(end); at = at.Add(interval) {
				if d := time.Until(at); d > 0 {
					time.Sleep(d)
				}
				lag.add(time.Since(at))
				d, err := c.text.Insert(c.text.Len(), "a")
				if err != nil {
					c.errs.Add(1)
					c.noteErr(err)
					return
				}
				seq := d.Ops[0].Seq
				if _, err := c.sendDelta(c.doc, d, func(uint64) {
					if seq < uint64(len(c.sentAt)) {
						c.sentAt[seq].Store(g.now())
					}
				}); err != nil {
					c.errs.Add(1)
					c.noteErr(err)
					return
				}
				n++
			}
			sent.Add(n)
			expected.Add(n * int64(perDoc[c.doc]-1))
			c.hmu.Lock()
			c.lag.merge(&lag)
			c.hmu.Unlock()
		})
	}
	wg.Wait()
	sendEnd := time.Now()
	// Drain: wait for what is in flight, bounded.
	drainUntil := time.Now().Add(5 * time.Second)
	for time.Now().Before(drainUntil) {
		var del, ack int64
		for _, c := range g.clients {
			del += c.delivered.Load()
			ack += c.acked.Load()
		}
		if del >= expected.Load() && ack >= sent.Load() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var r genReply
	r.ElapsedMs = ms(sendEnd.Sub(start))
	g.sum(&r)
	r.Sent, r.Expected = sent.Load(), expected.Load()
	var lag hist
	for _, c := range g.clients {
		c.hmu.Lock()
		lag.merge(&c.lag)
		c.lag = hist{}
		c.hmu.Unlock()
	}
	r.GenLagP99 = lag.quantile(0.99)
	return r
}

// durable makes every client send one-character deltas for dur, keeping
// Window of them unacknowledged at a time; the histogram is ack latency.
func (g *gen) durable(dur time.Duration) genReply {
	g.resetCounters()
	start := time.Now()
	end := start.Add(dur)
	var sent, ackedInTime atomic.Int64
	var wg sync.WaitGroup
	for _, c := range g.clients {
		for range g.cfg.Window {
			c.acks <- struct{}{}
		}
		wg.Go(func() {
			n := int64(0)
			for time.Now().Before(end) {
				select {
				case <-c.acks:
				case <-time.After(time.Until(end)):
					continue
				case <-c.done:
					return
				}
				if !time.Now().Before(end) {
					break
				}
				d, err := c.text.Insert(c.text.Len(), "a")
				if err != nil {
					c.errs.Add(1)
					return
				}
				if _, err := c.sendDelta(c.doc, d, func(cs uint64) {
					if cs < uint64(len(c.ackAt)) {
						c.ackAt[cs].Store(g.now())
					}
				}); err != nil {
					c.errs.Add(1)
					c.noteErr(err)
					return
				}
				n++
			}
			sent.Add(n)
		})
	}
	wg.Wait()
	for _, c := range g.clients {
		ackedInTime.Add(c.acked.Load())
	}
	// Let the last acks arrive before the next command.
	drainUntil := time.Now().Add(10 * time.Second)
	for time.Now().Before(drainUntil) {
		var ack int64
		for _, c := range g.clients {
			ack += c.acked.Load()
		}
		if ack >= sent.Load() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range g.clients {
		for len(c.acks) > 0 {
			<-c.acks
		}
	}
	var r genReply
	r.ElapsedMs = ms(dur)
	g.sum(&r)
	r.Sent = sent.Load()
	r.Delivered = ackedInTime.Load() // acks that arrived within dur
	return r
}

// storm drops every connection at once, as a network failure or a server
// crash would, and lets every client reconnect and rejoin at once, with
// full-jitter backoff after a refusal or error.
func (g *gen) storm() genReply {
	g.resetCounters()
	g.quiet.Store(true)
	for _, c := range g.clients {
		c.abort()
	}
	for _, c := range g.clients {
		<-c.done
	}
	g.quiet.Store(false)
	start := time.Now()
	deadline := start.Add(3 * time.Minute)
	took := make([]time.Duration, len(g.clients))
	var wg sync.WaitGroup
	var unfinished atomic.Int64
	for i, c := range g.clients {
		wg.Go(func() {
			if err := c.join(deadline); err != nil {
				unfinished.Add(1)
				took[i] = -1
				return
			}
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	var r genReply
	g.sum(&r)
	var ds durations
	for _, d := range took {
		if d >= 0 {
			ds = append(ds, d)
		}
	}
	r.RejoinP50, r.RejoinP99 = ds.quantile(0.5), ds.quantile(0.99)
	if len(ds) > 0 {
		r.RejoinAll = ds.quantile(1)
	}
	r.Unfinished = int(unfinished.Load())
	r.Clients = len(ds)
	return r
}

// closeAll says goodbye on every connection, 256 at a time.
func (g *gen) closeAll() {
	g.quiet.Store(true)
	sem := make(chan struct{}, 256)
	var wg sync.WaitGroup
	for _, c := range g.clients {
		if c == nil || c.conn == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.close()
		})
	}
	wg.Wait()
}

// raiseNoFile lifts the soft descriptor limit to the hard one (the Go
// runtime does this at start-up too; this makes it explicit).
func raiseNoFile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
