package crdt

import (
	"encoding/binary"
	"math/bits"
)

// The snapshot's text is compressed with a small byte-aligned LZ77 code.
// Without entropy coding, decoding is a loop of copies, several times
// faster than inflating DEFLATE, for output about a quarter larger on
// English text (35 KB rather than 27.5 KB for the automerge-paper
// document). Inflating was a quarter to a third of the time Load took.
//
// The stream is a sequence of tokens until the input ends:
//
//	token: literals<<4 | match
//	    literals 0..14, or 15: uvarint literals-15 follows
//	    match 0: no match; 1..14: length match+3; 15: uvarint length-18 follows
//	literal bytes
//	if match != 0: uvarint offset-1 (distance back from the end of the output)
//
// Matches are at most lzMaxMatch bytes, so that a token expands by at most
// about 1024:1 and a declared text size can be checked against the input
// before anything is allocated.
const (
	lzMinMatch = 4
	lzMaxMatch = 4096
	lzMaxRatio = 1100 // bound on output bytes per input byte, with margin

	lzWindowBits = 16  // a match reaches back at most 2^16 bytes
	lzDepth      = 32  // candidates tried per position
	lzNice       = 128 // a match this long ends the search
)

// lzEncode appends the compressed form of src to dst.
func lzEncode(dst, src []byte) []byte {
	if len(src) < lzMinMatch+1 {
		return lzToken(dst, src, 0, 0)
	}
	// Hash chains: head holds the last position of each hash of four bytes,
	// prev the one before each position. Both are sized to the text, up to
	// the window, so that small documents stay cheap.
	hbits := min(15, max(8, bits.Len(uint(len(src)))))
	head := make([]int32, 1<<hbits)
	for i := range head {
		head[i] = -1
	}
	wmask := 1<<min(lzWindowBits, bits.Len(uint(len(src)))) - 1
	prev := make([]int32, wmask+1)
	end := len(src) - lzMinMatch // last position whose hash can be taken
	hash := func(i int) uint32 {
		return binary.LittleEndian.Uint32(src[i:]) * 2654435761 >> (32 - hbits)
	}
	insert := func(i int) {
		if i <= end {
			h := hash(i)
			prev[i&wmask] = head[h]
			head[h] = int32(i)
		}
	}
	// find returns the longest match for position i among earlier
	// positions, or 0.
	find := func(i int) (length, dist int) {
		if i > end {
			return 0, 0
		}
		limit := min(lzMaxMatch, len(src)-i)
		c := head[hash(i)]
		// A position within the window has not had its prev slot reused.
		for d := 0; c >= 0 && d < lzDepth && i-int(c) <= wmask; d++ {
			j := int(c)
			if src[j+length] == src[i+length] {
				l := matchLen(src[j:j+limit], src[i:i+limit])
				if l > length {
					length, dist = l, i-j
					if l >= lzNice || l == limit {
						break
					}
				}
			}
			c = prev[j&wmask]
		}
		if length < lzMinMatch {
			return 0, 0
		}
		return length, dist
	}
	lit := 0
	for i := 0; i < len(src); {
		ml, dist := find(i)
		insert(i)
		if ml == 0 {
			i++
			continue
		}
		// Lazy matching: a longer match one byte on wins.
		for ml < lzNice {
			ml2, dist2 := find(i + 1)
			if ml2 <= ml {
				break
			}
			i++
			insert(i)
			ml, dist = ml2, dist2
		}
		dst = lzToken(dst, src[lit:i], ml, dist)
		for k := i + 1; k < i+ml; k++ {
			insert(k)
		}
		i += ml
		lit = i
	}
	if lit < len(src) {
		dst = lzToken(dst, src[lit:], 0, 0)
	}
	return dst
}

// lzToken appends a token: literals, then a match of length ml at distance
// dist (none when ml is 0).
func lzToken(dst, lits []byte, ml, dist int) []byte {
	var m int
	if ml > 0 {
		m = ml - lzMinMatch + 1
	}
	dst = append(dst, byte(min(len(lits), 15))<<4|byte(min(m, 15)))
	if len(lits) >= 15 {
		dst = binary.AppendUvarint(dst, uint64(len(lits)-15))
	}
	dst = append(dst, lits...)
	if ml > 0 {
		if m >= 15 {
			dst = binary.AppendUvarint(dst, uint64(m-15))
		}
		dst = binary.AppendUvarint(dst, uint64(dist-1))
	}
	return dst
}

// matchLen returns the length of the common prefix of a and b, which have
// the same length.
func matchLen(a, b []byte) int {
	n := 0
	for len(a)-n >= 8 {
		if x := binary.LittleEndian.Uint64(a[n:]) ^ binary.LittleEndian.Uint64(b[n:]); x != 0 {
			return n + bits.TrailingZeros64(x)>>3
		}
		n += 8
	}
	for n < len(a) && a[n] == b[n] {
		n++
	}
	return n
}

// lzDecode decodes src into dst and reports whether src was well formed and
// filled dst exactly. It never reads or writes out of bounds, whatever src
// holds.
func lzDecode(dst, src []byte) bool {
	d, p := 0, 0
	for p < len(src) {
		tok := src[p]
		p++
		if ll := int(tok >> 4); ll > 0 {
			// Short runs are copied sixteen bytes at a time where there is
			// room; the bytes past the run are overwritten by what follows.
			if ll < 15 && len(src)-p >= 16 && len(dst)-d >= 16 {
				*(*[16]byte)(dst[d:]) = *(*[16]byte)(src[p:])
			} else {
				if ll == 15 {
					x, q := lzUvarint(src, p)
					if q < 0 || x > uint64(len(src)) {
						return false
					}
					ll += int(x)
					p = q
				}
				if ll > len(src)-p || ll > len(dst)-d {
					return false
				}
				copy(dst[d:d+ll], src[p:p+ll])
			}
			p += ll
			d += ll
		}
		m := int(tok & 15)
		if m == 0 {
			continue
		}
		if m == 15 {
			x, q := lzUvarint(src, p)
			if q < 0 || x > lzMaxMatch {
				return false
			}
			m += int(x)
			p = q
		}
		ml := m + lzMinMatch - 1
		x, q := lzUvarint(src, p)
		if q < 0 || x >= uint64(d) || ml > lzMaxMatch || ml > len(dst)-d {
			return false
		}
		p = q
		o := d - int(x) - 1
		switch {
		case d-o >= 16 && ml <= 16 && len(dst)-d >= 16:
			*(*[16]byte)(dst[d:]) = *(*[16]byte)(dst[o:])
		case d-o >= ml:
			copy(dst[d:d+ml], dst[o:o+ml])
		default:
			// Overlapping: the match repeats the last d-o bytes.
			for k := range ml {
				dst[d+k] = dst[o+k]
			}
		}
		d += ml
	}
	return d == len(dst)
}

// lzUvarint reads a uvarint at b[p:] and returns it with the position
// after it, or -1 when it is malformed. It inlines.
func lzUvarint(b []byte, p int) (x uint64, next int) {
	for s := uint(0); p < len(b) && s < 64; s, p = s+7, p+1 {
		c := b[p]
		x |= uint64(c&0x7f) << s
		if c < 0x80 {
			return x, p + 1
		}
	}
	return 0, -1
}
