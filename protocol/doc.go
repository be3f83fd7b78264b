// Package protocol defines the frames of weft's sync protocol, version 1, and
// their msgpack encoding. docs/protocol.md is the normative specification; this
// package is its Go implementation, and testdata/golden holds one encoded frame
// of every kind as the compatibility contract with other implementations.
//
// # Frames
//
// A frame is one binary WebSocket message holding one msgpack array whose
// first element is the frame's Kind, a positive fixint. The remaining elements
// are the frame's fields, in a fixed order, with no field names: a Delta frame
// is [0x04, doc, client seq, delta]. Records inside frames (ops, anchors,
// version entries, users) are arrays in the same way. Encode and Decode
// convert between bytes and the pointer types that implement Frame:
//
//	buf, err := protocol.Encode(buf[:0], &protocol.Ack{Doc: "notes", ClientSeq: 7, Seq: 912})
//	f, err := protocol.Decode(msg)
//	switch f := f.(type) {
//	case *protocol.Delta:
//		...
//	}
//
// An Encoder or Decoder reused by one goroutine avoids the pools behind the
// package functions; a reused Encoder encodes without allocating.
//
// # Bounded decoding
//
// Frames come from untrusted peers, and msgpack's reflective decoder is not
// safe for them: v5.4.1 allocates a slice as long as an array header claims
// before reading any element, so five bytes (dd ff ff ff ff) cost gigabytes.
// This package never decodes into interfaces, maps or reflected slices.
// Every decoder is written by hand, and every array, string and bin length it
// reads is checked twice before anything is allocated: against the bytes
// left in the frame (each element needs at least its minimum encoded size)
// and against a documented limit (MaxOpsPerFrame, MaxDocIDBytes, ...). A
// count over a limit is ErrTooLarge; a count the frame cannot hold is
// ErrMalformed. As a result, decoding allocates at most a small constant
// times the frame's length, which FuzzDecode asserts. Skipping unknown
// elements walks the bytes iteratively, so nesting depth costs nothing.
//
// Decoding is strict about types (a nil or a negative number is not a seq)
// and validates what the frame's structure implies: UTF-8 text whose code
// point count matches the op's length, agent indices inside the delta's
// table, document IDs, counters at most MaxCounter so that a JavaScript
// client holds them exactly. The CRDT validates the rest (causality, Lamport
// times). The encoder applies the same checks, so a frame it produces always
// decodes.
//
// # Versioning
//
// The WebSocket subprotocol "weft.v1" selects the version; incompatible
// changes get a new subprotocol, and Hello and Welcome repeat the version so
// a mismatch is ErrUnsupportedVersion rather than garbage. Within v1, frames
// and records may grow: decoders skip array elements after the ones they
// know, so a later revision can append optional fields without breaking
// older peers. A frame kind a peer does not know is ErrUnknownKind, which a
// client ignores and a server answers with CodeUnknownKind. Encoders are
// deterministic (version vectors are sorted by agent key), so equal frames
// have equal bytes and golden files can pin them.
//
// # Agent tables
//
// An agent key is a 16-byte UUID. A delta carries each key once, in its agent
// table, and its ops refer to agents by index: a typing run costs a dozen
// bytes instead of forty. Indices are local to one delta; receivers map them
// to their own interned agents. The document start, which has no agent, is
// index -1 on the wire and crdt.RootAgent in Go. Version vectors and
// presence anchors name agents by their keys, since they stand alone.
//
// # Errors and close codes
//
// Errors a peer reports travel as Error frames with an ErrorCode; CodeOf
// maps this package's and crdt's errors to codes. When an error ends the
// connection, ErrorCode.CloseCode gives the WebSocket close code, and
// CloseCode.Retry tells a client whether to reconnect with backoff, only
// with a new token (1008, 4001), or not at all.
package protocol
