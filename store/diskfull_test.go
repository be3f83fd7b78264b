package store

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	berrors "go.etcd.io/bbolt/errors"
)

// fill has writers goroutines append recSize-byte records to their own
// documents until each gets ErrDiskFull, and returns what was acknowledged
// per document. Any other error fails the test; so does a store that never
// fills up (the loop is bounded by count).
func fill(t *testing.T, db *DB, prefix string, writers, recSize int) map[string][][]byte {
	t.Helper()
	const maxAppends = 5000 // per writer; MaxSize must stop it long before
	acked := make(map[string][][]byte)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range writers {
		doc := fmt.Sprintf("%s%d", prefix, w)
		wg.Go(func() {
			var mine [][]byte
			defer func() {
				mu.Lock()
				acked[doc] = mine
				mu.Unlock()
			}()
			for i := range maxAppends {
				rec := bytes.Repeat(fmt.Appendf(nil, "%s:%d;", doc, i), recSize/8)
				_, last, err := db.Append(doc, rec)
				switch {
				case err == nil:
					if last != uint64(len(mine)+1) {
						t.Errorf("%s: got seq %d, want %d", doc, last, len(mine)+1)
						return
					}
					mine = append(mine, rec)
				case errors.Is(err, ErrDiskFull):
					if !errors.Is(err, berrors.ErrMaxSizeReached) {
						t.Errorf("ErrDiskFull without its cause: %v", err)
					}
					return
				default:
					t.Errorf("%s: Append: %v", doc, err)
					return
				}
			}
			t.Errorf("%s: %d appends and the store is not full", doc, maxAppends)
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return acked
}

func checkAcked(t *testing.T, db *DB, acked map[string][][]byte) {
	t.Helper()
	for doc, want := range acked {
		if len(want) == 0 {
			continue
		}
		equalRecs(t, mustRange(t, db, doc, 1), 1, want)
	}
}

func TestDB_DiskFull(t *testing.T) {
	path := tempPath(t)
	db := mustOpenPath(t, path, Options{MaxSize: 1 << 20})

	acked := fill(t, db, "a", 4, 2048)
	checkAcked(t, db, acked)
	if s := db.Stats(); s.DiskFull < 4 || s.FileSize > 1<<20 {
		t.Fatalf("Stats after filling: %d disk full, file %d bytes", s.DiskFull, s.FileSize)
	}

	// Deleting a document frees its pages for new appends.
	if err := db.Delete("a0"); err != nil {
		t.Fatalf("Delete on a full store: %v", err)
	}
	delete(acked, "a0")
	mustAppend(t, db, "fresh", bytes.Repeat([]byte("f"), 2048))
	checkAcked(t, db, acked)

	// Fill again, then free space by truncating instead.
	more := fill(t, db, "b", 2, 2048)
	if len(more["b0"])+len(more["b1"]) == 0 {
		t.Fatal("nothing fit after Delete")
	}
	a1 := acked["a1"]
	if err := db.SaveSnapshot("a1", uint64(len(a1)), []byte("snap")); err != nil {
		t.Fatalf("SaveSnapshot on a full store: %v", err)
	}
	delete(acked, "a1")
	first, _ := mustAppend(t, db, "a2", bytes.Repeat([]byte("g"), 2048))
	acked["a2"] = append(acked["a2"], bytes.Repeat([]byte("g"), 2048))
	if first != uint64(len(acked["a2"])) {
		t.Fatalf("append after truncation got seq %d, want %d", first, len(acked["a2"]))
	}
	checkAcked(t, db, acked)
	checkAcked(t, db, more)
	if m, err := db.Stat("a1"); err != nil || m.Records != 0 || m.LastSeq != uint64(len(a1)) {
		t.Fatalf("a1 after truncation: %+v %v", m, err)
	}

	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path) // bbolt tx.Check without the size limit, plus store invariants
	db = mustOpenPath(t, path, Options{})
	checkAcked(t, db, acked)
	checkAcked(t, db, more)
}
