package syncer

// The HTTP API under /v1: documents as JSON for backends, Server-Sent
// Events for watchers, and the dashboard feed. Handlers reach documents
// only through the hub (acquire/release, or peek for looks that must not
// keep a document loaded) and their actors' inboxes, like sessions do; they
// start no goroutines.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/weft-sync/weft/auth"
	"github.com/weft-sync/weft/protocol"
)

// APIOptions tune the HTTP API. Zero values take the documented defaults.
type APIOptions struct {
	// MaxBodyBytes caps the body of POST …/edits; larger bodies get 413.
	// Default 4 MiB.
	MaxBodyBytes int64
	// MaxEditInsertBytes caps the text one POST …/edits inserts, over all
	// its edits, so that the change fits one Update frame
	// (protocol.MaxFrameBytes); larger batches get 413 and belong in
	// several requests or a stream. Default and maximum 512 KiB.
	MaxEditInsertBytes int
	// MaxEdits caps the edits of one POST …/edits. Default 1024.
	MaxEdits int
	// MaxStreamBytes caps the body of POST …/stream. Default 32 MiB (the
	// document size limit bounds it further).
	MaxStreamBytes int64
	// StreamChunkBytes is the most one stream insert takes from the body;
	// whatever arrived meanwhile, up to this, goes in one insert. Default
	// and maximum 16 KiB (an insert op holds at most
	// protocol.MaxOpTextBytes).
	StreamChunkBytes int
	// StreamIdleTimeout ends a stream whose client sent nothing for this
	// long, keeping what arrived. Default 60 s.
	StreamIdleTimeout time.Duration
	// HeartbeatInterval is how often an idle event stream gets a ": ping"
	// comment, which keeps proxies from closing it. Default 15 s.
	HeartbeatInterval time.Duration
	// StatsInterval is how often the dashboard stream sends stats.
	// Default 1 s.
	StatsInterval time.Duration
	// SinkBuffer is how many events may wait for one event stream. A
	// stream that falls further behind is ended by the document's actor;
	// the client resumes with Last-Event-ID. Default 256.
	SinkBuffer int
	// HistoryLimit is the default and MaxHistoryLimit the largest number
	// of entries one history request returns. Defaults 100 and 1000.
	HistoryLimit, MaxHistoryLimit int
}

const (
	maxEditInsertBytes = 512 << 10
	maxStreamChunk     = 16 << 10
	// editPiece is the longest insert handed to the engine as one edit; a
	// longer one is cut into consecutive pieces (the same change) so that
	// no op exceeds protocol.MaxOpTextBytes.
	editPiece = 32 << 10
)

func (o APIOptions) withDefaults() APIOptions {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 4 << 20
	}
	if o.MaxEditInsertBytes <= 0 || o.MaxEditInsertBytes > maxEditInsertBytes {
		o.MaxEditInsertBytes = maxEditInsertBytes
	}
	if o.MaxEdits <= 0 {
		o.MaxEdits = 1024
	}
	if o.MaxStreamBytes <= 0 {
		o.MaxStreamBytes = 32 << 20
	}
	if o.StreamChunkBytes <= 0 || o.StreamChunkBytes > maxStreamChunk {
		o.StreamChunkBytes = maxStreamChunk
	}
	if o.StreamIdleTimeout <= 0 {
		o.StreamIdleTimeout = 60 * time.Second
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = 15 * time.Second
	}
	if o.StatsInterval <= 0 {
		o.StatsInterval = time.Second
	}
	if o.SinkBuffer <= 0 {
		o.SinkBuffer = 256
	}
	if o.HistoryLimit <= 0 {
		o.HistoryLimit = 100
	}
	if o.MaxHistoryLimit <= 0 {
		o.MaxHistoryLimit = 1000
	}
	o.HistoryLimit = min(o.HistoryLimit, o.MaxHistoryLimit)
	return o
}

// api serves /v1 for one Server.
type api struct {
	s    *Server
	opts APIOptions

	edits atomic.Int64 // edit tokens, unique per api
	sinks atomic.Int64 // event stream IDs

	mu   sync.Mutex // guards lens
	lens map[string]lenEntry

	dash dashCache
}

// lenEntry remembers the length of a document that is not loaded, valid
// while the log's LastSeq and Created still match.
type lenEntry struct {
	seq     uint64
	created time.Time
	n       int
}

// editToken marks the Reply of an HTTP edit; its own type keeps it apart
// from other users' tokens in the actor's reply table.
type editToken int64

// APIHandler returns the HTTP API with default APIOptions; see
// APIHandlerWith.
func (s *Server) APIHandler() http.Handler { return s.APIHandlerWith(APIOptions{}) }

// APIHandlerWith returns the HTTP API. It serves every path under /v1/
// (mount it as mux.Handle("/v1/", h)):
//
//	GET    /v1/ws                      the WebSocket endpoint (ServeWS)
//	GET    /v1/docs                    {"docs":[{"id","len","ops","updated"}]}
//	GET    /v1/docs/{id}               {"id","text","version"}
//	DELETE /v1/docs/{id}               204; closes subscribers with not_found
//	POST   /v1/docs/{id}/edits         {"edits":[{"pos","delete","insert"}]} → {"version"}
//	POST   /v1/docs/{id}/stream?pos=N  chunked text body → {"version","inserted"}
//	GET    /v1/docs/{id}/events        Server-Sent Events: snapshot, update, presence
//	GET    /v1/docs/{id}/history       {"history":[…]} newest first (?limit=&before=)
//	GET    /v1/dashboard/events        Server-Sent Events: stats
//
// Positions and lengths count code points; a version is the document's
// log seq, the number Acks and event ids carry. A document ID with a '/'
// goes in the path percent-encoded (%2F). Errors are
// {"error": code, "message": text} with a matching status.
//
// With a Verifier, every request needs a token (Authorization: Bearer, or
// the token query parameter, which EventSource needs) granting read on the
// document, or write for POST and DELETE; listing and the dashboard show
// only documents the token can read. Without one everything is allowed,
// which is only safe on loopback.
//
// Event streams end when the client goes, when the document is deleted,
// when the token expires, and when Shutdown closes the hub (the dashboard
// when Shutdown ends). An http.Server waits for them in its own Shutdown,
// so call this Server's Shutdown first (or from RegisterOnShutdown).
func (s *Server) APIHandlerWith(opts APIOptions) http.Handler {
	a := &api{s: s, opts: opts.withDefaults(), lens: make(map[string]lenEntry)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ws", s.ServeWS)
	mux.HandleFunc("GET /v1/docs", a.list)
	mux.HandleFunc("GET /v1/docs/{id}", a.get)
	mux.HandleFunc("DELETE /v1/docs/{id}", a.del)
	mux.HandleFunc("POST /v1/docs/{id}/edits", a.edit)
	mux.HandleFunc("POST /v1/docs/{id}/stream", a.stream)
	mux.HandleFunc("GET /v1/docs/{id}/events", a.events)
	mux.HandleFunc("GET /v1/docs/{id}/history", a.history)
	mux.HandleFunc("GET /v1/dashboard/events", a.dashboard)
	// JSON answers for wrong methods and unknown paths, instead of the
	// mux's plain-text ones.
	for path, allow := range map[string]string{
		"/v1/ws":                "GET, HEAD",
		"/v1/docs":              "GET, HEAD",
		"/v1/docs/{id}":         "GET, HEAD, DELETE",
		"/v1/docs/{id}/edits":   "POST",
		"/v1/docs/{id}/stream":  "POST",
		"/v1/docs/{id}/events":  "GET, HEAD",
		"/v1/docs/{id}/history": "GET, HEAD",
		"/v1/dashboard/events":  "GET, HEAD",
	} {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			apiError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed here")
		})
	}
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, "not_found", "no such endpoint")
	})
	return mux
}

// --- JSON and errors -------------------------------------------------------

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		apiError(w, http.StatusInternalServerError, "internal", "cannot encode the answer")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// apiErrorBody is every error the API answers with; streams add how far
// they got.
type apiErrorBody struct {
	Error    string  `json:"error"`
	Message  string  `json:"message"`
	Version  *uint64 `json:"version,omitempty"`
	Inserted *int    `json:"inserted,omitempty"`
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiErrorBody{Error: code, Message: msg})
}

// replyError answers an engine or hub error.
func replyError(w http.ResponseWriter, err error) {
	status, code := errorStatus(err)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	apiError(w, status, code, err.Error())
}

func errorStatus(err error) (int, string) {
	switch {
	case errors.Is(err, ErrOutOfRange):
		return http.StatusBadRequest, "out_of_range"
	case errors.Is(err, ErrDocTooLarge):
		return http.StatusRequestEntityTooLarge, protocol.CodeDocTooLarge.String()
	case errors.Is(err, ErrOverloaded):
		return http.StatusServiceUnavailable, protocol.CodeOverloaded.String()
	case errors.Is(err, ErrClosed):
		return http.StatusServiceUnavailable, protocol.CodeGoingAway.String()
	case errors.Is(err, errDeleted), errors.Is(err, ErrUnknownDoc):
		return http.StatusNotFound, protocol.CodeNotFound.String()
	}
	return http.StatusInternalServerError, protocol.CodeInternal.String()
}

// --- authentication and document IDs ----------------------------------------

// authorize authenticates the request and, for a document, checks the
// permission need. It answers the request itself when it returns nil.
func (a *api) authorize(w http.ResponseWriter, r *http.Request, doc string, need auth.Perm) *auth.Claims {
	c, status, code, err := a.s.authenticate(r)
	if err != nil {
		a.s.met.rejected.WithLabelValues("auth").Inc()
		// Auth errors name what is wrong, never the token.
		apiError(w, status, code.String(), err.Error())
		return nil
	}
	if doc != "" && !c.Can(doc).Allows(need) {
		apiError(w, http.StatusForbidden, protocol.CodeForbidden.String(), fmt.Sprintf("the token does not grant %s access to %q", need, doc))
		return nil
	}
	return c
}

// docParam returns the {id} path value after checking it as protocol v1
// does: 1 to MaxDocIDBytes bytes of UTF-8 without control characters.
func docParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	doc := r.PathValue("id")
	bad := ""
	switch {
	case doc == "":
		bad = "empty document ID"
	case len(doc) > protocol.MaxDocIDBytes:
		bad = fmt.Sprintf("document ID longer than %d bytes", protocol.MaxDocIDBytes)
	case !utf8.ValidString(doc):
		bad = "document ID is not valid UTF-8"
	case strings.ContainsFunc(doc, func(c rune) bool { return c < 0x20 || c == 0x7f }):
		bad = "control character in document ID"
	}
	if bad != "" {
		apiError(w, http.StatusBadRequest, "bad_request", bad)
		return "", false
	}
	return doc, true
}

// target parses the document and authorizes the request for it.
func (a *api) target(w http.ResponseWriter, r *http.Request, need auth.Perm) (string, *auth.Claims, bool) {
	doc, ok := docParam(w, r)
	if !ok {
		return "", nil, false
	}
	c := a.authorize(w, r, doc, need)
	return doc, c, c != nil
}

func author(c *auth.Claims) Author { return Author{Subject: c.Subject, Name: c.Name} }

// exists reports whether doc holds anything: a stored log, or a loaded
// engine with records not yet durable. It loads nothing.
func (a *api) exists(doc string) (bool, error) {
	_, err := a.s.hub.log.Stat(doc)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, ErrUnknownDoc) {
		return false, err
	}
	act := a.s.hub.peek(doc)
	if act == nil {
		return false, nil
	}
	var seq uint64
	if act.call(func(e *Engine) { seq = e.Seq() }) != nil {
		return false, nil
	}
	return seq > 0, nil
}

// existing acquires a document that exists, answering 404 (or the error)
// itself when it returns nil. The caller releases.
func (a *api) existing(w http.ResponseWriter, doc string) *actor {
	ok, err := a.exists(doc)
	if err != nil {
		a.s.opts.Logger.Error("stat failed", "doc", doc, "err", err)
		replyError(w, err)
		return nil
	}
	if !ok {
		apiError(w, http.StatusNotFound, protocol.CodeNotFound.String(), fmt.Sprintf("no document %q", doc))
		return nil
	}
	act, err := a.s.hub.acquire(doc)
	if err != nil {
		replyError(w, err)
		return nil
	}
	return act
}

// --- GET /v1/docs -------------------------------------------------------------

type docInfo struct {
	ID string `json:"id"`
	// Len is the length in code points.
	Len int `json:"len"`
	// Ops is how many records the document's log holds (those a snapshot
	// covers are compacted away and no longer counted).
	Ops     uint64    `json:"ops"`
	Updated time.Time `json:"updated"`
}

// list answers GET /v1/docs from the log's metadata. The length of a
// loaded document comes from its engine. Of one that is not loaded, it
// comes from a cache that stays valid while the log does not change
// (same LastSeq and creation time); on a miss the document is loaded
// once, like any request for it would, and unloads when idle. So a listing
// loads only documents that changed since it last saw them.
func (a *api) list(w http.ResponseWriter, r *http.Request) {
	c := a.authorize(w, r, "", auth.Read)
	if c == nil {
		return
	}
	metas, err := a.s.hub.log.List()
	if err != nil {
		a.s.opts.Logger.Error("list failed", "err", err)
		replyError(w, err)
		return
	}
	lens := make(map[string]lenEntry, len(metas))
	out := make([]docInfo, 0, len(metas))
	for _, m := range metas {
		if !c.Can(m.Doc).Allows(auth.Read) {
			continue
		}
		n, ok := a.loadedLen(m.Doc)
		if !ok {
			a.mu.Lock()
			e, hit := a.lens[m.Doc]
			a.mu.Unlock()
			if hit && e.seq == m.LastSeq && e.created.Equal(m.Created) {
				n, ok = e.n, true
			} else {
				n, ok = a.loadLen(m.Doc)
			}
		}
		if !ok {
			continue // deleted or failing meanwhile
		}
		lens[m.Doc] = lenEntry{seq: m.LastSeq, created: m.Created, n: n}
		out = append(out, docInfo{ID: m.Doc, Len: n, Ops: m.Records, Updated: m.Updated.UTC()})
	}
	// Entries of documents no longer listed go; entries this token could
	// not see stay for other listings to judge.
	a.mu.Lock()
	for k, v := range a.lens {
		if _, seen := lens[k]; !seen && !c.Can(k).Allows(auth.Read) {
			lens[k] = v
		}
	}
	a.lens = lens
	a.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"docs": out})
}

// loadedLen is the length of a loaded document, without keeping it loaded.
func (a *api) loadedLen(doc string) (int, bool) {
	act := a.s.hub.peek(doc)
	if act == nil {
		return 0, false
	}
	n := 0
	if act.call(func(e *Engine) { n = e.Text().Len() }) != nil {
		return 0, false
	}
	return n, true
}

func (a *api) loadLen(doc string) (int, bool) {
	act, err := a.s.hub.acquire(doc)
	if err != nil {
		return 0, false
	}
	defer a.s.hub.release(act)
	n := 0
	if act.call(func(e *Engine) { n = e.Text().Len() }) != nil {
		return 0, false
	}
	return n, true
}

// --- GET /v1/docs/{id} --------------------------------------------------------

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	doc, _, ok := a.target(w, r, auth.Read)
	if !ok {
		return
	}
	act := a.existing(w, doc)
	if act == nil {
		return
	}
	defer a.s.hub.release(act)
	var text string
	var seq uint64
	if err := act.call(func(e *Engine) { text, seq = e.Text().String(), e.Seq() }); err != nil {
		replyError(w, err)
		return
	}
	if seq == 0 { // deleted since exists looked
		apiError(w, http.StatusNotFound, protocol.CodeNotFound.String(), fmt.Sprintf("no document %q", doc))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": doc, "text": text, "version": seq})
}

// --- DELETE /v1/docs/{id} -----------------------------------------------------

func (a *api) del(w http.ResponseWriter, r *http.Request) {
	doc, _, ok := a.target(w, r, auth.Write)
	if !ok {
		return
	}
	act := a.existing(w, doc)
	if act == nil {
		return
	}
	defer a.s.hub.release(act)
	var existed bool
	var werr error
	if err := act.call(func(e *Engine) { existed, werr = act.wipe() }); err != nil {
		replyError(w, err)
		return
	}
	switch {
	case werr != nil:
		a.s.opts.Logger.Error("delete failed", "doc", doc, "err", werr)
		replyError(w, werr)
		return
	case !existed:
		apiError(w, http.StatusNotFound, protocol.CodeNotFound.String(), fmt.Sprintf("no document %q", doc))
		return
	}
	a.mu.Lock()
	delete(a.lens, doc)
	a.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// --- POST /v1/docs/{id}/edits -------------------------------------------------

type editsBody struct {
	Edits []Edit `json:"edits"`
}

func (a *api) edit(w http.ResponseWriter, r *http.Request) {
	doc, c, ok := a.target(w, r, auth.Write)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.opts.MaxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		apiError(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge.String(), fmt.Sprintf("body over %d bytes", tooBig.Limit))
		return
	case err != nil:
		apiError(w, http.StatusBadRequest, "bad_request", "reading the body failed")
		return
	}
	edits, status, code, msg := a.parseEdits(body)
	if status != 0 {
		apiError(w, status, code, msg)
		return
	}
	act, err := a.s.hub.acquire(doc)
	if err != nil {
		replyError(w, err)
		return
	}
	defer a.s.hub.release(act)
	rep, err := a.apply(act, EditIn{Edits: edits, Author: author(c)})
	if err != nil {
		replyError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"version": rep.Seq})
}

// parseEdits decodes and checks an edits body, cutting long inserts into
// consecutive pieces (the same change) that each fit one op.
func (a *api) parseEdits(body []byte) (edits []Edit, status int, code, msg string) {
	if !utf8.Valid(body) {
		// encoding/json would quietly replace bad bytes with U+FFFD.
		return nil, http.StatusBadRequest, "bad_request", "the body is not valid UTF-8"
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var in editsBody
	if err := dec.Decode(&in); err != nil {
		return nil, http.StatusBadRequest, "bad_request", "invalid JSON: " + err.Error()
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, http.StatusBadRequest, "bad_request", "invalid JSON: data after the object"
	}
	switch {
	case len(in.Edits) == 0:
		return nil, http.StatusBadRequest, "bad_request", `no edits: want {"edits":[{"pos":0,"delete":0,"insert":"…"}]}`
	case len(in.Edits) > a.opts.MaxEdits:
		return nil, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge.String(), fmt.Sprintf("%d edits, at most %d per request", len(in.Edits), a.opts.MaxEdits)
	}
	total := 0
	for _, e := range in.Edits {
		total += len(e.Insert)
	}
	if total > a.opts.MaxEditInsertBytes {
		return nil, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge.String(),
			fmt.Sprintf("the edits insert %d bytes, at most %d per request; split them or use the stream endpoint", total, a.opts.MaxEditInsertBytes)
	}
	for _, e := range in.Edits {
		for len(e.Insert) > editPiece {
			cut := editPiece
			for !utf8.RuneStart(e.Insert[cut]) {
				cut--
			}
			edits = append(edits, Edit{Pos: e.Pos, Delete: e.Delete, Insert: e.Insert[:cut]})
			e = Edit{Pos: e.Pos + utf8.RuneCountInString(e.Insert[:cut]), Insert: e.Insert[cut:]}
		}
		edits = append(edits, e)
	}
	return edits, 0, "", ""
}

// apply runs an EditIn through the actor and waits for its Reply, which
// the engine sends once the change is durable (or at once on failure).
func (a *api) apply(act *actor, in EditIn) (Reply, error) {
	tok := editToken(a.edits.Add(1))
	in.Token = tok
	ch := make(chan Reply, 1) // the actor never blocks on it
	if err := act.send(msg{kind: mInput, in: in, reply: ch}); err != nil {
		return Reply{}, err
	}
	select {
	case rep := <-ch:
		return rep, rep.Err
	case <-act.done:
		select {
		case rep := <-ch:
			return rep, rep.Err
		default:
			return Reply{}, ErrClosed
		}
	}
}

// --- GET /v1/docs/{id}/history -----------------------------------------------

type historyEntry struct {
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	Author   string    `json:"author"`
	Name     string    `json:"name"`
	Agent    string    `json:"agent"`
	Ops      int       `json:"ops"`
	Inserted int       `json:"inserted"`
	Deleted  int       `json:"deleted"`
}

func (a *api) history(w http.ResponseWriter, r *http.Request) {
	doc, _, ok := a.target(w, r, auth.Read)
	if !ok {
		return
	}
	q := r.URL.Query()
	limit := a.opts.HistoryLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			apiError(w, http.StatusBadRequest, "bad_request", "limit must be a positive integer")
			return
		}
		limit = min(n, a.opts.MaxHistoryLimit)
	}
	var before uint64
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			apiError(w, http.StatusBadRequest, "bad_request", "before must be a version")
			return
		}
		before = n
	}
	act := a.existing(w, doc)
	if act == nil {
		return
	}
	defer a.s.hub.release(act)
	var h []Audit
	if err := act.call(func(e *Engine) { h = e.History(limit, before) }); err != nil {
		replyError(w, err)
		return
	}
	out := make([]historyEntry, len(h))
	for i, e := range h {
		out[i] = historyEntry{Seq: e.Seq, Time: e.Time.UTC(), Author: e.Subject, Name: e.Name, Agent: e.Agent,
			Ops: e.Ops, Inserted: e.Inserted, Deleted: e.Deleted}
	}
	writeJSON(w, http.StatusOK, map[string]any{"history": out})
}
