package crdt_test

import (
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/weft-sync/weft/crdt"
)

// ctxn is one transaction of a concurrent editing trace: an agent applies
// its patches to the document as it stood after the parent transactions.
type ctxn struct {
	agent   int
	parents []int
	patches []patch
}

type concTrace struct {
	agents int
	start  string
	end    string
	txns   []ctxn
}

// loadConcurrent reads a concurrent trace (txns with parents and agent) from
// ../shared/traces. A missing trace fails the test.
func loadConcurrent(tb testing.TB, name string) concTrace {
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
	if tf.Kind != "concurrent" {
		tb.Fatalf("%s: kind %q, want concurrent", name, tf.Kind)
	}
	ct := concTrace{agents: tf.NumAgents, start: tf.StartContent, end: tf.EndContent}
	for i, tx := range tf.Txns {
		c := ctxn{agent: tx.Agent, parents: tx.Parents}
		if tx.Agent < 0 || tx.Agent >= tf.NumAgents {
			tb.Fatalf("%s: txn %d by agent %d of %d", name, i, tx.Agent, tf.NumAgents)
		}
		for _, p := range tx.Parents {
			if p < 0 || p >= i {
				tb.Fatalf("%s: txn %d has parent %d", name, i, p)
			}
		}
		for _, raw := range tx.Patches {
			var pc patch
			for k, dst := range []any{&pc.pos, &pc.del, &pc.ins} {
				if err := json.Unmarshal(raw[k], dst); err != nil {
					tb.Fatalf("%s: txn %d: %v", name, i, err)
				}
			}
			c.patches = append(c.patches, pc)
		}
		ct.txns = append(ct.txns, c)
	}
	return ct
}

// replayConcurrent replays a concurrent trace: one replica per agent. Before
// each txn its agent's replica is brought to exactly the merged state of the
// txn's parents: the target version is the per-agent maximum of the parents'
// versions, and the ops it lacks come from Between(its version, target) on a
// replica that holds everything so far. The txn's patches are then applied
// locally. It returns the replica holding everything, after checking that
// every agent's replica converges to it.
func replayConcurrent(tb testing.TB, ct concTrace, check bool) *crdt.Text {
	tb.Helper()
	root := crdt.New(key(1000))
	if ct.start != "" {
		if _, err := root.Insert(0, ct.start); err != nil {
			tb.Fatal(err)
		}
	}
	all := root.Fork(key(1001))
	reps := make([]*crdt.Text, ct.agents)
	for a := range reps {
		reps[a] = root.Fork(key(a))
	}
	startV := root.Version()
	versions := make([]crdt.Version, len(ct.txns))
	for i, tx := range ct.txns {
		r := reps[tx.agent]
		target := startV.Clone()
		for _, p := range tx.parents {
			for k, n := range versions[p] {
				target[k] = max(target[k], n)
			}
		}
		if !target.Covers(r.Version()) {
			tb.Fatalf("txn %d: agent %d's replica %v is ahead of its parents' state %v", i, tx.agent, r.Version(), target)
		}
		if err := r.Apply(mustBetween(tb, all, r.Version(), target)); err != nil {
			tb.Fatalf("txn %d: bringing agent %d to its parents: %v", i, tx.agent, err)
		}
		if !r.Version().Equal(target) {
			tb.Fatalf("txn %d: agent %d at %v, want exactly %v", i, tx.agent, r.Version(), target)
		}
		for j, p := range tx.patches {
			var d crdt.Delta
			var err error
			switch {
			case p.del > 0 && p.ins != "":
				d, err = r.Replace(p.pos, p.del, p.ins)
			case p.del > 0:
				d, err = r.Delete(p.pos, p.del)
			default:
				d, err = r.Insert(p.pos, p.ins)
			}
			if err != nil {
				tb.Fatalf("txn %d patch %d %+v on agent %d (len %d): %v", i, j, p, tx.agent, r.Len(), err)
			}
			if err := all.Apply(d); err != nil {
				tb.Fatalf("txn %d patch %d: merging into the full replica: %v", i, j, err)
			}
		}
		if check && i%500 == 0 {
			mustCheck(tb, r, "trace replica")
			mustCheck(tb, all, "full replica")
		}
		versions[i] = r.Version()
	}
	for a, r := range reps {
		if err := r.Apply(all.Since(r.Version())); err != nil {
			tb.Fatalf("final merge into agent %d: %v", a, err)
		}
		if check {
			mustCheck(tb, r, "final")
		}
		if r.String() != all.String() || !r.Version().Equal(all.Version()) {
			tb.Fatalf("agent %d's replica differs from the full one after the final merge", a)
		}
	}
	return all
}

func TestTrace_FriendsForever(t *testing.T) {
	ct := loadConcurrent(t, "friendsforever.json.gz")
	if len(ct.txns) == 0 || ct.agents < 2 {
		t.Fatalf("trace has %d txns, %d agents", len(ct.txns), ct.agents)
	}
	d := replayConcurrent(t, ct, true)
	mustCheck(t, d, "friendsforever")
	if got := d.String(); got != ct.end {
		i := firstDiff(got, ct.end)
		t.Fatalf("final text differs at code point %d: got %d code points, want %d\n got …%q…\nwant …%q…",
			i, runeLen(got), runeLen(ct.end), window(got, i), window(ct.end, i))
	}
	// The whole history, as remote ops, rebuilds it; so does a snapshot.
	m := crdt.New(key(7))
	if err := m.Apply(d.Since(nil)); err != nil {
		t.Fatal(err)
	}
	if m.String() != ct.end || !m.Version().Equal(d.Version()) {
		t.Fatal("history merged into an empty replica differs")
	}
	snap, err := d.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	l, err := crdt.Load(snap, key(8))
	if err != nil {
		t.Fatal(err)
	}
	mustCheck(t, l, "loaded")
	if l.String() != ct.end || !l.Version().Equal(d.Version()) {
		t.Fatal("loaded snapshot differs")
	}
}

// window returns up to 20 code points either side of code point i.
func window(s string, i int) string {
	r := []rune(s)
	return string(r[max(0, i-20):min(len(r), i+20)])
}

func mustBetween(tb testing.TB, d *crdt.Text, from, to crdt.Version) crdt.Delta {
	tb.Helper()
	delta, err := d.Between(from, to)
	if err != nil {
		tb.Fatal(err)
	}
	return delta
}
