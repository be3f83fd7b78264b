package protocol

import "fmt"

// Subprotocol is the WebSocket subprotocol of protocol v1. A client offers it
// in Sec-WebSocket-Protocol; a server that does not list it refuses the
// handshake, so an incompatible client fails before its first frame.
const Subprotocol = "weft.v1"

// Version is the protocol version written into Hello and Welcome. A decoder
// that meets another value returns ErrUnsupportedVersion. It changes only
// together with Subprotocol.
const Version = 1

// Kind is the first element of every frame. Kinds are positive fixints (one
// byte on the wire), so a router can read a frame's kind at byte offset 1
// without decoding the rest (see PeekKind).
//
// The ranges say who may send a kind: 0x01–0x0f client to server, 0x10–0x1f
// either side, 0x20–0x3f server to client.
type Kind uint8

// Frame kinds of protocol v1. The values are part of the wire format.
const (
	KindHello    Kind = 0x01 // client opens the session
	KindJoin     Kind = 0x02 // client subscribes to documents with its versions
	KindLeave    Kind = 0x03 // client unsubscribes
	KindDelta    Kind = 0x04 // client sends ops, numbered by a client seq
	KindPresence Kind = 0x05 // client's cursor and selection in one document
	KindRefresh  Kind = 0x06 // client replaces its token

	KindPing Kind = 0x10 // either side asks for a Pong
	KindPong Kind = 0x11 // the answer to a Ping

	KindWelcome        Kind = 0x20 // server accepts the Hello
	KindSync           Kind = 0x21 // server sends what the client lacks
	KindAck            Kind = 0x22 // server made a Delta durable
	KindUpdate         Kind = 0x23 // server broadcasts another client's ops
	KindPresenceUpdate Kind = 0x24 // server relays peers' presence
	KindRefreshed      Kind = 0x25 // server accepted a Refresh
	KindError          Kind = 0x26 // server reports a typed error
	KindGoingAway      Kind = 0x27 // server is shutting down
)

var kindNames = [...]string{
	KindHello:          "hello",
	KindJoin:           "join",
	KindLeave:          "leave",
	KindDelta:          "delta",
	KindPresence:       "presence",
	KindRefresh:        "refresh",
	KindPing:           "ping",
	KindPong:           "pong",
	KindWelcome:        "welcome",
	KindSync:           "sync",
	KindAck:            "ack",
	KindUpdate:         "update",
	KindPresenceUpdate: "presence_update",
	KindRefreshed:      "refreshed",
	KindError:          "error",
	KindGoingAway:      "going_away",
}

// String returns the snake_case name used in docs/protocol.md and in the
// golden file names, or "Kind(0x..)" for a value v1 does not define.
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%#02x)", uint8(k))
}

// Known reports whether v1 defines k.
func (k Kind) Known() bool { return int(k) < len(kindNames) && kindNames[k] != "" }

// FromClient reports whether a client may send frames of kind k. A server
// answers any other kind with an Error of code CodeProtocol.
func (k Kind) FromClient() bool { return k.Known() && k < 0x20 }

// FromServer reports whether a server may send frames of kind k.
func (k Kind) FromServer() bool { return k.Known() && k >= 0x10 }

// Kinds lists every kind v1 defines, in wire order.
func Kinds() []Kind {
	var ks []Kind
	for k := range kindNames {
		if Kind(k).Known() {
			ks = append(ks, Kind(k))
		}
	}
	return ks
}
