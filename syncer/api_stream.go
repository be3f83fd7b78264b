package syncer

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/weft-sync/weft/auth"
	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// stream answers POST /v1/docs/{id}/stream?pos=N: the body is text (any
// transfer encoding; chunked for a producer such as a language model), and
// each piece is inserted as soon as it arrives, without waiting for the
// end of the body. Pieces are cut only at UTF-8 boundaries. pos defaults
// to the end of the document; the document is created if needed.
//
// The insertion point is an anchor, not a position: it starts as the
// assoc-left anchor of pos (it sticks to the character before pos) and
// after each insert becomes the anchor the engine returns, the last
// character inserted. So concurrent edits before the point move it along,
// and the streamed text stays contiguous whatever others type around it.
//
// Each piece is one change (one record, one update event), acknowledged
// after fsync before the next is read; what arrives meanwhile is read as
// one piece, so a fast producer gets fewer, larger changes. If the client
// goes away mid-stream, what arrived stays. The answer, once the body has
// ended, is {"version","inserted"} (inserted counts code points); an error
// answer carries the same two fields for what was inserted before it.
func (a *api) stream(w http.ResponseWriter, r *http.Request) {
	doc, c, ok := a.target(w, r, auth.Write)
	if !ok {
		return
	}
	pos := -1 // the end
	if v := r.URL.Query().Get("pos"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			apiError(w, http.StatusBadRequest, "bad_request", "pos must be a non-negative integer")
			return
		}
		pos = n
	}
	if a.refuseDraining(w) {
		return
	}
	act, err := a.s.hub.acquire(doc)
	if err != nil {
		replyError(w, err)
		return
	}
	defer a.s.hub.release(act)

	var at crdt.Anchor
	var version uint64
	var aerr error
	if err := act.call(func(e *Engine) {
		p := pos
		if p < 0 {
			p = e.Text().Len()
		}
		at, aerr = e.Text().AnchorAt(p, crdt.AssocLeft)
		version = e.Seq()
	}); err != nil {
		replyError(w, err)
		return
	}
	if aerr != nil {
		apiError(w, http.StatusBadRequest, "out_of_range", aerr.Error())
		return
	}

	rc := http.NewResponseController(w)
	// Per-read deadlines replace any server ReadTimeout, which would cut a
	// long stream; the connection gets no deadline back afterwards.
	defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	body := http.MaxBytesReader(w, r.Body, a.opts.MaxStreamBytes)
	chunk := a.opts.StreamChunkBytes
	buf := make([]byte, chunk+utf8.UTFMax)
	carry, inserted := 0, 0
	fail := func(status int, code, msg string) {
		v, n := version, inserted
		writeJSON(w, status, apiErrorBody{Error: code, Message: msg, Version: &v, Inserted: &n})
	}
	who := author(c)
	for {
		_ = rc.SetReadDeadline(time.Now().Add(a.opts.StreamIdleTimeout))
		n, rerr := body.Read(buf[carry : carry+chunk])
		data := buf[:carry+n]
		cut := runeBoundary(data)
		if piece := data[:cut]; len(piece) > 0 {
			if !utf8.Valid(piece) {
				fail(http.StatusBadRequest, "bad_request", "the body is not valid UTF-8")
				return
			}
			rep, err := a.apply(act, EditIn{Edits: []Edit{{Insert: string(piece)}}, At: &at, Author: who})
			if err != nil {
				status, code := errorStatus(err)
				if errors.Is(err, ErrOutOfRange) {
					// The anchor's character is gone from the replica: the
					// document was deleted under the stream.
					status, code = http.StatusNotFound, protocol.CodeNotFound.String()
				}
				fail(status, code, err.Error())
				return
			}
			at, version = rep.Anchor, rep.Seq
			inserted += utf8.RuneCount(piece)
		}
		carry = copy(buf, data[cut:])
		var tooBig *http.MaxBytesError
		switch {
		case rerr == nil:
		case rerr == io.EOF && carry > 0:
			fail(http.StatusBadRequest, "bad_request", "the body ends inside a UTF-8 sequence")
			return
		case rerr == io.EOF:
			writeJSON(w, http.StatusOK, map[string]any{"version": version, "inserted": inserted})
			return
		case errors.As(rerr, &tooBig):
			fail(http.StatusRequestEntityTooLarge, protocol.CodeTooLarge.String(), fmt.Sprintf("body over %d bytes", tooBig.Limit))
			return
		default:
			// The client went away or stalled: what arrived stays. The
			// answer reaches a client that merely stalled.
			fail(http.StatusBadRequest, "bad_request", "reading the body failed; what arrived was kept")
			return
		}
	}
}

// runeBoundary returns the length of the longest prefix of b that does not
// end inside a UTF-8 sequence. Invalid bytes count as complete, so the
// caller's validity check sees them.
func runeBoundary(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if utf8.FullRune(b[i:]) {
				return len(b)
			}
			return i
		}
	}
	return len(b)
}
