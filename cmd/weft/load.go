package main

// weft load: a load generator and end-to-end checker built on the Go
// client. It runs many client.Clients in this process against a server on
// loopback, edits for a bounded time, waits for quiescence and then checks
// what a collaborative editor must guarantee: every replica and the server
// hold the same text (convergence), and no edit the server acknowledged is
// missing from it (durable acks), even if the server was killed meanwhile.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/weft-sync/weft/client"
	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// loadConfig is what `weft load` is told.
type loadConfig struct {
	URL      string        // ws://host:port/v1/ws, loopback only
	Docs     int           // documents
	Clients  int           // clients, spread round-robin over the documents
	Rate     float64       // edits per second per client
	Duration time.Duration // how long to edit
	Token    string        // bearer token for every client and the HTTP API
	Settle   time.Duration // how long to wait for quiescence afterwards
	Seed     uint64        // 0: random
	Progress io.Writer     // progress lines; nil: none
}

// Bounds that keep a run on one machine and finite.
const (
	maxLoadDuration = time.Hour
	maxLoadClients  = 5000
	maxLoadRate     = 1000
)

// loadResult is the JSON line `weft load --json` prints last.
type loadResult struct {
	Docs       int     `json:"docs"`
	Clients    int     `json:"clients"`
	OpsSent    int64   `json:"ops_sent"`   // edits made (each one or more CRDT ops)
	OpsAcked   int64   `json:"ops_acked"`  // edits the server acknowledged as durable
	Delivered  int64   `json:"delivered"`  // (edit, other client) arrivals measured
	P50        float64 `json:"p50_ms"`     // edit → arrival at another client
	P99        float64 `json:"p99_ms"`     //
	Max        float64 `json:"max_ms"`     //
	Errors     int64   `json:"errors"`     // client-reported errors, not counting retry-after refusals
	Reconnects int64   `json:"reconnects"` // over all clients
	Converged  bool    `json:"converged"`
	LostAcked  int64   `json:"lost_acked"` // acknowledged edits missing from the server's document

	// For the human summary only.
	refusals int64
	problems []string
	elapsed  time.Duration
}

func loadFlags(fs *flag.FlagSet) func(args []string, stdout, stderr io.Writer) int {
	cfg := loadConfig{}
	fs.StringVar(&cfg.URL, "url", "ws://127.0.0.1:8080/v1/ws", "the server's WebSocket `url` (loopback only)")
	fs.IntVar(&cfg.Docs, "docs", 4, "number of documents")
	fs.IntVar(&cfg.Clients, "clients", 16, "number of clients, spread over the documents")
	fs.Float64Var(&cfg.Rate, "rate", 10, "edits per second per client")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to edit (at most 1h)")
	fs.StringVar(&cfg.Token, "token", "", "bearer `token` for the clients and the HTTP API (env WEFT_TOKEN)")
	fs.DurationVar(&cfg.Settle, "settle", time.Minute, "how long to wait at the end for every edit to be acknowledged and every replica to agree")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "random seed (0: random)")
	asJSON := fs.Bool("json", false, "print the result as one JSON object on the last line")
	return func(args []string, stdout, stderr io.Writer) int {
		if len(args) > 0 {
			fmt.Fprintf(stderr, "weft load: unexpected arguments %q\n", args)
			return 2
		}
		if cfg.Token == "" {
			cfg.Token = os.Getenv("WEFT_TOKEN")
		}
		if err := cfg.check(); err != nil {
			fmt.Fprintf(stderr, "weft load: %v\n", err)
			return 2
		}
		cfg.Progress = stderr
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		go func() {
			<-ctx.Done()
			stop() // the next signal has its default effect
		}()
		res, err := runLoad(ctx, cfg)
		if err != nil {
			fmt.Fprintf(stderr, "weft load: %v\n", err)
			return 1
		}
		res.summary(stderr)
		if *asJSON {
			b, _ := json.Marshal(res)
			fmt.Fprintf(stdout, "%s\n", b)
		}
		if !res.Converged || res.LostAcked > 0 {
			return 1
		}
		return 0
	}
}

func (c *loadConfig) check() error {
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("-url: %v", err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return fmt.Errorf("-url %q: want ws:// or wss://", c.URL)
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), map[string]string{"ws": "80", "wss": "443"}[u.Scheme])
	}
	if ok, err := loopbackOnly(hostport); err != nil || !ok {
		return fmt.Errorf("-url %q: weft load only targets loopback servers", c.URL)
	}
	switch {
	case c.Clients < 1 || c.Clients > maxLoadClients:
		return fmt.Errorf("-clients %d: want 1 to %d", c.Clients, maxLoadClients)
	case c.Docs < 1 || c.Docs > c.Clients:
		return fmt.Errorf("-docs %d: want 1 to the number of clients", c.Docs)
	case !(c.Rate > 0 && c.Rate <= maxLoadRate):
		return fmt.Errorf("-rate %v: want more than 0 and at most %d", c.Rate, maxLoadRate)
	case c.Duration <= 0 || c.Duration > maxLoadDuration:
		return fmt.Errorf("-duration %s: want more than 0 and at most %s", c.Duration, maxLoadDuration)
	case c.Settle <= 0:
		return fmt.Errorf("-settle %s: want more than 0", c.Settle)
	}
	return nil
}

func (r *loadResult) summary(w io.Writer) {
	fmt.Fprintf(w, "weft load: %d clients on %d docs for %s: %d edits sent, %d acked, %d deliveries (p50 %.1f ms, p99 %.1f ms, max %.1f ms), %d reconnects, %d errors, %d retry-after refusals\n",
		r.Clients, r.Docs, r.elapsed.Round(time.Millisecond), r.OpsSent, r.OpsAcked, r.Delivered, r.P50, r.P99, r.Max, r.Reconnects, r.Errors, r.refusals)
	for _, p := range r.problems {
		fmt.Fprintf(w, "weft load: %s\n", p)
	}
	verdict := "converged"
	if !r.Converged {
		verdict = "NOT converged"
	}
	fmt.Fprintf(w, "weft load: %s, %d acknowledged edits lost\n", verdict, r.LostAcked)
}

// --- tracking edits ------------------------------------------------------------

// edit is one edit call of one client: the own seqs it used, when, and
// what it inserted or deleted (from the local change event), so that the
// end can check the server kept it.
type edit struct {
	lo, hi uint64 // own seqs [lo, hi); hi is 0 until the call returned
	at     time.Time
	ins    []insRun
	dels   []crdt.ID // first IDs of deleted runs …
	delN   []uint64  // … and their lengths
	seen   []uint64  // bitset of the receivers (ranks in the doc's group) it reached
}

type insRun struct {
	seq  uint64
	text string
}

// author is every edit of one client, in seq order.
type author struct {
	mu    sync.Mutex
	edits []*edit
}

// find returns the edit holding seq (mu held).
func (a *author) find(seq uint64) *edit {
	i, _ := slices.BinarySearchFunc(a.edits, seq, func(e *edit, s uint64) int {
		if e.lo > s {
			return 1
		}
		return -1
	})
	if i == 0 {
		return nil
	}
	e := a.edits[i-1]
	if e.hi != 0 && seq >= e.hi {
		return nil
	}
	return e
}

// receiver is one client's view: its latency samples.
type receiver struct {
	mu      sync.Mutex
	samples []float64 // ms
}

type tracker struct {
	authors   map[crdt.AgentKey]*author // fixed before the clients start
	receivers []*receiver
	rank      []int // client → rank within its document's group
	group     int   // largest group size
	errors    atomic.Int64
	refusals  atomic.Int64
	errMu     sync.Mutex
	firstErrs []string
	lost      map[int][]*client.LostAckedError // client → acked seqs a server reported lost
}

func (tr *tracker) onChange(ci int, me crdt.AgentKey) func(client.Event) {
	return func(ev client.Event) {
		now := time.Now()
		d := &ev.Delta
		if ev.Origin == client.Local {
			a := tr.authors[me]
			a.mu.Lock()
			for _, o := range d.Ops {
				e := a.find(o.Seq)
				if e == nil {
					continue
				}
				if o.Kind == crdt.OpInsert {
					e.ins = append(e.ins, insRun{seq: o.Seq, text: o.Text})
				} else {
					e.dels = append(e.dels, crdt.ID{Agent: d.Agents[o.Target.Agent], Seq: o.Target.Seq})
					e.delN = append(e.delN, o.Len)
				}
			}
			a.mu.Unlock()
			return
		}
		r := tr.receivers[ci]
		bit, word := uint64(1)<<(tr.rank[ci]%64), tr.rank[ci]/64
		for _, o := range d.Ops {
			a := tr.authors[d.Agents[o.Agent]]
			if a == nil {
				continue
			}
			a.mu.Lock()
			for s := o.Seq; s < o.Seq+o.Len; {
				e := a.find(s)
				if e == nil {
					break
				}
				if e.seen[word]&bit == 0 {
					e.seen[word] |= bit
					r.mu.Lock()
					r.samples = append(r.samples, float64(now.Sub(e.at).Microseconds())/1000)
					r.mu.Unlock()
				}
				if e.hi <= s {
					break
				}
				s = e.hi
			}
			a.mu.Unlock()
		}
	}
}

func (tr *tracker) begin(me crdt.AgentKey, lo uint64) *edit {
	e := &edit{lo: lo, at: time.Now(), seen: make([]uint64, (tr.group+63)/64)}
	a := tr.authors[me]
	a.mu.Lock()
	a.edits = append(a.edits, e)
	a.mu.Unlock()
	return e
}

func (tr *tracker) end(me crdt.AgentKey, e *edit, hi uint64) {
	a := tr.authors[me]
	a.mu.Lock()
	defer a.mu.Unlock()
	if hi <= e.lo { // the edit failed: forget it
		if n := len(a.edits); n > 0 && a.edits[n-1] == e {
			a.edits = a.edits[:n-1]
		}
		return
	}
	e.hi = hi
}

func (tr *tracker) collect(ci int, c *client.Client, wg *sync.WaitGroup) {
	defer wg.Done()
	for err := range c.Errors() {
		var ce *client.Error
		if errors.As(err, &ce) && ce.RetryAfter > 0 {
			tr.refusals.Add(1)
			continue
		}
		// A server that came back without acknowledged edits: the client
		// resends them, which would hide the loss from the final check.
		var la *client.LostAckedError
		if errors.As(err, &la) {
			tr.errMu.Lock()
			tr.lost[ci] = append(tr.lost[ci], la)
			tr.errMu.Unlock()
			continue
		}
		tr.errors.Add(1)
		tr.errMu.Lock()
		if len(tr.firstErrs) < 10 {
			tr.firstErrs = append(tr.firstErrs, err.Error())
		}
		tr.errMu.Unlock()
	}
}

// --- the run -------------------------------------------------------------------

var loadText = []string{"a", "b", "c", " ", "é", "ü", "中", "文", "🙂", "🚀", "ab", "xyz", "\n"}

func randomLoadText(r *mrand.Rand) string {
	var b strings.Builder
	for n := 1 + r.IntN(4); n > 0; n-- {
		b.WriteString(loadText[r.IntN(len(loadText))])
	}
	return b.String()
}

// runLoad runs the clients, then checks the outcome. It returns an error
// only when it could not run at all.
func runLoad(ctx context.Context, cfg loadConfig) (*loadResult, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	progress := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "weft load: "+format+"\n", args...)
		}
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = mrand.Uint64()
	}
	var run [4]byte
	_, _ = rand.Read(run[:])
	runID := hex.EncodeToString(run[:])
	docIDs := make([]string, cfg.Docs)
	for k := range docIDs {
		docIDs[k] = fmt.Sprintf("load-%s-%d", runID, k)
	}
	res := &loadResult{Docs: cfg.Docs, Clients: cfg.Clients}
	start := time.Now()

	tr := &tracker{authors: make(map[crdt.AgentKey]*author), rank: make([]int, cfg.Clients), lost: make(map[int][]*client.LostAckedError)}
	groups := make([]int, cfg.Docs)
	for i := range cfg.Clients {
		tr.rank[i] = groups[i%cfg.Docs]
		groups[i%cfg.Docs]++
		tr.group = max(tr.group, groups[i%cfg.Docs])
		tr.receivers = append(tr.receivers, &receiver{})
	}
	u, _ := url.Parse(cfg.URL)
	spread := u.Hostname() == "127.0.0.1" && cfg.Clients > 500
	clients := make([]*client.Client, cfg.Clients)
	docs := make([]*client.Doc, cfg.Clients)
	var errWG sync.WaitGroup
	closeAll := func() {
		for _, c := range clients {
			if c != nil {
				_ = c.Close()
			}
		}
		errWG.Wait()
	}
	agents := make([]crdt.AgentKey, cfg.Clients)
	for i := range agents {
		agents[i] = crdt.AgentKey(uuid.New())
		tr.authors[agents[i]] = &author{}
	}
	for i, agent := range agents {
		o := client.Options{
			Token:    cfg.Token,
			Agent:    agent,
			User:     protocol.User{Name: fmt.Sprintf("load-%d", i), Color: fmt.Sprintf("#%06x", mrand.IntN(1<<24))},
			Backoff:  client.Backoff{Base: 100 * time.Millisecond, Cap: 2 * time.Second},
			OnChange: tr.onChange(i, agent),
		}
		if spread {
			// Spread sockets over source addresses, so that no address
			// runs into the server's per-address limit.
			o.Dialer = &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i/500))}}
		}
		c, err := client.Dial(ctx, cfg.URL, o)
		if err != nil {
			closeAll()
			return nil, err
		}
		clients[i] = c
		errWG.Add(1)
		go tr.collect(i, c, &errWG)
		if docs[i], err = c.Open(docIDs[i%cfg.Docs]); err != nil {
			closeAll()
			return nil, err
		}
	}
	defer closeAll()

	// Everyone joined before the clock starts.
	joinCtx, cancel := context.WithTimeout(ctx, cfg.Settle)
	for _, d := range docs {
		if err := d.WaitSynced(joinCtx); err != nil {
			res.problems = append(res.problems, fmt.Sprintf("%s not synced before editing: %v", d.ID(), err))
			break
		}
	}
	cancel()
	progress("%d clients joined %d docs in %s; editing for %s at %v edits/s each", cfg.Clients, cfg.Docs, time.Since(start).Round(time.Millisecond), cfg.Duration, cfg.Rate)

	// Edit.
	var sent atomic.Int64
	editCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	var wg sync.WaitGroup
	period := time.Duration(float64(time.Second) / cfg.Rate)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := mrand.New(mrand.NewPCG(seed, uint64(i)))
			me, d := clients[i].Agent(), docs[i]
			select { // spread the clients' phases over one period
			case <-time.After(time.Duration(r.Int64N(int64(period) + 1))):
			case <-editCtx.Done():
				return
			}
			t := time.NewTicker(period)
			defer t.Stop()
			for {
				e := tr.begin(me, d.Version()[me])
				var err error
				if n := d.Len(); n > 0 && r.IntN(10) < 3 {
					pos := r.IntN(n)
					err = d.Delete(pos, min(n-pos, 1+r.IntN(4)))
				} else {
					err = d.Insert(r.IntN(n+1), randomLoadText(r))
				}
				hi := d.Version()[me]
				if err != nil {
					hi = 0 // out of range after a concurrent remote delete, say
				}
				tr.end(me, e, hi)
				if err == nil {
					sent.Add(1)
				}
				select {
				case <-t.C:
				case <-editCtx.Done():
					return
				}
			}
		}()
	}
	ticker := time.NewTicker(5 * time.Second)
wait:
	for {
		select {
		case <-editCtx.Done():
			break wait
		case <-ticker.C:
			var rc int64
			for _, c := range clients {
				rc += c.Stats().Reconnects
			}
			progress("%s: %d edits sent, %d reconnects", time.Since(start).Round(time.Second), sent.Load(), rc)
		}
	}
	ticker.Stop()
	wg.Wait()
	cancel()
	res.OpsSent = sent.Load()
	progress("editing done: %d edits; waiting for quiescence", res.OpsSent)
	// An interrupt ends the editing early; the checks still run, bounded
	// by Settle (a second interrupt kills the process).
	ctx = context.WithoutCancel(ctx)

	// Quiescence: every edit acknowledged, every replica at the version a
	// fresh observer gets from the server.
	observers, obsDocs, err := observe(ctx, cfg, docIDs)
	defer func() {
		for _, c := range observers {
			_ = c.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	quiet := false
	deadline := time.Now().Add(cfg.Settle)
	for !quiet && time.Now().Before(deadline) && ctx.Err() == nil {
		quiet = true
		for i, d := range docs {
			od := obsDocs[i%cfg.Docs]
			if d.Status().State != client.Synced || od.Status().State != client.Synced || !d.Version().Equal(od.Version()) {
				quiet = false
				break
			}
		}
		if !quiet {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if !quiet {
		for i, d := range docs {
			if st := d.Status(); st.State != client.Synced {
				res.problems = append(res.problems, fmt.Sprintf("client %d on %s still %s with %d unacked ops (err %v)", i, d.ID(), st.State, st.Unacked, st.Err))
				break
			}
		}
		res.problems = append(res.problems, fmt.Sprintf("no quiescence within %s", cfg.Settle))
	}

	// The server's text over HTTP against every replica.
	texts, err := fetchTexts(ctx, cfg, docIDs)
	if err != nil {
		res.problems = append(res.problems, err.Error())
	}
	res.Converged = quiet && err == nil
	for i, d := range docs {
		k := i % cfg.Docs
		if got := d.Text(); texts != nil && got != texts[k] {
			res.Converged = false
			res.problems = append(res.problems, fmt.Sprintf("client %d's %s (%d code points) differs from the server's (%d)", i, d.ID(), len([]rune(got)), len([]rune(texts[k]))))
		}
	}
	for k, od := range obsDocs {
		if texts != nil && od.Text() != texts[k] {
			res.Converged = false
			res.problems = append(res.problems, fmt.Sprintf("a fresh client's %s differs from the server's over HTTP", od.ID()))
		}
	}

	// Acknowledged edits against the server's replica, once every client
	// is closed and its events delivered.
	replicas := make([]*crdt.Text, cfg.Docs)
	for k, od := range obsDocs {
		replicas[k] = od.Replica()
	}
	acked := make([]uint64, len(docs))
	for i, d := range docs {
		acked[i] = d.AckedSeq()
	}
	for _, c := range clients {
		res.Reconnects += c.Stats().Reconnects
	}
	closeAll()
	deleted := make(map[crdt.ID]bool)
	for _, a := range tr.authors {
		for _, e := range a.edits {
			for j, id := range e.dels {
				for s := range e.delN[j] {
					deleted[crdt.ID{Agent: id.Agent, Seq: id.Seq + s}] = true
				}
			}
		}
	}
	for i, me := range agents {
		edits := tr.authors[me].edits
		for _, e := range edits {
			if e.hi != 0 && e.hi <= acked[i] {
				res.OpsAcked++
			}
		}
		lost := checkAcked(replicas[i%cfg.Docs], me, edits, acked[i], deleted, tr.lost[i])
		if lost > 0 {
			res.problems = append(res.problems, fmt.Sprintf("client %d: %d acknowledged edits missing from the server's %s", i, lost, docIDs[i%cfg.Docs]))
		}
		res.LostAcked += int64(lost)
	}

	var samples []float64
	for _, r := range tr.receivers {
		samples = append(samples, r.samples...)
	}
	slices.Sort(samples)
	res.Delivered = int64(len(samples))
	if n := len(samples); n > 0 {
		res.P50 = samples[(n-1)*50/100]
		res.P99 = samples[(n-1)*99/100]
		res.Max = samples[n-1]
	}
	res.Errors = tr.errors.Load()
	res.refusals = tr.refusals.Load()
	tr.errMu.Lock()
	for _, e := range tr.firstErrs {
		res.problems = append(res.problems, "client error: "+e)
	}
	tr.errMu.Unlock()
	res.elapsed = time.Since(start)
	return res, nil
}

// observe opens every document in fresh clients (256 documents each): the
// server's version as a newcomer gets it, kept current by its updates.
func observe(ctx context.Context, cfg loadConfig, docIDs []string) ([]*client.Client, []*client.Doc, error) {
	var cs []*client.Client
	var ds []*client.Doc
	for k, id := range docIDs {
		if k%protocol.MaxDocsPerSocket == 0 {
			c, err := client.Dial(ctx, cfg.URL, client.Options{
				Token: cfg.Token, User: protocol.User{Name: "load-observer"},
				Backoff: client.Backoff{Base: 100 * time.Millisecond, Cap: 2 * time.Second},
			})
			if err != nil {
				return cs, nil, err
			}
			cs = append(cs, c)
		}
		d, err := cs[len(cs)-1].Open(id)
		if err != nil {
			return cs, nil, err
		}
		ds = append(ds, d)
	}
	return cs, ds, nil
}

// fetchTexts reads every document over the HTTP API (GET /v1/docs/{id},
// next to the WebSocket endpoint). A document nobody edited does not
// exist there (404) and counts as empty.
func fetchTexts(ctx context.Context, cfg loadConfig, docIDs []string) ([]string, error) {
	u, _ := url.Parse(cfg.URL)
	u.Scheme = map[string]string{"ws": "http", "wss": "https"}[u.Scheme]
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	out := make([]string, len(docIDs))
	for k, id := range docIDs {
		u.Path, u.RawPath = "/v1/docs/"+id, "/v1/docs/"+url.PathEscape(id)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, err
		}
		if cfg.Token != "" {
			req.Header.Set("Authorization", "Bearer "+cfg.Token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("GET %s: %v", u.Path, err)
		}
		var body struct {
			ID      string `json:"id"`
			Text    string `json:"text"`
			Version uint64 `json:"version"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 256<<20)).Decode(&body)
		_ = resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusNotFound:
			out[k] = ""
		case resp.StatusCode != http.StatusOK:
			return nil, fmt.Errorf("GET %s: HTTP %d", u.Path, resp.StatusCode)
		case err != nil:
			return nil, fmt.Errorf("GET %s: %v", u.Path, err)
		default:
			out[k] = body.Text
		}
	}
	return out, nil
}

// checkAcked counts the acknowledged edits of agent me (own seqs below
// acked) that the server's replica rep does not hold intact: its version
// must cover their seqs, each inserted character must be there (or deleted
// by some client's delete), and each deleted character must be gone.
//
// An edit whose seqs a server reported lost after acknowledging them
// (reported) counts as lost too, although the client has resent it since.
func checkAcked(rep *crdt.Text, me crdt.AgentKey, edits []*edit, acked uint64, deleted map[crdt.ID]bool, reported []*client.LostAckedError) int {
	if rep == nil {
		return 0
	}
	have := rep.Next(me)
	runes := []rune(rep.String())
	live := func(id crdt.ID) (rune, bool) {
		pos, ok := rep.Resolve(crdt.Anchor{ID: id, Assoc: crdt.AssocRight})
		if !ok || pos >= len(runes) {
			return 0, false
		}
		a, err := rep.AnchorAt(pos, crdt.AssocRight)
		if err != nil || a.ID != id {
			return 0, false
		}
		return runes[pos], true
	}
	lost := 0
	for _, e := range edits {
		if e.hi == 0 || e.hi > acked {
			continue
		}
		ok := have >= e.hi
		for _, r := range reported {
			if e.lo < r.To && r.From < e.hi {
				ok = false
			}
		}
		for _, in := range e.ins {
			if !ok {
				break
			}
			seq := in.seq
			for _, ch := range in.text {
				id := crdt.ID{Agent: me, Seq: seq}
				got, isLive := live(id)
				if isLive && got != ch || !isLive && !deleted[id] {
					ok = false
					break
				}
				seq++
			}
		}
		for j, id := range e.dels {
			for s := range e.delN[j] {
				if !ok {
					break
				}
				if _, isLive := live(crdt.ID{Agent: id.Agent, Seq: id.Seq + s}); isLive {
					ok = false
				}
			}
		}
		if !ok {
			lost++
		}
	}
	return lost
}
