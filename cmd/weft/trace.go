package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/internal/edittrace"
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

// traceFile replays one file and measures it. Failures are reported on
// stderr and leave ok false.
func traceFile(path string, runs int, stderr io.Writer) traceResult {
	res := traceResult{File: filepath.Base(path)}
	fail := func(format string, args ...any) traceResult {
		fmt.Fprintf(stderr, "weft trace: %s: %s\n", path, fmt.Sprintf(format, args...))
		res.OK = false
		return res
	}
	tr, err := edittrace.Read(path)
	if err != nil {
		return fail("%v", err)
	}
	res.Kind = "sequential"
	if tr.Concurrent {
		res.Kind = "concurrent"
	}
	res.Patches = tr.Patches
	fmt.Fprintf(stderr, "weft trace: %s: %s, %d txns, %d patches\n", path, res.Kind, len(tr.Txns), tr.Patches)

	// The live heap the final document holds.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	final, err := tr.Replay()
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
	if !tr.HasEnd {
		fail("no endContent to check against")
	} else if text != tr.End {
		i := firstDiff(text, tr.End)
		fail("final text differs from endContent at code point %d (got %d code points, want %d)", i, res.FinalLen, utf8.RuneCountInString(tr.End))
	}

	apply, err := median(runs, func() error {
		d, err := tr.Replay()
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
		m := crdt.New(edittrace.Agent(-3))
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
		l, err := crdt.Load(snap, edittrace.Agent(-3))
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
