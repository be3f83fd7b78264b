// Package store is weft's durable per-document op log, on one bbolt file.
//
// A document is an append-only log of opaque records (already encoded op
// batches; store never decodes them) under seqs 1, 2, 3, ..., plus at most
// one snapshot that covers a prefix of the log, plus metadata. The store
// depends on bbolt and the standard library only, so it can be tested and
// benchmarked on bytes alone.
//
// # Layout
//
//	info/  format        -> 0x01
//	meta/  <doc id>      -> 65-byte record: version, created, updated, lastSeq,
//	                        snapSeq, records, log bytes, snapshot bytes, gen
//	log/   <doc id>/     (one nested bucket per document; the bucket's
//	                        sequence hands out gens)
//	           <seq, 8 bytes big-endian> -> record
//	snap/  <doc id>      -> snapshot bytes
//
// Metadata lives in one flat bucket so that List and Stat read one small
// value per document instead of descending into each log. Seq keys are
// big-endian so that byte order is numeric order: a cursor Seek is the
// range scan, and appends always land on the rightmost leaf, which is why
// log buckets run with FillPercent 1.0. The snapshot sits outside the log
// bucket so that replacing it never rewrites log pages.
//
// One invariant ties the layout together: a document's log holds exactly
// the seqs (lastSeq-records, lastSeq]. Appends extend it on the right,
// truncation removes from the left, and every change to the log commits in
// the same transaction as its metadata. A truncation left unfinished (by a
// crash, or by an error) is therefore visible in the metadata alone, and
// Open resumes it.
//
// # Durability
//
// A write returns only after the transaction holding it has been fsynced
// (bbolt syncs the data pages, then the meta page). An acknowledged Append
// survives a process or machine crash; an unacknowledged one is either
// entirely present or entirely absent. Options.NoSync gives this up.
//
// All writes go through one writer goroutine. It blocks for a request,
// then takes everything else already queued (up to Options.MaxGroup) and
// commits the lot, from any callers and documents, in a single
// transaction: under load many Appends share one fsync, and an idle store
// adds no delay because the writer never waits for a group to fill. One
// writer also makes ordering simple: a caller's writes commit in the order
// it made them, and snapshots and deletes are serialized with appends.
//
// When a group's transaction fails, for instance because it would grow the
// file past Options.MaxSize, its requests are retried one per transaction,
// so only the requests that cannot fit fail (with ErrDiskFull). A failed
// transaction is rolled back entirely and leaves no trace, so it cannot
// poison later groups. Note that with bbolt's NoFreelistSync, which the
// store enables to save a freelist write per commit, each rollback rescans
// the file to rebuild the freelist: failures are slow on a large file.
//
// SaveSnapshot commits the snapshot and then deletes the covered log
// records in transactions of bounded size, interleaved with other groups,
// so that compacting a long log neither builds one huge transaction nor
// stalls other documents.
//
// # Ownership
//
// bbolt hands out slices that point into its memory map and are valid only
// inside the transaction, and it keeps the slices passed to Put until the
// transaction commits. So:
//   - Records and snapshot data passed to Append and SaveSnapshot are read
//     until the call returns; the caller must not change them before then
//     and owns them again afterwards. The store copies nothing on the way in.
//   - Everything the store returns (Range's rec, LoadSnapshot's data, Meta)
//     is a fresh copy that the caller owns.
//
// # Reads
//
// Reads run in bbolt read transactions, concurrently with the writer and
// each other. A long read transaction would keep freed pages from reuse and
// block the writer whenever the file must grow and be remapped, so Range
// and List work in bounded chunks, each in a new short transaction, and
// Range calls its callback outside any transaction.
package store
