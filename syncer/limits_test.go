package syncer_test

import (
	"encoding/binary"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
	"github.com/weft-sync/weft/syncer"
)

// hostileDelta is a Delta frame for doc whose ops array header is a 5-byte
// array32 claiming 2^32-1 elements, with nothing behind it.
func hostileDelta(doc string, clientSeq byte) []byte {
	b := []byte{0x94, byte(protocol.KindDelta), 0xa0 | byte(len(doc))}
	b = append(b, doc...)
	b = append(b, clientSeq&0x7f)
	b = append(b, 0x92, 0x90)                      // [agents: [], ops: ...]
	return append(b, 0xdd, 0xff, 0xff, 0xff, 0xff) // array32 of 4294967295
}

// TestServer_BadFramesHarmOnlyTheirConnection sends malformed, oversized
// and hostile frames: each gets an error (or the 1009 close) for its own
// connection, while other clients of the document keep editing and
// converge, and the bad client's connection survives where it should.
func TestServer_BadFramesHarmOnlyTheirConnection(t *testing.T) {
	ts := startServer(t, t.TempDir(), syncer.Options{}, syncer.ServerOptions{})
	good1, good2 := mustDial(t, ts.url), mustDial(t, ts.url)
	good1.join("doc")
	good2.join("doc")
	bad := mustDial(t, ts.url)
	bad.join("doc")

	editBoth := func(tag string) {
		t.Helper()
		good1.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, tag+"1") })
		good2.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, tag+"2😀") })
	}
	converged := func() {
		t.Helper()
		good1.waitAcked()
		good2.waitAcked()
		good1.waitFor(func() bool { return good1.docs["doc"].Version().Covers(good2.docs["doc"].Version()) }, "good1 to catch up")
		good2.waitFor(func() bool { return good2.docs["doc"].Version().Covers(good1.docs["doc"].Version()) }, "good2 to catch up")
		if a, b := good1.text("doc"), good2.text("doc"); a != b {
			t.Fatalf("diverged: %q vs %q", a, b)
		}
	}

	for _, tc := range []struct {
		name  string
		frame []byte
		code  protocol.ErrorCode
	}{
		{"not msgpack", []byte{0xc1, 0xc1, 0xc1}, protocol.CodeMalformed},
		{"truncated", []byte{0x94, byte(protocol.KindDelta), 0xa3, 'd'}, protocol.CodeMalformed},
		{"unknown kind", []byte{0x91, 0x7f}, protocol.CodeUnknownKind},
		{"hostile array32 header", hostileDelta("doc", 1), protocol.CodeMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad.mu.Lock()
			before := len(bad.errs())
			bad.mu.Unlock()
			if err := bad.sendRaw(tc.frame); err != nil {
				t.Fatal(err)
			}
			editBoth(tc.name)
			var got *protocol.Error
			bad.waitFor(func() bool {
				if es := bad.errs(); len(es) > before {
					got = es[before]
				}
				return got != nil
			}, "an error frame")
			// A hostile length may be reported as too large or malformed;
			// either way it is typed, and not internal.
			if got.Code != tc.code && !(tc.code == protocol.CodeMalformed && got.Code == protocol.CodeTooLarge) {
				t.Fatalf("error %v, want %v", got, tc.code)
			}
			converged()
			// The bad client's connection still works.
			bad.send(&protocol.Ping{Nonce: uint64(before) + 1})
			bad.waitFor(func() bool {
				for _, p := range ofKind[*protocol.Pong](bad.frames) {
					if p.Nonce == uint64(before)+1 {
						return true
					}
				}
				return false
			}, "pong after a bad frame")
		})
	}

	t.Run("oversized", func(t *testing.T) {
		// A raw client sends just the header of a frame one byte over the
		// limit: gws refuses it from the length alone and closes with 1009.
		// (A real client streaming the body would race the close with a
		// reset of its socket.)
		rc := dialRaw(t, ts.url, 0)
		rc.writeFrame(t, &protocol.Hello{Client: "raw", Agent: newAgent()})
		hdr := []byte{0x82, 0x80 | 127}
		hdr = binary.BigEndian.AppendUint64(hdr, protocol.MaxFrameBytes+1)
		hdr = append(hdr, 1, 2, 3, 4) // mask
		if _, err := rc.Write(hdr); err != nil {
			t.Fatal(err)
		}
		code := rc.closeCode(t)
		if code != uint16(protocol.CloseTooBig) {
			t.Fatalf("closed with %d, want 1009", code)
		}
		editBoth("after")
		converged()
	})
	back := readBack(t, ts.url, "doc")["doc"]
	if back.String() != good1.text("doc") {
		t.Fatalf("read back %q, want %q", back.String(), good1.text("doc"))
	}
}

// TestServer_RateLimited: past OpsPerSecond a delta gets CodeRateLimited
// with a retry-after, and nothing past the limit is applied; deltas within
// the limit are acked.
func TestServer_RateLimited(t *testing.T) {
	const burst = 10
	ts := startServer(t, t.TempDir(), syncer.Options{}, syncer.ServerOptions{
		// Practically no refill during the test: exactly the burst passes.
		Limits: syncer.Limits{OpsPerSecond: 0.001, OpsBurst: burst},
	})
	a := mustDial(t, ts.url)
	a.join("doc")
	var seqs []uint64
	for i := range burst + 5 {
		seqs = append(seqs, a.edit("doc", func(r *crdt.Text) (crdt.Delta, error) {
			return r.Insert(r.Len(), strconv.Itoa(i%10))
		}))
	}
	a.waitFor(func() bool { return len(a.acked)+len(a.errs()) == len(seqs) }, "an answer to every delta")
	a.mu.Lock()
	for i, seq := range seqs {
		_, acked := a.acked[seq]
		var limited *protocol.Error
		for _, e := range a.errs() {
			if e.ClientSeq == seq {
				limited = e
			}
		}
		switch {
		case i < burst && !acked:
			t.Errorf("delta %d within the limit not acked (%v)", i, limited)
		case i >= burst && (limited == nil || limited.Code != protocol.CodeRateLimited || limited.RetryAfterMs == 0):
			t.Errorf("delta %d past the limit: ack %v, error %v", i, acked, limited)
		}
	}
	a.mu.Unlock()
	if got := readBack(t, ts.url, "doc")["doc"].String(); got != "0123456789" {
		t.Fatalf("server holds %q, want only the first %d edits", got, burst)
	}
}

// TestServer_SlowConsumerClosed: a client that stops reading is closed once
// its queue passes SendBudget, while the other clients receive every update.
func TestServer_SlowConsumerClosed(t *testing.T) {
	ts := startServerWith(t, t.TempDir(), serverConfig{
		// Room for the updates a healthy reader has in flight (the writer
		// waits for its acks every two edits), not for a stalled one.
		srv: syncer.ServerOptions{Limits: syncer.Limits{SendBudget: 256 << 10}},
	})
	writer, reader := mustDial(t, ts.url), mustDial(t, ts.url)
	writer.join("doc")
	reader.join("doc")
	// The slow one: a raw socket with a small receive buffer that joins
	// and then never reads again.
	slow := dialRaw(t, ts.url, 4<<10)
	slow.writeFrame(t, &protocol.Hello{Client: "slow", Agent: newAgent()})
	slow.writeFrame(t, &protocol.Join{Docs: []protocol.JoinDoc{{Doc: "doc"}}})
	waitFor(t, "three connections", func() bool { return ts.srv.Connections() == 3 })
	// The join is in once the writer's first update reaches the slow one's
	// queue; the budget is what bounds it from then on.
	chunk := strings.Repeat("ab€😀", 1<<10) // 9 KiB
	closed, edits := false, 0
	for ; edits < 400 && !closed; edits++ {
		i := edits
		writer.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(r.Len(), chunk) })
		if i%2 == 1 {
			writer.waitAcked()
			closed = ts.metric("weft_closes_total") > 0 // counted when it is cut
		}
	}
	waitFor(t, "the slow consumer to be closed", func() bool { return ts.srv.Connections() == 2 })
	t.Logf("closed after %d edits of %d bytes", edits, len(chunk))
	if n := ts.metric("weft_closes_total"); n < 1 {
		t.Fatalf("%v closes counted", n)
	}
	if !slow.drainUntilClosed() {
		t.Fatal("the slow consumer's socket is still open")
	}
	writer.waitAcked()
	want := writer.text("doc")
	reader.waitFor(func() bool { return reader.docs["doc"].Len() == writer.docs["doc"].Len() }, "the reader to get every update")
	if reader.text("doc") != want {
		t.Fatal("the reader diverged")
	}
	reader.mu.Lock()
	defer reader.mu.Unlock()
	if reader.closed != nil {
		t.Fatalf("the reader was closed: %v", reader.closed)
	}
}

// TestServer_Admission: over the upgrade rate, connections get 429 with
// Retry-After before any upgrade; over the join rate, joins get
// CodeOverloaded with a retry-after.
func TestServer_Admission(t *testing.T) {
	ts := startServer(t, t.TempDir(), syncer.Options{}, syncer.ServerOptions{
		UpgradesPerSecond: 0.001, UpgradeBurst: 2,
		JoinsPerSecond: 0.001, JoinBurst: 3,
	})
	a, b := mustDial(t, ts.url), mustDial(t, ts.url)
	resp, body := httpUpgrade(t, ts, "", nil)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third upgrade: status %d", resp.StatusCode)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	if body["error"] != "overloaded" {
		t.Fatalf("body %v", body)
	}
	if _, err := dial(t, ts.url, nil); err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("gws dial over the rate: %v", err)
	}

	a.join("j1", "j2")
	b.join("j3")
	b.joinSent("j4")
	e := b.waitErr(protocol.CodeOverloaded)
	if e.Doc != "j4" || e.RetryAfterMs == 0 {
		t.Fatalf("join over the rate: %+v", e)
	}
	// The admitted ones work.
	a.edit("j2", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "ok") })
	a.waitAcked()
	if got := ts.hub.Loaded(); len(got) != 3 {
		t.Fatalf("loaded %v, want j1..j3", got)
	}
}

// TestServer_ConnsPerIP: past MaxConnsPerIP an address gets 429; a slot
// frees when a connection closes.
func TestServer_ConnsPerIP(t *testing.T) {
	ts := startServer(t, t.TempDir(), syncer.Options{}, syncer.ServerOptions{MaxConnsPerIP: 2})
	a := mustDial(t, ts.url)
	mustDial(t, ts.url)
	resp, body := httpUpgrade(t, ts, "", nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || body["error"] != "overloaded" {
		t.Fatalf("third connection: %d %v %v", resp.StatusCode, resp.Header, body)
	}
	a.disconnect()
	waitFor(t, "the slot to free", func() bool { return ts.srv.Connections() == 1 })
	mustDial(t, ts.url)
}
