package store

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

var seedFlag = flag.Uint64("seed", 0, "seed for randomized tests (0: pick one and log it)")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newRand returns a seeded generator and logs the seed for replay with -seed.
func newRand(t testing.TB) *rand.Rand {
	seed := *seedFlag
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (replay with -seed %d)", seed, seed)
	return newRandSeed(seed)
}

func newRandSeed(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

func tempPath(t testing.TB) string {
	return filepath.Join(t.TempDir(), "weft.db")
}

// mustOpen opens a store in a fresh temp dir. Cleanup closes it and checks
// the file with checkFile.
func mustOpen(t testing.TB, opts Options) *DB {
	t.Helper()
	return mustOpenPath(t, tempPath(t), opts)
}

// mustOpenPath opens path; cleanup closes the DB (a no-op if the test
// already did) and then checks the file.
func mustOpenPath(t testing.TB, path string, opts Options) *DB {
	t.Helper()
	db, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		checkFile(t, path)
	})
	return db
}

func mustAppend(t testing.TB, db *DB, doc string, recs ...[]byte) (first, last uint64) {
	t.Helper()
	first, last, err := db.Append(doc, recs...)
	if err != nil {
		t.Fatalf("Append(%q, %d recs): %v", doc, len(recs), err)
	}
	if last-first+1 != uint64(len(recs)) {
		t.Fatalf("Append(%q, %d recs) = %d..%d", doc, len(recs), first, last)
	}
	return first, last
}

type seqRec struct {
	seq uint64
	rec []byte
}

func mustRange(t testing.TB, db *DB, doc string, from uint64) []seqRec {
	t.Helper()
	var out []seqRec
	if err := db.Range(doc, from, func(seq uint64, rec []byte) error {
		out = append(out, seqRec{seq, rec})
		return nil
	}); err != nil {
		t.Fatalf("Range(%q, %d): %v", doc, from, err)
	}
	return out
}

func recs(format string, from, to int) [][]byte {
	var out [][]byte
	for i := from; i <= to; i++ {
		out = append(out, fmt.Appendf(nil, format, i))
	}
	return out
}

// checkFile opens the closed store file with bbolt directly, with no size
// limit, and checks bbolt's own consistency (tx.Check) and the store's
// invariants: every log holds exactly the seqs (lastSeq-records, lastSeq]
// with the byte total the metadata claims, snapshots match their
// metadata, and nothing exists without metadata.
func checkFile(t testing.TB, path string) {
	t.Helper()
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("checkFile: open: %v", err)
	}
	defer b.Close()
	err = b.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() { // drain: Check's goroutine sends every error
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			return fmt.Errorf("bbolt check: %w", errors.Join(errs...))
		}
		metaB, logB, snapB := tx.Bucket(bucketMeta), tx.Bucket(bucketLog), tx.Bucket(bucketSnap)
		if metaB == nil || logB == nil || snapB == nil {
			return errors.New("missing top-level bucket")
		}
		err := metaB.ForEach(func(k, v []byte) error {
			m, err := decodeMeta(v)
			if err != nil {
				return err
			}
			if err := checkLog(logB.Bucket(k), m); err != nil {
				return fmt.Errorf("document %q: %w", k, err)
			}
			snap := snapB.Get(k)
			switch {
			case m.snapSeq == 0 && (snap != nil || m.snapBytes != 0):
				return fmt.Errorf("document %q: snapshot data without snapSeq", k)
			case m.snapSeq > 0 && (snap == nil || uint64(len(snap)) != m.snapBytes):
				return fmt.Errorf("document %q: snapshot is %d bytes, meta says %d", k, len(snap), m.snapBytes)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, b := range []*bolt.Bucket{logB, snapB} {
			err := b.ForEach(func(k, _ []byte) error {
				if metaB.Get(k) == nil {
					return fmt.Errorf("%q has no metadata", k)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("checkFile %s: %v", path, err)
	}
}

func checkLog(lb *bolt.Bucket, m meta) error {
	if lb == nil {
		if m.records != 0 {
			return fmt.Errorf("no log bucket for %d records", m.records)
		}
		return nil
	}
	want, n, size := m.oldest(), uint64(0), uint64(0)
	err := lb.ForEach(func(k, v []byte) error {
		seq, ok := keySeq(k)
		if !ok || seq != want {
			return fmt.Errorf("key %x, want seq %d", k, want)
		}
		if len(v) == 0 {
			return fmt.Errorf("empty record at seq %d", seq)
		}
		want++
		n++
		size += uint64(len(v))
		return nil
	})
	if err != nil {
		return err
	}
	if n != m.records || size != m.logBytes {
		return fmt.Errorf("log has %d records / %d bytes, meta says %d / %d", n, size, m.records, m.logBytes)
	}
	return nil
}

func equalRecs(t testing.TB, got []seqRec, firstSeq uint64, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i, g := range got {
		if g.seq != firstSeq+uint64(i) || !bytes.Equal(g.rec, want[i]) {
			t.Fatalf("record %d: got seq %d %q, want seq %d %q", i, g.seq, g.rec, firstSeq+uint64(i), want[i])
		}
	}
}
