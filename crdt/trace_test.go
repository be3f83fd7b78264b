package crdt_test

import (
	"testing"

	"github.com/weft-sync/weft/crdt"
	"github.com/weft-sync/weft/internal/edittrace"
)

type patch struct {
	pos, del int
	ins      string
}

type trace struct {
	end     string
	patches []patch
}

// loadSequential reads a sequential trace from ../shared/traces; a missing
// trace fails the test.
func loadSequential(tb testing.TB, name string) trace {
	tb.Helper()
	et, err := edittrace.Shared(name)
	if err != nil {
		tb.Fatal(err)
	}
	if et.Concurrent {
		tb.Fatalf("%s is a concurrent trace", name)
	}
	tr := trace{end: et.End}
	for _, tx := range et.Txns {
		for _, p := range tx.Patches {
			tr.patches = append(tr.patches, patch{pos: p.Pos, del: p.Del, ins: p.Ins})
		}
	}
	return tr
}

func replay(tb testing.TB, tr trace) *crdt.Text {
	d := crdt.New(crdt.AgentKey{1})
	for i, p := range tr.patches {
		if p.del > 0 {
			if _, err := d.Delete(p.pos, p.del); err != nil {
				tb.Fatalf("patch %d: %v", i, err)
			}
		}
		if p.ins != "" {
			if _, err := d.Insert(p.pos, p.ins); err != nil {
				tb.Fatalf("patch %d: %v", i, err)
			}
		}
	}
	return d
}

func TestTrace_AutomergePaper(t *testing.T) {
	tr := loadSequential(t, "automerge-paper.json.gz")
	d := replay(t, tr)
	if got := d.String(); got != tr.end {
		t.Fatalf("final text differs: got %d chars, want %d", len(got), len(tr.end))
	}
	m := crdt.New(crdt.AgentKey{2})
	if err := m.Apply(d.Since(nil)); err != nil {
		t.Fatal(err)
	}
	if got := m.String(); got != tr.end {
		t.Fatalf("merged text differs: got %d chars, want %d", len(got), len(tr.end))
	}
	if !m.Version().Equal(d.Version()) {
		t.Fatalf("versions differ after merge")
	}
}

func BenchmarkTrace_AutomergePaper(b *testing.B) {
	tr := loadSequential(b, "automerge-paper.json.gz")
	b.ReportAllocs()
	for b.Loop() {
		replay(b, tr)
	}
	b.ReportMetric(float64(len(tr.patches)*b.N)/b.Elapsed().Seconds(), "edits/s")
}

func TestTrace_AutomergePaperSnapshot(t *testing.T) {
	tr := loadSequential(t, "automerge-paper.json.gz")
	d := replay(t, tr)
	if err := d.Check(); err != nil {
		t.Fatal(err)
	}
	snap, err := d.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot %d bytes", len(snap))
	l, err := crdt.Load(snap, crdt.AgentKey{3})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Check(); err != nil {
		t.Fatal(err)
	}
	if l.String() != tr.end || !l.Version().Equal(d.Version()) {
		t.Fatal("loaded replica differs")
	}
	m := crdt.New(crdt.AgentKey{4})
	if err := m.Apply(l.Since(nil)); err != nil {
		t.Fatal(err)
	}
	if m.String() != tr.end {
		t.Fatal("history from a loaded replica differs")
	}
}

func BenchmarkTrace_AutomergePaperMerge(b *testing.B) {
	tr := loadSequential(b, "automerge-paper.json.gz")
	hist := replay(b, tr).Since(nil)
	b.ReportAllocs()
	for b.Loop() {
		m := crdt.New(crdt.AgentKey{2})
		if err := m.Apply(hist); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(hist.Ops)), "ops")
}

func BenchmarkTrace_AutomergePaperLoad(b *testing.B) {
	tr := loadSequential(b, "automerge-paper.json.gz")
	snap, err := replay(b, tr).MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := crdt.Load(snap, crdt.AgentKey{2}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(snap)), "bytes")
}

func BenchmarkTrace_AutomergePaperEncode(b *testing.B) {
	tr := loadSequential(b, "automerge-paper.json.gz")
	d := replay(b, tr)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.MarshalBinary(); err != nil {
			b.Fatal(err)
		}
	}
}
