package syncer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/lxzan/gws"

	"github.com/weft-sync/weft/auth"
	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
	"github.com/weft-sync/weft/store"
	"github.com/weft-sync/weft/syncer"
)

// apiServer is a test server (real bbolt file, 127.0.0.1) with the HTTP
// API served on a second listener over the same syncer.Server.
type apiServer struct {
	*testServer
	base   string // http://127.0.0.1:port
	client *http.Client
}

func startAPI(t *testing.T, hopts syncer.Options, sopts syncer.ServerOptions, aopts syncer.APIOptions) *apiServer {
	t.Helper()
	ts := startServer(t, t.TempDir(), hopts, sopts)
	hs := httptest.NewServer(ts.srv.APIHandlerWith(aopts))
	tr := &http.Transport{}
	// Shut the syncer server down first: that ends event streams, which
	// the HTTP server's Close waits for.
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ts.stop()
		hs.Close()
	})
	return &apiServer{testServer: ts, base: hs.URL, client: &http.Client{Transport: tr}}
}

// request sends a request and returns the status and the body.
func (as *apiServer) request(t *testing.T, method, path, token string, body io.Reader, hdr http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, as.base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := as.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNoContent && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("%s %s: Content-Type %q, body %q", method, path, resp.Header.Get("Content-Type"), b)
	}
	return resp.StatusCode, b
}

// call sends a request with a JSON (or empty) body and decodes the answer
// into out when it is not nil.
func (as *apiServer) call(t *testing.T, method, path, token, body string, out any) int {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	status, b := as.request(t, method, path, token, r, nil)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %q", method, path, err, b)
		}
	}
	return status
}

// wantError checks an error answer: status and code.
func (as *apiServer) wantError(t *testing.T, method, path, token, body string, status int, code string) apiErr {
	t.Helper()
	var e apiErr
	if got := as.call(t, method, path, token, body, &e); got != status || e.Error != code || e.Message == "" {
		t.Fatalf("%s %s: got %d %+v, want %d %q with a message", method, path, got, e, status, code)
	}
	return e
}

type apiErr struct {
	Error    string  `json:"error"`
	Message  string  `json:"message"`
	Version  *uint64 `json:"version"`
	Inserted *int    `json:"inserted"`
}

type docView struct {
	ID      string `json:"id"`
	Text    string `json:"text"`
	Version uint64 `json:"version"`
}

func (as *apiServer) get(t *testing.T, doc string) docView {
	t.Helper()
	var d docView
	if s := as.call(t, "GET", "/v1/docs/"+doc, "", "", &d); s != http.StatusOK {
		t.Fatalf("GET %s: %d", doc, s)
	}
	return d
}

// edits posts edits and returns the version. doc may carry a query
// ("doc?name=ann").
func (as *apiServer) edits(t *testing.T, doc, token string, edits ...syncer.Edit) uint64 {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"edits": edits})
	var out struct {
		Version uint64 `json:"version"`
	}
	path, query, _ := strings.Cut(doc, "?")
	path = "/v1/docs/" + path + "/edits"
	if query != "" {
		path += "?" + query
	}
	if s := as.call(t, "POST", path, token, string(b), &out); s != http.StatusOK || out.Version == 0 {
		t.Fatalf("POST edits to %s: %d, version %d", doc, s, out.Version)
	}
	return out.Version
}

func ins(pos int, s string) syncer.Edit { return syncer.Edit{Pos: pos, Insert: s} }

// apiPoll polls cond until it holds, bounded in time.
func apiPoll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for delay := time.Millisecond; !cond(); delay = min(2*delay, 20*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(delay)
	}
}

// --- a Server-Sent Events client ---------------------------------------------

type sseEvent struct {
	ID, Name, Data string
	Comment        string // a comment line (": ping"), sent alone
}

type sseStream struct {
	resp   *http.Response
	events chan sseEvent
	cancel context.CancelFunc
}

// openSSE opens an event stream and parses it on a goroutine that ends
// when the body closes (at cleanup, or when the server ends the stream).
func (as *apiServer) openSSE(t *testing.T, path, token string, hdr http.Header) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", as.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := as.client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if ct, cc := resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"); !strings.HasPrefix(ct, "text/event-stream") || cc != "no-store" {
		t.Fatalf("GET %s: Content-Type %q, Cache-Control %q", path, ct, cc)
	}
	s := &sseStream{resp: resp, events: make(chan sseEvent, 1024), cancel: cancel}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.Name != "" || len(data) > 0 {
					ev.Data = strings.Join(data, "\n")
					s.events <- ev
				}
				ev, data = sseEvent{}, nil
			case strings.HasPrefix(line, ":"):
				s.events <- sseEvent{Comment: strings.TrimSpace(line[1:])}
			default:
				field, value, _ := strings.Cut(line, ":")
				value = strings.TrimPrefix(value, " ")
				switch field {
				case "id":
					ev.ID = value
				case "event":
					ev.Name = value
				case "data":
					data = append(data, value)
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-done
	})
	return s
}

// next returns the next event, skipping comments; ok is false when the
// stream ended.
func (s *sseStream) next(t *testing.T) (sseEvent, bool) {
	t.Helper()
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return ev, false
			}
			if ev.Comment != "" {
				continue
			}
			return ev, true
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for an event")
		}
	}
}

func (s *sseStream) mustNext(t *testing.T, name string) sseEvent {
	t.Helper()
	ev, ok := s.next(t)
	if !ok {
		t.Fatalf("stream ended, want %s", name)
	}
	if ev.Name != name {
		t.Fatalf("got event %q (%s), want %q", ev.Name, ev.Data, name)
	}
	return ev
}

func decode[T any](t *testing.T, data string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(data), &v); err != nil {
		t.Fatalf("%v in %q", err, data)
	}
	return v
}

type updateData struct {
	Edits   []syncer.Edit `json:"edits"`
	Version uint64        `json:"version"`
	Author  string        `json:"author"`
}

// closeCodeOf returns the close code a wsClient got (c.mu held).
func closeCodeOf(c *wsClient) uint16 {
	var ce *gws.CloseError
	if errors.As(c.closed, &ce) {
		return ce.Code
	}
	return 0
}

// --- tests ----------------------------------------------------------------------

func TestAPI_ListGetNotFound(t *testing.T) {
	as := startAPI(t, syncer.Options{IdleTimeout: 20 * time.Millisecond}, syncer.ServerOptions{}, syncer.APIOptions{})
	var list struct {
		Docs []map[string]any `json:"docs"`
	}
	if s := as.call(t, "GET", "/v1/docs", "", "", &list); s != http.StatusOK || list.Docs == nil || len(list.Docs) != 0 {
		t.Fatalf("empty list: %d %v", s, list.Docs)
	}
	as.edits(t, "b", "", ins(0, "héllo 𝄞"))
	v := as.edits(t, "b", "", ins(0, ">"))
	as.edits(t, "notes%2Ftodo", "", ins(0, "x"))

	if d := as.get(t, "b"); d.ID != "b" || d.Text != ">héllo 𝄞" || d.Version != v {
		t.Fatalf("GET b = %+v, want version %d", d, v)
	}
	if d := as.get(t, "notes%2Ftodo"); d.ID != "notes/todo" || d.Text != "x" || d.Version != 1 {
		t.Fatalf("GET notes/todo = %+v", d)
	}
	as.wantError(t, "GET", "/v1/docs/nope", "", "", http.StatusNotFound, "not_found")
	as.wantError(t, "GET", "/v1/docs/nope/history", "", "", http.StatusNotFound, "not_found")
	as.wantError(t, "GET", "/v1/docs/nope/events", "", "", http.StatusNotFound, "not_found")
	as.wantError(t, "DELETE", "/v1/docs/nope", "", "", http.StatusNotFound, "not_found")
	as.wantError(t, "GET", "/v1/docs/a%01b", "", "", http.StatusBadRequest, "bad_request")
	// Asking did not create it.
	if _, err := as.db.Stat("nope"); !errors.Is(err, store.ErrUnknownDoc) {
		t.Fatalf("GET created the document: %v", err)
	}
	as.wantError(t, "PUT", "/v1/docs/b", "", "x", http.StatusMethodNotAllowed, "method_not_allowed")
	as.wantError(t, "GET", "/v1/nothing", "", "", http.StatusNotFound, "not_found")

	check := func() {
		t.Helper()
		var list struct {
			Docs []struct {
				ID      string    `json:"id"`
				Len     int       `json:"len"`
				Ops     uint64    `json:"ops"`
				Updated time.Time `json:"updated"`
			} `json:"docs"`
		}
		if s := as.call(t, "GET", "/v1/docs", "", "", &list); s != http.StatusOK {
			t.Fatalf("list: %d", s)
		}
		if len(list.Docs) != 2 {
			t.Fatalf("list = %+v", list.Docs)
		}
		b, n := list.Docs[0], list.Docs[1]
		if b.ID != "b" || b.Len != 8 || b.Ops != 2 || n.ID != "notes/todo" || n.Len != 1 || n.Ops != 1 {
			t.Fatalf("list = %+v", list.Docs)
		}
		if b.Updated.IsZero() || b.Updated.Location() != time.UTC {
			t.Fatalf("updated = %v", b.Updated)
		}
	}
	// Documents that are not loaded are listed with their length too:
	// loaded once for it, then from the cache.
	unloaded := func() bool { return len(as.hub.Loaded()) == 0 }
	apiPoll(t, "the documents to unload", unloaded)
	check()
	apiPoll(t, "the documents to unload again", unloaded)
	check()
	if n := len(as.hub.Loaded()); n != 0 {
		t.Fatalf("a listing from the cache loaded %d documents", n)
	}
	// Loaded documents are listed from their engines.
	c := mustDial(t, as.url)
	c.join("b")
	check()
}

func TestAPI_EditsAtomicDurableAndLive(t *testing.T) {
	as := startAPI(t, syncer.Options{}, syncer.ServerOptions{}, syncer.APIOptions{})
	c := mustDial(t, as.url)
	c.join("live")

	v := as.edits(t, "live", "", ins(0, "hello"), ins(5, " world"), syncer.Edit{Pos: 0, Delete: 1, Insert: "H"})
	// The answer came after fsync: the log already holds the version.
	if m, err := as.db.Stat("live"); err != nil || m.LastSeq < v {
		t.Fatalf("answered version %d, log holds %+v, %v", v, m, err)
	}
	// One author's change: one record, one Update, seen live.
	c.waitFor(func() bool { return c.docs["live"].String() == "Hello world" }, "the edit over WebSocket")
	c.mu.Lock()
	var seqs []uint64
	for _, f := range c.frames {
		if u, ok := f.(*protocol.Update); ok {
			seqs = append(seqs, u.Seq)
		}
	}
	c.mu.Unlock()
	if !slices.Equal(seqs, []uint64{v}) {
		t.Fatalf("updates %v, want one with seq %d", seqs, v)
	}

	// A batch with one bad position applies nothing.
	e := as.wantError(t, "POST", "/v1/docs/live/edits", "", `{"edits":[{"pos":0,"insert":"X"},{"pos":40,"delete":1}]}`,
		http.StatusBadRequest, "out_of_range")
	if !strings.Contains(e.Message, "edit 1") {
		t.Fatalf("message %q does not name the bad edit", e.Message)
	}
	if d := as.get(t, "live"); d.Text != "Hello world" || d.Version != v {
		t.Fatalf("after a refused batch: %+v", d)
	}

	// Long inserts are cut into ops that fit a frame, invisibly.
	long := strings.Repeat("ab€", 40<<10) // 200 KiB
	v2 := as.edits(t, "live", "", ins(11, long))
	if d := as.get(t, "live"); d.Text != "Hello world"+long || d.Version != v2 || v2 != v+1 {
		t.Fatalf("after a long insert: version %d, %d code points", d.Version, utf8.RuneCountInString(d.Text))
	}
	c.waitFor(func() bool { return c.docs["live"].Len() == 11+120<<10 }, "the long insert over WebSocket")
}

func TestAPI_EditsBadBodies(t *testing.T) {
	as := startAPI(t, syncer.Options{}, syncer.ServerOptions{}, syncer.APIOptions{MaxBodyBytes: 1 << 10, MaxEditInsertBytes: 600})
	for _, tc := range []struct {
		body   string
		status int
		code   string
	}{
		{`{"edits":[{"pos":0,"insert":"` + strings.Repeat("x", 2<<10) + `"}]}`, http.StatusRequestEntityTooLarge, "too_large"},
		{`{"edits":[{"pos":0,"insert":"` + strings.Repeat("x", 700) + `"}]}`, http.StatusRequestEntityTooLarge, "too_large"},
		{`{"edits":[{"pos":0,"insert":"x"}`, http.StatusBadRequest, "bad_request"},
		{`{"edits":[{"pos":0,"insert":"\xff"}]}`, http.StatusBadRequest, "bad_request"},
		{`{"edits":[{"pos":0,"text":"x"}]}`, http.StatusBadRequest, "bad_request"},
		{`{"edits":[{"pos":"0","insert":"x"}]}`, http.StatusBadRequest, "bad_request"},
		{`{"edits":[]}`, http.StatusBadRequest, "bad_request"},
		{`{"edits":[{"pos":0,"insert":"x"}]} {}`, http.StatusBadRequest, "bad_request"},
		{`{"edits":[{"pos":-1,"insert":"x"}]}`, http.StatusBadRequest, "out_of_range"},
		{`{"edits":[{"pos":0,"delete":-1}]}`, http.StatusBadRequest, "out_of_range"},
	} {
		as.wantError(t, "POST", "/v1/docs/d/edits", "", tc.body, tc.status, tc.code)
	}
	if _, err := as.db.Stat("d"); !errors.Is(err, store.ErrUnknownDoc) {
		t.Fatalf("refused edits created the document: %v", err)
	}
}

// TestAPI_StreamFollowsConcurrentEdits streams text into the middle of a
// document in pieces while a WebSocket client edits before the insertion
// point: the streamed text ends up contiguous, the concurrent edit kept.
func TestAPI_StreamFollowsConcurrentEdits(t *testing.T) {
	as := startAPI(t, syncer.Options{}, syncer.ServerOptions{}, syncer.APIOptions{})
	as.edits(t, "s", "", ins(0, "0123456789"))
	c := mustDial(t, as.url)
	c.join("s")

	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequestWithContext(t.Context(), "POST", as.base+"/v1/docs/s/stream?pos=5", pr)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		status int
		body   []byte
		err    error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := as.client.Do(req)
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		res <- result{resp.StatusCode, b, err}
	}()
	write := func(s string) {
		t.Helper()
		if _, err := pw.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	has := func(s string) func() bool { return func() bool { return c.docs["s"].String() == s } }

	write("Hello, ")
	c.waitFor(has("01234Hello, 56789"), "the first piece")
	// Another client edits before the insertion point, and at it.
	c.edit("s", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(0, "XX") })
	c.waitFor(func() bool { return len(c.acked) == 1 }, "the ack")
	write("w\xc3") // a piece ending inside "ö": only "w" can go in
	c.waitFor(has("XX01234Hello, w56789"), "the second piece")
	c.edit("s", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(r.Len(), "!") })
	c.waitFor(func() bool { return len(c.acked) == 2 }, "the ack")
	write("\xb6rld")
	c.waitFor(has("XX01234Hello, wörld56789!"), "the third piece")
	pw.Close()

	r := <-res
	if r.err != nil || r.status != http.StatusOK {
		t.Fatalf("stream: %d %s %v", r.status, r.body, r.err)
	}
	var out struct {
		Version  uint64 `json:"version"`
		Inserted int    `json:"inserted"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatal(err)
	}
	d := as.get(t, "s")
	if d.Text != "XX01234Hello, wörld56789!" || out.Inserted != 12 || out.Version != d.Version {
		t.Fatalf("stream answered %+v, document %+v", out, d)
	}

	// The default position is the end; a position past it is refused.
	status, b := as.request(t, "POST", "/v1/docs/s/stream", "", strings.NewReader("?"), nil)
	if status != http.StatusOK || as.get(t, "s").Text != "XX01234Hello, wörld56789!?" {
		t.Fatalf("stream at the end: %d %s", status, b)
	}
	as.wantError(t, "POST", "/v1/docs/s/stream?pos=999", "", "x", http.StatusBadRequest, "out_of_range")
	as.wantError(t, "POST", "/v1/docs/s/stream?pos=-1", "", "x", http.StatusBadRequest, "bad_request")
	e := as.wantError(t, "POST", "/v1/docs/s/stream?pos=0", "", "ok\xff", http.StatusBadRequest, "bad_request")
	if e.Inserted == nil || *e.Inserted != 0 {
		t.Fatalf("invalid UTF-8: %+v", e)
	}
}

// TestAPI_StreamDisconnectKeepsText cuts a stream mid-way: what arrived
// stays in the document.
func TestAPI_StreamDisconnectKeepsText(t *testing.T) {
	as := startAPI(t, syncer.Options{}, syncer.ServerOptions{}, syncer.APIOptions{})
	pr, pw := io.Pipe()
	defer pw.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", as.base+"/v1/docs/cut/stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		resp, err := as.client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	if _, err := pw.Write([]byte("partial ")); err != nil {
		t.Fatal(err)
	}
	if _, err := pw.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	var d docView
	apiPoll(t, "the streamed text", func() bool {
		status, b := as.request(t, "GET", "/v1/docs/cut", "", nil, nil)
		return status == http.StatusOK && json.Unmarshal(b, &d) == nil && d.Text == "partial answer"
	})
	// Cancelling cuts the connection; the transport still waits for its
	// body writer, which the pipe's close releases.
	cancel()
	pw.CloseWithError(errors.New("gone"))
	if err := <-done; err == nil {
		t.Fatal("the cut request succeeded")
	}
	// The document keeps what arrived and takes more edits.
	if got := as.get(t, "cut"); got.Text != "partial answer" || got.Version != d.Version {
		t.Fatalf("after the cut: %+v, want %+v", got, d)
	}
	as.edits(t, "cut", "", ins(0, "> "))
	if got := as.get(t, "cut").Text; got != "> partial answer" {
		t.Fatalf("after an edit: %q", got)
	}
}

// TestAPI_EventsSnapshotUpdatesResume reads the event stream for real:
// a snapshot, then the updates made over WebSocket; a resumed stream gets
// exactly the updates after its Last-Event-ID, or a snapshot when they
// are no longer kept.
func TestAPI_EventsSnapshotUpdatesResume(t *testing.T) {
	as := startAPI(t, syncer.Options{Engine: syncer.EngineOptions{SinkHistory: 4}}, syncer.ServerOptions{},
		syncer.APIOptions{HeartbeatInterval: time.Hour})
	v1 := as.edits(t, "ev", "", ins(0, "hello"))
	a := as.openSSE(t, "/v1/docs/ev/events", "", nil)
	ev := a.mustNext(t, "snapshot")
	snap := decode[docView](t, ev.Data)
	if snap.Text != "hello" || snap.Version != v1 || ev.ID != fmt.Sprint(v1) {
		t.Fatalf("snapshot %+v id %s", snap, ev.ID)
	}

	c := mustDial(t, as.url)
	c.join("ev")
	edit := func(pos int, s string) {
		t.Helper()
		n := len(c.acked)
		c.edit("ev", func(r *crdt.Text) (crdt.Delta, error) { return r.Insert(pos, s) })
		c.waitFor(func() bool { return len(c.acked) == n+1 }, "the ack")
	}
	// updates reads n update events and checks their versions follow from.
	updates := func(s *sseStream, from uint64, n int) []updateData {
		t.Helper()
		var out []updateData
		for i := range n {
			ev := s.mustNext(t, "update")
			u := decode[updateData](t, ev.Data)
			if want := from + uint64(i) + 1; u.Version != want || ev.ID != fmt.Sprint(want) {
				t.Fatalf("update %d: version %d id %s, want %d", i, u.Version, ev.ID, want)
			}
			out = append(out, u)
		}
		return out
	}
	edit(5, "!")
	edit(0, "¡")
	edit(1, "h")
	us := updates(a, v1, 3)
	if !slices.Equal(us[0].Edits, []syncer.Edit{ins(5, "!")}) || !slices.Equal(us[1].Edits, []syncer.Edit{ins(0, "¡")}) ||
		us[0].Author != "anonymous" {
		t.Fatalf("updates %+v", us)
	}

	// Resume after the first update: the two after it, no snapshot, then
	// live ones.
	b := as.openSSE(t, "/v1/docs/ev/events", "", http.Header{"Last-Event-Id": {fmt.Sprint(v1 + 1)}})
	updates(b, v1+1, 2)
	edit(0, ">")
	updates(a, v1+3, 1)
	updates(b, v1+3, 1)
	// The query parameter resumes too; nothing is missed or repeated.
	q := as.openSSE(t, fmt.Sprintf("/v1/docs/ev/events?lastEventId=%d", v1+3), "", nil)
	edit(0, ">")
	updates(q, v1+3, 2)
	updates(b, v1+4, 1)

	// Too old to resume (SinkHistory is 4): a fresh snapshot instead.
	for range 4 {
		edit(0, "-")
	}
	updates(a, v1+4, 5)
	old := as.openSSE(t, "/v1/docs/ev/events", "", http.Header{"Last-Event-Id": {fmt.Sprint(v1 + 1)}})
	ev = old.mustNext(t, "snapshot")
	if s := decode[docView](t, ev.Data); s.Version != v1+9 || s.Text != c.text("ev") || ev.ID != fmt.Sprint(v1+9) {
		t.Fatalf("snapshot %+v, want version %d and %q", s, v1+9, c.text("ev"))
	}
	edit(0, "+")
	updates(old, v1+9, 1)
}

func TestAPI_EventsHeartbeat(t *testing.T) {
	as := startAPI(t, syncer.Options{}, syncer.ServerOptions{}, syncer.APIOptions{HeartbeatInterval: 5 * time.Millisecond})
	as.edits(t, "hb", "", ins(0, "x"))
	s := as.openSSE(t, "/v1/docs/hb/events", "", nil)
	s.mustNext(t, "snapshot")
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatal("stream ended")
			}
			if ev.Comment == "ping" {
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no heartbeat")
		}
	}
}

func TestAPI_History(t *testing.T) {
	as := startAPI(t, syncer.Options{}, syncer.ServerOptions{}, syncer.APIOptions{})
	as.edits(t, "h?name=alice", "", ins(0, "abc"))
	c := mustDial(t, as.url)
	c.join("h")
	c.edit("h", func(r *crdt.Text) (crdt.Delta, error) { return r.Delete(0, 2) })
	c.waitFor(func() bool { return len(c.acked) == 1 }, "the ack")
	as.edits(t, "h?name=bob", "", ins(0, "xy"), ins(0, "z"))

	type entry struct {
		Seq      uint64    `json:"seq"`
		Time     time.Time `json:"time"`
		Author   string    `json:"author"`
		Name     string    `json:"name"`
		Agent    string    `json:"agent"`
		Ops      int       `json:"ops"`
		Inserted int       `json:"inserted"`
		Deleted  int       `json:"deleted"`
	}
	var h struct {
		History []entry `json:"history"`
	}
	if s := as.call(t, "GET", "/v1/docs/h/history", "", "", &h); s != http.StatusOK || len(h.History) != 3 {
		t.Fatalf("history: %d %+v", s, h)
	}
	server := as.hub.Agent().String()
	want := []entry{
		{Seq: 3, Author: "anonymous", Name: "bob", Agent: server, Ops: 2, Inserted: 3},
		{Seq: 2, Author: "anonymous", Name: "tester", Agent: c.agent.String(), Ops: 1, Deleted: 2},
		{Seq: 1, Author: "anonymous", Name: "alice", Agent: server, Ops: 1, Inserted: 3},
	}
	for i, e := range h.History {
		if e.Time.IsZero() {
			t.Fatalf("entry %d has no time", i)
		}
		e.Time = time.Time{}
		if e != want[i] {
			t.Fatalf("entry %d = %+v, want %+v", i, e, want[i])
		}
	}
	if as.call(t, "GET", "/v1/docs/h/history?limit=1", "", "", &h); len(h.History) != 1 || h.History[0].Seq != 3 {
		t.Fatalf("limit=1: %+v", h.History)
	}
	if as.call(t, "GET", "/v1/docs/h/history?before=3", "", "", &h); len(h.History) != 2 || h.History[0].Seq != 2 {
		t.Fatalf("before=3: %+v", h.History)
	}
	as.wantError(t, "GET", "/v1/docs/h/history?limit=x", "", "", http.StatusBadRequest, "bad_request")
}

// TestAPI_Delete deletes a document with a WebSocket member and an event
// stream: the member is closed with not_found's close code, the stream
// ends, and the document is gone until edited again.
func TestAPI_Delete(t *testing.T) {
	as := startAPI(t, syncer.Options{}, syncer.ServerOptions{}, syncer.APIOptions{HeartbeatInterval: time.Hour})
	as.edits(t, "gone", "", ins(0, "old text"))
	as.edits(t, "kept", "", ins(0, "kept"))
	c := mustDial(t, as.url)
	c.join("gone")
	s := as.openSSE(t, "/v1/docs/gone/events", "", nil)
	s.mustNext(t, "snapshot")

	if status, _ := as.request(t, "DELETE", "/v1/docs/gone", "", nil, nil); status != http.StatusNoContent {
		t.Fatalf("DELETE: %d", status)
	}
	want := uint16(protocol.CodeNotFound.CloseCode())
	c.waitFor(func() bool { return closeCodeOf(c) == want }, "close code 4004")
	c.mu.Lock()
	var told bool
	for _, f := range c.frames {
		if e, ok := f.(*protocol.Error); ok && e.Code == protocol.CodeNotFound && e.Doc == "gone" {
			told = true
		}
	}
	c.mu.Unlock()
	if !told {
		t.Fatal("no not_found Error frame before the close")
	}
	if ev, ok := s.next(t); ok {
		t.Fatalf("stream went on after the delete: %+v", ev)
	}

	as.wantError(t, "GET", "/v1/docs/gone", "", "", http.StatusNotFound, "not_found")
	as.wantError(t, "DELETE", "/v1/docs/gone", "", "", http.StatusNotFound, "not_found")
	as.wantError(t, "GET", "/v1/docs/gone/events", "", "", http.StatusNotFound, "not_found")
	if _, err := as.db.Stat("gone"); !errors.Is(err, store.ErrUnknownDoc) {
		t.Fatalf("the log still has it: %v", err)
	}
	var list struct {
		Docs []struct {
			ID string `json:"id"`
		} `json:"docs"`
	}
	if as.call(t, "GET", "/v1/docs", "", "", &list); len(list.Docs) != 1 || list.Docs[0].ID != "kept" {
		t.Fatalf("list after delete: %+v", list)
	}
	// Editing creates a new document; nothing of the old one shows.
	if v := as.edits(t, "gone", "", ins(0, "new")); v != 1 {
		t.Fatalf("new document at version %d", v)
	}
	if d := as.get(t, "gone"); d.Text != "new" {
		t.Fatalf("new document: %+v", d)
	}
	// A new member syncs the new text.
	c2 := mustDial(t, as.url)
	c2.join("gone")
	if got := c2.text("gone"); got != "new" {
		t.Fatalf("new member sees %q", got)
	}
}

func TestAPI_Auth(t *testing.T) {
	secret := []byte("a test secret of at least 32 bytes!!")
	v, err := auth.NewVerifier(auth.Config{HS256Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := auth.NewHS256Issuer(secret)
	if err != nil {
		t.Fatal(err)
	}
	token := func(sub string, exp time.Time, docs map[string]auth.Perm) string {
		tok, err := iss.Issue(auth.Claims{Subject: sub, Name: sub + " name", ExpiresAt: exp, Docs: docs})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	soon := time.Now().Add(time.Hour)
	writer := token("u-writer", soon, map[string]auth.Perm{"a": auth.Write, "c": auth.Write})
	reader := token("u-reader", soon, map[string]auth.Perm{"a": auth.Read})
	other := token("u-other", soon, map[string]auth.Perm{"z": auth.Write})
	expired := token("u-late", time.Now().Add(-time.Hour), map[string]auth.Perm{"*": auth.Write})

	as := startAPI(t, syncer.Options{}, syncer.ServerOptions{Verifier: v}, syncer.APIOptions{StatsInterval: 10 * time.Millisecond})
	as.edits(t, "a", writer, ins(0, "secret"))
	as.edits(t, "c", writer, ins(0, "see"))

	for _, path := range []string{"/v1/docs", "/v1/docs/a", "/v1/docs/a/history", "/v1/docs/a/events", "/v1/dashboard/events"} {
		as.wantError(t, "GET", path, "", "", http.StatusUnauthorized, "unauthorized")
		as.wantError(t, "GET", path, "not.a.token", "", http.StatusUnauthorized, "unauthorized")
		as.wantError(t, "GET", path, expired, "", http.StatusUnauthorized, "token_expired")
	}
	as.wantError(t, "POST", "/v1/docs/a/edits", expired, `{"edits":[{"pos":0,"insert":"x"}]}`, http.StatusUnauthorized, "token_expired")
	as.wantError(t, "GET", "/v1/docs/a", other, "", http.StatusForbidden, "forbidden")
	as.wantError(t, "GET", "/v1/docs/a/events", other, "", http.StatusForbidden, "forbidden")
	// Read-only: reads work, writes do not.
	if d := as.call(t, "GET", "/v1/docs/a", reader, "", nil); d != http.StatusOK {
		t.Fatalf("reader GET: %d", d)
	}
	as.wantError(t, "POST", "/v1/docs/a/edits", reader, `{"edits":[{"pos":0,"insert":"x"}]}`, http.StatusForbidden, "forbidden")
	as.wantError(t, "POST", "/v1/docs/a/stream", reader, "x", http.StatusForbidden, "forbidden")
	as.wantError(t, "DELETE", "/v1/docs/a", reader, "", http.StatusForbidden, "forbidden")
	as.wantError(t, "POST", "/v1/docs/b/edits", writer, `{"edits":[{"pos":0,"insert":"x"}]}`, http.StatusForbidden, "forbidden")
	if d := as.get(t, "a?token="+reader); d.Text != "secret" {
		t.Fatalf("a = %+v", d)
	}

	// Listing shows what the token can read.
	ids := func(tok string) []string {
		var list struct {
			Docs []struct {
				ID string `json:"id"`
			} `json:"docs"`
		}
		if s := as.call(t, "GET", "/v1/docs", tok, "", &list); s != http.StatusOK {
			t.Fatalf("list: %d", s)
		}
		var out []string
		for _, d := range list.Docs {
			out = append(out, d.ID)
		}
		return out
	}
	if got := ids(writer); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("writer lists %v", got)
	}
	if got := ids(reader); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("reader lists %v", got)
	}
	if got := ids(other); len(got) != 0 {
		t.Fatalf("other lists %v", got)
	}

	// Event streams take the token as a query parameter (EventSource).
	s := as.openSSE(t, "/v1/docs/a/events?token="+reader, "", nil)
	s.mustNext(t, "snapshot")
	as.edits(t, "a", writer, ins(0, "!"))
	if u := decode[updateData](t, s.mustNext(t, "update").Data); u.Author != "u-writer" {
		t.Fatalf("update %+v", u)
	}
	// The dashboard shows only readable documents.
	d := as.openSSE(t, "/v1/dashboard/events", other, nil)
	st := decode[struct {
		Docs   []struct{ ID string }  `json:"docs"`
		Recent []struct{ Doc string } `json:"recent"`
	}](t, d.mustNext(t, "stats").Data)
	if len(st.Docs) != 0 || len(st.Recent) != 0 {
		t.Fatalf("dashboard for other: %+v", st)
	}
}

func TestAPI_Dashboard(t *testing.T) {
	as := startAPI(t, syncer.Options{}, syncer.ServerOptions{}, syncer.APIOptions{StatsInterval: 5 * time.Millisecond})
	as.edits(t, "dash?name=ann", "", ins(0, "hello"))
	c := mustDial(t, as.url)
	c.join("dash")
	s := as.openSSE(t, "/v1/dashboard/events", "", nil)
	for {
		ev := s.mustNext(t, "stats")
		// The exact contract the dashboard page is built against.
		var raw map[string]json.RawMessage
		if err := json.Unmarshal([]byte(ev.Data), &raw); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"docs", "connections", "ops_per_sec", "recent"} {
			if _, ok := raw[k]; !ok {
				t.Fatalf("stats lack %q: %s", k, ev.Data)
			}
		}
		st := decode[struct {
			Docs []struct {
				ID          string `json:"id"`
				Len         int    `json:"len"`
				Subscribers int    `json:"subscribers"`
			} `json:"docs"`
			Connections int     `json:"connections"`
			OpsPerSec   float64 `json:"ops_per_sec"`
			Recent      []struct {
				Doc    string    `json:"doc"`
				Author string    `json:"author"`
				Ops    int       `json:"ops"`
				Time   time.Time `json:"time"`
			} `json:"recent"`
		}](t, ev.Data)
		if len(st.Docs) != 1 || st.Docs[0].Subscribers < 1 || len(st.Recent) == 0 {
			continue // the join may not be counted yet
		}
		d, r := st.Docs[0], st.Recent[0]
		if d.ID != "dash" || d.Len != 5 || st.Connections != 1 || st.OpsPerSec < 0 ||
			r.Doc != "dash" || r.Author != "anonymous" || r.Ops != 1 || r.Time.IsZero() {
			t.Fatalf("stats %s", ev.Data)
		}
		return
	}
}

// TestAPI_ShutdownEndsStreams: Shutdown ends event streams and the
// dashboard, so an http.Server can then close.
func TestAPI_ShutdownEndsStreams(t *testing.T) {
	as := startAPI(t, syncer.Options{}, syncer.ServerOptions{}, syncer.APIOptions{HeartbeatInterval: time.Hour, StatsInterval: time.Hour})
	as.edits(t, "x", "", ins(0, "x"))
	s := as.openSSE(t, "/v1/docs/x/events", "", nil)
	s.mustNext(t, "snapshot")
	d := as.openSSE(t, "/v1/dashboard/events", "", nil)
	d.mustNext(t, "stats")
	as.stop()
	for _, st := range []*sseStream{s, d} {
		if ev, ok := st.next(t); ok {
			t.Fatalf("stream went on after shutdown: %+v", ev)
		}
	}
}
