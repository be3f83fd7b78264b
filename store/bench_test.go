package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func openBench(b *testing.B, opts Options) *DB {
	b.Helper()
	db, err := Open(filepath.Join(b.TempDir(), "bench.db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := db.Close(); err != nil {
			b.Error(err)
		}
	})
	return db
}

// workers is a fixed pool of goroutines; round makes n of them run fn once
// each and waits for all, so every benchmark iteration is n concurrent
// appends.
type workers struct {
	n    int
	work chan int
	wg   sync.WaitGroup
	quit sync.WaitGroup
}

func newWorkers(b *testing.B, n int, fn func(w int) error) *workers {
	p := &workers{n: n, work: make(chan int)}
	for range n {
		p.quit.Go(func() {
			for w := range p.work {
				if err := fn(w); err != nil {
					b.Error(err)
				}
				p.wg.Done()
			}
		})
	}
	b.Cleanup(func() {
		close(p.work)
		p.quit.Wait()
	})
	return p
}

func (p *workers) round() {
	p.wg.Add(p.n)
	for w := range p.n {
		p.work <- w
	}
	p.wg.Wait()
}

const benchDocs = 16

// BenchmarkAppend measures durable appends of one 64-byte record with 1, 16
// and 256 concurrent appenders spread over 16 documents: the store's group
// commit against a plain db.Update per append on a bbolt file opened with
// the same options. One op is one round in which every appender appends
// once; appends/s is the figure to compare.
func BenchmarkAppend(b *testing.B) {
	rec := bytes.Repeat([]byte("x"), 64)
	docs := make([]string, benchDocs)
	for i := range docs {
		docs[i] = fmt.Sprintf("doc-%02d", i)
	}
	for _, mode := range []string{"group", "update"} {
		for _, writers := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("mode=%s/writers=%d", mode, writers), func(b *testing.B) {
				var fn func(w int) error
				var db *DB
				switch mode {
				case "group":
					db = openBench(b, Options{})
					fn = func(w int) error {
						_, _, err := db.Append(docs[w%benchDocs], rec)
						return err
					}
				case "update":
					fn = updateAppender(b)
				}
				p := newWorkers(b, writers, fn)
				b.ReportAllocs()
				for b.Loop() {
					p.round()
				}
				b.ReportMetric(float64(b.N*writers)/b.Elapsed().Seconds(), "appends/s")
				if db != nil {
					s := db.Stats()
					b.ReportMetric(float64(s.Appends)/float64(s.Groups), "appends/group")
				}
			})
		}
	}
}

// updateAppender is the baseline: one bbolt write transaction, and so one
// commit with its fsyncs, per append, into a nested bucket per document
// under NextSequence keys.
func updateAppender(b *testing.B) func(w int) error {
	bdb, err := bolt.Open(filepath.Join(b.TempDir(), "update.db"), 0o600, &bolt.Options{
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bdb.Close() })
	rec := bytes.Repeat([]byte("x"), 64)
	names := make([][]byte, benchDocs)
	for i := range names {
		names[i] = fmt.Appendf(nil, "doc-%02d", i)
	}
	return func(w int) error {
		return bdb.Update(func(tx *bolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists(names[w%benchDocs])
			if err != nil {
				return err
			}
			bk.FillPercent = 1.0
			seq, err := bk.NextSequence()
			if err != nil {
				return err
			}
			var key [8]byte
			binary.BigEndian.PutUint64(key[:], seq)
			return bk.Put(key[:], rec)
		})
	}
}

// BenchmarkRange reads a whole 10k-record log per op.
func BenchmarkRange(b *testing.B) {
	const n = 10000
	for _, size := range []int{64, 1024} {
		b.Run(fmt.Sprintf("records=%d/size=%d", n, size), func(b *testing.B) {
			db := openBench(b, Options{})
			rec := bytes.Repeat([]byte("r"), size)
			batch := make([][]byte, 1000)
			for i := range batch {
				batch[i] = rec
			}
			for range n / len(batch) {
				if _, _, err := db.Append("d", batch...); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(n * size))
			b.ReportAllocs()
			for b.Loop() {
				got := 0
				if err := db.Range("d", 1, func(uint64, []byte) error { got++; return nil }); err != nil {
					b.Fatal(err)
				}
				if got != n {
					b.Fatalf("read %d records", got)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkSnapshot saves (durably, replacing the previous one) and loads
// a snapshot of the given size.
func BenchmarkSnapshot(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20} {
		data := bytes.Repeat([]byte("s"), size)
		b.Run(fmt.Sprintf("op=save/size=%d", size), func(b *testing.B) {
			db := openBench(b, Options{})
			if _, _, err := db.Append("d", []byte("r")); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if err := db.SaveSnapshot("d", 1, data); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("op=load/size=%d", size), func(b *testing.B) {
			db := openBench(b, Options{})
			if _, _, err := db.Append("d", []byte("r")); err != nil {
				b.Fatal(err)
			}
			if err := db.SaveSnapshot("d", 1, data); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, got, err := db.LoadSnapshot("d"); err != nil || len(got) != size {
					b.Fatal(len(got), err)
				}
			}
		})
	}
}
