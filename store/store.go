package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Errors callers branch on. Everything else is wrapped with the operation
// and document, e.g. "store: append \"d1\": ...".
var (
	ErrClosed      = errors.New("store: closed")
	ErrLocked      = errors.New("store: database file already in use")
	ErrUnknownDoc  = errors.New("store: unknown document")
	ErrBadDocID    = errors.New("store: invalid document id")
	ErrEmptyRecord = errors.New("store: empty record")
	ErrCompacted   = errors.New("store: records compacted into snapshot")
	ErrNoSnapshot  = errors.New("store: no snapshot")
	ErrSnapshotSeq = errors.New("store: snapshot seq out of range")
	// ErrDiskFull means a commit needed more space than Options.MaxSize
	// allows (it wraps bbolt's ErrMaxSizeReached) or the file system
	// returned ENOSPC. Nothing of the failed request was stored; data
	// acknowledged earlier is intact and readable, and appends succeed
	// again once Delete or SaveSnapshot has freed pages. Those two need a
	// few free pages themselves; the pages the last commit released are
	// usually enough, but a large snapshot may not fit. Reopening with a
	// larger MaxSize always recovers.
	ErrDiskFull = errors.New("store: disk full")
)

// MaxDocIDLen is the longest document ID, in bytes. IDs are opaque byte
// strings of 1..MaxDocIDLen bytes.
const MaxDocIDLen = 256

// Options configures Open. The zero value is ready to use; withDefaults
// documents and fills every default.
type Options struct {
	// Timeout bounds the wait for the file lock. Another process (or another
	// Open in this process) holding the file makes Open fail with ErrLocked
	// after this long. Default 1s; there is no "wait forever".
	Timeout time.Duration

	// MaxSize caps the data file, in bytes (0: unlimited). A commit that
	// would grow the file beyond it fails with ErrDiskFull instead, which
	// turns "disk full" into a testable, recoverable condition. bbolt grows
	// the file in steps (powers of two up to 16 MiB, then 16 MiB at a time)
	// and refuses a step that would pass MaxSize, so up to one step below
	// MaxSize can stay unused. The file never shrinks; freed pages are
	// reused.
	MaxSize int64

	// MaxGroup is the most requests (Append, SaveSnapshot, Delete calls)
	// committed together in one transaction and one fsync. Larger groups
	// amortize fsync better but hold more memory per transaction and make
	// a failed group cost more retries. It is also the queue length before
	// callers block. Default 1024.
	MaxGroup int

	// NoSync skips fsync on commit.
	//
	// THIS BREAKS DURABILITY. An acknowledged Append can vanish, and the
	// file can be corrupted, if the machine (not just the process) crashes.
	// Use it only for benchmarks or bulk loads you can redo. Default false.
	NoSync bool

	// InitialMmapSize is passed to bbolt: with a map at least as large as the
	// file, the writer never has to wait for readers to remap. Default 0.
	InitialMmapSize int

	// Now stamps Meta.Created and Meta.Updated. Default time.Now.
	Now func() time.Time

	// Logger receives the rare failure the store cannot return to a
	// caller: a truncation resumed at Open that fails. Default: discard.
	Logger *slog.Logger

	// Unexported knobs shrink batch sizes in tests.
	rangeChunk      int    // records per read transaction in Range
	rangeChunkBytes int    // record bytes per read transaction in Range (soft)
	listChunk       int    // documents per read transaction in List
	trimBatch       int    // log records deleted per truncation transaction
	hookCollect     func() // called by the writer before it collects each group
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.MaxSize < 0 {
		o.MaxSize = 0
	}
	if o.MaxGroup <= 0 {
		o.MaxGroup = 1024
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.rangeChunk <= 0 {
		o.rangeChunk = 1024
	}
	if o.rangeChunkBytes <= 0 {
		o.rangeChunkBytes = 1 << 20
	}
	if o.listChunk <= 0 {
		o.listChunk = 1024
	}
	if o.trimBatch <= 0 {
		o.trimBatch = 10000
	}
	return o
}

// Top-level buckets; see doc.go.
var (
	bucketInfo = []byte("info")
	bucketMeta = []byte("meta")
	bucketLog  = []byte("log")
	bucketSnap = []byte("snap")

	keyFormat     = []byte("format")
	formatVersion = []byte{1}
)

// DB is a durable per-document op log. It is safe for concurrent use.
type DB struct {
	bolt *bolt.DB
	opts Options

	// mu guards closed and every send on in: Close takes it exclusively, so
	// once closed is set no sender can be blocked on (or send to) a closed
	// channel. Readers hold it shared for one transaction so that Close
	// never closes bbolt under them.
	mu     sync.RWMutex
	closed bool
	in     chan *request // to the writer; closed by Close

	writerDone chan struct{} // closed when the writer goroutine returns
	closeOnce  sync.Once
	closeErr   error

	// trims is owned by the writer goroutine (and by Open before it starts).
	trims []*trimJob

	stats counters
}

// counters are written by the writer and read by Stats.
type counters struct {
	groups      atomic.Uint64
	appends     atomic.Uint64
	records     atomic.Uint64
	retries     atomic.Uint64
	diskFull    atomic.Uint64
	trims       atomic.Uint64
	lastCommit  atomic.Int64
	totalCommit atomic.Int64
}

// Open opens or creates the store at path and starts its writer goroutine.
// Close must be called to stop it and release the file lock.
func Open(path string, opts Options) (*DB, error) {
	opts = opts.withDefaults()
	b, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         opts.Timeout,
		NoSync:          opts.NoSync,
		NoFreelistSync:  true, // saves a freelist write per commit; Open rebuilds it by scanning
		FreelistType:    bolt.FreelistMapType,
		MaxSize:         int(opts.MaxSize),
		InitialMmapSize: opts.InitialMmapSize,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("store: open %s: %w (waited %v)", path, ErrLocked, opts.Timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db := &DB{
		bolt:       b,
		opts:       opts,
		in:         make(chan *request, opts.MaxGroup),
		writerDone: make(chan struct{}),
	}
	if err := db.init(); err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, diskFull(err))
	}
	go db.writer()
	return db, nil
}

// init creates the buckets, checks the format, and queues the truncations
// a crash interrupted.
func (db *DB) init() error {
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		info, err := tx.CreateBucketIfNotExists(bucketInfo)
		if err != nil {
			return err
		}
		switch v := info.Get(keyFormat); {
		case v == nil:
			if err := info.Put(keyFormat, formatVersion); err != nil {
				return err
			}
		case string(v) != string(formatVersion):
			return fmt.Errorf("unsupported format version %x", v)
		}
		for _, name := range [][]byte{bucketMeta, bucketLog, bucketSnap} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).ForEach(func(k, v []byte) error {
			m, err := decodeMeta(v)
			if err != nil {
				return fmt.Errorf("document %q: %w", k, err)
			}
			if m.needsTrim() {
				db.trims = append(db.trims, &trimJob{doc: string(k)})
			}
			return nil
		})
	})
}

// Close stops accepting requests (they fail with ErrClosed), lets the
// writer commit and answer everything already queued, finishes pending
// truncations, waits for the writer goroutine, and closes the file.
// Calling it again returns the first call's result.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		db.mu.Lock()
		db.closed = true
		close(db.in)
		db.mu.Unlock()
		<-db.writerDone
		if err := db.bolt.Close(); err != nil {
			db.closeErr = fmt.Errorf("store: close: %w", err)
		}
	})
	return db.closeErr
}

// Path returns the data file's path.
func (db *DB) Path() string { return db.bolt.Path() }

// Stats is a point-in-time view for metrics.
type Stats struct {
	// Group commit, counted since Open.
	Groups   uint64 // write transactions committed for requests, one fsync each
	Appends  uint64 // Append calls committed
	Records  uint64 // records committed by those Appends
	Retries  uint64 // failed multi-request groups retried request by request
	DiskFull uint64 // requests answered with ErrDiskFull
	Trims    uint64 // truncation transactions committed

	// LastCommit and TotalCommit time tx.Commit of group and truncation
	// transactions: page writes plus bbolt's two fdatasyncs, which
	// dominate it unless NoSync is set.
	LastCommit  time.Duration
	TotalCommit time.Duration

	// From bbolt.
	FreePages    int   // pages on the freelist, reusable now
	PendingPages int   // freed pages still visible to open readers
	FreeBytes    int   // bytes in free pages
	ReadTxs      int   // read transactions started since Open
	OpenReadTxs  int   // read transactions open now
	PageWrites   int64 // pages written since Open
	FileSize     int64 // size of the data file (never shrinks; 0 if stat failed)
	MaxSize      int64 // Options.MaxSize (0: unlimited)
}

// Stats returns counters for metrics. It opens no transaction.
func (db *DB) Stats() Stats {
	bs := db.bolt.Stats()
	s := Stats{
		Groups:       db.stats.groups.Load(),
		Appends:      db.stats.appends.Load(),
		Records:      db.stats.records.Load(),
		Retries:      db.stats.retries.Load(),
		DiskFull:     db.stats.diskFull.Load(),
		Trims:        db.stats.trims.Load(),
		LastCommit:   time.Duration(db.stats.lastCommit.Load()),
		TotalCommit:  time.Duration(db.stats.totalCommit.Load()),
		FreePages:    bs.FreePageN,
		PendingPages: bs.PendingPageN,
		FreeBytes:    bs.FreeAlloc,
		ReadTxs:      bs.TxN,
		OpenReadTxs:  bs.OpenTxN,
		PageWrites:   bs.TxStats.GetWrite(),
		MaxSize:      db.opts.MaxSize,
	}
	if fi, err := os.Stat(db.bolt.Path()); err == nil {
		s.FileSize = fi.Size()
	}
	return s
}

func checkDoc(doc string) error {
	if len(doc) == 0 || len(doc) > MaxDocIDLen {
		return fmt.Errorf("%w: %d bytes, want 1..%d", ErrBadDocID, len(doc), MaxDocIDLen)
	}
	return nil
}

// diskFull marks out-of-space errors with ErrDiskFull, keeping the cause.
func diskFull(err error) error {
	if errors.Is(err, berrors.ErrMaxSizeReached) || errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", ErrDiskFull, err)
	}
	return err
}
