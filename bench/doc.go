// Package bench holds weft's load benchmarks. They run the real server
// (syncer over a real bbolt file with fsync) in the benchmark process, on
// 127.0.0.1, and drive it over real loopback WebSockets with protocol v1:
//
//	go test -run '^$' -bench . -benchtime 1x -timeout 60m ./bench
//	go test -run '^$' -bench . -benchtime 1x -timeout 60m ./bench -args -bench.large
//
// Every benchmark reports its figures with b.ReportMetric; one iteration is
// one whole scenario, so run them with -benchtime 1x (a scenario lasts
// longer than the default benchtime anyway, so the framework stops after
// one).
//
// The many-connection scenarios (BenchmarkFanout, BenchmarkManyDocs,
// BenchmarkDurableWrites, BenchmarkReconnectStorm) run their clients in a
// child process: the test binary re-executed as a load generator, spreading
// its sockets over the source addresses 127.0.0.2, 127.0.0.3 and so on. The
// benchmark process then holds only the server, so its getrusage CPU time,
// its heap after GC and a -cpuprofile are the server's alone, and the two
// processes each stay under the file-descriptor limit (one loopback
// connection costs one descriptor on each side). BenchmarkColdJoin and
// BenchmarkResync time one client, in process.
//
// Flags (after -args): -bench.large for the larger sizes, -bench.rate for
// the per-client typing rate of BenchmarkFanout, -bench.dur for the length
// of each measured load phase, -bench.samples for the number of timed joins
// and resyncs, -bench.traces for the directory of the editing traces.
package bench
