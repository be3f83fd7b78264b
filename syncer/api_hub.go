package syncer

import (
	"errors"
	"time"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// What the HTTP API needs from the hub and its actors. Everything that
// touches an actor's state runs on the actor's goroutine through an mCall,
// so the lock-free ownership of hub.go holds.

// peek returns doc's actor if it is loaded, without taking a reference: for
// read-only looks (listing, the dashboard) that must not keep a document
// loaded or restart its idle clock. The actor may stop at any time; call
// and tryCall notice that.
func (h *Hub) peek(doc string) *actor {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.docs[doc]
}

// call runs fn on the actor's goroutine and waits for it. It returns
// ErrClosed, without having run fn, when the actor stopped first. Writes fn
// makes to captured variables are visible to the caller once call returns
// nil.
func (a *actor) call(fn func(e *Engine)) error {
	done := make(chan struct{})
	if err := a.send(msg{kind: mCall, call: fn, done: done}); err != nil {
		return err
	}
	return a.waitCall(done)
}

// tryCall queues fn without blocking on a full inbox; the caller waits with
// waitCall. It returns nil when the inbox is full or the actor is gone.
func (a *actor) tryCall(fn func(e *Engine)) chan struct{} {
	done := make(chan struct{})
	select {
	case <-a.done:
		return nil
	default:
	}
	select {
	case a.inbox <- msg{kind: mCall, call: fn, done: done}:
		return done
	default:
		return nil
	}
}

func (a *actor) waitCall(done chan struct{}) error {
	select {
	case <-done:
		return nil
	case <-a.done:
		// The actor closes done before it can exit, so a call it ran is
		// still seen as done here.
		select {
		case <-done:
			return nil
		default:
			return ErrClosed
		}
	}
}

// errDeleted answers HTTP edits that were pending when their document was
// deleted.
var errDeleted = errors.New("syncer: document deleted")

// wipe deletes the actor's document: from the log, and from memory by
// resetting the actor to an empty document. It runs on the actor's
// goroutine (inside an mCall). It reports false when there was nothing to
// delete (no record, durable or not).
//
// Why reset in place rather than unload: the actor stays the document's
// only actor, so two engines can never append to one log, and every
// message already queued to it (a join, a delta, an HTTP edit from a
// holder of an older reference) meets a consistent state:
//
//   - members joined before the delete get an Error frame and their
//     connection is closed with CodeNotFound (the hub has no way to make a
//     session leave one document; the client reconnects for the others);
//     event streams end (their channels close); HTTP edits waiting for the
//     disk get errDeleted;
//   - a join or edit processed after the delete meets an empty document at
//     version 0, exactly as if it had arrived after the delete: joining or
//     editing creates a document. Deltas from the closed members are
//     ignored (they are no longer members).
//
// The reset actor then unloads through the ordinary idle path. Versions
// (log seqs) start again at 1 in the new document, so a client must drop
// its replica and its Last-Event-ID on not_found.
func (a *actor) wipe() (bool, error) {
	h := a.hub
	if a.eng.Seq() == 0 {
		return false, nil
	}
	// An append or snapshot in flight must land before the delete, or it
	// would recreate the document behind it.
	for a.inflight {
		a.persisted(<-a.persist)
	}
	if err := h.log.Delete(a.doc); err != nil && !errors.Is(err, ErrUnknownDoc) {
		// Nothing is lost: the queue still persists as usual.
		return false, err
	}
	frame, err := protocol.Encode(nil, &protocol.Error{Code: protocol.CodeNotFound, Doc: a.doc, Message: "document deleted"})
	for id, p := range a.peers {
		if err == nil {
			p.Send(frame)
		}
		h.opts.Metrics.closes.WithLabelValues(protocol.CodeNotFound.String()).Inc()
		p.Close(protocol.CodeNotFound, "document deleted")
		delete(a.peers, id)
	}
	for id, ch := range a.sinks {
		close(ch)
		delete(a.sinks, id)
	}
	for tok, ch := range a.replies {
		select {
		case ch <- Reply{Token: tok, Err: errDeleted}:
		default:
		}
		delete(a.replies, tok)
	}
	a.queue, a.snap, a.retryAt = nil, nil, time.Time{}
	a.eng = NewEngine(a.doc, crdt.New(h.agent), 0, 0, nil, h.opts.Engine)
	a.updateSize()
	return true, nil
}
