package protocol_test

import (
	"strings"
	"testing"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/protocol"
)

// SplitDelta's pieces each encode as a valid Delta frame within the limits
// asked for, and applied in order they rebuild exactly what the whole delta
// does — here a long multi-byte paste from many agents plus deletes.
func TestSplitDelta_PiecesFitAndRebuild(t *testing.T) {
	src := crdt.New(crdt.AgentKey{1})
	var all protocol.DeltaWriter
	for i := range 1500 {
		r := src.Fork(crdt.AgentKey{2, byte(i), byte(i >> 8)})
		d, err := r.Insert(r.Len()/2, "añb")
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Apply(d); err != nil {
			t.Fatal(err)
		}
		all.AddAll(&d)
	}
	d, err := src.Insert(10, strings.Repeat("ü—", 100_000)) // 500 KB in one op
	if err != nil {
		t.Fatal(err)
	}
	all.AddAll(&d)
	if d, err = src.Delete(5, 2000); err != nil {
		t.Fatal(err)
	}
	all.AddAll(&d)
	whole := all.Delta()

	parts := protocol.SplitDelta(whole, 1000, 200_000)
	if len(parts) < 3 {
		t.Fatalf("%d parts, want the delta cut", len(parts))
	}
	got := crdt.New(crdt.AgentKey{9})
	for i, p := range parts {
		if len(p.Ops) > 1000 || len(p.Agents) > protocol.MaxAgentsPerDelta {
			t.Fatalf("part %d: %d ops, %d agents", i, len(p.Ops), len(p.Agents))
		}
		frame, err := protocol.Encode(nil, &protocol.Delta{Doc: "d", ClientSeq: uint64(i + 1), Delta: p})
		if err != nil {
			t.Fatalf("part %d does not encode: %v", i, err)
		}
		if len(frame) > protocol.MaxFrameBytes {
			t.Fatalf("part %d is %d bytes", i, len(frame))
		}
		if err := got.Apply(p); err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
	}
	if got.String() != src.String() || !got.Version().Equal(src.Version()) {
		t.Fatal("the parts do not rebuild the document")
	}
	// A delta that fits comes back as itself.
	small := protocol.SplitDelta(parts[0], 100_000, 1<<30)
	if len(small) != 1 || len(small[0].Ops) != len(parts[0].Ops) {
		t.Fatalf("a fitting delta was cut into %d", len(small))
	}
}

// SubDelta keeps the chosen ops with an agent table of only their agents.
func TestSubDelta(t *testing.T) {
	a := crdt.New(crdt.AgentKey{1})
	b := a.Fork(crdt.AgentKey{2})
	da, _ := a.Insert(0, "x")
	db, _ := b.Insert(0, "y")
	var w protocol.DeltaWriter
	w.AddAll(&da)
	w.AddAll(&db)
	sub := protocol.SubDelta(w.Delta(), []int{1})
	if len(sub.Ops) != 1 || len(sub.Agents) != 1 || sub.Agents[0] != (crdt.AgentKey{2}) || sub.Ops[0].Text != "y" {
		t.Fatalf("sub-delta %+v", sub)
	}
}
