package syncer

import (
	"fmt"
	"unicode/utf8"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// Joins from scratch. A client that joins with an empty version (a new
// tab, a new device, a client that dropped its replica) is sent the whole
// history: Since(nil), cut into frames and encoded. For a long-edited
// document that is tens of thousands of ops and tens of milliseconds of
// the document's goroutine, for every such join. The engine keeps the
// encoded frames of the last answer and sends the same bytes to every join
// from scratch until the document changes.
//
// Every change to the replica goes through record, which makes a new log
// record (lastSeq grows) and drops the cache; the cache also remembers the
// seq it was built at, so a stale answer cannot be sent even if a change
// took another path. The frames are shared, read-only, by every Send that
// carries them, as broadcast frames already are.

// syncCacheMinOps is the least history worth keeping: below it, rebuilding
// the answer costs less than keeping it in memory, and an idle document
// should cost as little as possible.
const syncCacheMinOps = 1024

type syncCache struct {
	seq    uint64 // e.lastSeq when built
	frames [][]byte
	bytes  int
}

// fromScratch reports whether a replica at version v holds nothing of this
// document, so that what it lacks is Since(nil).
func (e *Engine) fromScratch(v crdt.Version) bool {
	for k, n := range v {
		if n > 0 && e.text.Next(k) > 0 {
			return false
		}
	}
	return true
}

// syncFrames returns the encoded Sync frames that bring a replica at
// version v up to date: what it lacks, within the protocol's frame limits,
// the last frame with More unset.
func (e *Engine) syncFrames(v crdt.Version) [][]byte {
	scratch := e.fromScratch(v)
	if scratch {
		if c := e.cache; c != nil && c.seq == e.lastSeq {
			return c.frames
		}
		v = nil
	}
	d := e.text.Since(v)
	parts := splitForFrames(d)
	ver := e.text.Version()
	keep := scratch && len(d.Ops) >= syncCacheMinOps
	frames := make([][]byte, 0, len(parts))
	size := 0
	var buf []byte
	for i := range parts {
		f := &protocol.Sync{Doc: e.doc, Seq: e.lastSeq, Version: ver, Delta: parts[i], More: i < len(parts)-1}
		est := protocol.EstimateBytes(&parts[i]) + syncHeadroom + len(e.doc) + 18*len(ver)
		if len(parts) == 1 && !keep {
			frames = append(frames, encodeFrame(make([]byte, 0, est), f))
			size += len(frames[0])
			break
		}
		// A long answer: the estimate is generous for ops without text, so
		// encode into one scratch buffer and keep each frame at its size.
		if cap(buf) < est {
			buf = make([]byte, 0, est)
		}
		buf = encodeFrame(buf[:0], f)
		frames = append(frames, append(make([]byte, 0, len(buf)), buf...))
		size += len(buf)
	}
	if keep && size <= e.opts.SyncCacheBytes {
		e.cache = &syncCache{seq: e.lastSeq, frames: frames, bytes: size}
	}
	return frames
}

// syncHeadroom is room for a Sync frame's fields around its delta.
const syncHeadroom = 64

// dropSyncCache forgets the cached answer (the document changed, or memory
// is short).
func (e *Engine) dropSyncCache() { e.cache = nil }

// syncCacheBytes returns the bytes the cached answer holds.
func (e *Engine) syncCacheBytes() int {
	if e.cache == nil {
		return 0
	}
	return e.cache.bytes
}

// memSize estimates the bytes the engine holds for memory budgets: the
// replica and the cached join answer.
func (e *Engine) memSize() int { return e.text.MemSize() + e.syncCacheBytes() }

// encodeFrame appends f's encoding to dst. Frames the engine builds are
// within the limits by construction; failing here is a bug, not bad input.
func encodeFrame(dst []byte, f protocol.Frame) []byte {
	b, err := protocol.Encode(dst, f)
	if err != nil {
		panic(fmt.Sprintf("syncer: encode %s: %v", f.Kind(), err))
	}
	return b
}

// opOverhead is protocol.EstimateBytes's charge for one op without its
// text, taken from the function itself so that the cuts below stay the
// ones protocol.SplitDelta makes.
var opOverhead = protocol.EstimateBytes(&crdt.Delta{Ops: make([]crdt.Op, 1)}) - protocol.EstimateBytes(&crdt.Delta{})

// splitForFrames is protocol.SplitDelta(d, MaxOpsPerFrame, MaxFrameBytes/2)
// for a delta whose agent keys are distinct (as Since's are): the same
// parts, op for op, built without a map look-up and an allocation per op,
// which on a long history cost as much as building the history itself.
func splitForFrames(d crdt.Delta) []crdt.Delta {
	const maxOps, maxBytes = protocol.MaxOpsPerFrame, protocol.MaxFrameBytes / 2
	fits := len(d.Ops) <= maxOps && protocol.EstimateBytes(&d) <= maxBytes && len(d.Agents) <= protocol.MaxAgentsPerDelta
	long := false
	for i := range d.Ops {
		long = long || len(d.Ops[i].Text) > protocol.MaxOpTextBytes
	}
	if fits && !long {
		return []crdt.Delta{d}
	}
	if long {
		return splitCopying(d)
	}
	// Without inserts to cut, a part is a run of d's ops. Its agent table
	// lists the agents its ops name in order of first mention; where that
	// is a prefix of d's own table, as it always is for the first part and
	// for a history of one author, the part shares d's ops unchanged.
	remap := make([]uint32, len(d.Agents))
	stamp := make([]int32, len(d.Agents))
	var out []crdt.Delta
	var agents []crdt.AgentKey
	first, size, part, same := 0, 0, int32(1), true
	agent := func(i uint32) {
		if i != crdt.RootAgent && stamp[i] != part {
			stamp[i] = part
			remap[i] = uint32(len(agents))
			same = same && i == uint32(len(agents))
			agents = append(agents, d.Agents[i])
		}
	}
	cut := func(end int) {
		ops := d.Ops[first:end:end]
		if !same {
			ops = make([]crdt.Op, end-first)
			for k, o := range d.Ops[first:end] {
				o.Agent = remap[o.Agent]
				if o.Kind == crdt.OpInsert {
					if o.Origin.Agent != crdt.RootAgent {
						o.Origin.Agent = remap[o.Origin.Agent]
					}
				} else {
					o.Target.Agent = remap[o.Target.Agent]
				}
				ops[k] = o
			}
		}
		out = append(out, crdt.Delta{Agents: agents, Ops: ops})
	}
	for i := range d.Ops {
		o := &d.Ops[i]
		cost := opOverhead + len(o.Text)
		if n := i - first; n > 0 && (n >= maxOps || size+cost > maxBytes || len(agents)+3 > protocol.MaxAgentsPerDelta) {
			cut(i)
			agents, first, size, same = nil, i, 0, true
			part++
		}
		agent(o.Agent)
		if o.Kind == crdt.OpInsert {
			agent(o.Origin.Agent)
		} else {
			agent(o.Target.Agent)
		}
		size += cost
	}
	cut(len(d.Ops))
	return out
}

// splitCopying is splitForFrames for a delta with inserts to cut: every
// part gets its own ops.
func splitCopying(d crdt.Delta) []crdt.Delta {
	const maxOps, maxBytes = protocol.MaxOpsPerFrame, protocol.MaxFrameBytes / 2
	// The parts' ops share one array; agents are renumbered per part
	// through a table stamped with the part's number.
	all := make([]crdt.Op, 0, len(d.Ops))
	remap := make([]uint32, len(d.Agents))
	stamp := make([]int32, len(d.Agents))
	var out []crdt.Delta
	var agents []crdt.AgentKey
	first, size, part := 0, 0, int32(1)
	agent := func(i uint32) uint32 {
		if i == crdt.RootAgent {
			return i
		}
		if stamp[i] != part {
			stamp[i] = part
			remap[i] = uint32(len(agents))
			agents = append(agents, d.Agents[i])
		}
		return remap[i]
	}
	add := func(o crdt.Op) {
		cost := opOverhead + len(o.Text)
		if n := len(all) - first; n > 0 && (n >= maxOps || size+cost > maxBytes || len(agents)+3 > protocol.MaxAgentsPerDelta) {
			out = append(out, crdt.Delta{Agents: agents, Ops: all[first:len(all):len(all)]})
			agents, first, size = nil, len(all), 0
			part++
		}
		o.Agent = agent(o.Agent)
		if o.Kind == crdt.OpInsert {
			o.Origin.Agent = agent(o.Origin.Agent)
		} else {
			o.Target.Agent = agent(o.Target.Agent)
		}
		all = append(all, o)
		size += cost
	}
	for _, o := range d.Ops {
		if o.Kind != crdt.OpInsert || len(o.Text) <= protocol.MaxOpTextBytes {
			add(o)
			continue
		}
		// An insert too long for one op, cut as protocol.SplitDelta cuts it.
		for o.Text != "" {
			cut := min(len(o.Text), protocol.MaxOpTextBytes)
			for cut < len(o.Text) && !utf8.RuneStart(o.Text[cut]) {
				cut--
			}
			n := uint64(utf8.RuneCountInString(o.Text[:cut]))
			p := o
			p.Text, p.Len = o.Text[:cut], n
			add(p)
			o = protocol.TrimOp(o, n)
		}
	}
	if len(all) > first || len(out) == 0 {
		out = append(out, crdt.Delta{Agents: agents, Ops: all[first:]})
	}
	return out
}
