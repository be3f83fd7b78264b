package protocol

import (
	"testing"

	"github.com/weft-sync/weft/crdt"
)

// benchDelta returns a Delta frame of n ops that looks like typing by three
// agents: short runs of inserts after each other's text, and some deletes.
func benchDelta(n int) *Delta {
	agents := []crdt.AgentKey{key(1), key(2), key(3)}
	ops := make([]crdt.Op, n)
	seq := [3]uint64{1200, 800, 40}
	lamport := uint64(5000)
	for i := range ops {
		a := uint32(i % 3)
		if i%5 == 4 {
			ops[i] = del(a, seq[a], lamport, 2, crdt.Ref{Agent: (a + 1) % 3, Seq: seq[(a+1)%3] - 7})
		} else {
			ops[i] = insert(a, seq[a], lamport, crdt.Ref{Agent: (a + 2) % 3, Seq: seq[(a+2)%3] - 1}, "words")
		}
		seq[a] += ops[i].Len
		lamport += ops[i].Len
	}
	return &Delta{Doc: "team/notes-2026", ClientSeq: 1234, Delta: crdt.Delta{Agents: agents, Ops: ops}}
}

func benchPresence() *Presence {
	at := crdt.Anchor{ID: crdt.ID{Agent: key(1), Seq: 1204}, Assoc: crdt.AssocLeft}
	return &Presence{Doc: "team/notes-2026", Clock: 981, User: User{Name: "Ada Lovelace", Color: "#e4572e"},
		Cursor:     at,
		Selections: []Selection{{Anchor: crdt.Anchor{ID: crdt.ID{Agent: key(2), Seq: 790}}, Head: at}},
	}
}

func benchFrames() []struct {
	name string
	f    Frame
} {
	return []struct {
		name string
		f    Frame
	}{
		{"delta/ops=1", benchDelta(1)},
		{"delta/ops=100", benchDelta(100)},
		{"presence", benchPresence()},
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, c := range benchFrames() {
		b.Run(c.name, func(b *testing.B) {
			enc := NewEncoder()
			buf, err := enc.Encode(nil, c.f)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = enc.Encode(buf[:0], c.f)
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, c := range benchFrames() {
		b.Run(c.name, func(b *testing.B) {
			frame := mustEncode(b, c.f)
			dec := NewDecoder()
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := dec.Decode(frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFrameSize reports the encoded sizes, for BENCHMARKS.md.
func BenchmarkFrameSize(b *testing.B) {
	for _, c := range benchFrames() {
		b.Run(c.name, func(b *testing.B) {
			n := len(mustEncode(b, c.f))
			for b.Loop() {
			}
			b.ReportMetric(float64(n), "bytes/frame")
			if d, ok := c.f.(*Delta); ok {
				b.ReportMetric(float64(n)/float64(len(d.Delta.Ops)), "bytes/op")
			}
		})
	}
}
