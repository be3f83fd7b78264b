package client

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/weft-sync/weft/protocol"
)

// Errors callers branch on.
var (
	// ErrClosed: the Client or the Doc was closed.
	ErrClosed = errors.New("client: closed")
	// ErrAgentMismatch: Options.Agent differs from the agent the state file
	// was written by. A replica's state and its key belong together.
	ErrAgentMismatch = errors.New("client: state file belongs to another agent")
	// ErrState: the local state file failed (a write, or a replay on open).
	// The edit that got it was applied in memory but not persisted, so it
	// is not sent either; the document stops syncing until the process
	// restarts from the state on disk.
	ErrState = errors.New("client: local state failed")
	// ErrAgentReused: the server holds ops of this client's agent that the
	// replica does not. The agent key was used by another replica, or the
	// replica lost its state; syncing the document would corrupt it, so the
	// client stops syncing it.
	ErrAgentReused = errors.New("client: server holds ops of this agent the replica lacks")
	// ErrDocID: a document ID breaks the protocol's rules (1 to 256 bytes
	// of UTF-8 without control characters).
	ErrDocID = errors.New("client: invalid document ID")
	// ErrDeleted: the server deleted the document (not_found). The replica
	// stops syncing, since sending it would recreate the document; the
	// application decides whether to Discard it.
	ErrDeleted = errors.New("client: document deleted on the server")
)

// LostAckedError reports that a server lacks ops of this client that it
// had acknowledged as durable: seqs [From, To) of the client's agent in
// Doc. That is a server bug or a lost disk. The client sends the ops
// again, so the document heals, but a durable ack was broken.
type LostAckedError struct {
	Doc      string
	From, To uint64
}

func (e *LostAckedError) Error() string {
	return fmt.Sprintf("client: server lost %d acknowledged ops of doc %q (seqs %d to %d)", e.To-e.From, e.Doc, e.From, e.To-1)
}

// Error is a failure reported on Client.Errors: an Error frame, a close
// code, a refused upgrade or a local failure.
type Error struct {
	// Code is the server's error code, or 0.
	Code protocol.ErrorCode
	// Close is the WebSocket close code that ended the connection, or 0.
	Close protocol.CloseCode
	// Status is the HTTP status of a refused upgrade, or 0.
	Status int
	// Doc is the document concerned, or "".
	Doc string
	// ClientSeq is the Delta frame that failed, or 0.
	ClientSeq uint64
	// RetryAfter is the server's hint (Retry-After, retry_after_ms); the
	// client waits at least this long before trying again. A non-zero
	// RetryAfter marks a transient refusal (admission control, rate
	// limits, a restart), not a fault.
	RetryAfter time.Duration
	// Halted is set when the client stopped reconnecting because of this
	// error: it needs a new token (Client.SetToken) or a fix, then
	// Client.Reconnect.
	Halted bool
	// Message is the server's text, if any.
	Message string
	// Err is an underlying local error, if any.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("client:")
	switch {
	case e.Code != 0:
		fmt.Fprintf(&b, " server error %s", e.Code)
	case e.Status != 0:
		fmt.Fprintf(&b, " upgrade refused with HTTP %d", e.Status)
	case e.Close != 0:
		fmt.Fprintf(&b, " connection closed with %d (%s)", uint16(e.Close), e.Close)
	}
	if e.Close != 0 && (e.Code != 0 || e.Status != 0) {
		fmt.Fprintf(&b, ", close %d", uint16(e.Close))
	}
	if e.Doc != "" {
		fmt.Fprintf(&b, " (doc %q)", e.Doc)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	if e.Halted {
		b.WriteString(" (reconnecting stopped)")
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }
