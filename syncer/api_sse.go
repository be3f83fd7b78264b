package syncer

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weft-sync/weft/auth"
	"github.com/weft-sync/weft/protocol"
)

// sseWriteTimeout bounds one event write: a client that stops reading ends
// its stream instead of holding a handler forever.
const sseWriteTimeout = 10 * time.Second

// sse writes one Server-Sent Events response.
type sse struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	buf bytes.Buffer
}

func startSSE(w http.ResponseWriter) (*sse, error) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // no proxy buffering (nginx)
	w.WriteHeader(http.StatusOK)
	s := &sse{w: w, rc: http.NewResponseController(w)}
	return s, s.flush()
}

// end clears the write deadline, which would otherwise outlive the stream
// on a connection the client reuses.
func (s *sse) end() { _ = s.rc.SetWriteDeadline(time.Time{}) }

// event writes one event; id is omitted when empty. The data is one line
// of JSON (encoding/json escapes newlines inside strings).
func (s *sse) event(name, id string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	s.buf.Reset()
	if id != "" {
		s.buf.WriteString("id: " + id + "\n")
	}
	s.buf.WriteString("event: " + name + "\ndata: ")
	s.buf.Write(b)
	s.buf.WriteString("\n\n")
	return s.write()
}

func (s *sse) comment(text string) error {
	s.buf.Reset()
	s.buf.WriteString(": " + text + "\n\n")
	return s.write()
}

func (s *sse) write() error {
	// An http.Server WriteTimeout would cut a long stream; each write gets
	// its own deadline instead. Errors mean the writer has no deadlines
	// (say, a test recorder), which is fine.
	_ = s.rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
	if _, err := s.w.Write(s.buf.Bytes()); err != nil {
		return err
	}
	return s.flush()
}

func (s *sse) flush() error { return s.rc.Flush() }

// refuseDraining answers 503 with Retry-After while the server shuts down.
func (a *api) refuseDraining(w http.ResponseWriter) bool {
	if !a.s.Draining() {
		return false
	}
	w.Header().Set("Retry-After", "2")
	apiError(w, http.StatusServiceUnavailable, protocol.CodeGoingAway.String(), "server shutting down")
	return true
}

// serveSSE runs an event stream: it writes each event from events (until
// that channel closes) and calls tick every interval (and at once when
// tickNow is set), until a write fails, the client leaves, the token
// expires or the server stops.
func (a *api) serveSSE(w http.ResponseWriter, r *http.Request, c *auth.Claims, every time.Duration, tickNow bool,
	events <-chan SinkEvent, tick func(*sse) error) {
	out, err := startSSE(w)
	defer out.end()
	if err != nil || r.Method == http.MethodHead {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	exp, expired := a.expiry(c)
	if exp != nil {
		defer exp.Stop()
	}
	if tickNow && tick(out) != nil {
		return
	}
	for {
		select {
		case ev, ok := <-events:
			if !ok || out.event(ev.Name, strconv.FormatUint(ev.Seq, 10), ev.Data) != nil {
				return
			}
		case <-t.C:
			if tick(out) != nil {
				return
			}
		case <-r.Context().Done():
			return
		case <-expired:
			return
		case <-a.s.stop:
			return
		}
	}
}

// expiry fires when the token expires (never for claims without expiry).
func (a *api) expiry(c *auth.Claims) (*time.Timer, <-chan time.Time) {
	if c.ExpiresAt.IsZero() {
		return nil, nil
	}
	t := time.NewTimer(max(c.ExpiresIn(a.s.opts.Now()), 0))
	return t, t.C
}

// lastEventID is where a resuming stream starts: the Last-Event-ID header
// (EventSource sends it on reconnect) or the lastEventId query parameter
// (for a first connection that resumes). Anything unparsable counts as
// none, which gets a fresh snapshot.
func lastEventID(r *http.Request) uint64 {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("lastEventId")
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// --- GET /v1/docs/{id}/events -------------------------------------------------

// events streams a document: "snapshot" ({"text","version"}) first, then
// "update" ({"edits","version","author"}) and "presence" (a list of
// {"session","name","color","cursor","selections"}), each with id: the
// version. With Last-Event-ID it sends the updates after it instead of
// the snapshot, or a snapshot when they are no longer kept.
//
// The stream subscribes to the document's actor with a bounded channel.
// The actor never waits for it: a stream that falls SinkBuffer events
// behind is cut (the channel closes) and resumes with Last-Event-ID. The
// channel also closes when the document is deleted and on shutdown.
func (a *api) events(w http.ResponseWriter, r *http.Request) {
	doc, c, ok := a.target(w, r, auth.Read)
	if !ok {
		return
	}
	if a.refuseDraining(w) {
		return
	}
	// An unknown document is 404 rather than an empty stream: after a
	// delete, a reconnecting EventSource then stops instead of watching a
	// document that no longer exists.
	act := a.existing(w, doc)
	if act == nil {
		return
	}
	defer a.s.hub.release(act)
	id := a.sinks.Add(1)
	ch := make(chan SinkEvent, a.opts.SinkBuffer)
	if err := act.send(msg{kind: mSink, sink: ch, sinkID: id, in: SinkIn{Sink: id, From: lastEventID(r)}}); err != nil {
		replyError(w, err)
		return
	}
	defer func() { _ = act.send(msg{kind: mSink, sinkID: id}) }()

	a.serveSSE(w, r, c, a.opts.HeartbeatInterval, false, ch, func(out *sse) error { return out.comment("ping") })
}

// --- GET /v1/dashboard/events ------------------------------------------------

// The dashboard feed: one "stats" event per StatsInterval,
//
//	{"docs":[{"id","len","subscribers"}], "connections": N,
//	 "ops_per_sec": X, "recent":[{"doc","author","ops","time"}]}
//
// docs lists the loaded documents (subscribers counts WebSocket members
// and event streams), connections the open WebSocket sessions,
// ops_per_sec the ops of the loaded documents' changes over the last
// dashWindow, and recent their newest dashRecentN changes, newest first.
// Documents the token cannot read are left out of all three.

type dashDoc struct {
	ID          string `json:"id"`
	Len         int    `json:"len"`
	Subscribers int    `json:"subscribers"`
}

type dashRecent struct {
	Doc    string    `json:"doc"`
	Author string    `json:"author"`
	Ops    int       `json:"ops"`
	Time   time.Time `json:"time"`
}

type dashStats struct {
	Docs        []dashDoc    `json:"docs"`
	Connections int          `json:"connections"`
	OpsPerSec   float64      `json:"ops_per_sec"`
	Recent      []dashRecent `json:"recent"`
}

const (
	dashWindow  = 5 * time.Second
	dashRecentN = 20
)

// dashEntry is what one loaded document contributes.
type dashEntry struct {
	doc       dashDoc
	windowOps int
	recent    []dashRecent
}

// dashCache shares one collection among the dashboards open at once, so
// their number does not multiply the calls into the documents' actors.
type dashCache struct {
	mu      sync.Mutex
	at      time.Time
	entries []dashEntry
}

func (a *api) dashStats(c *auth.Claims) dashStats {
	now := a.s.opts.Now()
	a.dash.mu.Lock()
	if a.dash.at.IsZero() || now.Sub(a.dash.at) >= a.opts.StatsInterval/2 || now.Before(a.dash.at) {
		a.dash.entries = a.collectDash()
		a.dash.at = now
	}
	entries := a.dash.entries
	a.dash.mu.Unlock()

	st := dashStats{Docs: []dashDoc{}, Recent: []dashRecent{}, Connections: a.s.Connections()}
	ops := 0
	for _, e := range entries {
		if !c.Can(e.doc.ID).Allows(auth.Read) {
			continue
		}
		st.Docs = append(st.Docs, e.doc)
		st.Recent = append(st.Recent, e.recent...)
		ops += e.windowOps
	}
	st.OpsPerSec = float64(ops) / dashWindow.Seconds()
	slices.SortStableFunc(st.Recent, func(x, y dashRecent) int { return y.Time.Compare(x.Time) })
	if len(st.Recent) > dashRecentN {
		st.Recent = st.Recent[:dashRecentN]
	}
	return st
}

// collectDash asks every loaded document for its numbers: all the calls go
// out before any is waited for, a document whose inbox is full is skipped
// this time, and nothing takes a reference (watching keeps nothing
// loaded).
func (a *api) collectDash() []dashEntry {
	h := a.s.hub
	since := h.opts.Now().Add(-dashWindow)
	type job struct {
		act  *actor
		done chan struct{}
		e    *dashEntry
	}
	var jobs []job
	for _, id := range h.Loaded() {
		act := h.peek(id)
		if act == nil {
			continue
		}
		e := &dashEntry{doc: dashDoc{ID: id}}
		done := act.tryCall(func(eng *Engine) {
			e.doc.Len = eng.Text().Len()
			e.doc.Subscribers = eng.Members() + eng.Sinks()
			for i := len(eng.audit) - 1; i >= 0; i-- {
				au := &eng.audit[i]
				inWindow := au.Time.After(since)
				if inWindow {
					e.windowOps += au.Ops
				}
				if len(e.recent) < dashRecentN {
					e.recent = append(e.recent, dashRecent{Doc: id, Author: au.Subject, Ops: au.Ops, Time: au.Time.UTC()})
				} else if !inWindow {
					break
				}
			}
		})
		if done != nil {
			jobs = append(jobs, job{act: act, done: done, e: e})
		}
	}
	out := make([]dashEntry, 0, len(jobs))
	for _, j := range jobs {
		if j.act.waitCall(j.done) == nil {
			out = append(out, *j.e)
		}
	}
	return out
}

func (a *api) dashboard(w http.ResponseWriter, r *http.Request) {
	c := a.authorize(w, r, "", auth.Read)
	if c == nil {
		return
	}
	if a.refuseDraining(w) {
		return
	}
	a.serveSSE(w, r, c, a.opts.StatsInterval, true, nil, func(out *sse) error {
		return out.event("stats", "", a.dashStats(c))
	})
}
