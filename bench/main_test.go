package bench

import (
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

var (
	largeFlag   = flag.Bool("bench.large", false, "run the larger sizes (10,000 clients, 1,000 documents, ...) besides the default ones")
	rateFlag    = flag.Float64("bench.rate", 5, "typing rate of each BenchmarkFanout client, in ops per second")
	durFlag     = flag.Duration("bench.dur", 5*time.Second, "length of each measured load phase")
	samplesFlag = flag.Int("bench.samples", 20, "timed joins and resyncs per measurement")
	heapFlag    = flag.String("bench.heapprofile", "", "BenchmarkManyDocs: write the server's heap profile here while every client is connected")
	inboxFlag   = flag.Int("bench.inbox", 0, "BenchmarkManyDocs: the hub's per-document InboxSize (0: the server's default)")
	tracesFlag  = flag.String("bench.traces", "", "directory of the editing traces (default: ../shared/traces beside the repository)")
)

func TestMain(m *testing.M) {
	// The benchmarks re-execute this binary as their load generator.
	if cfg := os.Getenv(envLoadgen); cfg != "" {
		os.Exit(loadgenMain(cfg))
	}
	os.Exit(m.Run())
}

// tracesDir is ../shared/traces relative to the repository root.
func tracesDir() string {
	if *tracesFlag != "" {
		return *tracesFlag
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "shared", "traces")
}
