package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

type reqKind uint8

const (
	reqAppend reqKind = iota + 1
	reqSnapshot
	reqDelete
)

func (k reqKind) String() string {
	switch k {
	case reqAppend:
		return "append"
	case reqSnapshot:
		return "snapshot"
	case reqDelete:
		return "delete"
	}
	return fmt.Sprintf("reqKind(%d)", uint8(k))
}

// request is one write handed to the writer goroutine. The caller fills the
// input fields and blocks on done; the writer fills the result fields and
// then signals done exactly once, after which it never touches r again.
type request struct {
	kind reqKind
	doc  string
	recs [][]byte // reqAppend; bbolt reads them until commit, so the caller keeps them unchanged
	seq  uint64   // reqSnapshot
	data []byte   // reqSnapshot; same rule as recs

	first, last uint64 // reqAppend result
	err         error
	trim        bool // reqSnapshot committed with log records left to truncate

	done chan struct{} // capacity 1, reused through requestPool
}

var requestPool = sync.Pool{New: func() any { return &request{done: make(chan struct{}, 1)} }}

func newRequest(kind reqKind, doc string) *request {
	r := requestPool.Get().(*request)
	r.kind, r.doc = kind, doc
	return r
}

func (r *request) release() {
	*r = request{done: r.done}
	requestPool.Put(r)
}

// send queues r for the writer. It blocks while the queue is full.
func (db *DB) send(r *request) error {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return ErrClosed
	}
	db.in <- r
	return nil
}

// do queues r and waits for the writer's answer.
func (db *DB) do(r *request) error {
	if err := db.send(r); err != nil {
		return err
	}
	<-r.done
	return nil
}

// Append adds recs to the end of doc's log, creating the document on its
// first Append, and returns the seqs given to the first and the last record
// (contiguous; the first record ever gets 1). It returns only after the
// records are durable (fsynced, unless Options.NoSync).
//
// The store reads recs until Append returns: the caller must not change
// them before then, and may reuse them after. Each record must be
// non-empty (ErrEmptyRecord), and so must recs.
func (db *DB) Append(doc string, recs ...[]byte) (first, last uint64, err error) {
	if err := checkDoc(doc); err != nil {
		return 0, 0, fmt.Errorf("store: append: %w", err)
	}
	if len(recs) == 0 {
		return 0, 0, fmt.Errorf("store: append %q: no records: %w", doc, ErrEmptyRecord)
	}
	for i, rec := range recs {
		if len(rec) == 0 {
			return 0, 0, fmt.Errorf("store: append %q: record %d: %w", doc, i, ErrEmptyRecord)
		}
		if len(rec) > bolt.MaxValueSize {
			return 0, 0, fmt.Errorf("store: append %q: record %d: %d bytes: %w", doc, i, len(rec), berrors.ErrValueTooLarge)
		}
	}
	r := newRequest(reqAppend, doc)
	r.recs = recs
	defer r.release()
	if err := db.do(r); err != nil {
		return 0, 0, fmt.Errorf("store: append %q: %w", doc, err)
	}
	return r.first, r.last, r.err
}

// SaveSnapshot stores data as doc's snapshot covering seqs 1..seq,
// replacing any earlier one, and then truncates the log records <= seq.
// seq must lie between the current snapshot's seq and Meta.LastSeq
// (ErrSnapshotSeq); saving again at the same seq replaces the data.
//
// It returns after the snapshot is durable and the truncation has
// finished. Truncation runs in bounded transactions interleaved with other
// writes; if one fails, the snapshot stays saved, the error says so, and
// the next SaveSnapshot or Open retries the truncation. From the moment the
// snapshot commits, Range refuses seqs <= seq with ErrCompacted.
// As with Append, data must stay unchanged until SaveSnapshot returns.
func (db *DB) SaveSnapshot(doc string, seq uint64, data []byte) error {
	if err := checkDoc(doc); err != nil {
		return fmt.Errorf("store: snapshot: %w", err)
	}
	if len(data) > bolt.MaxValueSize {
		return fmt.Errorf("store: snapshot %q: %d bytes: %w", doc, len(data), berrors.ErrValueTooLarge)
	}
	r := newRequest(reqSnapshot, doc)
	r.seq, r.data = seq, data
	defer r.release()
	if err := db.do(r); err != nil {
		return fmt.Errorf("store: snapshot %q: %w", doc, err)
	}
	return r.err
}

// Delete removes doc: its log, snapshot and metadata, in one transaction.
// A later Append creates a new document whose seqs start again at 1.
func (db *DB) Delete(doc string) error {
	if err := checkDoc(doc); err != nil {
		return fmt.Errorf("store: delete: %w", err)
	}
	r := newRequest(reqDelete, doc)
	defer r.release()
	if err := db.do(r); err != nil {
		return fmt.Errorf("store: delete %q: %w", doc, err)
	}
	return r.err
}

// writer is the only goroutine that writes. It blocks for the first
// request, takes whatever else is queued (up to MaxGroup), and commits them
// all in one transaction, so concurrent callers share one fsync. Between
// groups it runs one bounded truncation step. It returns once the queue is
// closed and drained and no truncation is pending.
func (db *DB) writer() {
	defer close(db.writerDone)
	batch := make([]*request, 0, db.opts.MaxGroup)
	open := true
	for open || len(db.trims) > 0 {
		if h := db.opts.hookCollect; h != nil {
			h()
		}
		batch, open = db.collect(batch[:0], open)
		if len(batch) > 0 {
			db.commitGroup(batch)
			clear(batch) // drop references to answered requests
		}
		if len(db.trims) > 0 {
			db.trimStep()
		}
	}
}

// collect appends queued requests to batch. It blocks for the first one
// only when there is no truncation to get on with.
func (db *DB) collect(batch []*request, open bool) ([]*request, bool) {
	if !open {
		return batch, false
	}
	if len(db.trims) == 0 {
		r, ok := <-db.in
		if !ok {
			return batch, false
		}
		batch = append(batch, r)
	}
	for len(batch) < db.opts.MaxGroup {
		select {
		case r, ok := <-db.in:
			if !ok {
				return batch, false
			}
			batch = append(batch, r)
		default:
			return batch, true
		}
	}
	return batch, true
}

// commitGroup commits batch in one transaction and answers every request.
//
// If that transaction fails and holds more than one request, each request
// is retried in a transaction of its own: an Append that alone exceeds
// MaxSize then fails by itself instead of taking the innocent requests of
// its group down with it. This costs one extra transaction per request,
// but only on the failure path. Requests are retried in queue order.
func (db *DB) commitGroup(batch []*request) {
	err := db.commit(batch)
	if err != nil && len(batch) > 1 {
		db.stats.retries.Add(1)
		for i, r := range batch {
			db.answer(r, db.commit(batch[i:i+1]))
		}
		return
	}
	for _, r := range batch {
		db.answer(r, err)
	}
}

// answer records the outcome of r and wakes its caller, or, for a snapshot
// whose log still needs truncating, hands r to the truncation queue.
func (db *DB) answer(r *request, txErr error) {
	if txErr != nil {
		r.first, r.last, r.trim = 0, 0, false
		r.err = fmt.Errorf("store: %s %q: %w", r.kind, r.doc, diskFull(txErr))
	}
	if r.err != nil && errors.Is(r.err, ErrDiskFull) {
		db.stats.diskFull.Add(1)
	}
	if r.err == nil && r.kind == reqAppend {
		db.stats.appends.Add(1)
		db.stats.records.Add(uint64(len(r.recs)))
	}
	if r.err == nil && r.trim {
		db.queueTrim(r)
		return
	}
	r.done <- struct{}{}
}

// commit applies reqs in one write transaction and commits it. A request
// whose preconditions fail (unknown document, bad snapshot seq) gets its
// own error and changes nothing; the others still commit. A non-nil result
// means the transaction as a whole failed and nothing was stored.
func (db *DB) commit(reqs []*request) error {
	tx, err := db.bolt.Begin(true)
	if err != nil {
		return err
	}
	g := newGroup(tx, db.opts.Now().UnixNano())
	for _, r := range reqs {
		r.first, r.last, r.err, r.trim = 0, 0, nil, false
		if err := g.apply(r); err != nil {
			_ = tx.Rollback()
			return err
		}
	}
	if !g.mutated {
		return tx.Rollback()
	}
	if err := g.flush(); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := db.commitTx(tx); err != nil {
		return err
	}
	db.stats.groups.Add(1)
	return nil
}

func (db *DB) commitTx(tx *bolt.Tx) error {
	start := time.Now()
	if err := tx.Commit(); err != nil {
		_ = tx.Rollback() // in case Commit failed without closing tx; else a no-op
		return err
	}
	d := int64(time.Since(start))
	db.stats.lastCommit.Store(d)
	db.stats.totalCommit.Add(d)
	return nil
}

// group is the state of one write transaction.
type group struct {
	tx                 *bolt.Tx
	now                int64
	metaB, logB, snapB *bolt.Bucket
	docs               map[string]*docState
	mutated            bool
}

// docState caches a document's metadata and log bucket for one transaction;
// flush writes the metadata back once, however many requests touched it.
type docState struct {
	m      meta
	exists bool
	dirty  bool
	log    *bolt.Bucket // nil until needed
}

func newGroup(tx *bolt.Tx, now int64) *group {
	return &group{
		tx:    tx,
		now:   now,
		metaB: tx.Bucket(bucketMeta),
		logB:  tx.Bucket(bucketLog),
		snapB: tx.Bucket(bucketSnap),
		docs:  make(map[string]*docState),
	}
}

func (g *group) doc(doc string) (*docState, error) {
	if s, ok := g.docs[doc]; ok {
		return s, nil
	}
	s := &docState{}
	if v := g.metaB.Get([]byte(doc)); v != nil {
		m, err := decodeMeta(v)
		if err != nil {
			return nil, fmt.Errorf("document %q: %w", doc, err)
		}
		s.m, s.exists = m, true
	}
	g.docs[doc] = s
	return s, nil
}

// apply performs r inside the transaction. Precondition failures go to
// r.err before anything is changed; a returned error aborts the transaction.
func (g *group) apply(r *request) error {
	s, err := g.doc(r.doc)
	if err != nil {
		return err
	}
	switch r.kind {
	case reqAppend:
		return g.append(r, s)
	case reqSnapshot:
		return g.snapshot(r, s)
	case reqDelete:
		return g.delete(r, s)
	}
	panic(fmt.Sprintf("store: unknown request kind %d", r.kind))
}

func (g *group) append(r *request, s *docState) error {
	if !s.exists {
		gen, err := g.logB.NextSequence()
		if err != nil {
			return err
		}
		s.m, s.exists = meta{created: g.now, gen: gen}, true
	}
	if s.log == nil {
		b, err := g.logB.CreateBucketIfNotExists([]byte(r.doc))
		if err != nil {
			return err
		}
		b.FillPercent = 1.0 // keys only ever grow; FillPercent is not persisted
		s.log = b
	}
	r.first = s.m.lastSeq + 1
	var key [8]byte
	for _, rec := range r.recs {
		s.m.lastSeq++
		binary.BigEndian.PutUint64(key[:], s.m.lastSeq)
		if err := s.log.Put(key[:], rec); err != nil {
			return err
		}
		s.m.records++
		s.m.logBytes += uint64(len(rec))
	}
	r.last = s.m.lastSeq
	s.m.updated = g.now
	s.dirty, g.mutated = true, true
	return nil
}

func (g *group) snapshot(r *request, s *docState) error {
	if !s.exists {
		r.err = fmt.Errorf("store: snapshot %q: %w", r.doc, ErrUnknownDoc)
		return nil
	}
	if r.seq == 0 || r.seq < s.m.snapSeq || r.seq > s.m.lastSeq {
		r.err = fmt.Errorf("store: snapshot %q seq %d: %w (snapshot at %d, last seq %d)",
			r.doc, r.seq, ErrSnapshotSeq, s.m.snapSeq, s.m.lastSeq)
		return nil
	}
	if err := g.snapB.Put([]byte(r.doc), r.data); err != nil {
		return err
	}
	s.m.snapSeq = r.seq
	s.m.snapBytes = uint64(len(r.data))
	s.m.updated = g.now
	s.dirty, g.mutated = true, true
	r.trim = s.m.needsTrim()
	return nil
}

func (g *group) delete(r *request, s *docState) error {
	if !s.exists {
		r.err = fmt.Errorf("store: delete %q: %w", r.doc, ErrUnknownDoc)
		return nil
	}
	if err := g.logB.DeleteBucket([]byte(r.doc)); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
		return err
	}
	if err := g.snapB.Delete([]byte(r.doc)); err != nil {
		return err
	}
	*s = docState{dirty: true}
	g.mutated = true
	return nil
}

// flush writes back the metadata of every document the group changed.
func (g *group) flush() error {
	for doc, s := range g.docs {
		switch {
		case !s.dirty:
		case s.exists:
			if err := g.metaB.Put([]byte(doc), s.m.encode()); err != nil {
				return err
			}
		default:
			if err := g.metaB.Delete([]byte(doc)); err != nil {
				return err
			}
		}
	}
	return nil
}

// trimJob is a document whose log still holds records covered by its
// snapshot, with the SaveSnapshot calls waiting for them to go.
type trimJob struct {
	doc     string
	waiters []*request
}

func (db *DB) queueTrim(r *request) {
	for _, j := range db.trims {
		if j.doc == r.doc {
			j.waiters = append(j.waiters, r)
			return
		}
	}
	db.trims = append(db.trims, &trimJob{doc: r.doc, waiters: []*request{r}})
}

// trimStep runs one bounded truncation transaction for the first queued
// document, then moves the job to the back of the queue (so that several
// large truncations share the writer fairly) or, when finished, answers
// its waiters.
func (db *DB) trimStep() {
	j := db.trims[0]
	db.trims = slices.Delete(db.trims, 0, 1)
	done, err := db.trim(j.doc)
	if err == nil && !done {
		db.trims = append(db.trims, j)
		return
	}
	if err != nil && len(j.waiters) == 0 {
		db.opts.Logger.Warn("store: resuming truncation failed; retried on next SaveSnapshot or Open", "doc", j.doc, "err", err)
	}
	for _, r := range j.waiters {
		if err != nil {
			r.err = fmt.Errorf("store: snapshot %q: saved, but truncating the log failed: %w", r.doc, diskFull(err))
			if errors.Is(r.err, ErrDiskFull) {
				db.stats.diskFull.Add(1)
			}
		}
		r.done <- struct{}{}
	}
}

// trim deletes up to trimBatch of doc's oldest log records that its
// snapshot covers, in one transaction. It reports whether none are left.
// The keys are checked against the metadata while the cursor walks and
// deleted only afterwards: deleting under a bbolt cursor can skip keys.
func (db *DB) trim(doc string) (done bool, err error) {
	tx, err := db.bolt.Begin(true)
	if err != nil {
		return false, err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	metaB := tx.Bucket(bucketMeta)
	v := metaB.Get([]byte(doc))
	if v == nil { // deleted meanwhile
		return true, tx.Rollback()
	}
	m, err := decodeMeta(v)
	if err != nil {
		return false, fmt.Errorf("document %q: %w", doc, err)
	}
	if !m.needsTrim() {
		return true, tx.Rollback()
	}
	lb := tx.Bucket(bucketLog).Bucket([]byte(doc))
	if lb == nil {
		return false, fmt.Errorf("document %q: corrupt: metadata lists %d records but there is no log", doc, m.records)
	}
	oldest := m.oldest()
	n := min(m.snapSeq-oldest+1, uint64(db.opts.trimBatch))
	var bytes, seen uint64
	c := lb.Cursor()
	for k, v := c.First(); k != nil && seen < n; k, v = c.Next() {
		if seq, ok := keySeq(k); !ok || seq != oldest+seen {
			return false, fmt.Errorf("document %q: corrupt: log key %x where seq %d was expected", doc, k, oldest+seen)
		}
		bytes += uint64(len(v))
		seen++
	}
	if seen != n {
		return false, fmt.Errorf("document %q: corrupt: log ends before seq %d", doc, oldest+seen)
	}
	var key [8]byte
	for seq := oldest; seq < oldest+n; seq++ {
		binary.BigEndian.PutUint64(key[:], seq)
		if err := lb.Delete(key[:]); err != nil {
			return false, err
		}
	}
	m.records -= n
	m.logBytes -= bytes
	if err := metaB.Put([]byte(doc), m.encode()); err != nil {
		return false, err
	}
	if err := db.commitTx(tx); err != nil {
		return false, err
	}
	db.stats.trims.Add(1)
	return !m.needsTrim(), nil
}
