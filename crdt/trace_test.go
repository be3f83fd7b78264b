package crdt_test

import (
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/weft-sync/weft/crdt"
)

type traceFile struct {
	Kind         string `json:"kind"`
	StartContent string `json:"startContent"`
	EndContent   string `json:"endContent"`
	NumAgents    int    `json:"numAgents"`
	Txns         []struct {
		Parents []int                `json:"parents"`
		Agent   int                  `json:"agent"`
		Patches [][3]json.RawMessage `json:"patches"`
	} `json:"txns"`
}

type patch struct {
	pos, del int
	ins      string
}

type trace struct {
	end     string
	patches []patch
}

// tracesDir is ../shared/traces relative to the repository root.
func tracesDir(tb testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "shared", "traces")
}

func loadSequential(tb testing.TB, name string) trace {
	tb.Helper()
	path := filepath.Join(tracesDir(tb), name)
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("editing trace missing: %v (the traces live in ../shared/traces beside the repository)", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		tb.Fatal(err)
	}
	var tf traceFile
	if err := json.NewDecoder(zr).Decode(&tf); err != nil {
		tb.Fatal(err)
	}
	var tr trace
	tr.end = tf.EndContent
	for _, tx := range tf.Txns {
		for _, p := range tx.Patches {
			var pc patch
			if err := json.Unmarshal(p[0], &pc.pos); err != nil {
				tb.Fatal(err)
			}
			if err := json.Unmarshal(p[1], &pc.del); err != nil {
				tb.Fatal(err)
			}
			if err := json.Unmarshal(p[2], &pc.ins); err != nil {
				tb.Fatal(err)
			}
			tr.patches = append(tr.patches, pc)
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
