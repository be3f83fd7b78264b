package crdt_test

import (
	"errors"
	"flag"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/weft-sync/weft/crdt"
)

// seedFlag replays one seeded property run: go test ./crdt -run X -seed N.
var seedFlag = flag.Int64("seed", 0, "replay the randomised crdt tests with this seed (0: pick fresh seeds)")

// seeds returns the seeds a property test runs: the -seed flag alone when it
// is set, else n fresh ones derived from the clock (two under -short). Each
// run logs its seed and every failure message repeats it.
func seeds(n int) []int64 {
	if *seedFlag != 0 {
		return []int64{*seedFlag}
	}
	if testing.Short() {
		n = min(n, 2)
	}
	base := time.Now().UnixNano()
	out := make([]int64, n)
	for i := range out {
		out[i] = base + int64(i)*7919
	}
	return out
}

// newRand returns a deterministic generator for seed.
func newRand(seed int64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0x9e3779b97f4a7c15))
}

// key returns a fixed agent key for replica i. The bytes are scrambled so
// that the byte order of keys differs from the order of i, which catches
// ties broken by a local index instead of the key.
func key(i int) crdt.AgentKey {
	var k crdt.AgentKey
	x := uint64(i+1) * 0x9e3779b97f4a7c15
	for j := range k {
		x ^= x >> 29
		x *= 0xbf58476d1ce4e5b9
		k[j] = byte(x >> 56)
	}
	return k
}

// smallNodes shrinks the B-tree and ID index fan-outs for the rest of the
// test so that small documents exercise node splits.
func smallNodes(t testing.TB) {
	t.Helper()
	t.Cleanup(crdt.SetNodeSizes(4, 4, 4))
}

// alphabet mixes one-byte, two-, three- and four-byte code points (astral
// ones need a surrogate pair in UTF-16, the TypeScript client's encoding).
var alphabet = []string{"a", "b", "c", "x", " ", "\n", "é", "ß", "中", "文", "😀", "𝄞", "\U0010FFFF", "\u200d"}

// randText returns 1..max code points drawn from alphabet.
func randText(r *rand.Rand, max int) string {
	var b strings.Builder
	n := 1 + r.IntN(max)
	for range n {
		b.WriteString(alphabet[r.IntN(len(alphabet))])
	}
	return b.String()
}

// mustCheck fails the test when the replica's internal invariants are broken.
func mustCheck(tb testing.TB, d *crdt.Text, ctx string) {
	tb.Helper()
	if err := d.Check(); err != nil {
		tb.Fatalf("%s: Check: %v", ctx, err)
	}
}

// mirror is what an editor binding holds: plain code points, changed only by
// local edits and by the Changes ApplyChanges reports.
type mirror []rune

func (m *mirror) apply(c crdt.Change) error {
	if c.Pos < 0 || c.Delete < 0 || c.Pos+c.Delete > len(*m) {
		return errors.New("change out of range")
	}
	ins := []rune(c.Insert)
	out := make([]rune, 0, len(*m)-c.Delete+len(ins))
	out = append(out, (*m)[:c.Pos]...)
	out = append(out, ins...)
	out = append(out, (*m)[c.Pos+c.Delete:]...)
	*m = out
	return nil
}

// subDelta returns the ops of d listed in idx, sharing d's agent table: the
// part of a delta that a MissingError says must wait.
func subDelta(d crdt.Delta, idx []int) crdt.Delta {
	s := crdt.Delta{Agents: d.Agents, Ops: make([]crdt.Op, 0, len(idx))}
	for _, i := range idx {
		s.Ops = append(s.Ops, d.Ops[i])
	}
	return s
}

// runeLen counts code points.
func runeLen(s string) int { return utf8.RuneCountInString(s) }

// firstDiff returns the first code-point index where a and b differ, for
// failure messages about long texts.
func firstDiff(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	for i := range min(len(ra), len(rb)) {
		if ra[i] != rb[i] {
			return i
		}
	}
	return min(len(ra), len(rb))
}
