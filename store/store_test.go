package store

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestDB_AppendRangeReopen(t *testing.T) {
	path := tempPath(t)
	db, err := Open(path, Options{rangeChunk: 3})
	if err != nil {
		t.Fatal(err)
	}
	a := recs("a%d", 1, 10)
	if first, last := mustAppend(t, db, "a", a[0]); first != 1 || last != 1 {
		t.Fatalf("first append = %d..%d, want 1..1", first, last)
	}
	if first, last := mustAppend(t, db, "a", a[1:7]...); first != 2 || last != 7 {
		t.Fatalf("batch append = %d..%d, want 2..7", first, last)
	}
	mustAppend(t, db, "b", []byte("b1"))
	mustAppend(t, db, "a", a[7:]...)

	equalRecs(t, mustRange(t, db, "a", 0), 1, a)
	equalRecs(t, mustRange(t, db, "a", 1), 1, a)
	equalRecs(t, mustRange(t, db, "a", 5), 5, a[4:])
	equalRecs(t, mustRange(t, db, "a", 10), 10, a[9:])
	equalRecs(t, mustRange(t, db, "a", 11), 11, nil)
	equalRecs(t, mustRange(t, db, "a", 1<<40), 1<<40, nil)
	equalRecs(t, mustRange(t, db, "b", 1), 1, [][]byte{[]byte("b1")})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path)

	db = mustOpenPath(t, path, Options{})
	equalRecs(t, mustRange(t, db, "a", 1), 1, a)
	if first, _ := mustAppend(t, db, "a", []byte("a11")); first != 11 {
		t.Fatalf("append after reopen got seq %d, want 11", first)
	}
	if first, _ := mustAppend(t, db, "b", []byte("b2")); first != 2 {
		t.Fatalf("append after reopen got seq %d, want 2", first)
	}
}

// fakeClock is a manual clock for Options.Now.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestDB_Stat(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
	t0 := clock.Now()
	db := mustOpen(t, Options{Now: clock.Now})

	mustAppend(t, db, "d", []byte("12345"), []byte("678"))
	clock.Advance(time.Minute)
	mustAppend(t, db, "d", []byte("9"))
	want := Meta{Doc: "d", Created: t0, Updated: t0.Add(time.Minute), LastSeq: 3, Records: 3, Bytes: 9}
	checkMeta(t, db, want)

	clock.Advance(time.Minute)
	if err := db.SaveSnapshot("d", 2, []byte("snapshot")); err != nil {
		t.Fatal(err)
	}
	want.Updated = t0.Add(2 * time.Minute)
	want.SnapSeq, want.Records, want.Bytes, want.SnapshotBytes = 2, 1, 1+8, 8
	checkMeta(t, db, want)

	ms, err := db.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || !metaEqual(ms[0], want) {
		t.Fatalf("List = %+v, want [%+v]", ms, want)
	}
}

func checkMeta(t *testing.T, db *DB, want Meta) {
	t.Helper()
	got, err := db.Stat(want.Doc)
	if err != nil {
		t.Fatal(err)
	}
	if !metaEqual(got, want) {
		t.Fatalf("Stat(%q)\n got %+v\nwant %+v", want.Doc, got, want)
	}
}

func metaEqual(a, b Meta) bool {
	return a.Created.Equal(b.Created) && a.Updated.Equal(b.Updated) &&
		a.Doc == b.Doc && a.LastSeq == b.LastSeq && a.SnapSeq == b.SnapSeq &&
		a.Records == b.Records && a.Bytes == b.Bytes && a.SnapshotBytes == b.SnapshotBytes
}

func TestDB_ListDelete(t *testing.T) {
	db := mustOpen(t, Options{listChunk: 2})
	ids := []string{"m", "b", "\x00bin\xff", "a", "zz", strings.Repeat("x", MaxDocIDLen)}
	for _, id := range ids {
		mustAppend(t, db, id, []byte(id+"!"))
	}
	mustAppend(t, db, "b", []byte("b2"))
	if err := db.SaveSnapshot("b", 1, []byte("snap")); err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	checkList(t, db, ids)

	if err := db.Delete("b"); err != nil {
		t.Fatal(err)
	}
	ids = slices.DeleteFunc(ids, func(s string) bool { return s == "b" })
	checkList(t, db, ids)
	if _, err := db.Stat("b"); !errors.Is(err, ErrUnknownDoc) {
		t.Fatalf("Stat after Delete: %v, want ErrUnknownDoc", err)
	}
	if err := db.Delete("b"); !errors.Is(err, ErrUnknownDoc) {
		t.Fatalf("second Delete: %v, want ErrUnknownDoc", err)
	}
	// A deleted ID is a new document: seqs start again at 1, no snapshot.
	if first, _ := mustAppend(t, db, "b", []byte("new")); first != 1 {
		t.Fatalf("append after delete got seq %d, want 1", first)
	}
	if _, _, err := db.LoadSnapshot("b"); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("LoadSnapshot after re-create: %v, want ErrNoSnapshot", err)
	}
	equalRecs(t, mustRange(t, db, "b", 1), 1, [][]byte{[]byte("new")})
}

func checkList(t *testing.T, db *DB, ids []string) {
	t.Helper()
	ms, err := db.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, m.Doc)
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("List = %q, want %q", got, ids)
	}
}

func TestDB_SnapshotTruncate(t *testing.T) {
	path := tempPath(t)
	db, err := Open(path, Options{trimBatch: 3, rangeChunk: 4})
	if err != nil {
		t.Fatal(err)
	}
	all := recs("r%d", 1, 20)
	mustAppend(t, db, "d", all...)
	mustAppend(t, db, "other", all...)

	if _, _, err := db.LoadSnapshot("d"); !errors.Is(err, ErrNoSnapshot) {
		t.Fatalf("LoadSnapshot before any: %v, want ErrNoSnapshot", err)
	}
	if err := db.SaveSnapshot("d", 10, []byte("upto10")); err != nil {
		t.Fatal(err)
	}
	if got := db.Stats().Trims; got != 4 { // 10 records, 3 per transaction
		t.Fatalf("Stats.Trims = %d, want 4", got)
	}
	seq, data, err := db.LoadSnapshot("d")
	if err != nil || seq != 10 || string(data) != "upto10" {
		t.Fatalf("LoadSnapshot = %d %q %v", seq, data, err)
	}
	m, err := db.Stat("d")
	if err != nil {
		t.Fatal(err)
	}
	if m.SnapSeq != 10 || m.LastSeq != 20 || m.Records != 10 {
		t.Fatalf("Stat after snapshot = %+v", m)
	}
	equalRecs(t, mustRange(t, db, "d", 11), 11, all[10:])
	equalRecs(t, mustRange(t, db, "d", 15), 15, all[14:])
	for _, from := range []uint64{0, 1, 9, 10} {
		err := db.Range("d", from, func(uint64, []byte) error { return nil })
		if !errors.Is(err, ErrCompacted) {
			t.Fatalf("Range from %d: %v, want ErrCompacted", from, err)
		}
	}
	equalRecs(t, mustRange(t, db, "other", 1), 1, all) // untouched

	for _, seq := range []uint64{0, 9, 21} {
		if err := db.SaveSnapshot("d", seq, []byte("x")); !errors.Is(err, ErrSnapshotSeq) {
			t.Fatalf("SaveSnapshot seq %d: %v, want ErrSnapshotSeq", seq, err)
		}
	}
	// Same seq replaces the data and truncates nothing more.
	if err := db.SaveSnapshot("d", 10, []byte("again")); err != nil {
		t.Fatal(err)
	}
	// Everything: the log becomes empty, appends continue after it.
	if err := db.SaveSnapshot("d", 20, []byte("all")); err != nil {
		t.Fatal(err)
	}
	equalRecs(t, mustRange(t, db, "d", 21), 21, nil)
	if first, _ := mustAppend(t, db, "d", []byte("r21")); first != 21 {
		t.Fatalf("append after full truncation got seq %d", first)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path)

	db = mustOpenPath(t, path, Options{})
	seq, data, err = db.LoadSnapshot("d")
	if err != nil || seq != 20 || string(data) != "all" {
		t.Fatalf("LoadSnapshot after reopen = %d %q %v", seq, data, err)
	}
	equalRecs(t, mustRange(t, db, "d", 21), 21, [][]byte{[]byte("r21")})
	m, _ = db.Stat("d")
	if m.Records != 1 || m.Bytes != 3+3 {
		t.Fatalf("Stat after reopen = %+v", m)
	}
}

// A crash between the snapshot commit and the end of its truncation leaves
// covered records behind; Open must finish the job.
func TestOpen_ResumesTruncation(t *testing.T) {
	path := tempPath(t)
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, db, "d", recs("r%d", 1, 50)...)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// Commit what SaveSnapshot commits first, without the truncation.
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		m, err := readMeta(tx, "d")
		if err != nil {
			return err
		}
		m.snapSeq, m.snapBytes = 30, 4
		if err := tx.Bucket(bucketSnap).Put([]byte("d"), []byte("snap")); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put([]byte("d"), m.encode())
	})
	if err := errors.Join(err, b.Close()); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path)

	db = mustOpenPath(t, path, Options{trimBatch: 7})
	equalRecs(t, mustRange(t, db, "d", 31), 31, recs("r%d", 31, 50))
	if err := db.Close(); err != nil { // Close finishes pending truncations
		t.Fatal(err)
	}
	db = mustOpenPath(t, path, Options{})
	m, err := db.Stat("d")
	if err != nil {
		t.Fatal(err)
	}
	if m.Records != 20 || m.SnapSeq != 30 {
		t.Fatalf("after resumed truncation: %+v", m)
	}
}

func TestDB_Errors(t *testing.T) {
	db := mustOpen(t, Options{})
	mustAppend(t, db, "d", []byte("x"))
	noop := func(uint64, []byte) error { return nil }
	long := strings.Repeat("x", MaxDocIDLen+1)

	calls := func(doc string) map[string]error {
		_, _, appendErr := db.Append(doc, []byte("r"))
		_, statErr := db.Stat(doc)
		_, _, loadErr := db.LoadSnapshot(doc)
		return map[string]error{
			"Append":       appendErr,
			"Range":        db.Range(doc, 1, noop),
			"Stat":         statErr,
			"SaveSnapshot": db.SaveSnapshot(doc, 1, []byte("s")),
			"LoadSnapshot": loadErr,
			"Delete":       db.Delete(doc),
		}
	}
	for _, doc := range []string{"", long} {
		for name, err := range calls(doc) {
			if !errors.Is(err, ErrBadDocID) {
				t.Errorf("%s(%d-byte id) = %v, want ErrBadDocID", name, len(doc), err)
			}
		}
	}
	for name, err := range map[string]error{
		"Range":        db.Range("nope", 1, noop),
		"Stat":         func() error { _, err := db.Stat("nope"); return err }(),
		"SaveSnapshot": db.SaveSnapshot("nope", 1, nil),
		"LoadSnapshot": func() error { _, _, err := db.LoadSnapshot("nope"); return err }(),
		"Delete":       db.Delete("nope"),
	} {
		if !errors.Is(err, ErrUnknownDoc) {
			t.Errorf("%s(unknown) = %v, want ErrUnknownDoc", name, err)
		}
	}
	for _, rs := range [][][]byte{nil, {{}}, {[]byte("ok"), nil}} {
		if _, _, err := db.Append("d", rs...); !errors.Is(err, ErrEmptyRecord) {
			t.Errorf("Append(%q) = %v, want ErrEmptyRecord", rs, err)
		}
	}
	stop := errors.New("stop")
	if err := db.Range("d", 1, func(uint64, []byte) error { return stop }); err != stop {
		t.Errorf("Range returned %v, want fn's error unchanged", err)
	}
	if _, _, err := db.Append("d", []byte("y")); err != nil {
		t.Fatalf("append after errors: %v", err)
	}

	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for name, err := range calls("d") {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if _, err := db.List(); !errors.Is(err, ErrClosed) {
		t.Errorf("List after Close = %v, want ErrClosed", err)
	}
}

func TestDB_RangeOwnership(t *testing.T) {
	db := mustOpen(t, Options{rangeChunk: 2, trimBatch: 2})
	want := recs("rec-%03d", 1, 9)
	mustAppend(t, db, "d", want...)

	var kept [][]byte
	err := db.Range("d", 1, func(seq uint64, rec []byte) error {
		kept = append(kept, rec)
		// fn runs outside any transaction, so it may write.
		_, _, err := db.Append("log", rec)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Writes after the Range must not show through the kept slices.
	mustAppend(t, db, "d", recs("new-%03d", 1, 20)...)
	if err := db.SaveSnapshot("d", 25, []byte("s")); err != nil {
		t.Fatal(err)
	}
	for i := range kept {
		if !bytes.Equal(kept[i], want[i]) {
			t.Fatalf("kept rec %d = %q, want %q", i, kept[i], want[i])
		}
	}
	// Appending to a kept rec must not spill into its neighbour.
	kept[0] = append(kept[0], "XXXX"...)
	if !bytes.Equal(kept[1], want[1]) {
		t.Fatalf("append to rec 0 changed rec 1: %q", kept[1])
	}
	equalRecs(t, mustRange(t, db, "log", 1), 1, want)
}

// A snapshot or delete that commits between two Range chunks ends the
// Range with the matching error rather than skipping records.
func TestDB_RangeConcurrentChange(t *testing.T) {
	db := mustOpen(t, Options{rangeChunk: 2})
	mustAppend(t, db, "d", recs("r%d", 1, 10)...)
	var seen []uint64
	err := db.Range("d", 1, func(seq uint64, rec []byte) error {
		seen = append(seen, seq)
		if seq == 3 {
			return db.SaveSnapshot("d", 6, []byte("s"))
		}
		return nil
	})
	if !errors.Is(err, ErrCompacted) || !slices.Equal(seen, []uint64{1, 2, 3, 4}) {
		t.Fatalf("Range = %v after %v, want ErrCompacted after 1..4", err, seen)
	}

	seen = nil
	err = db.Range("d", 7, func(seq uint64, rec []byte) error {
		seen = append(seen, seq)
		if seq == 7 {
			return db.Delete("d")
		}
		return nil
	})
	if !errors.Is(err, ErrUnknownDoc) || !slices.Equal(seen, []uint64{7, 8}) {
		t.Fatalf("Range = %v after %v, want ErrUnknownDoc after 7, 8", err, seen)
	}

	// Deleted and created again with as many records: still not the same log.
	mustAppend(t, db, "e", recs("old%d", 1, 6)...)
	seen = nil
	err = db.Range("e", 1, func(seq uint64, rec []byte) error {
		seen = append(seen, seq)
		if seq == 1 {
			if err := db.Delete("e"); err != nil {
				return err
			}
			_, _, err := db.Append("e", recs("new%d", 1, 6)...)
			return err
		}
		return nil
	})
	if !errors.Is(err, ErrUnknownDoc) || !slices.Equal(seen, []uint64{1, 2}) {
		t.Fatalf("Range = %v after %v, want ErrUnknownDoc after 1, 2", err, seen)
	}
}

// TestDB_ConcurrentAppends has many goroutines append to shared documents
// and checks that every acknowledged seq range holds exactly the records
// of that call, and that each document's seqs are contiguous.
func TestDB_ConcurrentAppends(t *testing.T) {
	const goroutines, docs, calls = 48, 6, 40
	rng := newRand(t)
	db := mustOpen(t, Options{rangeChunk: 50})

	type ack struct {
		first, last uint64
		recs        [][]byte
	}
	acks := make([][]ack, docs) // per doc
	var mu sync.Mutex
	var wg sync.WaitGroup
	seeds := make([]uint64, goroutines)
	for i := range seeds {
		seeds[i] = rng.Uint64()
	}
	nrecs := 0
	for g := range goroutines {
		wg.Go(func() {
			r := newRandSeed(seeds[g])
			for i := range calls {
				d := r.IntN(docs)
				n := 1 + r.IntN(4)
				rs := make([][]byte, n)
				for j := range rs {
					rs[j] = fmt.Appendf(nil, "g%d/c%d/r%d/%s", g, i, j, strings.Repeat("p", r.IntN(64)))
				}
				first, last, err := db.Append(fmt.Sprintf("doc%d", d), rs...)
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				acks[d] = append(acks[d], ack{first, last, rs})
				nrecs += n
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for d := range docs {
		got := mustRange(t, db, fmt.Sprintf("doc%d", d), 1)
		slices.SortFunc(acks[d], func(a, b ack) int { return int(a.first) - int(b.first) })
		next := uint64(1)
		for _, a := range acks[d] {
			if a.first != next || a.last-a.first+1 != uint64(len(a.recs)) {
				t.Fatalf("doc%d: ack %d..%d for %d recs, want first %d", d, a.first, a.last, len(a.recs), next)
			}
			for j, rec := range a.recs {
				g := got[a.first-1+uint64(j)]
				if g.seq != a.first+uint64(j) || !bytes.Equal(g.rec, rec) {
					t.Fatalf("doc%d seq %d: read %d %q, acked %q", d, a.first+uint64(j), g.seq, g.rec, rec)
				}
			}
			next = a.last + 1
		}
		if uint64(len(got)) != next-1 {
			t.Fatalf("doc%d: read %d records, acked %d", d, len(got), next-1)
		}
	}
	s := db.Stats()
	if s.Appends != goroutines*calls || s.Records != uint64(nrecs) {
		t.Fatalf("Stats: %d appends %d records, want %d %d", s.Appends, s.Records, goroutines*calls, nrecs)
	}
	// With 48 concurrent appenders, requests queue while a commit fsyncs,
	// so groups must hold more than one append on average.
	if s.Groups >= s.Appends {
		t.Fatalf("Stats: %d groups for %d appends: no grouping", s.Groups, s.Appends)
	}
	t.Logf("%d appends in %d groups, commit time %v", s.Appends, s.Groups, s.TotalCommit)
}

// holdWriter makes the writer wait before it collects its first group,
// so that requests queued meanwhile are grouped deterministically. Calling
// the returned func lets it go.
func holdWriter(opts *Options) (release func()) {
	ch := make(chan struct{})
	opts.hookCollect = func() { <-ch }
	return sync.OnceFunc(func() { close(ch) })
}

// enqueue queues an append without waiting for it.
func enqueue(t *testing.T, db *DB, doc string, rec []byte) *request {
	t.Helper()
	r := newRequest(reqAppend, doc)
	r.recs = [][]byte{rec}
	if err := db.send(r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDB_GroupCommit(t *testing.T) {
	const n = 8
	opts := Options{MaxGroup: n} // also the queue length
	release := holdWriter(&opts)
	db := mustOpen(t, opts)
	defer release()

	var rs []*request
	for i := range n {
		rs = append(rs, enqueue(t, db, fmt.Sprintf("d%d", i%3), fmt.Appendf(nil, "r%d", i)))
	}
	release()
	for i, r := range rs {
		<-r.done
		if r.err != nil || r.first != r.last || r.first != uint64(i/3+1) {
			t.Fatalf("request %d: seq %d..%d err %v, want seq %d", i, r.first, r.last, r.err, i/3+1)
		}
	}
	// All n were queued before the writer looked: one transaction.
	if s := db.Stats(); s.Groups != 1 || s.Appends != n {
		t.Fatalf("Stats: %d groups, %d appends; want 1, %d", s.Groups, s.Appends, n)
	}
	mustAppend(t, db, "d0", []byte("alone"))
	if s := db.Stats(); s.Groups != 2 {
		t.Fatalf("Stats: %d groups after a lone append, want 2", s.Groups)
	}
}

// One request too big for MaxSize must fail alone, not with its group.
func TestDB_FailedGroupIsolated(t *testing.T) {
	opts := Options{MaxSize: 4 << 20}
	release := holdWriter(&opts)
	db := mustOpen(t, opts)
	defer release()

	mustDoc := func(rec []byte) *request { return enqueue(t, db, "d", rec) }
	small1 := mustDoc([]byte("one"))
	huge := mustDoc(bytes.Repeat([]byte("h"), 8<<20))
	small2 := mustDoc([]byte("two"))
	snap := newRequest(reqSnapshot, "d")
	snap.seq, snap.data = 1, []byte("snap")
	if err := db.send(snap); err != nil {
		t.Fatal(err)
	}
	release()
	for _, r := range []*request{small1, huge, small2, snap} {
		<-r.done
	}
	if small1.err != nil || small2.err != nil || snap.err != nil {
		t.Fatalf("innocent requests failed: %v / %v / %v", small1.err, small2.err, snap.err)
	}
	if !errors.Is(huge.err, ErrDiskFull) {
		t.Fatalf("huge append: %v, want ErrDiskFull", huge.err)
	}
	if small1.first != 1 || small2.first != 2 {
		t.Fatalf("seqs %d, %d; want 1, 2", small1.first, small2.first)
	}
	if s := db.Stats(); s.Retries != 1 || s.DiskFull != 1 {
		t.Fatalf("Stats: %d retries, %d disk full; want 1, 1", s.Retries, s.DiskFull)
	}
	// Later groups are unaffected.
	if first, _ := mustAppend(t, db, "d", []byte("three")); first != 3 {
		t.Fatalf("next append got seq %d, want 3", first)
	}
	equalRecs(t, mustRange(t, db, "d", 2), 2, [][]byte{[]byte("two"), []byte("three")})
}

// Close lets everything queued finish; later calls get ErrClosed, and
// every acknowledged append is in the file.
func TestDB_CloseDrains(t *testing.T) {
	path := tempPath(t)
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const writers = 16
	const perWriter = 2000
	acked := make(chan [2]uint64, writers*perWriter) // (writer, seq); never blocks
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				first, _, err := db.Append(fmt.Sprintf("w%d", w), fmt.Appendf(nil, "w%d-%d", w, i))
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				acked <- [2]uint64{uint64(w), first}
			}
		})
	}
	for range 100 { // close mid-stream: once 100 appends are acknowledged
		<-acked
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(acked)
	checkFile(t, path)

	db = mustOpenPath(t, path, Options{})
	last := make(map[uint64]uint64)
	for a := range acked {
		last[a[0]] = max(last[a[0]], a[1])
	}
	for w := range uint64(writers) {
		if last[w] == 0 {
			continue
		}
		m, err := db.Stat(fmt.Sprintf("w%d", w))
		if err != nil || m.LastSeq < last[w] {
			t.Fatalf("writer %d: acked up to %d, stored %+v %v", w, last[w], m, err)
		}
		got := mustRange(t, db, m.Doc, 1)
		for i, g := range got {
			if want := fmt.Sprintf("w%d-%d", w, i); string(g.rec) != want {
				t.Fatalf("%s seq %d = %q, want %q", m.Doc, g.seq, g.rec, want)
			}
		}
	}
}

func TestOpen_Locked(t *testing.T) {
	path := tempPath(t)
	db := mustOpenPath(t, path, Options{})
	mustAppend(t, db, "d", []byte("x"))

	_, err := Open(path, Options{Timeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	mustAppend(t, db, "d", []byte("still works"))
}

func TestOpen_BadFormat(t *testing.T) {
	path := tempPath(t)
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		info, err := tx.CreateBucket(bucketInfo)
		if err != nil {
			return err
		}
		return info.Put(keyFormat, []byte{99})
	})
	if err := errors.Join(err, b.Close()); err != nil {
		t.Fatal(err)
	}
	if db, err := Open(path, Options{}); err == nil {
		_ = db.Close()
		t.Fatal("Open accepted format version 99")
	}
}
