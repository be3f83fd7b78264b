// Package edittrace reads editing traces in the public editing-traces
// format and replays them through the CRDT. The weft trace command, the
// CRDT's tests and the server benchmarks share it, so they all replay a
// trace the same way.
//
// A sequential trace is a list of txns whose patches [pos, delCount,
// insText] (positions in code points) apply in order. A concurrent trace
// ("kind": "concurrent", or txns with "parents") names for each txn its
// agent and parent txns: the replay forks a replica per agent, brings the
// txn's replica to exactly the merged state of its parents, applies the
// patches there, and merges everything at the end.
package edittrace

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"unicode/utf8"

	"github.com/weft-sync/weft/crdt"
)

// Patch deletes Del code points at Pos, then inserts Ins there.
type Patch struct {
	Pos, Del int
	Ins      string
}

// UnmarshalJSON reads the [pos, delCount, insText] form.
func (p *Patch) UnmarshalJSON(b []byte) error {
	var a []json.RawMessage
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	if len(a) != 3 {
		return fmt.Errorf("patch %s: want [pos, delCount, insText]", b)
	}
	if err := json.Unmarshal(a[0], &p.Pos); err != nil {
		return fmt.Errorf("patch position: %w", err)
	}
	if err := json.Unmarshal(a[1], &p.Del); err != nil {
		return fmt.Errorf("patch delete count: %w", err)
	}
	if err := json.Unmarshal(a[2], &p.Ins); err != nil {
		return fmt.Errorf("patch text: %w", err)
	}
	if p.Pos < 0 || p.Del < 0 {
		return fmt.Errorf("patch %s: negative position or count", b)
	}
	return nil
}

// Txn is one transaction: Agent applies Patches to the document as it
// stood after the Parents (indices of earlier txns).
type Txn struct {
	Agent   int
	Parents []int
	Patches []Patch
}

// Trace is a parsed trace.
type Trace struct {
	Concurrent bool
	Agents     int
	Start, End string
	HasEnd     bool
	Txns       []Txn
	Patches    int // total over all txns
}

type traceJSON struct {
	Kind         string  `json:"kind"`
	StartContent string  `json:"startContent"`
	EndContent   *string `json:"endContent"`
	NumAgents    int     `json:"numAgents"`
	Txns         []struct {
		Parents *[]int  `json:"parents"`
		Agent   int     `json:"agent"`
		Patches []Patch `json:"patches"`
	} `json:"txns"`
}

// Read reads and checks a trace file, gzipped or not.
func Read(path string) (*Trace, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(raw)
}

// Parse reads a trace from its bytes, gzipped or not.
func Parse(raw []byte) (*Trace, error) {
	var r io.Reader = bytes.NewReader(raw)
	if len(raw) >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, err
		}
		r = zr
	}
	var tj traceJSON
	if err := json.NewDecoder(r).Decode(&tj); err != nil {
		return nil, fmt.Errorf("decoding JSON: %w", err)
	}
	tr := &Trace{Start: tj.StartContent, Agents: tj.NumAgents}
	if tj.EndContent != nil {
		tr.End, tr.HasEnd = *tj.EndContent, true
	}
	switch tj.Kind {
	case "", "sequential":
	case "concurrent":
		tr.Concurrent = true
	default:
		return nil, fmt.Errorf("unknown trace kind %q", tj.Kind)
	}
	for _, tx := range tj.Txns {
		if tx.Parents != nil {
			tr.Concurrent = true
		}
	}
	for i, tx := range tj.Txns {
		t := Txn{Agent: tx.Agent, Patches: tx.Patches}
		if tx.Parents != nil {
			t.Parents = *tx.Parents
		}
		for _, p := range t.Parents {
			if p < 0 || p >= i {
				return nil, fmt.Errorf("txn %d: parent %d is not an earlier txn", i, p)
			}
		}
		if tx.Agent < 0 {
			return nil, fmt.Errorf("txn %d: agent %d", i, tx.Agent)
		}
		if tr.Concurrent {
			tr.Agents = max(tr.Agents, tx.Agent+1)
		}
		for j, p := range tx.Patches {
			if !utf8.ValidString(p.Ins) {
				return nil, fmt.Errorf("txn %d patch %d: text is not valid UTF-8", i, j)
			}
		}
		tr.Patches += len(tx.Patches)
		tr.Txns = append(tr.Txns, t)
	}
	if tr.Concurrent && tj.NumAgents > 0 && tr.Agents > tj.NumAgents {
		return nil, fmt.Errorf("txns name %d agents, numAgents is %d", tr.Agents, tj.NumAgents)
	}
	return tr, nil
}

// Agent returns the agent key of trace agent i; -1 writes the start content
// and -2 is the merging replica. Other negative values are free for callers.
func Agent(i int) crdt.AgentKey {
	var k crdt.AgentKey
	copy(k[:], "weft-trace")
	binary.BigEndian.PutUint32(k[12:], uint32(i+16))
	return k
}

// Apply makes one patch as a local edit and returns its delta.
func Apply(d *crdt.Text, p Patch) (crdt.Delta, error) {
	switch {
	case p.Del > 0 && p.Ins != "":
		return d.Replace(p.Pos, p.Del, p.Ins)
	case p.Del > 0:
		return d.Delete(p.Pos, p.Del)
	default:
		return d.Insert(p.Pos, p.Ins)
	}
}

// Replay builds the trace's final document.
func (tr *Trace) Replay() (*crdt.Text, error) { return tr.ReplayChecked(nil) }

// ReplayChecked is Replay that calls check with the replica just edited
// after every txn (concurrent traces also pass the merged replica), for
// tests that verify invariants along the way.
func (tr *Trace) ReplayChecked(check func(txn int, replicas ...*crdt.Text) error) (*crdt.Text, error) {
	if tr.Concurrent {
		return tr.replayConcurrent(check)
	}
	d := crdt.New(Agent(0))
	if tr.Start != "" {
		if _, err := d.Insert(0, tr.Start); err != nil {
			return nil, fmt.Errorf("start content: %w", err)
		}
	}
	for i, tx := range tr.Txns {
		for j, p := range tx.Patches {
			if _, err := Apply(d, p); err != nil {
				return nil, fmt.Errorf("txn %d patch %d: %w", i, j, err)
			}
		}
		if check != nil {
			if err := check(i, d); err != nil {
				return nil, fmt.Errorf("txn %d: %w", i, err)
			}
		}
	}
	return d, nil
}

// replayConcurrent forks a replica per agent. Before each txn, that agent's
// replica is brought to exactly the merged state of the txn's parents: the
// target version is the per-agent maximum of the parents' versions, and the
// ops it lacks come from Between on a replica holding everything so far.
// The patches are then applied locally and their deltas merged into that
// replica, which is returned after every agent's replica has merged
// everything too and been found equal to it.
func (tr *Trace) replayConcurrent(check func(int, ...*crdt.Text) error) (*crdt.Text, error) {
	root := crdt.New(Agent(-1))
	if tr.Start != "" {
		if _, err := root.Insert(0, tr.Start); err != nil {
			return nil, fmt.Errorf("start content: %w", err)
		}
	}
	all := root.Fork(Agent(-2))
	reps := make([]*crdt.Text, tr.Agents)
	for a := range reps {
		reps[a] = root.Fork(Agent(a))
	}
	startV := root.Version()
	versions := make([]crdt.Version, len(tr.Txns))
	for i, tx := range tr.Txns {
		r := reps[tx.Agent]
		target := startV.Clone()
		for _, p := range tx.Parents {
			for k, n := range versions[p] {
				target[k] = max(target[k], n)
			}
		}
		if !target.Covers(r.Version()) {
			return nil, fmt.Errorf("txn %d: agent %d has edits its parents do not", i, tx.Agent)
		}
		missing, err := all.Between(r.Version(), target)
		if err != nil {
			return nil, fmt.Errorf("txn %d: collecting the parents' ops: %w", i, err)
		}
		if err := r.Apply(missing); err != nil {
			return nil, fmt.Errorf("txn %d: merging the parents: %w", i, err)
		}
		if !r.Version().Equal(target) {
			return nil, fmt.Errorf("txn %d: agent %d did not reach its parents' version", i, tx.Agent)
		}
		for j, p := range tx.Patches {
			d, err := Apply(r, p)
			if err != nil {
				return nil, fmt.Errorf("txn %d patch %d: %w", i, j, err)
			}
			if err := all.Apply(d); err != nil {
				return nil, fmt.Errorf("txn %d patch %d: merging: %w", i, j, err)
			}
		}
		if check != nil {
			if err := check(i, r, all); err != nil {
				return nil, fmt.Errorf("txn %d: %w", i, err)
			}
		}
		versions[i] = r.Version()
	}
	for a, r := range reps {
		if err := r.Apply(all.Since(r.Version())); err != nil {
			return nil, fmt.Errorf("final merge into agent %d: %w", a, err)
		}
		if !r.Version().Equal(all.Version()) || r.String() != all.String() {
			return nil, fmt.Errorf("agent %d's replica differs from the merged document", a)
		}
	}
	return all, nil
}

// SharedDir returns ../shared/traces beside the repository, where the
// public traces live for tests, benchmarks and CI.
func SharedDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "shared", "traces")
}

// Shared reads a trace from SharedDir, with an error that says where the
// traces should be when one is missing.
func Shared(name string) (*Trace, error) {
	path := filepath.Join(SharedDir(), name)
	tr, err := Read(path)
	if err != nil {
		return nil, fmt.Errorf("editing trace %s: %w (the traces live in ../shared/traces beside the repository)", path, err)
	}
	return tr, nil
}
