package bench

import (
	"math/bits"
	"slices"
	"time"
)

// hist is a log-linear latency histogram in microseconds: exact below
// 64 µs, then 32 buckets per power of two (about 3 % resolution), up to
// about 2^40 µs. It is not safe for concurrent use; each receiver keeps its
// own and they are merged afterwards.
type hist struct {
	n      [histBuckets]uint64
	count  uint64
	sum    uint64 // µs
	maxVal uint64 // µs
}

const (
	histSub     = 5 // 32 sub-buckets per power of two
	histBuckets = 64 + 36<<histSub
)

func histIndex(us uint64) int {
	if us < 64 {
		return int(us)
	}
	e := bits.Len64(us) - histSub - 1 // us>>e is in [32, 64)
	i := 64 + (e-1)<<histSub + int(us>>e) - 1<<histSub
	return min(i, histBuckets-1)
}

// histLow returns the smallest value that falls in bucket i.
func histLow(i int) uint64 {
	if i < 64 {
		return uint64(i)
	}
	e := (i-64)>>histSub + 1
	m := uint64((i-64)&(1<<histSub-1) + 1<<histSub)
	return m << e
}

func (h *hist) add(d time.Duration) {
	us := uint64(max(d, 0) / time.Microsecond)
	h.n[histIndex(us)]++
	h.count++
	h.sum += us
	h.maxVal = max(h.maxVal, us)
}

func (h *hist) merge(o *hist) {
	for i, c := range o.n {
		h.n[i] += c
	}
	h.count += o.count
	h.sum += o.sum
	h.maxVal = max(h.maxVal, o.maxVal)
}

// quantile returns the q-quantile (0 < q ≤ 1) in milliseconds: the middle of
// the bucket holding it, capped at the largest value seen.
func (h *hist) quantile(q float64) float64 {
	if h.count == 0 {
		return 0
	}
	rank := uint64(q*float64(h.count) + 0.5)
	rank = min(max(rank, 1), h.count)
	var seen uint64
	for i, c := range h.n {
		seen += c
		if seen >= rank {
			lo := histLow(i)
			hi := lo + 1
			if i+1 < histBuckets {
				hi = histLow(i + 1)
			}
			mid := min(float64(lo+hi-1)/2, float64(h.maxVal))
			return mid / 1000
		}
	}
	return float64(h.maxVal) / 1000
}

func (h *hist) maxMs() float64 { return float64(h.maxVal) / 1000 }

// durations summarises a small set of exact samples (timed joins, resyncs).
type durations []time.Duration

func (d durations) quantile(q float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := min(int(q*float64(len(s))), len(s)-1)
	if q == 0.5 && len(s)%2 == 0 {
		return float64(s[len(s)/2-1]+s[len(s)/2]) / 2 / 1e6
	}
	return float64(s[i]) / 1e6
}
