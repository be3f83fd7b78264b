package crdt_test

import (
	"errors"
	"testing"

	"github.com/weft-sync/weft/crdt"
)

// Between(from, to) returns exactly the ops in to and not in from: a
// character inserted within to and deleted after it travels with its text,
// so the receiver holds what version to holds. (The friendsforever replay
// once failed at txn 489 on this.)
func TestBetween_LaterDeleteKeepsText(t *testing.T) {
	a := crdt.New(key(0))
	if _, err := a.Insert(0, "ab"); err != nil {
		t.Fatal(err)
	}
	v := a.Version() // holds "ab"
	if _, err := a.Delete(1, 1); err != nil {
		t.Fatal(err)
	}
	d, err := a.Between(nil, v)
	if err != nil {
		t.Fatal(err)
	}
	b := crdt.New(key(1))
	if err := b.Apply(d); err != nil {
		t.Fatal(err)
	}
	if !b.Version().Equal(v) {
		t.Fatalf("version %v, want %v", b.Version(), v)
	}
	if got := b.String(); got != "ab" {
		t.Fatalf("replica at version %v holds %q, want \"ab\" (ops: %+v)", v, got, d.Ops)
	}
}

// A delta whose third op is invalid against the replica's state (its
// Lamport time is not after its origin's) is rejected whole: the valid ops
// before it are not applied either.
func TestApply_InvalidDeltaAppliesNothing(t *testing.T) {
	r := crdt.New(key(0))
	if _, err := r.Insert(0, "ab"); err != nil { // Lamport 1, 2
		t.Fatal(err)
	}
	text, ver := r.String(), r.Version()
	z := key(7)
	d := crdt.Delta{Agents: []crdt.AgentKey{z, key(0)}, Ops: []crdt.Op{
		{Kind: crdt.OpInsert, Agent: 0, Seq: 0, Lamport: 10, Len: 1, Origin: crdt.Ref{Agent: crdt.RootAgent}, Text: "x"},
		{Kind: crdt.OpInsert, Agent: 0, Seq: 1, Lamport: 11, Len: 1, Origin: crdt.Ref{Agent: 1, Seq: 1}, Text: "y"},
		{Kind: crdt.OpInsert, Agent: 0, Seq: 2, Lamport: 1, Len: 1, Origin: crdt.Ref{Agent: 1, Seq: 0}, Text: "!"},
	}}
	err := r.Apply(d)
	if err == nil {
		t.Fatal("Apply accepted an op whose Lamport time is not after its origin's")
	}
	if r.String() != text || !r.Version().Equal(ver) {
		t.Fatalf("Apply failed with %v but changed the replica: %q %v, was %q %v", err, r.String(), r.Version(), text, ver)
	}
}

// A replica loaded from a snapshot no longer holds the text of deleted
// characters, so a Between that would need it fails with ErrCompacted
// instead of returning a delta that shows them deleted too early; Since,
// which carries every delete along, still works.
func TestBetween_LoadedReplicaCompacted(t *testing.T) {
	a := crdt.New(key(0))
	if _, err := a.Insert(0, "ab"); err != nil {
		t.Fatal(err)
	}
	v := a.Version()
	if _, err := a.Delete(1, 1); err != nil {
		t.Fatal(err)
	}
	snap, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	l, err := crdt.Load(snap, key(2))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Between(nil, v); !errors.Is(err, crdt.ErrCompacted) {
		t.Fatalf("Between on a loaded replica: err = %v, want ErrCompacted", err)
	}
	b := crdt.New(key(1))
	if err := b.Apply(l.Since(nil)); err != nil {
		t.Fatal(err)
	}
	if b.String() != "a" || !b.Version().Equal(a.Version()) {
		t.Fatalf("Since from a loaded replica gave %q %v", b.String(), b.Version())
	}
}
