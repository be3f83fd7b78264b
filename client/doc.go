// Package client is the Go SDK for weft: offline-first collaborative text
// editing over one WebSocket per server (protocol v1, docs/protocol.md).
//
//	c, err := client.Dial(ctx, "ws://127.0.0.1:8080/v1/ws", client.Options{
//		User:      protocol.User{Name: "Ada", Color: "#e4572e"},
//		StatePath: "notes.state", // optional: survive restarts
//		OnChange:  func(e client.Event) { ... }, // local and remote changes
//	})
//	defer c.Close()
//	d, err := c.Open("notes")
//	err = d.Insert(0, "héllo 中 🙂")      // applied at once, online or not
//	err = d.WaitSynced(ctx)              // every edit durable on the server
//
// # Offline first
//
// Dial returns at once; the client connects in the background and
// reconnects for ever, with exponential backoff and full jitter, honouring
// the server's retry-after hints (HTTP 429/503 Retry-After, Error and
// GoingAway retry_after_ms). Edits apply to the local replica immediately
// whether connected or not. Every local edit stays pending until the server
// acknowledges it as durable. After each (re)connect, one Join frame per
// 256 documents carries every open document's version vector; for each
// document the server answers with what the client lacks and its own
// version, and the client then sends the ops the server lacks and resends
// every pending edit (the server deduplicates ops by ID and acknowledges
// duplicates, which is how the client learns they are durable).
//
// With Options.StatePath, each document's replica and pending edits live
// in a bbolt file: an edit is committed there before the edit call returns
// and before it is sent, so a restarted process resends exactly the edits
// the server may lack, under their original IDs, and never creates them
// again. The agent key is stored in the same file.
//
// # Events, status, presence
//
// Options.OnChange receives every change (crdt.Change positions in code
// points) with its origin, local or remote, in apply order per document.
// Doc.Status says offline, pending or synced, with the number of
// unacknowledged ops; Doc.WaitSynced waits for synced. Doc.SetPresence
// publishes a caret and selections as anchors; Doc.Peers resolves the
// others'.
//
// # Errors
//
// Client.Errors reports, as *Error, what the server refused and why. Close
// codes and statuses that ask for a new token (HTTP 401, 1008, 4001) stop
// reconnecting until SetToken, unless Options.TokenFunc can supply one, in
// which case the client fetches it and goes on; TokenFunc is also used to
// refresh the token over the open socket before it expires. Codes that
// mean a client bug or a refusal (§9 of the protocol) stop reconnecting
// until Reconnect.
//
// # Goroutines
//
// A client runs one goroutine for its connection loop, one reader per live
// socket, and with a state file one writer. Close waits for all of them.
package client
