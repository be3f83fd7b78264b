package main

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weft-sync/weft/client"
	"github.com/weft-sync/weft/crdt"
)

// TestLoad_ServerCrash runs `weft load` (its run function, in this
// process) against `weft serve` in a child process, kills the server with
// SIGKILL twice in the middle of the run and restarts it on the same data
// directory and port. The clients reconnect and resync; at the end every
// replica and the server agree, and every edit the server acknowledged is
// in its document.
func TestLoad_ServerCrash(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	dir := t.TempDir()
	p := startServe(t, nil, "--addr", "127.0.0.1:0", "--data", dir)
	addr := strings.TrimPrefix(p.url, "http://")
	if _, _, err := net.SplitHostPort(addr); err != nil {
		t.Fatalf("server url %q", p.url)
	}
	type outcome struct {
		res *loadResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := runLoad(context.Background(), loadConfig{
			URL: p.ws, Docs: 4, Clients: 12, Rate: 40, Duration: 4 * time.Second,
			Settle: 30 * time.Second, Progress: t.Output(),
		})
		done <- outcome{res, err}
	}()
	for _, at := range []time.Duration{1200 * time.Millisecond, 1500 * time.Millisecond} {
		time.Sleep(at)
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-p.done
		time.Sleep(200 * time.Millisecond) // clients find it down
		p = startServe(t, nil, "--addr", addr, "--data", dir)
	}
	var o outcome
	select {
	case o = <-done:
	case <-time.After(90 * time.Second):
		t.Fatal("weft load did not finish")
	}
	if o.err != nil {
		t.Fatal(o.err)
	}
	r := o.res
	r.summary(t.Output())
	if !r.Converged || r.LostAcked != 0 {
		t.Fatalf("converged %v, lost_acked %d: %v", r.Converged, r.LostAcked, r.problems)
	}
	// Each client reconnected at least once (a client whose backoff
	// outlasted the up time between the crashes reconnects once).
	if r.Reconnects < int64(r.Clients) {
		t.Errorf("%d reconnects of %d clients", r.Reconnects, r.Clients)
	}
	if r.OpsAcked == 0 || r.OpsAcked > r.OpsSent || r.Delivered == 0 || r.Errors != 0 {
		t.Errorf("result %+v", r)
	}
	p.stop()
}

// TestLoad_DetectsLostAcks: the same crash, but the server comes back on
// an empty data directory, as if its disk had been lost. The clients heal
// the documents by resending, so they still converge, but weft load counts
// the acknowledged edits the server had lost and fails.
func TestLoad_DetectsLostAcks(t *testing.T) {
	p := startServe(t, nil, "--addr", "127.0.0.1:0", "--data", t.TempDir())
	addr := strings.TrimPrefix(p.url, "http://")
	done := make(chan *loadResult, 1)
	go func() {
		res, err := runLoad(context.Background(), loadConfig{
			URL: p.ws, Docs: 2, Clients: 4, Rate: 40, Duration: 2 * time.Second,
			Settle: 30 * time.Second,
		})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	time.Sleep(time.Second)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p = startServe(t, nil, "--addr", addr, "--data", t.TempDir())
	r := <-done
	if r == nil {
		t.FailNow()
	}
	if r.LostAcked == 0 || !r.Converged {
		t.Fatalf("lost_acked %d, converged %v: %v", r.LostAcked, r.Converged, r.problems)
	}
	t.Logf("%d of %d acknowledged edits reported lost", r.LostAcked, r.OpsAcked)
	p.stop()
}

// TestLoad_JSON runs the command and reads its last line.
func TestLoad_JSON(t *testing.T) {
	p := startServe(t, nil, "--addr", "127.0.0.1:0", "--data", t.TempDir())
	stdout, stderr, code := runWeft(t, "load", "--url", p.ws, "--docs", "2", "--clients", "6", "--rate", "25", "--duration", "1s", "--json")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	last := lines[len(lines)-1]
	var m map[string]any
	if err := json.Unmarshal([]byte(last), &m); err != nil {
		t.Fatalf("last line %q: %v", last, err)
	}
	for _, k := range []string{"docs", "clients", "ops_sent", "ops_acked", "delivered", "p50_ms", "p99_ms", "max_ms", "errors", "reconnects", "converged", "lost_acked"} {
		if _, ok := m[k]; !ok {
			t.Errorf("no %q in %s", k, last)
		}
	}
	if m["converged"] != true || m["lost_acked"] != 0.0 || m["docs"] != 2.0 || m["clients"] != 6.0 || m["ops_sent"].(float64) < 30 {
		t.Fatalf("result %s", last)
	}
	// 6 clients on 2 docs: each edit reaches the 2 other clients of its doc.
	if m["delivered"].(float64) != 2*m["ops_sent"].(float64) {
		t.Errorf("delivered %v of %v edits × 2 receivers", m["delivered"], m["ops_sent"])
	}
	p.stop()
}

func TestLoad_Flags(t *testing.T) {
	for _, args := range [][]string{
		{"--url", "ws://10.1.2.3:8080/v1/ws"}, // not loopback
		{"--url", "http://127.0.0.1:8080/v1/ws"},
		{"--clients", "0"},
		{"--docs", "5", "--clients", "4"},
		{"--rate", "0"},
		{"--duration", "2h"},
		{"extra"},
	} {
		if _, stderr, code := runWeft(t, append([]string{"load"}, args...)...); code != 2 {
			t.Errorf("weft load %q: exit %d, want 2\n%s", args, code, stderr)
		}
	}
}

// TestLoad_CheckAcked shows the lost-edit check is not vacuous: it flags
// acknowledged edits whose ops, inserted text or deletes the server lacks.
func TestLoad_CheckAcked(t *testing.T) {
	me := crdt.AgentKey{1}
	srv := crdt.New(crdt.AgentKey{9})
	mine := crdt.New(me)
	d1, _ := mine.Insert(0, "héllo")      // seqs 0-4
	d2, _ := mine.Delete(0, 1)            // seq 5
	d3, _ := mine.Insert(4, "🙂")          // seq 6
	if err := srv.Apply(d1); err != nil { // the server got the first edit only
		t.Fatal(err)
	}
	edits := []*edit{
		{lo: 0, hi: 5, ins: []insRun{{seq: 0, text: "héllo"}}},
		{lo: 5, hi: 6, dels: []crdt.ID{{Agent: me, Seq: 0}}, delN: []uint64{1}},
		{lo: 6, hi: 7, ins: []insRun{{seq: 6, text: "🙂"}}},
	}
	if n := checkAcked(srv, me, edits, 7, nil, nil); n != 2 {
		t.Fatalf("%d lost, want 2 (the delete and the last insert)", n)
	}
	if n := checkAcked(srv, me, edits, 5, nil, nil); n != 0 {
		t.Fatalf("%d lost among the acked first edit", n)
	}
	for _, d := range []crdt.Delta{d2, d3} {
		if err := srv.Apply(d); err != nil {
			t.Fatal(err)
		}
	}
	deleted := map[crdt.ID]bool{{Agent: me, Seq: 0}: true}
	if n := checkAcked(srv, me, edits, 7, deleted, nil); n != 0 {
		t.Fatalf("%d lost once the server has everything", n)
	}
	// An edit a server reported lost (and the client resent) is lost.
	if n := checkAcked(srv, me, edits, 7, deleted, []*client.LostAckedError{{From: 6, To: 7}}); n != 1 {
		t.Fatalf("%d lost, want the reported one", n)
	}
	// A character deleted that no client deleted is lost.
	if n := checkAcked(srv, me, edits, 7, nil, nil); n != 1 {
		t.Fatalf("%d lost, want the first insert (its 'h' vanished without a delete on record)", n)
	}
}
