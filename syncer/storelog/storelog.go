// Package storelog adapts a store.DB to the syncer.Log interface, so that
// syncer depends on no storage package and store on no syncer type.
package storelog

import (
	"errors"

	"github.com/weft-sync/weft/store"
	"github.com/weft-sync/weft/syncer"
)

// Log is a store.DB seen as a syncer.Log.
type Log struct{ DB *store.DB }

var _ syncer.Log = Log{}

func (l Log) Append(doc string, recs ...[]byte) (uint64, uint64, error) {
	return l.DB.Append(doc, recs...)
}

func (l Log) Range(doc string, from uint64, fn func(uint64, []byte) error) error {
	err := l.DB.Range(doc, from, fn)
	if errors.Is(err, store.ErrUnknownDoc) {
		return syncer.ErrUnknownDoc
	}
	return err
}

func (l Log) SaveSnapshot(doc string, seq uint64, data []byte) error {
	return l.DB.SaveSnapshot(doc, seq, data)
}

// LoadSnapshot reports "no snapshot" (and an unknown document) as seq 0
// and nil data, as syncer.Log asks.
func (l Log) LoadSnapshot(doc string) (uint64, []byte, error) {
	seq, data, err := l.DB.LoadSnapshot(doc)
	if errors.Is(err, store.ErrNoSnapshot) || errors.Is(err, store.ErrUnknownDoc) {
		return 0, nil, nil
	}
	return seq, data, err
}

func meta(m store.Meta) syncer.DocMeta {
	return syncer.DocMeta{Doc: m.Doc, Created: m.Created, Updated: m.Updated, LastSeq: m.LastSeq, Records: m.Records, Bytes: m.Bytes}
}

func (l Log) Stat(doc string) (syncer.DocMeta, error) {
	m, err := l.DB.Stat(doc)
	if errors.Is(err, store.ErrUnknownDoc) {
		return syncer.DocMeta{}, syncer.ErrUnknownDoc
	}
	return meta(m), err
}

func (l Log) List() ([]syncer.DocMeta, error) {
	ms, err := l.DB.List()
	if err != nil {
		return nil, err
	}
	out := make([]syncer.DocMeta, len(ms))
	for i, m := range ms {
		out[i] = meta(m)
	}
	return out, nil
}

func (l Log) Delete(doc string) error {
	err := l.DB.Delete(doc)
	if errors.Is(err, store.ErrUnknownDoc) {
		return syncer.ErrUnknownDoc
	}
	return err
}
