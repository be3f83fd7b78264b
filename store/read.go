package store

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// view runs fn in a read transaction, unless the store is closed. Holding
// mu shared keeps Close from closing bbolt under fn.
func (db *DB) view(fn func(tx *bolt.Tx) error) error {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return ErrClosed
	}
	return db.bolt.View(fn)
}

func readMeta(tx *bolt.Tx, doc string) (meta, error) {
	v := tx.Bucket(bucketMeta).Get([]byte(doc))
	if v == nil {
		return meta{}, ErrUnknownDoc
	}
	m, err := decodeMeta(v)
	if err != nil {
		return meta{}, fmt.Errorf("document %q: %w", doc, err)
	}
	return m, nil
}

// Range calls fn for each of doc's records with seq >= from, in seq order
// (from 0 means 1). It stops at the first error from fn and returns that
// error unchanged.
//
// If from is at or below the snapshot's seq, Range returns ErrCompacted:
// load the snapshot and continue from its seq+1. Range reads in chunks of
// bounded size, each in a short read transaction of its own (a long one
// would keep the writer from reusing pages and from growing the file), so
// it sees records appended while it runs. A SaveSnapshot that covers
// records not yet delivered ends it with ErrCompacted, and a Delete with
// ErrUnknownDoc (also when the document is created again meanwhile).
//
// fn runs outside any transaction and may call any method of db. rec is
// fn's to keep: it is a copy the store never touches again. Records read in
// one chunk share one allocation, so keeping a single small rec keeps that
// chunk's memory alive; copy it if that matters.
func (db *DB) Range(doc string, from uint64, fn func(seq uint64, rec []byte) error) error {
	if err := checkDoc(doc); err != nil {
		return fmt.Errorf("store: range: %w", err)
	}
	next := max(from, 1)
	var c chunk
	var gen uint64 // of the document the first chunk read
	for {
		more, err := db.readChunk(doc, next, &gen, &c)
		if err != nil {
			return fmt.Errorf("store: range %q from %d: %w", doc, next, err)
		}
		for i, end := range c.ends {
			start := 0
			if i > 0 {
				start = c.ends[i-1]
			}
			if err := fn(next, c.buf[start:end:end]); err != nil {
				return err
			}
			next++
		}
		if !more {
			return nil
		}
	}
}

// chunk holds the records of one read transaction: rec i is
// buf[ends[i-1]:ends[i]].
type chunk struct {
	buf  []byte
	ends []int
}

// readChunk reads records from seq next on into a fresh c.buf. more reports
// whether it stopped at a size limit rather than at the end of the log.
// A gen other than *gen (once set) means the document was deleted and
// created again since the previous chunk.
func (db *DB) readChunk(doc string, next uint64, gen *uint64, c *chunk) (more bool, err error) {
	c.buf, c.ends = nil, c.ends[:0] // the previous buf now belongs to fn
	err = db.view(func(tx *bolt.Tx) error {
		m, err := readMeta(tx, doc)
		if err != nil {
			return err
		}
		if *gen == 0 {
			*gen = m.gen
		} else if m.gen != *gen {
			return fmt.Errorf("%w: deleted and created again during Range", ErrUnknownDoc)
		}
		if next <= m.snapSeq {
			return fmt.Errorf("%w: snapshot covers seqs up to %d", ErrCompacted, m.snapSeq)
		}
		if next > m.lastSeq {
			return nil
		}
		lb := tx.Bucket(bucketLog).Bucket([]byte(doc))
		if lb == nil {
			return fmt.Errorf("document %q: corrupt: no log for %d records", doc, m.records)
		}
		// Size the buffer from the average record so that it rarely grows.
		if m.records > 0 {
			avg := m.logBytes/m.records + 1
			n := min(uint64(db.opts.rangeChunk), m.lastSeq-next+1)
			c.buf = make([]byte, 0, min(avg*n, uint64(db.opts.rangeChunkBytes)+avg))
		}
		cur := lb.Cursor()
		want := next
		for k, v := cur.Seek(seqKey(next)); k != nil; k, v = cur.Next() {
			if seq, ok := keySeq(k); !ok || seq != want {
				return fmt.Errorf("document %q: corrupt: log key %x where seq %d was expected", doc, k, want)
			}
			if len(c.ends) == db.opts.rangeChunk || (len(c.ends) > 0 && len(c.buf)+len(v) > db.opts.rangeChunkBytes) {
				more = true
				return nil
			}
			c.buf = append(c.buf, v...)
			c.ends = append(c.ends, len(c.buf))
			want++
		}
		if want <= m.lastSeq {
			return fmt.Errorf("document %q: corrupt: log ends at seq %d, metadata says %d", doc, want-1, m.lastSeq)
		}
		return nil
	})
	return more, err
}

// Stat returns doc's metadata, or ErrUnknownDoc.
func (db *DB) Stat(doc string) (Meta, error) {
	if err := checkDoc(doc); err != nil {
		return Meta{}, fmt.Errorf("store: stat: %w", err)
	}
	var out Meta
	err := db.view(func(tx *bolt.Tx) error {
		m, err := readMeta(tx, doc)
		out = m.export(doc)
		return err
	})
	if err != nil {
		return Meta{}, fmt.Errorf("store: stat %q: %w", doc, err)
	}
	return out, nil
}

// List returns the metadata of every document, sorted by ID (byte order).
// It reads in bounded chunks, one short transaction each, so documents
// created or deleted while it runs may or may not be listed.
func (db *DB) List() ([]Meta, error) {
	var out []Meta
	var after []byte // last ID listed; nil before the first chunk
	for {
		n := 0
		err := db.view(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketMeta).Cursor()
			k, v := c.First()
			if after != nil {
				k, v = c.Seek(after)
				if k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil && n < db.opts.listChunk; k, v = c.Next() {
				m, err := decodeMeta(v)
				if err != nil {
					return fmt.Errorf("document %q: %w", k, err)
				}
				out = append(out, m.export(string(k)))
				after = append(after[:0], k...)
				n++
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("store: list: %w", err)
		}
		if n < db.opts.listChunk {
			return out, nil
		}
	}
}

// LoadSnapshot returns doc's snapshot and the seq it covers, or
// ErrNoSnapshot if none was saved. data is a copy owned by the caller.
func (db *DB) LoadSnapshot(doc string) (seq uint64, data []byte, err error) {
	if err := checkDoc(doc); err != nil {
		return 0, nil, fmt.Errorf("store: load snapshot: %w", err)
	}
	err = db.view(func(tx *bolt.Tx) error {
		m, err := readMeta(tx, doc)
		if err != nil {
			return err
		}
		if m.snapSeq == 0 {
			return ErrNoSnapshot
		}
		v := tx.Bucket(bucketSnap).Get([]byte(doc))
		if v == nil {
			return fmt.Errorf("document %q: corrupt: no snapshot data for seq %d", doc, m.snapSeq)
		}
		seq, data = m.snapSeq, bytes.Clone(v)
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("store: load snapshot %q: %w", doc, err)
	}
	return seq, data, nil
}
