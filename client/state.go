package client

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// The state file (bbolt):
//
//	meta/agent            the replica's agent key (16 bytes)
//	docs/<doc id>/snap    crdt snapshot (Text.MarshalBinary)
//	docs/<doc id>/log/    u64 key → delta applied after the snapshot, local
//	                      or remote, in the order it was applied
//	docs/<doc id>/pending u64 key → a local delta the server has not acked
//
// Keys of log and pending come from one counter per document, so a local
// delta has the same key in both. Replaying snap then log in key order
// rebuilds the replica; the pending entries are resent after the next
// join. Every write goes through one writer goroutine that commits
// whatever is queued in one transaction (group commit), in queue order, so
// the file always holds a prefix of the replica's history: a local edit is
// never stored without the remote ops it was made on top of.
var (
	bMeta    = []byte("meta")
	bDocs    = []byte("docs")
	kAgent   = []byte("agent")
	kSnap    = []byte("snap")
	bLog     = []byte("log")
	bPending = []byte("pending")
)

// stateDB is the client's state file and its writer.
type stateDB struct {
	db  *bolt.DB
	in  chan wreq
	wg  sync.WaitGroup
	err atomic.Pointer[error] // sticky: the first failed write

	mu     sync.RWMutex // submit holds it shared; close exclusively
	closed bool
	onErr  func(error)
}

type wreq struct {
	fn   func(tx *bolt.Tx) error
	done chan error // nil: nobody waits
}

func key64(k uint64) []byte { return binary.BigEndian.AppendUint64(nil, k) }

// openState opens (or creates) the state file and returns the agent it
// belongs to.
func openState(path string, want crdt.AgentKey, onErr func(error)) (*stateDB, crdt.AgentKey, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, crdt.AgentKey{}, fmt.Errorf("client: open state %s: %w", path, err)
	}
	var agent crdt.AgentKey
	err = db.Update(func(tx *bolt.Tx) error {
		m, err := tx.CreateBucketIfNotExists(bMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bDocs); err != nil {
			return err
		}
		if v := m.Get(kAgent); len(v) == 16 {
			copy(agent[:], v)
			if want != (crdt.AgentKey{}) && want != agent {
				return fmt.Errorf("%w: file has %s, options say %s", ErrAgentMismatch, agent, want)
			}
			return nil
		}
		agent = want
		if agent == (crdt.AgentKey{}) {
			agent = newAgent()
		}
		return m.Put(kAgent, agent[:])
	})
	if err != nil {
		_ = db.Close()
		return nil, crdt.AgentKey{}, err
	}
	s := &stateDB{db: db, in: make(chan wreq, 1024), onErr: onErr}
	s.wg.Add(1)
	go s.loop()
	return s, agent, nil
}

// newAgent returns a random (version 4) UUID.
func newAgent() crdt.AgentKey { return crdt.AgentKey(uuid.New()) }

func (s *stateDB) loop() {
	defer s.wg.Done()
	for first := range s.in {
		batch := []wreq{first}
		open := true
	drain:
		for open && len(batch) < 512 {
			select {
			case r, ok := <-s.in:
				if !ok {
					open = false
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		var err error
		if p := s.err.Load(); p != nil {
			err = *p
		} else {
			err = s.db.Update(func(tx *bolt.Tx) error {
				for _, r := range batch {
					if err := r.fn(tx); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				err = fmt.Errorf("%w: %w", ErrState, err)
				if s.err.CompareAndSwap(nil, &err) && s.onErr != nil {
					s.onErr(err)
				}
			}
		}
		for _, r := range batch {
			if r.done != nil {
				r.done <- err
			}
		}
		if !open {
			return
		}
	}
}

// submit queues fn. With wait it returns once fn is committed (or failed).
func (s *stateDB) submit(fn func(tx *bolt.Tx) error, wait bool) error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	r := wreq{fn: fn}
	if wait {
		r.done = make(chan error, 1)
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	s.in <- r
	s.mu.RUnlock()
	if !wait {
		return nil
	}
	return <-r.done
}

// close commits what is queued and closes the file.
func (s *stateDB) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.in)
	s.mu.Unlock()
	s.wg.Wait()
	return s.db.Close()
}

// docBucket returns the document's bucket, creating it for writes.
func docBucket(tx *bolt.Tx, doc string) (*bolt.Bucket, error) {
	b := tx.Bucket(bDocs).Bucket([]byte(doc))
	if b != nil || !tx.Writable() {
		return b, nil
	}
	b, err := tx.Bucket(bDocs).CreateBucket([]byte(doc))
	if err != nil {
		return nil, err
	}
	if _, err := b.CreateBucket(bLog); err != nil {
		return nil, err
	}
	if _, err := b.CreateBucket(bPending); err != nil {
		return nil, err
	}
	return b, nil
}

// storedDoc is what the state file holds for one document.
type storedDoc struct {
	snap    []byte
	log     []keyed
	pending []keyed
	maxKey  uint64
}

type keyed struct {
	key  uint64
	data []byte
}

func (s *stateDB) load(doc string) (*storedDoc, error) {
	sd := &storedDoc{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b, _ := docBucket(tx, doc)
		if b == nil {
			return nil
		}
		if v := b.Get(kSnap); v != nil {
			sd.snap = append([]byte(nil), v...)
		}
		for _, name := range [][]byte{bLog, bPending} {
			out := &sd.log
			if string(name) == string(bPending) {
				out = &sd.pending
			}
			c := b.Bucket(name).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(k) != 8 {
					return fmt.Errorf("%w: bad key in %s of %q", ErrState, name, doc)
				}
				kk := binary.BigEndian.Uint64(k)
				sd.maxKey = max(sd.maxKey, kk)
				*out = append(*out, keyed{key: kk, data: append([]byte(nil), v...)})
			}
		}
		return nil
	})
	return sd, err
}

// docs lists the documents the state file holds.
func (s *stateDB) docs() ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bDocs).ForEach(func(k, v []byte) error {
			if v == nil {
				out = append(out, string(k))
			}
			return nil
		})
	})
	return out, err
}

// encodeDelta stores a delta as a protocol Delta frame: a bounded,
// validated encoding that already exists.
func encodeDelta(doc string, d crdt.Delta) ([]byte, error) {
	return protocol.Encode(nil, &protocol.Delta{Doc: doc, ClientSeq: 1, Delta: d})
}

func decodeDelta(b []byte) (crdt.Delta, error) {
	f, err := protocol.Decode(b)
	if err != nil {
		return crdt.Delta{}, err
	}
	d, ok := f.(*protocol.Delta)
	if !ok {
		return crdt.Delta{}, errors.New("not a delta")
	}
	return d.Delta, nil
}

// putLog stores a delta in the log (and, for a local one, as pending).
func putLog(doc string, key uint64, data []byte, pending bool) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		b, err := docBucket(tx, doc)
		if err != nil {
			return err
		}
		lb := b.Bucket(bLog)
		lb.FillPercent = 1
		if err := lb.Put(key64(key), data); err != nil {
			return err
		}
		if pending {
			pb := b.Bucket(bPending)
			pb.FillPercent = 1
			return pb.Put(key64(key), data)
		}
		return nil
	}
}

func delPending(doc string, keys []uint64) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		b, err := docBucket(tx, doc)
		if err != nil {
			return err
		}
		pb := b.Bucket(bPending)
		for _, k := range keys {
			if err := pb.Delete(key64(k)); err != nil {
				return err
			}
		}
		return nil
	}
}

// putSnap stores a snapshot covering every log entry up to key upTo and
// drops those entries.
func putSnap(doc string, snap []byte, upTo uint64) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		b, err := docBucket(tx, doc)
		if err != nil {
			return err
		}
		if err := b.Put(kSnap, snap); err != nil {
			return err
		}
		lb := b.Bucket(bLog)
		var keys [][]byte
		c := lb.Cursor()
		for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= upTo; k, _ = c.Next() {
			keys = append(keys, append([]byte(nil), k...))
		}
		for _, k := range keys {
			if err := lb.Delete(k); err != nil {
				return err
			}
		}
		return nil
	}
}
