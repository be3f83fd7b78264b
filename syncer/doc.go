// Package syncer is weft's document server: it keeps one CRDT replica per
// loaded document, applies clients' deltas, broadcasts them at once,
// persists them through the op log, and acknowledges each delta only after
// its log record is durable.
//
// # Layers
//
// Engine is one document's pure state machine, in the style of raft's
// RawNode: it does no I/O, starts no goroutines and reads no clock. Inputs
// go in through Step; Ready says what to do; Advance clears it:
//
//	e.Step(now, syncer.DeltaIn{Session: s, ClientSeq: n, Delta: d})
//	rd := e.Ready()
//	e.Advance()
//	append rd.Records to the log, in order, one batch at a time
//	send rd.Sends and rd.Broadcasts (they need not wait for the disk)
//	... later, when the append returns:
//	e.Step(now, syncer.PersistedIn{Seq: last})   // Acks appear in Ready
//
// Hub runs one goroutine (an actor) per loaded document around its Engine.
// It loads a document once however many ask (snapshot plus log tail),
// persists in order through the Log, retries a failed append without
// acknowledging anything, saves snapshots so cold loads stay short, and
// unloads documents nobody references after IdleTimeout, or sooner, least
// recently used first, when loaded documents exceed the memory budget.
//
// Session is one connection's protocol state; Server adds the WebSocket
// transport (ws.go is the only file that knows gws), admission control,
// authentication before the upgrade, heartbeats, per-connection send
// budgets and graceful shutdown.
//
// # Goroutines and locks
//
// A connection's frames are handled on its gws read goroutine, in order.
// A session hands document work to that document's actor through a bounded
// inbox; a full inbox blocks the reader, which pushes back on the client
// that floods. Actors never block on connections: Peer.Send only queues,
// and a peer over its budget is closed as a slow consumer.
//
// Lock order, outermost first: Server.mu → Hub.mu. Session.mu guards only
// its token and timers and is never held while taking another lock. An
// actor's state is owned by its goroutine; Hub.mu guards only the document
// map and reference counts.
package syncer
