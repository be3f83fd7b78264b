// Package crdt is weft's replicated text: an RGA sequence CRDT over Unicode
// code points. It is pure — standard library only, no I/O, no goroutines,
// no locks, no clock — so it can be fuzzed, benchmarked and reasoned about
// alone, and the server, the Go client and tests all share it.
//
// # Model
//
// Every code point ever inserted has an ID (agent, seq). An agent is one
// replica's 16-byte key (a UUID); seqs are contiguous per agent from 0, and
// deletes consume seqs too, so a version vector (agent → next seq) names
// exactly what a replica holds and Since(v) is a set of range scans.
//
// Each inserted code point also has a Lamport time and an origin: the code
// point it was typed after (or the document start). A new item goes right
// after its origin, then skips every following item whose key (Lamport
// time, agent key bytes, seq) is greater. Because an item's Lamport time
// always exceeds its origin's, the items that follow an origin are exactly
// its younger siblings' subtrees, so this one rule orders concurrent
// inserts the same way on every replica, whatever the delivery order. Ties
// are broken by agent key bytes, never by the local index an agent happens
// to have on one replica.
//
// Deletes leave tombstones: later inserts may name a deleted code point as
// their origin, so its ID, place and Lamport time stay.
//
// # Representation
//
// A span is a run of code points one agent inserted with contiguous seqs
// and Lamport times, each after the previous one; typing produces one span
// per burst, not one item per key. Spans live in an arena and hold no
// pointers, so the garbage collector never scans them. Two indexes reach
// them in O(log n): an order-statistic B-tree over live code points maps a
// position to a span, and a per-agent sorted list of span starts maps an ID
// to a span. A cursor cache serves runs of nearby edits without descending
// the tree, and runs of backspaces or forward deletes move a span boundary
// instead of leaving one tombstone per keystroke.
//
// # Ops and deltas
//
// Local edits (Insert, Delete, Replace) take code-point positions and
// return the Delta to send; Apply merges a remote one. Apply is idempotent
// and commutative across causal orders, rejects an invalid delta whole
// (ErrInvalid) and reports ops whose dependencies have not arrived in a
// *MissingError while applying the rest. Remote input never panics.
//
// # Invariants
//
// Check walks every structure: tree widths, leaf links, the ID index,
// seqs tiling each agent's range exactly, origins that exist and precede
// their spans in time and order, and kept text. Tests run it after every
// op.
package crdt
