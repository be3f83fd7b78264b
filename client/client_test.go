package client_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-sync/weft/client"
	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
	"github.com/weft-sync/weft/syncer"
)

func TestTwoClientsConverge(t *testing.T) {
	ts := startServer(t, syncer.ServerOptions{})
	var mu sync.Mutex
	var remote, local int
	o := fastOptions()
	o.OnChange = func(e client.Event) {
		mu.Lock()
		defer mu.Unlock()
		switch e.Origin {
		case client.Remote:
			remote += len(e.Changes)
		case client.Local:
			local += len(e.Changes)
		}
	}
	a := mustDial(t, ts.url(), o)
	b := mustDial(t, ts.url(), o)
	da, db := mustOpen(t, a, "notes"), mustOpen(t, b, "notes")
	waitSynced(t, da, 10*time.Second)
	waitSynced(t, db, 10*time.Second)
	if err := da.Insert(0, "héllo 中 🙂"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "b to see a's insert", func() bool { return db.Text() == "héllo 中 🙂" })
	if err := db.Replace(0, 5, "HÉLLO"); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		if err := randomEdit(r, da); err != nil {
			t.Fatal(err)
		}
		if err := randomEdit(r, db); err != nil {
			t.Fatal(err)
		}
	}
	text := converged(t, 10*time.Second, da, db)
	if got := serverText(t, ts.url(), "notes"); got != text {
		t.Fatalf("server has %q, clients %q", got, text)
	}
	mu.Lock()
	defer mu.Unlock()
	if local != 102 || remote == 0 {
		t.Fatalf("events: %d local (want 102), %d remote", local, remote)
	}
	if st := da.Status(); st.State != client.Synced || st.Unacked != 0 {
		t.Fatalf("status %+v", st)
	}
}

// TestOfflineEditsConverge: two clients edit while the server is down;
// once it starts, they converge on the union of their edits.
func TestOfflineEditsConverge(t *testing.T) {
	ts := newServer(t, syncer.ServerOptions{})
	a := mustDial(t, ts.url(), fastOptions())
	b := mustDial(t, ts.url(), fastOptions())
	da, db := mustOpen(t, a, "doc"), mustOpen(t, b, "doc")
	if err := da.Insert(0, "from a: é"); err != nil {
		t.Fatal(err)
	}
	if err := db.Insert(0, "from b: 中🙂"); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 30 {
		if err := randomEdit(r, da); err != nil {
			t.Fatal(err)
		}
		if err := randomEdit(r, db); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // a few failed dials
	if st := da.Status(); st.State != client.Offline || st.Unacked == 0 {
		t.Fatalf("status while the server is down: %+v", st)
	}
	aText, bText := da.Text(), db.Text()
	ts.start()
	text := converged(t, 10*time.Second, da, db)
	// Both replicas' edits survive: every character of each side's text
	// is in the result (deletes only removed each side's own view).
	for _, s := range []string{aText, bText} {
		if len([]rune(text)) < len([]rune(s)) {
			t.Fatalf("merged text %q shorter than a side %q", text, s)
		}
	}
	if got := serverText(t, ts.url(), "doc"); got != text {
		t.Fatalf("server %q, clients %q", got, text)
	}
	if a.Stats().Dials < 2 {
		t.Fatalf("stats %+v: expected failed dials before the server started", a.Stats())
	}
}

// TestJoinBatches: the documents opened while offline join in one Join
// frame per 256 once the server is up; those beyond the per-socket limit
// are refused and reported, the others sync.
func TestJoinBatches(t *testing.T) {
	for _, n := range []int{200, 300} {
		reg := prometheus.NewRegistry()
		ts := newServer(t, syncer.ServerOptions{Metrics: syncer.NewMetrics(reg)})
		a := mustDial(t, ts.url(), fastOptions())
		var docs []*client.Doc
		for i := range n {
			d := mustOpen(t, a, "doc-"+itoa(i))
			if err := d.Insert(0, itoa(i)); err != nil {
				t.Fatal(err)
			}
			docs = append(docs, d)
		}
		ts.start()
		synced, refused := 0, 0
		waitFor(t, 10*time.Second, "every doc synced or refused", func() bool {
			synced, refused = 0, 0
			for _, d := range docs {
				switch st := d.Status(); {
				case st.State == client.Synced:
					synced++
				case st.Err != nil:
					refused++
				}
			}
			return synced+refused == n
		})
		want := min(n, protocol.MaxDocsPerSocket)
		if synced != want || refused != n-want {
			t.Fatalf("%d docs: %d synced, %d refused", n, synced, refused)
		}
		if joins, wantJoins := framesOf(t, reg, "join"), (n+protocol.MaxDocsPerFrame-1)/protocol.MaxDocsPerFrame; joins != wantJoins {
			t.Fatalf("%d docs: %d Join frames, want %d", n, joins, wantJoins)
		}
		_ = a.Close()
		ts.stop()
	}
}

// framesOf reads the server's count of received frames of a kind.
func framesOf(t *testing.T, reg *prometheus.Registry, kind string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "weft_frames_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return 0
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestPresence(t *testing.T) {
	ts := startServer(t, syncer.ServerOptions{})
	presence := make(chan struct{}, 16)
	o := fastOptions()
	o.User = protocol.User{Name: "Ada", Color: "#e4572e"}
	a := mustDial(t, ts.url(), o)
	o2 := fastOptions()
	o2.User = protocol.User{Name: "Grace", Color: "#17bebb"}
	o2.OnPresence = func(*client.Doc) {
		select {
		case presence <- struct{}{}:
		default:
		}
	}
	b := mustDial(t, ts.url(), o2)
	da, db := mustOpen(t, a, "p"), mustOpen(t, b, "p")
	if err := da.Insert(0, "hello world"); err != nil {
		t.Fatal(err)
	}
	converged(t, 10*time.Second, da, db)
	if err := da.SetPresence(6, []client.Range{{Anchor: 0, Head: 5}}, nil); err != nil {
		t.Fatal(err)
	}
	var peers []client.PeerInfo
	waitFor(t, 10*time.Second, "b to see a's cursor", func() bool {
		peers = db.Peers()
		return len(peers) == 1 && peers[0].Resolved && peers[0].Cursor == 6
	})
	p := peers[0]
	if p.User.Name != "Ada" || p.Agent != a.Agent() || len(p.Selections) != 1 || p.Selections[0] != (client.Range{Anchor: 0, Head: 5}) {
		t.Fatalf("peer %+v", p)
	}
	// The cursor is anchored: text typed before it moves it.
	if err := db.Insert(0, ">> "); err != nil {
		t.Fatal(err)
	}
	converged(t, 10*time.Second, da, db)
	waitFor(t, 10*time.Second, "the cursor to follow its character", func() bool {
		peers = db.Peers()
		return len(peers) == 1 && peers[0].Cursor == 9
	})
	select {
	case <-presence:
	case <-time.After(time.Second):
		t.Fatal("OnPresence was not called")
	}
	// Leaving ends the presence.
	if err := da.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a's presence to end", func() bool { return len(db.Peers()) == 0 })
}

func TestLargePasteIsSplit(t *testing.T) {
	ts := startServer(t, syncer.ServerOptions{Limits: syncer.Limits{BytesPerSecond: -1, OpsPerSecond: -1}})
	a := mustDial(t, ts.url(), fastOptions())
	b := mustDial(t, ts.url(), fastOptions())
	da, db := mustOpen(t, a, "big"), mustOpen(t, b, "big")
	big := strings.Repeat("0123456789abcdé中🙂", 60_000) // ~1.6 MB in one insert
	if err := da.Insert(0, big); err != nil {
		t.Fatal(err)
	}
	text := converged(t, 20*time.Second, da, db)
	if text != big {
		t.Fatalf("got %d bytes, want %d", len(text), len(big))
	}
}

func TestUnauthorizedStopsUntilSetToken(t *testing.T) {
	ts := startServer(t, syncer.ServerOptions{Verifier: fixedVerifier{"good"}})
	o := fastOptions()
	o.Token = "bad"
	a := mustDial(t, ts.url(), o)
	errs := collectErrors(a)
	d := mustOpen(t, a, "secret")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := d.WaitSynced(ctx)
	var ce *client.Error
	if !asError(err, &ce) || !ce.Halted || ce.Status != 401 {
		t.Fatalf("WaitSynced = %v, want a halted 401", err)
	}
	dials := a.Stats().Dials
	time.Sleep(300 * time.Millisecond)
	if got := a.Stats().Dials; got != dials {
		t.Fatalf("dialled %d more times with a refused token", got-dials)
	}
	a.SetToken("good")
	waitSynced(t, d, 10*time.Second)
	_ = a.Close()
	errs.wg.Wait()
	if len(errs.list()) != 1 {
		t.Fatalf("errors %v", errs.list())
	}
}

func TestTokenFuncAndRefresh(t *testing.T) {
	ver := &expiringVerifier{now: time.Now, life: time.Second}
	ts := startServer(t, syncer.ServerOptions{Verifier: ver})
	var mu sync.Mutex
	calls := 0
	o := fastOptions()
	o.TokenFunc = func(ctx context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return ver.issue(), nil
	}
	a := mustDial(t, ts.url(), o)
	errs := collectErrors(a)
	d := mustOpen(t, a, "doc")
	waitSynced(t, d, 10*time.Second)
	// Several token lifetimes pass on one connection: refreshed in time.
	for range 12 {
		if err := d.Insert(0, "x"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	waitSynced(t, d, 10*time.Second)
	mu.Lock()
	n := calls
	mu.Unlock()
	if n < 3 {
		t.Fatalf("TokenFunc called %d times over 3 s of 1 s tokens", n)
	}
	if st := a.Stats(); st.Connects != 1 {
		t.Fatalf("stats %+v: the connection should have survived by refreshing", st)
	}
	_ = a.Close()
	errs.wg.Wait()
	if len(errs.list()) != 0 {
		t.Fatalf("errors %v", errs.list())
	}
}

func TestAgentPersistsWithState(t *testing.T) {
	path := t.TempDir() + "/state.db"
	a, err := client.Dial(t.Context(), "ws://127.0.0.1:1/v1/ws", client.Options{StatePath: path})
	if err != nil {
		t.Fatal(err)
	}
	agent := a.Agent()
	_ = a.Close()
	b, err := client.Dial(t.Context(), "ws://127.0.0.1:1/v1/ws", client.Options{StatePath: path})
	if err != nil {
		t.Fatal(err)
	}
	if b.Agent() != agent {
		t.Fatalf("agent %s, then %s", agent, b.Agent())
	}
	_ = b.Close()
	_, err = client.Dial(t.Context(), "ws://127.0.0.1:1/v1/ws", client.Options{StatePath: path, Agent: crdt.AgentKey{1}})
	if !errorsIs(err, client.ErrAgentMismatch) {
		t.Fatalf("other agent: %v", err)
	}
}

func TestBackoffCeiling(t *testing.T) {
	b := client.Backoff{Base: 100 * time.Millisecond, Cap: 2 * time.Second}
	want := []time.Duration{100, 200, 400, 800, 1600, 2000, 2000}
	for n, w := range want {
		if got := b.Ceiling(n); got != w*time.Millisecond {
			t.Fatalf("Ceiling(%d) = %s, want %s", n, got, w*time.Millisecond)
		}
	}
	if b.Ceiling(1000) != 2*time.Second {
		t.Fatal("no cap for large n")
	}
	for range 1000 {
		if d := b.Delay(3); d < 0 || d > 800*time.Millisecond {
			t.Fatalf("Delay(3) = %s", d)
		}
	}
}

// TestBacklogPacedToServerRate: a backlog made offline goes out within the
// server's advertised ops rate, so none of it is dropped as rate_limited.
func TestBacklogPacedToServerRate(t *testing.T) {
	ts := newServer(t, syncer.ServerOptions{Limits: syncer.Limits{OpsPerSecond: 500, OpsBurst: 1000}})
	a := mustDial(t, ts.url(), fastOptions())
	errs := collectErrors(a)
	d := mustOpen(t, a, "backlog")
	for i := range 1500 {
		if err := d.Insert(d.Len(), string(rune('a'+i%26))); err != nil {
			t.Fatal(err)
		}
	}
	ts.start()
	start := time.Now()
	waitSynced(t, d, 20*time.Second)
	took := time.Since(start)
	if took < 1500*time.Millisecond {
		t.Errorf("1500 ops at 500/s went out in %s", took)
	}
	if got := serverText(t, ts.url(), "backlog"); got != d.Text() {
		t.Fatalf("server has %d code points, client %d", len(got), d.Len())
	}
	_ = a.Close()
	errs.wg.Wait()
	if len(errs.list()) != 0 {
		t.Fatalf("errors: %v", errs.list())
	}
}

// TestTokenExpiredWithoutTokenFunc: a session whose token expires is closed
// with 4001; without TokenFunc the client reports it and stops until it is
// given a new token.
func TestTokenExpiredWithoutTokenFunc(t *testing.T) {
	ver := &expiringVerifier{now: time.Now, life: 300 * time.Millisecond}
	ts := startServer(t, syncer.ServerOptions{Verifier: ver})
	o := fastOptions()
	o.Token = ver.issue()
	a := mustDial(t, ts.url(), o)
	errs := collectErrors(a)
	d := mustOpen(t, a, "doc")
	waitSynced(t, d, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	waitFor(t, 10*time.Second, "the expiry to stop the client", func() bool { return d.Status().Err != nil })
	err := d.WaitSynced(ctx)
	var ce *client.Error
	if !asError(err, &ce) || !ce.Halted || ce.Code != protocol.CodeTokenExpired || ce.Close != protocol.CloseTokenExpired {
		t.Fatalf("WaitSynced = %v, want a halted token_expired (4001)", err)
	}
	if err := d.Insert(0, "offline meanwhile"); err != nil {
		t.Fatal(err)
	}
	a.SetToken(ver.issueFor(time.Hour))
	waitSynced(t, d, 10*time.Second)
	_ = a.Close()
	errs.wg.Wait()
	if got := errs.list(); len(got) != 1 {
		t.Fatalf("errors %v", got)
	}
}

// TestServerLostAckedIsReported: a server that comes back without edits
// it acknowledged (here: a new, empty data directory) is a broken durable
// ack. The client reports it, and heals the document by resending.
func TestServerLostAckedIsReported(t *testing.T) {
	ts := startServer(t, syncer.ServerOptions{GoingAwayRetry: 50 * time.Millisecond})
	a := mustDial(t, ts.url(), fastOptions())
	errs := collectErrors(a)
	d := mustOpen(t, a, "doc")
	if err := d.Insert(0, "acknowledged é中🙂"); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, d, 10*time.Second)
	acked := d.AckedSeq()
	ts.stop()
	ts.dir = t.TempDir() // the disk is gone
	ts.start()
	waitFor(t, 10*time.Second, "the loss to be reported", func() bool { return len(errs.list()) > 0 })
	var lost *client.LostAckedError
	if err := errs.list()[0]; !asError(err, &lost) || lost.Doc != "doc" || lost.From != 0 || lost.To != acked {
		t.Fatalf("reported %v, want seqs [0, %d) of doc lost", err, acked)
	}
	waitSynced(t, d, 10*time.Second)
	if got := serverText(t, ts.url(), "doc"); got != "acknowledged é中🙂" {
		t.Fatalf("server has %q after healing", got)
	}
}

// TestDeletedDoc: when the server deletes a document, that replica stops
// syncing (it would recreate the document) while the client's other
// documents go on; Discard then starts over from the server.
func TestDeletedDoc(t *testing.T) {
	ts := startServer(t, syncer.ServerOptions{})
	o := fastOptions()
	o.StatePath = t.TempDir() + "/state.db"
	a := mustDial(t, ts.url(), o)
	errs := collectErrors(a)
	gone, kept := mustOpen(t, a, "gone"), mustOpen(t, a, "kept")
	for _, d := range []*client.Doc{gone, kept} {
		if err := d.Insert(0, "text of "+d.ID()); err != nil {
			t.Fatal(err)
		}
		waitSynced(t, d, 10*time.Second)
	}
	req, _ := http.NewRequest(http.MethodDelete, "http://"+ts.addr+"/v1/docs/gone", nil)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	waitFor(t, 10*time.Second, "the deletion to reach the client", func() bool { return errorsIs(gone.Status().Err, client.ErrDeleted) })
	if err := kept.Insert(0, "still "); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, kept, 10*time.Second)
	if got := serverText(t, ts.url(), "kept"); got != "still text of kept" {
		t.Fatalf("kept: server has %q", got)
	}
	if got := serverText(t, ts.url(), "gone"); got != "" {
		t.Fatalf("gone came back: %q", got)
	}
	if err := gone.Discard(); err != nil {
		t.Fatal(err)
	}
	again := mustOpen(t, a, "gone")
	waitSynced(t, again, 10*time.Second)
	if again.Text() != "" {
		t.Fatalf("discarded replica reopened with %q", again.Text())
	}
	_ = a.Close()
	errs.wg.Wait()
	for _, err := range errs.list() {
		var ce *client.Error
		if !asError(err, &ce) || ce.Code != protocol.CodeNotFound || ce.Doc != "gone" {
			t.Errorf("unexpected error %v", err)
		}
	}
}
