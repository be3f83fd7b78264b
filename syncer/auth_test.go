package syncer_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/weft-sync/weft/auth"
	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
	"github.com/weft-sync/weft/syncer"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func authServer(t *testing.T) (*testServer, *auth.Issuer) {
	t.Helper()
	v, err := auth.NewVerifier(auth.Config{HS256Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := auth.NewHS256Issuer(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, t.TempDir(), syncer.Options{}, syncer.ServerOptions{Verifier: v})
	return ts, iss
}

func issue(t *testing.T, iss *auth.Issuer, exp time.Time, docs map[string]auth.Perm) string {
	t.Helper()
	tok, err := iss.Issue(auth.Claims{Subject: "user-1", Name: "Ada", ExpiresAt: exp, Docs: docs})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// httpUpgrade tries the WebSocket handshake with a plain HTTP client, to
// read a refusal's status, headers and JSON body.
func httpUpgrade(t *testing.T, ts *testServer, query string, header http.Header) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest("GET", ts.http.URL+"/v1/ws"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", syncer.Subprotocol)
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if resp.StatusCode != http.StatusSwitchingProtocols {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("refusal with content type %q", ct)
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("refusal body: %v", err)
		}
	}
	return resp, body
}

func TestServer_AuthRefusedBeforeUpgrade(t *testing.T) {
	ts, iss := authServer(t)
	other, err := auth.NewHS256Issuer([]byte("another secret that is long enough"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		query  string
		header http.Header
		code   string
	}{
		{"no token", "", nil, "unauthorized"},
		{"garbage", "?token=not.a.jwt", nil, "unauthorized"},
		{"wrong key", "?token=" + issue(t, other, time.Now().Add(time.Hour), map[string]auth.Perm{"*": auth.Write}), nil, "unauthorized"},
		{"expired", "", http.Header{"Authorization": {"Bearer " + issue(t, iss, time.Now().Add(-time.Minute), map[string]auth.Perm{"*": auth.Write})}}, "token_expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := httpUpgrade(t, ts, tc.query, tc.header)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", resp.StatusCode)
			}
			if body["error"] != tc.code || body["message"] == "" {
				t.Fatalf("body %v, want error %q with a message", body, tc.code)
			}
		})
	}
	// And the gws client sees the same status.
	_, err = dial(t, ts.url, nil)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("dial without a token: %v", err)
	}
	if n := ts.srv.Connections(); n != 0 {
		t.Fatalf("%d connections after refusals", n)
	}
}

func TestServer_AuthPermissions(t *testing.T) {
	ts, iss := authServer(t)
	tok := issue(t, iss, time.Now().Add(time.Hour), map[string]auth.Perm{"team/*": auth.Write, "team/ro": auth.Read})
	c, err := dial(t, ts.url+"?token="+tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.hello("")
	c.mu.Lock()
	welcome := ofKind[*protocol.Welcome](c.frames)[0]
	c.mu.Unlock()
	if want := uint64(time.Now().Add(time.Hour).Truncate(time.Second).UnixMilli()); welcome.ExpiresAt == 0 || welcome.ExpiresAt > want+1000 {
		t.Fatalf("welcome expires at %d, want about %d", welcome.ExpiresAt, want)
	}

	// A document the token does not name: forbidden on join.
	c.joinSent("secret")
	e := c.waitErr(protocol.CodeForbidden)
	if e.Doc != "secret" {
		t.Fatalf("forbidden join names %q", e.Doc)
	}
	// Read-only: the join works, a delta is refused loudly, never dropped.
	c.join("team/ro", "team/rw")
	seq := c.edit("team/ro", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "nope") })
	c.waitFor(func() bool {
		for _, e := range c.errs() {
			if e.Code == protocol.CodeForbidden && e.ClientSeq == seq && e.Doc == "team/ro" {
				return true
			}
		}
		return false
	}, "forbidden for the read-only delta")
	// Writable: acked, and the connection is still fine.
	c.edit("team/rw", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "yes") })
	c.waitFor(func() bool { return len(c.acked) == 1 }, "the writable delta's ack")
	back := readBack(t, ts.url+"?token="+tok, "team/ro", "team/rw")
	if back["team/ro"].Len() != 0 || back["team/rw"].String() != "yes" {
		t.Fatalf("read back %q and %q", back["team/ro"].String(), back["team/rw"].String())
	}
}

// TestServer_TokenExpiryAndRefresh: a session whose token expires gets
// CodeTokenExpired and close 4001; a session that refreshed over the socket
// in time carries on.
func TestServer_TokenExpiryAndRefresh(t *testing.T) {
	ts, iss := authServer(t)
	docs := map[string]auth.Perm{"*": auth.Write}
	// JWT expiry has one-second precision: this leaves one to two seconds.
	short := issue(t, iss, time.Now().Truncate(time.Second).Add(2*time.Second), docs)
	expiring, err := dial(t, ts.url+"?token="+short, nil)
	if err != nil {
		t.Fatal(err)
	}
	expiring.hello("")
	expiring.join("doc")
	refreshed, err := dial(t, ts.url+"?token="+short, nil)
	if err != nil {
		t.Fatal(err)
	}
	refreshed.hello("")
	refreshed.join("doc")
	long := issue(t, iss, time.Now().Add(time.Hour), docs)
	refreshed.send(&protocol.Refresh{Token: long})
	var got *protocol.Refreshed
	refreshed.waitFor(func() bool {
		if rs := ofKind[*protocol.Refreshed](refreshed.frames); len(rs) > 0 {
			got = rs[0]
		}
		return got != nil
	}, "refreshed")
	if want := uint64(time.Now().Add(time.Hour).Truncate(time.Second).UnixMilli()); got.ExpiresAt > want+1000 || got.ExpiresAt+5000 < want {
		t.Fatalf("refreshed until %d, want about %d", got.ExpiresAt, want)
	}

	// The other session, on the same short token, expires; keep it busy
	// sending so that the close must get past its traffic.
	for i := 0; ; i++ {
		expiring.mu.Lock()
		done := expiring.closed != nil
		expiring.mu.Unlock()
		if done || i == 10000 {
			break
		}
		if _, err := expiring.tryEdit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "x") }); err != nil {
			break
		}
		if i%100 == 99 {
			expiring.waitFor(func() bool { return expiring.closed != nil || len(expiring.acked) > i-50 }, "acks")
		}
	}
	expiring.waitFor(func() bool { return expiring.closed != nil }, "the expired session to close")
	expiring.mu.Lock()
	e := expiring.errCode(protocol.CodeTokenExpired)
	code := expiring.closeCode()
	expiring.mu.Unlock()
	if e == nil || code != uint16(protocol.CloseTokenExpired) {
		t.Fatalf("expired session: error %v, close code %d (%v)", e, code, expiring.closed)
	}
	// The refreshed one is past the old expiry and still works.
	refreshed.edit("doc", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "still here") })
	refreshed.waitAcked()
	refreshed.mu.Lock()
	defer refreshed.mu.Unlock()
	if refreshed.closed != nil || refreshed.errCode(protocol.CodeTokenExpired) != nil {
		t.Fatalf("refreshed session ended: %v %v", refreshed.closed, refreshed.errs())
	}
}
