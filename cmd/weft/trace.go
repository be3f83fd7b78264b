package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/weft-sync/weft/crdt"
)

// traceFlags defines the flags of "weft trace" and returns its body.
//
// weft trace replays editing traces in the public editing-traces format
// (plain or gzipped JSON). A sequential trace is a list of txns whose
// patches [pos, delCount, insText] (positions in code points) apply in
// order. A concurrent trace ("kind": "concurrent", or txns with "parents")
// names for each txn its agent and parent txns: the replay forks a replica
// per agent, brings the txn's replica to exactly the merged state of its
// parents, applies the patches there and merges everything at the end. For
// each file it prints one JSON line on stdout; progress and errors go to
// stderr. The exit status is 1 when any file fails or does not end in its
// endContent.
func traceFlags(fs *flag.FlagSet) func(args []string, stdout, stderr io.Writer) int {
	runs := fs.Int("runs", 5, "timed repetitions per measurement; the median is reported")
	return func(args []string, stdout, stderr io.Writer) int {
		if len(args) == 0 {
			fmt.Fprintln(stderr, "weft trace: no trace files given")
			fs.Usage()
			return 2
		}
		if *runs < 1 {
			fmt.Fprintln(stderr, "weft trace: -runs must be at least 1")
			return 2
		}
		status := 0
		enc := json.NewEncoder(stdout)
		for _, path := range args {
			res := traceFile(path, *runs, stderr)
			if err := enc.Encode(res); err != nil {
				fmt.Fprintf(stderr, "weft trace: %v\n", err)
				return 1
			}
			if !res.OK {
				status = 1
			}
		}
		return status
	}
}

// traceResult is the JSON line printed for one file. Times are medians in
// milliseconds.
type traceResult struct {
	File          string  `json:"file"`
	Kind          string  `json:"kind"`
	Patches       int     `json:"patches"`
	FinalLen      int     `json:"final_len"`
	OK            bool    `json:"ok"`
	ApplyMS       float64 `json:"apply_ms"`
	MergeMS       float64 `json:"merge_ms"`
	SnapshotBytes int     `json:"snapshot_bytes"`
	LoadMS        float64 `json:"load_ms"`
	HeapBytes     int64   `json:"heap_bytes"`
}

// A trace as the editing-traces format writes it.
type traceJSON struct {
	Kind         string  `json:"kind"`
	StartContent string  `json:"startContent"`
	EndContent   *string `json:"endContent"`
	NumAgents    int     `json:"numAgents"`
	Txns         []struct {
		Parents *[]int       `json:"parents"`
		Agent   int          `json:"agent"`
		Patches []tracePatch `json:"patches"`
	} `json:"txns"`
}

// tracePatch deletes del code points at pos, then inserts ins there.
type tracePatch struct {
	pos, del int
	ins      string
}

func (p *tracePatch) UnmarshalJSON(b []byte) error {
	var a []json.RawMessage
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	if len(a) != 3 {
		return fmt.Errorf("patch %s: want [pos, delCount, insText]", b)
	}
	if err := json.Unmarshal(a[0], &p.pos); err != nil {
		return fmt.Errorf("patch position: %w", err)
	}
	if err := json.Unmarshal(a[1], &p.del); err != nil {
		return fmt.Errorf("patch delete count: %w", err)
	}
	if err := json.Unmarshal(a[2], &p.ins); err != nil {
		return fmt.Errorf("patch text: %w", err)
	}
	if p.pos < 0 || p.del < 0 {
		return fmt.Errorf("patch %s: negative position or count", b)
	}
	return nil
}

type txn struct {
	agent   int
	parents []int
	patches []tracePatch
}

// editTrace is a parsed trace.
type editTrace struct {
	concurrent bool
	agents     int
	start, end string
	hasEnd     bool
	txns       []txn
	patches    int
}

// readTrace reads and checks a trace file, gzipped or not.
func readTrace(path string) (*editTrace, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r io.Reader = bytes.NewReader(raw)
	if len(raw) >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, err
		}
		r = zr
	}
	var tj traceJSON
	dec := json.NewDecoder(r)
	if err := dec.Decode(&tj); err != nil {
		return nil, fmt.Errorf("decoding JSON: %w", err)
	}
	tr := &editTrace{start: tj.StartContent, agents: tj.NumAgents}
	if tj.EndContent != nil {
		tr.end, tr.hasEnd = *tj.EndContent, true
	}
	switch tj.Kind {
	case "", "sequential":
	case "concurrent":
		tr.concurrent = true
	default:
		return nil, fmt.Errorf("unknown trace kind %q", tj.Kind)
	}
	for _, tx := range tj.Txns {
		if tx.Parents != nil {
			tr.concurrent = true
		}
	}
	for i, tx := range tj.Txns {
		t := txn{agent: tx.Agent, patches: tx.Patches}
		if tx.Parents != nil {
			t.parents = *tx.Parents
		}
		for _, p := range t.parents {
			if p < 0 || p >= i {
				return nil, fmt.Errorf("txn %d: parent %d is not an earlier txn", i, p)
			}
		}
		if tx.Agent < 0 {
			return nil, fmt.Errorf("txn %d: agent %d", i, tx.Agent)
		}
		if tr.concurrent {
			tr.agents = max(tr.agents, tx.Agent+1)
		}
		for j, p := range tx.Patches {
			if !utf8.ValidString(p.ins) {
				return nil, fmt.Errorf("txn %d patch %d: text is not valid UTF-8", i, j)
			}
		}
		tr.patches += len(tx.Patches)
		tr.txns = append(tr.txns, t)
	}
	if tr.concurrent && tj.NumAgents > 0 && tr.agents > tj.NumAgents {
		return nil, fmt.Errorf("txns name %d agents, numAgents is %d", tr.agents, tj.NumAgents)
	}
	return tr, nil
}

// traceAgent returns the agent key of trace agent i; -1 writes the start
// content and -2 is the merging replica.
func traceAgent(i int) crdt.AgentKey {
	var k crdt.AgentKey
	copy(k[:], "weft-trace")
	binary.BigEndian.PutUint32(k[12:], uint32(i+2))
	return k
}

// applyPatch makes one patch as a local edit and returns its delta.
func applyPatch(d *crdt.Text, p tracePatch) (crdt.Delta, error) {
	switch {
	case p.del > 0 && p.ins != "":
		return d.Replace(p.pos, p.del, p.ins)
	case p.del > 0:
		return d.Delete(p.pos, p.del)
	default:
		return d.Insert(p.pos, p.ins)
	}
}

// replay builds the trace's final document.
func (tr *editTrace) replay() (*crdt.Text, error) {
	if tr.concurrent {
		return tr.replayConcurrent()
	}
	d := crdt.New(traceAgent(0))
	if tr.start != "" {
		if _, err := d.Insert(0, tr.start); err != nil {
			return nil, fmt.Errorf("start content: %w", err)
		}
	}
	for i, tx := range tr.txns {
		for j, p := range tx.patches {
			if _, err := applyPatch(d, p); err != nil {
				return nil, fmt.Errorf("txn %d patch %d: %w", i, j, err)
			}
		}
	}
	return d, nil
}

// replayConcurrent forks a replica per agent. Before each txn, that agent's
// replica is brought to exactly the merged state of the txn's parents: the
// target version is the per-agent maximum of the parents' versions, and the
// ops it lacks come from Between on a replica holding everything so far.
// The patches are then applied locally and their deltas merged into that
// replica, which is returned after every agent's replica has merged
// everything too and been found equal to it.
func (tr *editTrace) replayConcurrent() (*crdt.Text, error) {
	root := crdt.New(traceAgent(-1))
	if tr.start != "" {
		if _, err := root.Insert(0, tr.start); err != nil {
			return nil, fmt.Errorf("start content: %w", err)
		}
	}
	all := root.Fork(traceAgent(-2))
	reps := make([]*crdt.Text, tr.agents)
	for a := range reps {
		reps[a] = root.Fork(traceAgent(a))
	}
	startV := root.Version()
	versions := make([]crdt.Version, len(tr.txns))
	for i, tx := range tr.txns {
		r := reps[tx.agent]
		target := startV.Clone()
		for _, p := range tx.parents {
			for k, n := range versions[p] {
				target[k] = max(target[k], n)
			}
		}
		if !target.Covers(r.Version()) {
			return nil, fmt.Errorf("txn %d: agent %d has edits its parents do not", i, tx.agent)
		}
		missing, err := all.Between(r.Version(), target)
		if err != nil {
			return nil, fmt.Errorf("txn %d: collecting the parents' ops: %w", i, err)
		}
		if err := r.Apply(missing); err != nil {
			return nil, fmt.Errorf("txn %d: merging the parents: %w", i, err)
		}
		if !r.Version().Equal(target) {
			return nil, fmt.Errorf("txn %d: agent %d did not reach its parents' version", i, tx.agent)
		}
		for j, p := range tx.patches {
			d, err := applyPatch(r, p)
			if err != nil {
				return nil, fmt.Errorf("txn %d patch %d: %w", i, j, err)
			}
			if err := all.Apply(d); err != nil {
				return nil, fmt.Errorf("txn %d patch %d: merging: %w", i, j, err)
			}
		}
		versions[i] = r.Version()
	}
	for a, r := range reps {
		if err := r.Apply(all.Since(r.Version())); err != nil {
			return nil, fmt.Errorf("final merge into agent %d: %w", a, err)
		}
		if !r.Version().Equal(all.Version()) || r.String() != all.String() {
			return nil, fmt.Errorf("agent %d's replica differs from the merged document", a)
		}
	}
	return all, nil
}

// traceFile replays one file and measures it. Failures are reported on
// stderr and leave ok false.
func traceFile(path string, runs int, stderr io.Writer) traceResult {
	res := traceResult{File: filepath.Base(path)}
	fail := func(format string, args ...any) traceResult {
		fmt.Fprintf(stderr, "weft trace: %s: %s\n", path, fmt.Sprintf(format, args...))
		res.OK = false
		return res
	}
	tr, err := readTrace(path)
	if err != nil {
		return fail("%v", err)
	}
	res.Kind = "sequential"
	if tr.concurrent {
		res.Kind = "concurrent"
	}
	res.Patches = tr.patches
	fmt.Fprintf(stderr, "weft trace: %s: %s, %d txns, %d patches\n", path, res.Kind, len(tr.txns), tr.patches)

	// The live heap the final document holds.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	final, err := tr.replay()
	if err != nil {
		return fail("%v", err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	res.HeapBytes = int64(after.HeapAlloc) - int64(before.HeapAlloc)
	runtime.KeepAlive(final)

	text := final.String()
	res.FinalLen = final.Len()
	res.OK = true
	if !tr.hasEnd {
		fail("no endContent to check against")
	} else if text != tr.end {
		i := firstDiff(text, tr.end)
		fail("final text differs from endContent at code point %d (got %d code points, want %d)", i, res.FinalLen, utf8.RuneCountInString(tr.end))
	}

	apply, err := median(runs, func() error {
		d, err := tr.replay()
		if err == nil && d.String() != text {
			err = errors.New("a repeated replay gave another text")
		}
		return err
	})
	if err != nil {
		return fail("%v", err)
	}
	res.ApplyMS = apply

	hist := final.Since(nil)
	res.MergeMS, err = median(runs, func() error {
		m := crdt.New(traceAgent(-3))
		if err := m.Apply(hist); err != nil {
			return fmt.Errorf("merging the history: %w", err)
		}
		if m.String() != text {
			return errors.New("the merged history differs from the document")
		}
		return nil
	})
	if err != nil {
		return fail("%v", err)
	}

	snap, err := final.MarshalBinary()
	if err != nil {
		return fail("snapshot: %v", err)
	}
	res.SnapshotBytes = len(snap)
	res.LoadMS, err = median(runs, func() error {
		l, err := crdt.Load(snap, traceAgent(-3))
		if err != nil {
			return fmt.Errorf("loading the snapshot: %w", err)
		}
		if l.String() != text {
			return errors.New("the loaded snapshot differs from the document")
		}
		return nil
	})
	if err != nil {
		return fail("%v", err)
	}
	return res
}

// median runs fn n times and returns the median wall time in milliseconds,
// rounded to microseconds.
func median(n int, fn func() error) (float64, error) {
	ds := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if err := fn(); err != nil {
			return 0, err
		}
		ds = append(ds, time.Since(start))
	}
	slices.Sort(ds)
	m := ds[len(ds)/2]
	if len(ds)%2 == 0 {
		m = (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
	}
	return math.Round(float64(m)/float64(time.Millisecond)*1000) / 1000, nil
}

// firstDiff returns the first code point at which a and b differ.
func firstDiff(a, b string) int {
	i := 0
	for len(a) > 0 && len(b) > 0 {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			break
		}
		a, b = a[na:], b[nb:]
		i++
	}
	return i
}
