package protocol

import (
	"errors"
	"fmt"

	"github.com/weft-sync/weft/crdt"
)

// Errors callers branch on. Decode and Encode wrap them with the field that
// failed, so errors.Is works and the message says where.
var (
	// ErrMalformed marks bytes that are not a well-formed v1 frame: bad
	// msgpack, a wrong type, a truncated value, trailing bytes, invalid UTF-8,
	// an agent index outside the delta's table, a count that the remaining
	// bytes cannot hold, and so on.
	ErrMalformed = errors.New("protocol: malformed frame")
	// ErrTooLarge marks a frame, count, string or counter beyond one of the
	// documented limits (MaxFrameBytes, MaxOpsPerFrame, MaxCounter, ...).
	ErrTooLarge = errors.New("protocol: limit exceeded")
	// ErrUnsupportedVersion marks a Hello or Welcome whose protocol version is
	// not Version.
	ErrUnsupportedVersion = errors.New("protocol: unsupported protocol version")
	// ErrUnknownKind marks a well-formed frame whose kind v1 does not define.
	// Unlike the errors above it does not mean the peer is broken: a client
	// ignores such frames, and a server answers with CodeUnknownKind and
	// keeps the connection.
	ErrUnknownKind = errors.New("protocol: unknown frame kind")
)

func malformed(what, format string, args ...any) error {
	return errorf(ErrMalformed, what, format, args...)
}

// errorf wraps sentinel with the field that failed: "protocol: malformed
// frame: delta.ops text: invalid UTF-8".
func errorf(sentinel error, what, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", sentinel, what, fmt.Sprintf(format, args...))
}

func tooLarge(what string, n, limit uint64) error {
	return fmt.Errorf("%w: %s: %d > %d", ErrTooLarge, what, n, limit)
}

// ErrorCode is the typed code of an Error frame. Values are part of the wire
// format; a client treats a code it does not know like CodeInternal.
type ErrorCode uint16

// Error codes of protocol v1. The comment says what the receiver of an Error
// frame with that code does; CloseCode gives the WebSocket close code a server
// uses when the error also ends the connection.
const (
	// CodeTokenExpired: the token expired. Send Refresh with a new token (or
	// reconnect with one); never retry with the old token. Close 4001.
	CodeTokenExpired ErrorCode = 1
	// CodeUnsupportedVersion: the peer does not speak this protocol version.
	// Do not retry; upgrade. Close 4002.
	CodeUnsupportedVersion ErrorCode = 2
	// CodeForbidden: the token does not grant the access the frame needs (for
	// Error.Doc, or for the session when Doc is empty). Do not retry with the
	// same token. Close 4003.
	CodeForbidden ErrorCode = 3
	// CodeNotFound: Error.Doc does not exist (it was deleted). Close 4004.
	CodeNotFound ErrorCode = 4
	// CodeMalformed: a frame could not be decoded (ErrMalformed). The client
	// has a bug; do not resend the frame. Close 4005.
	CodeMalformed ErrorCode = 5
	// CodeProtocol: a well-formed frame arrived when it is not allowed (a
	// Delta before Hello, a second Hello, a server-only kind, a client seq
	// that does not increase). Close 4006.
	CodeProtocol ErrorCode = 6
	// CodeUnknownKind: the server does not know the frame's kind
	// (ErrUnknownKind). The connection stays open. Close 4007.
	CodeUnknownKind ErrorCode = 7
	// CodeSlowConsumer: the client did not read fast enough; the server
	// dropped its queue. Reconnect with backoff and resync. Close 4008.
	CodeSlowConsumer ErrorCode = 8
	// CodeInvalidDelta: the CRDT rejected the delta (crdt.ErrInvalid); none of
	// its invalid ops were applied. The client has a bug. Close 4009.
	CodeInvalidDelta ErrorCode = 9
	// CodeMissingDependency: the delta depends on IDs the server lacks
	// (crdt.ErrMissing) and they did not arrive in time. Rejoin the document
	// with the current version to resync. Close 4010.
	CodeMissingDependency ErrorCode = 10
	// CodeTooManyDocs: joining would exceed the documents per socket. Close
	// 4011.
	CodeTooManyDocs ErrorCode = 11
	// CodeDocTooLarge: applying the delta would exceed the server's document
	// size limit; the delta was rejected. Close 4012.
	CodeDocTooLarge ErrorCode = 12
	// CodeTimeout: the client was silent too long (no Hello, no traffic).
	// Reconnect with backoff. Close 4013.
	CodeTimeout ErrorCode = 13
	// CodeNotJoined: a Delta or Presence named a document the session has
	// not joined. Close 4014.
	CodeNotJoined ErrorCode = 14
	// CodeUnauthorized: no token, or a token that does not verify. Get a new
	// token before reconnecting. Close 1008.
	CodeUnauthorized ErrorCode = 15
	// CodeTooLarge: a frame or a field exceeded a limit (ErrTooLarge). Split
	// the data. Close 1009.
	CodeTooLarge ErrorCode = 16
	// CodeInternal: the server failed. Retry with backoff. Close 1011.
	CodeInternal ErrorCode = 17
	// CodeRateLimited: the client exceeded its ops/s or bytes/s; the frame
	// was dropped. Resend no sooner than Error.RetryAfterMs. Close 1013.
	CodeRateLimited ErrorCode = 18
	// CodeOverloaded: the server refuses new work (connections, joins) for
	// now. Retry no sooner than Error.RetryAfterMs. Close 1013.
	CodeOverloaded ErrorCode = 19
	// CodeGoingAway: the server is shutting down (see GoingAway). Close 1001.
	CodeGoingAway ErrorCode = 20
)

var codeNames = [...]string{
	CodeTokenExpired:       "token_expired",
	CodeUnsupportedVersion: "unsupported_version",
	CodeForbidden:          "forbidden",
	CodeNotFound:           "not_found",
	CodeMalformed:          "malformed",
	CodeProtocol:           "protocol",
	CodeUnknownKind:        "unknown_kind",
	CodeSlowConsumer:       "slow_consumer",
	CodeInvalidDelta:       "invalid_delta",
	CodeMissingDependency:  "missing_dependency",
	CodeTooManyDocs:        "too_many_docs",
	CodeDocTooLarge:        "doc_too_large",
	CodeTimeout:            "timeout",
	CodeNotJoined:          "not_joined",
	CodeUnauthorized:       "unauthorized",
	CodeTooLarge:           "too_large",
	CodeInternal:           "internal",
	CodeRateLimited:        "rate_limited",
	CodeOverloaded:         "overloaded",
	CodeGoingAway:          "going_away",
}

// String returns the snake_case name of the code, or "ErrorCode(n)".
func (c ErrorCode) String() string {
	if int(c) < len(codeNames) && codeNames[c] != "" {
		return codeNames[c]
	}
	return fmt.Sprintf("ErrorCode(%d)", uint16(c))
}

// CloseCode returns the WebSocket close code a server sends when error c ends
// the connection. Codes with a standard meaning use it (1001, 1008, 1009,
// 1011, 1013); every other code c closes with 4000+c. An unknown code maps
// like CodeInternal.
func (c ErrorCode) CloseCode() CloseCode {
	switch c {
	case CodeUnauthorized:
		return ClosePolicyViolation
	case CodeTooLarge:
		return CloseTooBig
	case CodeInternal:
		return CloseInternal
	case CodeRateLimited, CodeOverloaded:
		return CloseTryAgainLater
	case CodeGoingAway:
		return CloseGoingAway
	}
	if c >= CodeTokenExpired && c <= CodeNotJoined {
		return CloseCode(4000 + uint16(c))
	}
	return CloseInternal
}

// CodeOf maps an error from this package or from crdt to the code a server
// reports for it. Anything else is CodeInternal.
func CodeOf(err error) ErrorCode {
	switch {
	case errors.Is(err, ErrTooLarge):
		return CodeTooLarge
	case errors.Is(err, ErrUnsupportedVersion):
		return CodeUnsupportedVersion
	case errors.Is(err, ErrUnknownKind):
		return CodeUnknownKind
	case errors.Is(err, ErrMalformed):
		return CodeMalformed
	case errors.Is(err, crdt.ErrInvalid):
		return CodeInvalidDelta
	case errors.Is(err, crdt.ErrMissing):
		return CodeMissingDependency
	}
	return CodeInternal
}

// CloseCode is a WebSocket close code (RFC 6455 §7.4) as weft uses it.
type CloseCode uint16

// Close codes of protocol v1. 4001–4014 are 4000 + an ErrorCode.
const (
	CloseNormal          CloseCode = 1000 // deliberate end; do not reconnect
	CloseGoingAway       CloseCode = 1001 // server shutdown; reconnect after retry-after
	CloseAbnormal        CloseCode = 1006 // no close frame (never sent; seen locally)
	ClosePolicyViolation CloseCode = 1008 // unauthorized: new token required
	CloseTooBig          CloseCode = 1009 // frame over the limit
	CloseInternal        CloseCode = 1011 // server error
	CloseServiceRestart  CloseCode = 1012 // server restarting
	CloseTryAgainLater   CloseCode = 1013 // overloaded, rate limited

	CloseTokenExpired       = CloseCode(4000 + CodeTokenExpired)       // 4001: new token required
	CloseUnsupportedVersion = CloseCode(4000 + CodeUnsupportedVersion) // 4002
	CloseForbidden          = CloseCode(4000 + CodeForbidden)          // 4003
	CloseNotFound           = CloseCode(4000 + CodeNotFound)           // 4004
	CloseMalformed          = CloseCode(4000 + CodeMalformed)          // 4005
	CloseProtocol           = CloseCode(4000 + CodeProtocol)           // 4006
	CloseUnknownKind        = CloseCode(4000 + CodeUnknownKind)        // 4007
	CloseSlowConsumer       = CloseCode(4000 + CodeSlowConsumer)       // 4008
	CloseInvalidDelta       = CloseCode(4000 + CodeInvalidDelta)       // 4009
	CloseMissingDependency  = CloseCode(4000 + CodeMissingDependency)  // 4010
	CloseTooManyDocs        = CloseCode(4000 + CodeTooManyDocs)        // 4011
	CloseDocTooLarge        = CloseCode(4000 + CodeDocTooLarge)        // 4012
	CloseTimeout            = CloseCode(4000 + CodeTimeout)            // 4013
	CloseNotJoined          = CloseCode(4000 + CodeNotJoined)          // 4014
)

// String names standard codes and, for 4000+c, the ErrorCode c.
func (c CloseCode) String() string {
	switch c {
	case CloseNormal:
		return "normal"
	case CloseGoingAway:
		return "going_away"
	case CloseAbnormal:
		return "abnormal"
	case ClosePolicyViolation:
		return "policy_violation"
	case CloseTooBig:
		return "too_big"
	case CloseInternal:
		return "internal"
	case CloseServiceRestart:
		return "service_restart"
	case CloseTryAgainLater:
		return "try_again_later"
	}
	if c > 4000 && c < 5000 {
		if e := ErrorCode(c - 4000); int(e) < len(codeNames) && codeNames[e] != "" {
			return codeNames[e]
		}
	}
	return fmt.Sprintf("CloseCode(%d)", uint16(c))
}

// Retry says what a client does after the server closed its socket.
type Retry uint8

const (
	// RetryBackoff: reconnect with exponential backoff and full jitter, never
	// sooner than the last retry-after hint, then resync every document.
	RetryBackoff Retry = iota
	// RetryNewToken: do not reconnect until the application supplies a new
	// token; reconnecting with the same token would fail the same way.
	RetryNewToken
	// RetryNever: do not reconnect automatically; report to the application.
	// The client, its token's grants or its version must change first.
	RetryNever
)

func (r Retry) String() string {
	switch r {
	case RetryBackoff:
		return "backoff"
	case RetryNewToken:
		return "new_token"
	case RetryNever:
		return "never"
	}
	return fmt.Sprintf("Retry(%d)", uint8(r))
}

// Retry returns the client's policy for close code c. Only 1008 and 4001
// require a new token; 1000 and the 4xxx codes of client bugs and refusals
// (4002–4007, 4009, 4011, 4012, 4014) forbid automatic reconnects. Every other
// code, including 1006 and codes this version does not know, means backoff.
func (c CloseCode) Retry() Retry {
	switch c {
	case ClosePolicyViolation, CloseTokenExpired:
		return RetryNewToken
	case CloseNormal, CloseUnsupportedVersion, CloseForbidden, CloseNotFound,
		CloseMalformed, CloseProtocol, CloseUnknownKind, CloseInvalidDelta,
		CloseTooManyDocs, CloseDocTooLarge, CloseNotJoined:
		return RetryNever
	}
	return RetryBackoff
}
