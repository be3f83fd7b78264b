package protocol

// Limits of protocol v1. A decoder checks every count and length it reads
// against both the bytes left in the frame and the limit below before it
// allocates, and returns ErrTooLarge for a value over a limit. An encoder
// refuses to produce what a decoder would refuse. A server may advertise
// smaller values in Welcome.Limits, never larger ones.
const (
	// MaxFrameBytes caps one WebSocket message. Servers set gws
	// ReadMaxPayloadSize to it; senders split larger syncs (Sync.More) and
	// deltas into several frames.
	MaxFrameBytes = 1 << 20

	// MaxOpsPerFrame caps the ops of the one delta a Delta, Sync or Update
	// frame carries. It bounds the CPU one frame can cost the CRDT.
	MaxOpsPerFrame = 16384
	// MaxAgentsPerDelta caps a delta's agent table.
	MaxAgentsPerDelta = 1024
	// MaxVersionEntries caps the entries of one version vector (agents with
	// a non-zero count).
	MaxVersionEntries = 16384
	// MaxDocsPerFrame caps the documents named by one Join or Leave.
	MaxDocsPerFrame = 256
	// MaxDocsPerSocket caps the documents one connection may have joined at
	// once. The server enforces it (CodeTooManyDocs); a decoder cannot.
	MaxDocsPerSocket = 256
	// MaxSelections caps the selection ranges of one presence entry.
	MaxSelections = 32
	// MaxPresencePeers caps the entries and the removals of one
	// PresenceUpdate; a server sends a larger room in several frames.
	MaxPresencePeers = 256

	// MaxDocIDBytes caps a document ID: 1 to 256 bytes of UTF-8 without
	// control characters (U+0000–U+001F, U+007F).
	MaxDocIDBytes = 256
	// MaxTokenBytes caps a bearer token (Hello, Refresh).
	MaxTokenBytes = 8 << 10
	// MaxSoftwareBytes caps Hello.Client and Welcome.Server, e.g.
	// "weft-ts/0.3.1".
	MaxSoftwareBytes = 128
	// MaxNameBytes caps User.Name.
	MaxNameBytes = 128
	// MaxColorBytes caps User.Color, a CSS colour such as "#e4572e".
	MaxColorBytes = 32
	// MaxMessageBytes caps Error.Message and GoingAway.Reason.
	MaxMessageBytes = 1024
	// MaxOpTextBytes caps the UTF-8 text of one insert op. Longer pastes are
	// sent as several ops whose seqs continue one another.
	MaxOpTextBytes = 64 << 10

	// MaxCounter caps every counter on the wire: seqs, Lamport times, version
	// entries, op ends (Seq+Len, Lamport+Len), client and server seqs, clocks
	// and Unix-millisecond times. 2^53-1 is the largest integer a JavaScript
	// number holds exactly, so a TypeScript client never needs BigInt.
	MaxCounter = 1<<53 - 1
)

// Limits are what a server advertises in Welcome: the values this server
// enforces, each at most the protocol maximum. A zero rate means unlimited.
type Limits struct {
	MaxFrameBytes    uint32 // ≤ MaxFrameBytes
	MaxOpsPerFrame   uint32 // ≤ MaxOpsPerFrame
	MaxDocsPerSocket uint32 // ≤ MaxDocsPerSocket
	OpsPerSecond     uint32 // sustained ops per second per connection; 0 = unlimited
	BytesPerSecond   uint32 // sustained inbound bytes per second per connection; 0 = unlimited
	PresenceMs       uint32 // the server relays presence at most once per this many ms per document
	PresenceTTLMs    uint32 // a peer's presence expires this many ms after its last Presence
}

// DefaultLimits returns the protocol maxima with no rate limits, presence
// coalesced to at most 20 updates per second per document and a 30 s TTL.
func DefaultLimits() Limits {
	return Limits{
		MaxFrameBytes:    MaxFrameBytes,
		MaxOpsPerFrame:   MaxOpsPerFrame,
		MaxDocsPerSocket: MaxDocsPerSocket,
		PresenceMs:       50,
		PresenceTTLMs:    30_000,
	}
}
