package syncer

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/internal/edittrace"
	"github.com/weft-sync/weft/protocol"
)

var cacheT0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func cacheAgent(n byte) crdt.AgentKey { return crdt.AgentKey{n, 0x5c, 15: n} }

// editedText returns a replica of agent after edits random local edits,
// backspace runs among them, so that its history holds many more ops than
// its text has runs.
func editedText(t testing.TB, agent crdt.AgentKey, seed uint64, edits int) *crdt.Text {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed+1))
	d := crdt.New(agent)
	for range edits {
		n := d.Len()
		var err error
		switch k := r.IntN(10); {
		case k < 6 || n == 0:
			_, err = d.Insert(r.IntN(n+1), strings.Repeat([]string{"a", "é", "中"}[r.IntN(3)], 1+r.IntN(4)))
		case k < 9:
			p := r.IntN(n) + 1
			for c := 1 + r.IntN(min(p, 5)); c > 0 && err == nil; c-- {
				p--
				_, err = d.Delete(p, 1)
			}
		default:
			p := r.IntN(n)
			_, err = d.Replace(p, r.IntN(min(n-p, 3)+1), "xy")
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// joinFrames joins session n to e at version v and returns the frames the
// engine sends it.
func joinFrames(t testing.TB, e *Engine, n byte, v crdt.Version) [][]byte {
	t.Helper()
	sess := protocol.SessionID{n, 0xee}
	e.Step(cacheT0, JoinIn{Member: Member{Session: sess, Agent: cacheAgent(n), CanWrite: true}, Version: v})
	rd := e.Ready()
	e.Advance()
	var out [][]byte
	for _, s := range rd.Sends {
		if s.To == sess {
			out = append(out, s.Frame)
		}
	}
	return out
}

// replay applies Sync frames to r, checking that only the last has More
// unset.
func replay(t testing.TB, r *crdt.Text, frames [][]byte) {
	t.Helper()
	for i, b := range frames {
		f, err := protocol.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		s, ok := f.(*protocol.Sync)
		if !ok {
			t.Fatalf("frame %d is a %T, want a Sync", i, f)
		}
		if s.More != (i < len(frames)-1) {
			t.Fatalf("frame %d of %d: More %v", i, len(frames), s.More)
		}
		if err := r.Apply(s.Delta); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
}

func sameFrames(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestSyncCache_SameBytesAsFresh: a join from scratch is answered from the
// cache, byte for byte what a fresh build gives, and the answer rebuilds
// the document.
func TestSyncCache_SameBytesAsFresh(t *testing.T) {
	text := editedText(t, cacheAgent(1), 1, 3000)
	if n := len(text.Since(nil).Ops); n < syncCacheMinOps {
		t.Fatalf("history of %d ops is too short for the test", n)
	}
	e := NewEngine("doc", text, 7, 0, nil, EngineOptions{})
	fresh := NewEngine("doc", text.Clone(), 7, 0, nil, EngineOptions{SyncCacheBytes: -1})

	first := joinFrames(t, e, 1, nil)
	if e.syncCacheBytes() == 0 {
		t.Fatal("a long history was not cached")
	}
	again := joinFrames(t, e, 2, crdt.Version{})
	// A replica holding only ops the document never saw lacks everything.
	stranger := joinFrames(t, e, 3, crdt.Version{cacheAgent(99): 12})
	want := joinFrames(t, fresh, 1, nil)
	if fresh.syncCacheBytes() != 0 {
		t.Fatal("SyncCacheBytes < 0 kept a cache")
	}
	for name, got := range map[string][][]byte{"first": first, "again": again, "stranger": stranger} {
		if !sameFrames(got, want) {
			t.Fatalf("%s join: cached frames differ from freshly built ones", name)
		}
	}
	size := 0
	for _, f := range first {
		if cap(f) != len(f) {
			t.Fatalf("a cached frame of %d bytes holds %d", len(f), cap(f))
		}
		size += len(f)
	}
	if size != e.syncCacheBytes() {
		t.Fatalf("cache counts %d bytes, holds %d", e.syncCacheBytes(), size)
	}
	if &again[0][0] != &first[0][0] {
		t.Fatal("second join from scratch was built again, not served from the cache")
	}
	if e.memSize() != text.MemSize()+e.syncCacheBytes() {
		t.Fatalf("memSize %d leaves out the cache (%d + %d)", e.memSize(), text.MemSize(), e.syncCacheBytes())
	}
	r := crdt.New(cacheAgent(50))
	replay(t, r, again)
	if r.String() != text.String() || !r.Version().Equal(text.Version()) {
		t.Fatal("the cached answer does not rebuild the document")
	}
	// A replica that holds part of the history gets only the rest.
	part := crdt.New(cacheAgent(51))
	d := text.Since(nil)
	if err := part.Apply(protocol.SplitDelta(crdt.Delta{Agents: d.Agents, Ops: d.Ops[:len(d.Ops)/2]}, 1<<30, 1<<30)[0]); err != nil {
		t.Fatal(err)
	}
	rest := joinFrames(t, e, 4, part.Version())
	replay(t, part, rest)
	if part.String() != text.String() {
		t.Fatal("a partial replica was not brought up to date")
	}
	if sameFrames(rest, first) {
		t.Fatal("a partial replica got the whole history")
	}
}

// TestSyncCache_InvalidatedByChange: every change to the document, a
// member's delta or an HTTP edit, drops the cached answer; the next join
// from scratch gets the new text.
func TestSyncCache_InvalidatedByChange(t *testing.T) {
	text := editedText(t, cacheAgent(1), 2, 3000)
	e := NewEngine("doc", text, 7, 0, nil, EngineOptions{})
	old := joinFrames(t, e, 1, nil) // session 1 is a writer
	writer := crdt.New(cacheAgent(1 + 100))
	replay(t, writer, old)

	check := func(what string, n byte) {
		t.Helper()
		got := joinFrames(t, e, n, nil)
		if sameFrames(got, old) {
			t.Fatalf("after %s: a join from scratch got the old answer", what)
		}
		r := crdt.New(cacheAgent(200 + n))
		replay(t, r, got)
		if r.String() != e.Text().String() || !r.Version().Equal(e.Text().Version()) {
			t.Fatalf("after %s: the answer rebuilds %q, want %q", what, r.String(), e.Text().String())
		}
		fresh := NewEngine("doc", e.Text().Clone(), e.Seq(), 0, nil, EngineOptions{SyncCacheBytes: -1})
		if want := joinFrames(t, fresh, n, nil); !sameFrames(got, want) {
			t.Fatalf("after %s: the answer differs from a fresh one", what)
		}
		old = got
	}

	d, err := writer.Insert(0, "new ")
	if err != nil {
		t.Fatal(err)
	}
	e.Step(cacheT0, DeltaIn{Session: protocol.SessionID{1, 0xee}, ClientSeq: 1, Delta: d})
	e.Advance()
	check("a member's delta", 2)

	e.Step(cacheT0, EditIn{Edits: []Edit{{Pos: 1, Delete: 2, Insert: "http"}}, Token: 1})
	e.Advance()
	check("an HTTP edit", 3)

	// A delta holding nothing new changes nothing, and keeps the cache.
	e.Step(cacheT0, DeltaIn{Session: protocol.SessionID{1, 0xee}, ClientSeq: 2, Delta: d})
	e.Advance()
	if again := joinFrames(t, e, 4, nil); &again[0][0] != &old[0][0] {
		t.Fatal("a duplicate delta dropped the cache")
	}
}

// TestSyncCache_Bounds: short histories and answers over SyncCacheBytes
// are not kept, and dropSyncCache forgets.
func TestSyncCache_Bounds(t *testing.T) {
	small := NewEngine("doc", editedText(t, cacheAgent(1), 3, 50), 1, 0, nil, EngineOptions{})
	joinFrames(t, small, 1, nil)
	if small.syncCacheBytes() != 0 {
		t.Fatal("a short history was cached")
	}
	text := editedText(t, cacheAgent(1), 4, 3000)
	capped := NewEngine("doc", text, 1, 0, nil, EngineOptions{SyncCacheBytes: 1000})
	joinFrames(t, capped, 1, nil)
	if capped.syncCacheBytes() != 0 {
		t.Fatal("an answer over SyncCacheBytes was cached")
	}
	e := NewEngine("doc", text, 1, 0, nil, EngineOptions{})
	a := joinFrames(t, e, 1, nil)
	if e.syncCacheBytes() == 0 {
		t.Fatal("not cached")
	}
	e.dropSyncCache()
	if e.syncCacheBytes() != 0 || e.memSize() != text.MemSize() {
		t.Fatal("dropSyncCache kept the answer")
	}
	if b := joinFrames(t, e, 2, nil); !sameFrames(a, b) || &a[0][0] == &b[0][0] {
		t.Fatal("the answer after a drop is not a fresh build of the same bytes")
	}
}

// TestSplitForFramesMatchesSplitDelta: the engine's splitter cuts exactly
// as protocol.SplitDelta does: op counts, byte budgets, long inserts and
// agent tables.
func TestSplitForFramesMatchesSplitDelta(t *testing.T) {
	check := func(name string, d crdt.Delta) {
		t.Helper()
		got := splitForFrames(d)
		want := protocol.SplitDelta(d, protocol.MaxOpsPerFrame, protocol.MaxFrameBytes/2)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: %d parts, protocol.SplitDelta makes %d (or they differ)", name, len(got), len(want))
		}
		if len(got) > 1 {
			t.Logf("%s: %d parts", name, len(got))
		}
	}
	check("empty", crdt.New(cacheAgent(1)).Since(nil))
	check("short", editedText(t, cacheAgent(1), 5, 200).Since(nil))

	// More ops than one frame holds.
	many := crdt.New(cacheAgent(1))
	for i := range 3 * protocol.MaxOpsPerFrame / 2 {
		if _, err := many.Insert(i%7*(many.Len()/7), "q"); err != nil {
			t.Fatal(err)
		}
	}
	check("many ops", many.Since(nil))

	// Pastes longer than one op's text, in 1- to 4-byte code points, and
	// more bytes than one frame holds.
	long := crdt.New(cacheAgent(1))
	for i, s := range []string{"a", "é", "中", "😀", "ab€😀"} {
		if _, err := long.Insert(long.Len()/2, strings.Repeat(s, (protocol.MaxOpTextBytes+i*333)/len(s)+i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 40 {
		if _, err := long.Insert(i*13, strings.Repeat("z", 30000)); err != nil {
			t.Fatal(err)
		}
	}
	check("long texts", long.Since(nil))

	// More agents than one delta's table holds.
	crowd := crdt.New(cacheAgent(1))
	var d crdt.Delta
	for i := range protocol.MaxAgentsPerDelta + 300 {
		d.Agents = append(d.Agents, crdt.AgentKey{byte(i), byte(i >> 8), 7})
		d.Ops = append(d.Ops, crdt.Op{Kind: crdt.OpInsert, Agent: uint32(i), Lamport: uint64(i + 1), Len: 1,
			Origin: crdt.Ref{Agent: crdt.RootAgent}, Text: "w"})
		if i > 0 && i%3 == 0 { // and ops that name other agents
			d.Ops[i].Origin = crdt.Ref{Agent: uint32(i - 1)}
		}
	}
	if err := crowd.Apply(d); err != nil {
		t.Fatal(err)
	}
	check("many agents", crowd.Since(nil))
}

// cacheTestLog is a Log in memory: a snapshot per document and no records.
type cacheTestLog struct {
	mu    sync.Mutex
	snaps map[string][]byte
	recs  map[string]int
}

func (l *cacheTestLog) Append(doc string, recs ...[]byte) (uint64, uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	first := uint64(l.recs[doc]) + 1
	l.recs[doc] += len(recs)
	return first, uint64(l.recs[doc]), nil
}
func (l *cacheTestLog) Range(string, uint64, func(uint64, []byte) error) error { return nil }
func (l *cacheTestLog) SaveSnapshot(string, uint64, []byte) error              { return nil }
func (l *cacheTestLog) LoadSnapshot(doc string) (uint64, []byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.snaps[doc]; s != nil {
		return 1, s, nil
	}
	return 0, nil, nil
}
func (l *cacheTestLog) Stat(string) (DocMeta, error) { return DocMeta{}, ErrUnknownDoc }
func (l *cacheTestLog) List() ([]DocMeta, error)     { return nil, nil }
func (l *cacheTestLog) Delete(string) error          { return nil }

type countingPeer struct {
	mu     sync.Mutex
	frames [][]byte
}

func (p *countingPeer) Send(b []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frames = append(p.frames, b)
	return true
}
func (p *countingPeer) Close(protocol.ErrorCode, string) {}

func (p *countingPeer) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.frames)
}

// TestHub_MemoryPressureDropsSyncCache: a cached answer that takes the hub
// over its memory budget is dropped, though its document is in use.
func TestHub_MemoryPressureDropsSyncCache(t *testing.T) {
	text := editedText(t, cacheAgent(1), 6, 3000)
	snap, err := encodeSnapshot(text, nil)
	if err != nil {
		t.Fatal(err)
	}
	loaded, _, err := decodeSnapshot(snap, cacheAgent(2))
	if err != nil {
		t.Fatal(err)
	}
	log := &cacheTestLog{snaps: map[string][]byte{"big": snap}, recs: map[string]int{}}
	h := NewHub(log, Options{IdleTimeout: time.Hour, MemoryBudget: int64(loaded.MemSize()) + 1024})
	defer h.Close()
	a, err := h.acquire("big")
	if err != nil {
		t.Fatal(err)
	}
	defer h.release(a)
	p := &countingPeer{}
	sess := protocol.SessionID{1}
	if err := a.send(msg{kind: mJoin, session: sess, peer: p, in: JoinIn{Member: Member{Session: sess, Agent: cacheAgent(3)}}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var cached int
		if err := a.call(func(e *Engine) { cached = e.syncCacheBytes() }); err != nil {
			t.Fatal(err)
		}
		if p.count() > 0 && cached == 0 && a.cached.Load() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cache of %d bytes still held over the budget (hub estimate %d, budget %d)", cached, h.mem.Load(), h.opts.MemoryBudget)
		}
		time.Sleep(time.Millisecond)
	}
	if got, want := h.mem.Load(), a.size.Load(); got != want || want != int64(loaded.MemSize()) {
		t.Fatalf("hub estimate %d, document %d, want the text's %d", got, want, loaded.MemSize())
	}
	r := crdt.New(cacheAgent(4))
	p.mu.Lock()
	replay(t, r, p.frames)
	p.mu.Unlock()
	if r.String() != text.String() {
		t.Fatal("the join was not answered in full")
	}
}

// TestHub_IdleDocumentsAreSmall: a loaded document whose members have
// left keeps its text and little else: not its inbox's worth of slots,
// not the sessions that left.
func TestHub_IdleDocumentsAreSmall(t *testing.T) {
	const docs = 300
	h := NewHub(&cacheTestLog{snaps: map[string][]byte{}, recs: map[string]int{}}, Options{IdleTimeout: time.Hour})
	defer h.Close()
	text := strings.Repeat("lorem ipsum dolor sit amet, consectetur adipiscing elit. ", 19)[:1024]
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	acts := make([]*actor, docs)
	for i := range acts {
		a, err := h.acquire(string(rune('A'+i%26)) + strings.Repeat("x", i/26))
		if err != nil {
			t.Fatal(err)
		}
		acts[i] = a
		c := crdt.New(cacheAgent(byte(i)))
		d, _ := c.Insert(0, text)
		sess := protocol.SessionID{byte(i), byte(i >> 8)}
		// The peer is big, so that keeping it after the leave shows.
		p := &countingPeer{frames: make([][]byte, 0, 1024)}
		for _, m := range []msg{
			{kind: mJoin, session: sess, peer: p, in: JoinIn{Member: Member{Session: sess, Agent: c.Agent(), CanWrite: true}}},
			{kind: mInput, in: DeltaIn{Session: sess, ClientSeq: 1, Delta: d}},
		} {
			if err := a.send(m); err != nil {
				t.Fatal(err)
			}
		}
		// Leave once acked, as a client that wrote and closed: the leaving
		// session is owed nothing from the start.
		for p.count() < 2 { // the Sync and the Ack
			time.Sleep(100 * time.Microsecond)
		}
		if err := a.send(msg{kind: mLeave, session: sess}); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range acts {
		// Wait for the append and its ack, then look at what is left.
		for {
			var busy, held bool
			if err := a.call(func(e *Engine) { busy, held = e.Busy() || a.inflight, a.leaving != nil || a.peers != nil }); err != nil {
				t.Fatal(err)
			}
			if !busy {
				if held {
					t.Fatal("a document keeps a session that left and is owed nothing")
				}
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	per := (float64(heap()) - float64(before)) / docs
	t.Logf("%.0f heap bytes per idle 1 KB document", per)
	// About 7 KB today (1 KB of it the text); the inbox alone was 100 KB.
	if per > 16<<10 {
		t.Fatalf("%.0f heap bytes per idle 1 KB document, want under 16 KiB", per)
	}
	runtime.KeepAlive(acts)
}

// BenchmarkJoinFromScratch builds the answer to a join from scratch of the
// automerge-paper document (its whole history), uncached, and served from
// the cache.
func BenchmarkJoinFromScratch(b *testing.B) {
	tr, err := edittrace.Shared("automerge-paper.json.gz")
	if err != nil {
		b.Skip(err)
	}
	text := crdt.New(cacheAgent(1))
	for _, tx := range tr.Txns {
		for _, p := range tx.Patches {
			if _, err := text.Replace(p.Pos, p.Del, p.Ins); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, bc := range []struct {
		name  string
		bytes int
	}{{"build", -1}, {"cached", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			e := NewEngine("doc", text, 1, 0, nil, EngineOptions{SyncCacheBytes: bc.bytes})
			var size int
			b.ReportAllocs()
			for b.Loop() {
				size = 0
				for _, f := range e.syncFrames(nil) {
					size += len(f)
				}
			}
			b.ReportMetric(float64(size), "frame-bytes")
		})
	}
}

// TestHub_IdleSweep: unreferenced documents hold no timer of their own;
// the hub's one idle timer unloads each IdleTimeout after its release, not
// sooner, and not much later.
func TestHub_IdleSweep(t *testing.T) {
	const idle, docs = 60 * time.Millisecond, 12
	h := NewHub(&cacheTestLog{snaps: map[string][]byte{}, recs: map[string]int{}}, Options{IdleTimeout: idle})
	defer h.Close()
	released := map[string]time.Time{}
	for i := range docs {
		id := string(rune('a' + i))
		a, err := h.acquire(id)
		if err != nil {
			t.Fatal(err)
		}
		h.release(a)
		released[id] = time.Now()
		var timer bool
		if err := a.call(func(*Engine) { timer = a.timer != nil }); err != nil {
			t.Fatal(err)
		}
		if timer {
			t.Fatal("an unreferenced document holds a timer of its own")
		}
		time.Sleep(idle / 8) // staggered deadlines
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(released) > 0 {
		loaded := map[string]bool{}
		for _, id := range h.Loaded() {
			loaded[id] = true
		}
		for id, at := range released {
			if loaded[id] {
				continue
			}
			if took := time.Since(at); took < idle {
				t.Fatalf("%s unloaded %v after its release, IdleTimeout is %v", id, took, idle)
			}
			delete(released, id)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d documents still loaded 10 s on", len(released))
		}
		time.Sleep(time.Millisecond)
	}
}
