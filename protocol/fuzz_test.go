package protocol

import (
	"bytes"
	"errors"
	"testing"
)

// Allocation budget of one Decode: allocBytesPerByte times the input plus
// allocSlack. The worst ratios are small records that become larger Go
// values: an 8-byte delete op is an 80-byte crdt.Op, a 2-byte document ID
// is a 16-byte string header plus its bytes. The slack covers a pooled
// decoder being rebuilt and the error value.
const (
	allocBytesPerByte = 16
	allocSlack        = 64 << 10
)

// FuzzDecode decodes arbitrary bytes. It must never panic; it must fail with
// one of the package's sentinels; it must allocate no more than a fixed
// multiple of the input; every strict prefix of a frame that decodes must
// fail, and so must the frame with a byte appended; and whatever decodes must
// re-encode deterministically to bytes that decode to an equal frame.
//
// The seed corpus is the golden frames (f.Add here, and
// testdata/fuzz/FuzzDecode, which -update rewrites) plus hostile headers.
func FuzzDecode(f *testing.F) {
	for _, g := range goldenFrames() {
		f.Add(mustEncode(f, g))
	}
	f.Add(mustEncode(f, benchDelta(20)))
	f.Add(mustEncode(f, benchPresence()))
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x94, 0x04, 0xa1, 0x64, 0x01, 0x92, 0x90, 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x93, 0x10, 0x01, 0xdf, 0xff, 0xff, 0xff, 0xff})

	f.Fuzz(func(t *testing.T, data []byte) {
		var fr Frame
		var err error
		if n := allocated(func() { fr, err = Decode(data) }); n > uint64(allocBytesPerByte*len(data)+allocSlack) {
			t.Fatalf("decoding %d bytes allocated %d bytes", len(data), n)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) &&
				!errors.Is(err, ErrUnknownKind) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("untyped error: %v", err)
			}
			// Parts of bad input must not panic either.
			for _, cut := range cuts(len(data)) {
				_, _ = Decode(data[:cut])
				_, _ = Decode(data[cut:])
			}
			return
		}

		// msgpack is prefix-free: a frame split anywhere is incomplete.
		for _, cut := range cuts(len(data)) {
			if _, err := Decode(data[:cut]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("prefix of %d/%d bytes: %v", cut, len(data), err)
			}
		}
		if _, err := Decode(append(data[:len(data):len(data)], 0xc0)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("frame with a trailing byte: %v", err)
		}

		enc, err := Encode(nil, fr)
		if err != nil {
			t.Fatalf("re-encoding %#v: %v", fr, err)
		}
		fr2, err := Decode(enc)
		if err != nil {
			t.Fatalf("decoding the re-encoding % x: %v", enc, err)
		}
		if !equalFrames(fr, fr2) {
			t.Fatalf("re-encoding changed the frame:\n got %#v\nwant %#v", fr2, fr)
		}
		if enc2 := mustEncode(t, fr2); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not deterministic:\n% x\n% x", enc, enc2)
		}
	})
}

// cuts returns the split points to try in an input of n bytes: all of them
// for short inputs, about 64 spread evenly for long ones.
func cuts(n int) []int {
	step := 1
	if n > 256 {
		step = n / 64
	}
	var c []int
	for i := 0; i < n; i += step {
		c = append(c, i)
	}
	if n > 0 && c[len(c)-1] != n-1 {
		c = append(c, n-1)
	}
	return c
}
