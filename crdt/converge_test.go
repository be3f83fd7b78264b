package crdt_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/weft-sync/weft/crdt"
)

// replica is one simulated client: the document, what its editor shows
// (kept only from local edits and reported Changes), and its inbox of deltas
// not yet delivered.
type replica struct {
	doc     *crdt.Text
	view    mirror
	inbox   []crdt.Delta
	offline bool // partitioned: receives nothing until healed
}

// sim drives a convergence run and carries what failure messages need.
type sim struct {
	t    *testing.T
	seed int64
	r    *rand.Rand
	reps []*replica
	step int
	// counts for the log: deliveries applied, deltas parked on a
	// MissingError, snapshot reloads
	applied, parked, reloads int
}

func newSim(t *testing.T, seed int64, n int) *sim {
	s := &sim{t: t, seed: seed, r: newRand(seed)}
	s.addReplicas(n)
	return s
}

func (s *sim) addReplicas(n int) {
	for i := range n {
		s.reps = append(s.reps, &replica{doc: crdt.New(key(i))})
	}
}

func (s *sim) fatalf(format string, args ...any) {
	s.t.Helper()
	if s.r == nil {
		s.t.Fatalf("fuzz script step %d: %s", s.step, fmt.Sprintf(format, args...))
	}
	s.t.Fatalf("seed %d (replay with -seed %d) step %d: %s", s.seed, s.seed, s.step, fmt.Sprintf(format, args...))
}

// verify checks one replica's invariants and that its editor view matches.
func (s *sim) verify(i int, what string) {
	s.t.Helper()
	rp := s.reps[i]
	if err := rp.doc.Check(); err != nil {
		s.fatalf("replica %d after %s: Check: %v", i, what, err)
	}
	if got, want := string(rp.view), rp.doc.String(); got != want {
		s.fatalf("replica %d after %s: editor view from Changes differs at %d\nview %q\ntext %q", i, what, firstDiff(got, want), got, want)
	}
	if rp.doc.Len() != len(rp.view) {
		s.fatalf("replica %d after %s: Len %d, view has %d code points", i, what, rp.doc.Len(), len(rp.view))
	}
}

// edit makes a random local edit on replica i and returns its delta.
func (s *sim) edit(i int) crdt.Delta {
	s.t.Helper()
	n := s.reps[i].doc.Len()
	var c crdt.Change
	switch k := s.r.IntN(10); {
	case k < 5 || n == 0:
		c = crdt.Change{Pos: s.r.IntN(n + 1), Insert: randText(s.r, 5)}
	case k < 8:
		c.Pos = s.r.IntN(n)
		c.Delete = 1 + s.r.IntN(min(n-c.Pos, 6))
	default:
		c.Pos = s.r.IntN(n)
		c.Delete = s.r.IntN(min(n-c.Pos, 4) + 1)
		c.Insert = randText(s.r, 3)
	}
	return s.local(i, c)
}

// local makes edit c on replica i with Insert, Delete or Replace, mirrors
// it in the editor view and returns its delta.
func (s *sim) local(i int, c crdt.Change) crdt.Delta {
	s.t.Helper()
	rp := s.reps[i]
	var (
		d    crdt.Delta
		err  error
		what string
	)
	switch {
	case c.Delete == 0:
		what = fmt.Sprintf("insert(%d, %q)", c.Pos, c.Insert)
		d, err = rp.doc.Insert(c.Pos, c.Insert)
	case c.Insert == "":
		what = fmt.Sprintf("delete(%d, %d)", c.Pos, c.Delete)
		d, err = rp.doc.Delete(c.Pos, c.Delete)
	default:
		what = fmt.Sprintf("replace(%d, %d, %q)", c.Pos, c.Delete, c.Insert)
		d, err = rp.doc.Replace(c.Pos, c.Delete, c.Insert)
	}
	if err != nil {
		s.fatalf("replica %d %s: %v", i, what, err)
	}
	if err := rp.view.apply(c); err != nil {
		s.fatalf("replica %d %s: view: %v", i, what, err)
	}
	s.verify(i, what)
	return d
}

// apply delivers d to replica i through ApplyChanges, mirroring the
// reported changes. It returns the part that must wait, if any.
func (s *sim) apply(i int, d crdt.Delta, what string) (crdt.Delta, bool) {
	s.t.Helper()
	rp := s.reps[i]
	var cerr error
	err := rp.doc.ApplyChanges(d, func(c crdt.Change) {
		if e := rp.view.apply(c); e != nil && cerr == nil {
			cerr = fmt.Errorf("change %+v on a view of %d: %v", c, len(rp.view), e)
		}
	})
	if cerr != nil {
		s.fatalf("replica %d %s: %v", i, what, cerr)
	}
	var me *crdt.MissingError
	switch {
	case err == nil:
	case errors.As(err, &me):
		if !errors.Is(err, crdt.ErrMissing) || len(me.Pending) == 0 {
			s.fatalf("replica %d %s: malformed missing error %v", i, what, err)
		}
		s.verify(i, what)
		s.parked++
		return subDelta(d, me.Pending), true
	default:
		s.fatalf("replica %d %s: %v", i, what, err)
	}
	s.verify(i, what)
	s.applied++
	return crdt.Delta{}, false
}

// syncPair brings a and b to the same state with Since both ways.
func (s *sim) syncPair(a, b int) {
	s.t.Helper()
	ra, rb := s.reps[a], s.reps[b]
	if _, wait := s.apply(a, rb.doc.Since(ra.doc.Version()), fmt.Sprintf("since %d->%d", b, a)); wait {
		s.fatalf("Since %d->%d left ops waiting", b, a)
	}
	if _, wait := s.apply(b, ra.doc.Since(rb.doc.Version()), fmt.Sprintf("since %d->%d", a, b)); wait {
		s.fatalf("Since %d->%d left ops waiting", a, b)
	}
	if ra.doc.String() != rb.doc.String() || !ra.doc.Version().Equal(rb.doc.Version()) {
		s.fatalf("after syncing %d and %d: %q %v vs %q %v", a, b, ra.doc.String(), ra.doc.Version(), rb.doc.String(), rb.doc.Version())
	}
}

// assertConverged requires every replica to hold the same text and version.
func (s *sim) assertConverged(ctx string) {
	s.t.Helper()
	r0 := s.reps[0].doc
	for i, rp := range s.reps {
		s.verify(i, ctx)
		if got, want := rp.doc.String(), r0.String(); got != want {
			s.fatalf("%s: replica %d differs from replica 0 at code point %d\n got %q\nwant %q", ctx, i, firstDiff(got, want), got, want)
		}
		if !rp.doc.Version().Equal(r0.Version()) {
			s.fatalf("%s: replica %d version %v, replica 0 %v", ctx, i, rp.doc.Version(), r0.Version())
		}
	}
}

// TestConvergeInboxes is the convergence property with message delivery:
// five replicas edit at random and broadcast each delta; deliveries happen
// in random order, with duplicates, with replicas partitioned for a while,
// and with ops parked on MissingError and retried later. Once every inbox
// is drained all replicas must agree, and Check must hold after every op.
func TestConvergeInboxes(t *testing.T) {
	smallNodes(t)
	for _, seed := range seeds(8) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			t.Logf("seed %d", seed)
			convergeInboxes(newSim(t, seed, 5), 800)
		})
	}
}

func convergeInboxes(s *sim, steps int) {
	s.t.Helper()
	n := len(s.reps)
	for s.step = 0; s.step < steps; s.step++ {
		switch k := s.r.IntN(100); {
		case k < 45:
			i := s.r.IntN(n)
			d := s.edit(i)
			for j, rp := range s.reps {
				if j == i {
					continue
				}
				rp.inbox = append(rp.inbox, d)
				if s.r.IntN(10) == 0 {
					rp.inbox = append(rp.inbox, d) // duplicate
				}
			}
			if s.r.IntN(20) == 0 {
				s.reps[i].inbox = append(s.reps[i].inbox, d) // echo
			}
		case k < 95:
			i := s.r.IntN(n)
			rp := s.reps[i]
			if rp.offline || len(rp.inbox) == 0 {
				continue
			}
			m := s.r.IntN(len(rp.inbox))
			d := rp.inbox[m]
			rp.inbox = append(rp.inbox[:m], rp.inbox[m+1:]...)
			if rest, wait := s.apply(i, d, fmt.Sprintf("delivery to %d", i)); wait {
				rp.inbox = append(rp.inbox, rest)
			}
			if s.r.IntN(8) == 0 {
				rp.inbox = append(rp.inbox, d) // delivered again later
			}
		default:
			i := s.r.IntN(n)
			s.reps[i].offline = !s.reps[i].offline
		}
	}
	// Heal and drain. Every op was sent to everyone, so all parked ops must
	// find their dependencies.
	for _, rp := range s.reps {
		rp.offline = false
	}
	s.drain(2 * steps)
	s.assertConverged("after draining the inboxes")
	s.t.Logf("%d deliveries applied, %d parked and retried; final text %d code points", s.applied, s.parked, s.reps[0].doc.Len())
	// Nothing is left to exchange.
	for i := range s.reps {
		for j := range s.reps {
			if d := s.reps[j].doc.Since(s.reps[i].doc.Version()); !d.Empty() {
				s.fatalf("after draining, replica %d still lacks %d ops of %d", i, len(d.Ops), j)
			}
		}
	}
}

// drain delivers every inbox until all are empty, retrying parked ops.
func (s *sim) drain(maxPasses int) {
	s.t.Helper()
	for pass := 0; ; pass++ {
		left := 0
		for i, rp := range s.reps {
			box := rp.inbox
			rp.inbox = nil
			for _, d := range box {
				if rest, wait := s.apply(i, d, fmt.Sprintf("drain to %d", i)); wait {
					rp.inbox = append(rp.inbox, rest)
				}
			}
			left += len(rp.inbox)
		}
		if left == 0 {
			return
		}
		if pass > maxPasses {
			s.fatalf("drain: %d deltas still waiting after %d passes", left, pass)
		}
	}
}

// TestConvergeSince resyncs random pairs of replicas with
// Since(other.Version()) both ways between random edits.
func TestConvergeSince(t *testing.T) {
	smallNodes(t)
	for _, seed := range seeds(8) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			t.Logf("seed %d", seed)
			s := newSim(t, seed, 5)
			convergeSince(s, 800, false)
		})
	}
}

// TestConvergeSnapshots is TestConvergeSince where replicas are also
// replaced at random by Load(MarshalBinary()) of themselves or of a replica
// that covers them, then go on editing and merging.
func TestConvergeSnapshots(t *testing.T) {
	smallNodes(t)
	for _, seed := range seeds(8) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			t.Logf("seed %d", seed)
			s := newSim(t, seed, 5)
			convergeSince(s, 800, true)
		})
	}
}

func convergeSince(s *sim, steps int, snapshots bool) {
	s.t.Helper()
	n := len(s.reps)
	for s.step = 0; s.step < steps; s.step++ {
		switch k := s.r.IntN(100); {
		case k < 60:
			s.edit(s.r.IntN(n))
		case k < 90 || !snapshots:
			a, b := s.r.IntN(n), s.r.IntN(n)
			s.syncPair(a, b)
		default:
			i, j := s.r.IntN(n), s.r.IntN(n)
			s.reload(i, j)
		}
	}
	for range 2 {
		for i := 1; i < n; i++ {
			s.syncPair(0, i)
		}
	}
	s.assertConverged("after a full sync")
	s.t.Logf("%d syncs, %d snapshot reloads; final text %d code points", s.applied/2, s.reloads, s.reps[0].doc.Len())
}

// reload replaces replica i by a replica loaded from j's snapshot, when j
// holds everything i wrote (so i's agent can go on with fresh seqs).
func (s *sim) reload(i, j int) {
	s.t.Helper()
	src := s.reps[j].doc
	if !src.Version().Covers(s.reps[i].doc.Version()) {
		return
	}
	snap, err := src.MarshalBinary()
	if err != nil {
		s.fatalf("MarshalBinary of %d: %v", j, err)
	}
	d, err := crdt.Load(snap, key(i))
	if err != nil {
		s.fatalf("Load of %d's snapshot as %d: %v", j, i, err)
	}
	if err := d.Check(); err != nil {
		s.fatalf("Load of %d's snapshot as %d: Check: %v", j, i, err)
	}
	if d.String() != src.String() || d.Len() != src.Len() || !d.Version().Equal(src.Version()) {
		s.fatalf("snapshot of %d loads as %q %v, want %q %v", j, d.String(), d.Version(), src.String(), src.Version())
	}
	if d.Agent() != key(i) {
		s.fatalf("loaded replica edits as %v, want %v", d.Agent(), key(i))
	}
	// A loaded replica answers Since like the original: its full history
	// rebuilds the same document.
	fresh := crdt.New(key(99))
	if err := fresh.Apply(d.Since(nil)); err != nil {
		s.fatalf("history of a loaded replica: %v", err)
	}
	if fresh.String() != src.String() || !fresh.Version().Equal(src.Version()) {
		s.fatalf("history of a loaded replica rebuilds %q, want %q", fresh.String(), src.String())
	}
	s.reloads++
	s.reps[i].doc = d
	s.reps[i].view = mirror([]rune(d.String()))
}
