// Differential test of the TypeScript CRDT against the Go one (crdt/):
// the same random trace of local edits, deliveries in random order and
// version-vector resyncs is replayed on Go and on TypeScript replicas, and
// every local delta, every reported change, every error and every text must
// agree. The Go side is a throwaway program written to a temp module that
// points at this checkout; it is built with `go run`. Skipped when the Go
// toolchain is missing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync, copyFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Text, keyHex, hexKey, OpKind, ROOT, MissingError, InvalidError, type Delta, type Change } from "../src/crdt.ts";
import { rng, keyFor, randomText } from "./reference.ts";

const REPO = resolve(import.meta.dirname, "../..");
const hasGo = spawnSync("go", ["version"]).status === 0;

const GO_MAIN = String.raw`package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"

	"github.com/weft-sync/weft/crdt"
)

type jop struct {
	Kind    int    ` + "`json:\"kind\"`" + String.raw`
	Agent   int    ` + "`json:\"agent\"`" + String.raw`
	Seq     uint64 ` + "`json:\"seq\"`" + String.raw`
	Lamport uint64 ` + "`json:\"lamport\"`" + String.raw`
	Len     uint64 ` + "`json:\"len\"`" + String.raw`
	RefA    int    ` + "`json:\"ra\"`" + String.raw`
	RefS    uint64 ` + "`json:\"rs\"`" + String.raw`
	Text    string ` + "`json:\"text\"`" + String.raw`
}
type jdelta struct {
	Agents []string ` + "`json:\"agents\"`" + String.raw`
	Ops    []jop    ` + "`json:\"ops\"`" + String.raw`
}
type event struct {
	R    int    ` + "`json:\"r\"`" + String.raw`
	Op   string ` + "`json:\"op\"`" + String.raw`
	Pos  int    ` + "`json:\"pos\"`" + String.raw`
	N    int    ` + "`json:\"n\"`" + String.raw`
	Text string ` + "`json:\"text\"`" + String.raw`
	D    int    ` + "`json:\"d\"`" + String.raw`
	From int    ` + "`json:\"from\"`" + String.raw`
}
type input struct {
	Agents []string ` + "`json:\"agents\"`" + String.raw`
	Events []event  ` + "`json:\"events\"`" + String.raw`
}
type result struct {
	Text    string         ` + "`json:\"text\"`" + String.raw`
	Delta   *jdelta        ` + "`json:\"delta,omitempty\"`" + String.raw`
	Err     string         ` + "`json:\"err\"`" + String.raw`
	Pending []int          ` + "`json:\"pending\"`" + String.raw`
	Changes []crdt.Change  ` + "`json:\"changes\"`" + String.raw`
	Version map[string]uint64 ` + "`json:\"version\"`" + String.raw`
}

func key(h string) crdt.AgentKey {
	var k crdt.AgentKey
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 16 {
		panic("bad key " + h)
	}
	copy(k[:], b)
	return k
}

func toJ(d crdt.Delta) *jdelta {
	j := &jdelta{Agents: []string{}, Ops: []jop{}}
	for _, a := range d.Agents {
		j.Agents = append(j.Agents, hex.EncodeToString(a[:]))
	}
	for _, o := range d.Ops {
		r := o.Origin
		if o.Kind == crdt.OpDelete {
			r = o.Target
		}
		ra := int(r.Agent)
		if r.Agent == crdt.RootAgent {
			ra = -1
		}
		j.Ops = append(j.Ops, jop{int(o.Kind), int(o.Agent), o.Seq, o.Lamport, o.Len, ra, r.Seq, o.Text})
	}
	return j
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	reps := make([]*crdt.Text, len(in.Agents))
	for i, a := range in.Agents {
		reps[i] = crdt.New(key(a))
	}
	var deltas []crdt.Delta
	out := make([]result, 0, len(in.Events))
	for _, e := range in.Events {
		t := reps[e.R]
		res := result{Changes: []crdt.Change{}}
		var err error
		switch e.Op {
		case "ins", "del":
			var d crdt.Delta
			if e.Op == "ins" {
				d, err = t.Insert(e.Pos, e.Text)
			} else {
				d, err = t.Delete(e.Pos, e.N)
			}
			// Copy: local deltas share slab memory with later ones.
			d = crdt.Delta{Agents: append([]crdt.AgentKey(nil), d.Agents...), Ops: append([]crdt.Op(nil), d.Ops...)}
			deltas = append(deltas, d)
			res.Delta = toJ(d)
		case "apply", "sync":
			var d crdt.Delta
			if e.Op == "sync" {
				d = reps[e.From].Since(t.Version())
			} else {
				d = deltas[e.D]
			}
			err = t.ApplyChanges(d, func(c crdt.Change) { res.Changes = append(res.Changes, c) })
		}
		var me *crdt.MissingError
		switch {
		case err == nil:
		case errors.As(err, &me):
			res.Err = "missing"
			res.Pending = me.Pending
		case errors.Is(err, crdt.ErrInvalid):
			res.Err = "invalid"
		default:
			res.Err = err.Error()
		}
		res.Text = t.String()
		res.Version = map[string]uint64{}
		for k, n := range t.Version() {
			res.Version[hex.EncodeToString(k[:])] = n
		}
		out = append(out, res)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		panic(err)
	}
}
`;

interface Ev { r: number; op: "ins" | "del" | "apply" | "sync"; pos?: number; n?: number; text?: string; d?: number; from?: number }

function trace(seed: number, n: number, steps: number): { agents: string[]; events: Ev[] } {
  const r = rng(seed);
  const reps = Array.from({ length: n }, (_, i) => new Text(keyFor(i + 1 + seed * 7)));
  const events: Ev[] = [];
  const ds: Delta[] = [];
  const inbox: number[][] = reps.map(() => []);
  for (let s = 0; s < steps; s++) {
    const i = Math.floor(r() * n);
    const t = reps[i]!;
    const x = r();
    if (x < 0.45) {
      const pos = Math.floor(r() * (t.length + 1));
      const text = randomText(r, r() < 0.1 ? 40 : 4);
      ds.push(t.insert(pos, text));
      events.push({ r: i, op: "ins", pos, text });
      for (let j = 0; j < n; j++) if (j !== i) inbox[j]!.push(ds.length - 1);
    } else if (x < 0.65 && t.length > 0) {
      const pos = Math.floor(r() * t.length);
      const len = 1 + Math.floor(r() * Math.min(r() < 0.2 ? 30 : 3, t.length - pos));
      ds.push(t.delete(pos, len));
      events.push({ r: i, op: "del", pos, n: len });
      for (let j = 0; j < n; j++) if (j !== i) inbox[j]!.push(ds.length - 1);
    } else if (x < 0.95 && inbox[i]!.length > 0) {
      // A random queued delta (maybe out of causal order), sometimes kept
      // for a duplicate delivery.
      const q = inbox[i]!;
      const j = Math.floor(r() * q.length);
      const d = q[j]!;
      if (r() < 0.85) q.splice(j, 1);
      events.push({ r: i, op: "apply", d });
      try {
        t.apply(ds[d]!);
      } catch (e) {
        if (!(e instanceof MissingError)) throw e;
      }
    } else {
      const from = Math.floor(r() * n);
      if (from !== i) {
        events.push({ r: i, op: "sync", from });
        t.apply(reps[from]!.since(t.version()));
      }
    }
  }
  // Finish with full resyncs so that everything converges.
  for (let k = 0; k < 2; k++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (i !== j) events.push({ r: i, op: "sync", from: j });
  return { agents: reps.map((t) => keyHex(t.agent)), events };
}

interface Res { text: string; delta?: { agents: string[]; ops: unknown[] }; err: string; pending: number[] | null; changes: { Pos: number; Delete: number; Insert: string }[]; version: Record<string, number> }

function runTS(agents: string[], events: Ev[]): Res[] {
  const reps = agents.map((h) => new Text(hexKey(h)));
  const deltas: Delta[] = [];
  const out: Res[] = [];
  for (const e of events) {
    const t = reps[e.r]!;
    const res: Res = { text: "", err: "", pending: null, changes: [], version: {} };
    try {
      if (e.op === "ins" || e.op === "del") {
        const d = e.op === "ins" ? t.insert(e.pos!, e.text!) : t.delete(e.pos!, e.n!);
        deltas.push(d);
        res.delta = {
          agents: d.agents.map(keyHex),
          ops: d.ops.map((o) => {
            const ref = o.kind === OpKind.Insert ? o.origin : o.target;
            return { kind: o.kind, agent: o.agent, seq: o.seq, lamport: o.lamport, len: o.len, ra: ref.agent === ROOT ? -1 : ref.agent, rs: ref.seq, text: o.kind === OpKind.Insert ? o.text : "" };
          }),
        };
      } else {
        const d = e.op === "sync" ? reps[e.from!]!.since(t.version()) : deltas[e.d!]!;
        t.applyChanges(d, (c: Change) => res.changes.push({ Pos: c.pos, Delete: c.delete, Insert: c.insert }));
      }
    } catch (err) {
      if (err instanceof MissingError) {
        res.err = "missing";
        res.pending = err.pending;
      } else if (err instanceof InvalidError) res.err = "invalid";
      else throw err;
    }
    res.text = t.toString();
    for (const [k, v] of t.version()) res.version[k] = v;
    out.push(res);
  }
  for (const t of reps) t.check();
  return out;
}

test("the TypeScript CRDT matches the Go CRDT on random traces", { skip: !hasGo && "go toolchain not found" }, () => {
  const dir = mkdtempSync(join(tmpdir(), "weft-gocrdt-"));
  try {
    writeFileSync(join(dir, "go.mod"), `module weftdiff\n\ngo 1.26\n\nrequire github.com/weft-sync/weft v0.0.0\n\nreplace github.com/weft-sync/weft => ${REPO}\n`);
    copyFileSync(join(REPO, "go.sum"), join(dir, "go.sum"));
    writeFileSync(join(dir, "main.go"), GO_MAIN);
    const env = { ...process.env, GOFLAGS: "-mod=mod", GOWORK: "off" };
    execFileSync("go", ["build", "-o", join(dir, "diff"), "."], { cwd: dir, env, stdio: "pipe" });
    let events = 0;
    for (let seed = 1; seed <= 12; seed++) {
      const tr = trace(seed, 3 + (seed % 3), 300);
      const goOut = JSON.parse(execFileSync(join(dir, "diff"), { input: JSON.stringify(tr), maxBuffer: 256 << 20 }).toString()) as Res[];
      const tsOut = runTS(tr.agents, tr.events);
      assert.equal(goOut.length, tsOut.length);
      for (let i = 0; i < tsOut.length; i++) {
        const g = goOut[i]!, s = tsOut[i]!;
        const where = `seed ${seed} event ${i} ${JSON.stringify(tr.events[i])}`;
        assert.equal(s.err, g.err, where + " error");
        assert.deepEqual(s.pending ?? [], g.pending ?? [], where + " pending");
        assert.equal(s.text, g.text, where + " text");
        assert.deepEqual(s.version, g.version, where + " version");
        if (g.delta) assert.deepEqual(s.delta, g.delta, where + " local delta");
        // Resync deltas differ in shape between the two (Go sends a run of
        // backspaces as one op per delete), so their changes may be cut
        // differently; deliveries of the same delta must report the same.
        if (tr.events[i]!.op === "apply") assert.deepEqual(s.changes, g.changes, where + " changes");
      }
      const finals = new Set(tsOut.slice(-1).map((x) => x.text));
      assert.equal(finals.size, 1);
      events += tsOut.length;
    }
    assert.ok(events > 3000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
