package bench

import (
	"slices"
	"time"
)

// Histogram collects latency samples and answers exact percentiles. It keeps every sample (8 bytes each), so a
// measurement bounded by a maximum count is bounded in memory too. It is not safe for concurrent use: each worker
// owns one and the results are merged at the end.
type Histogram struct {
	samples []time.Duration
	sorted  bool
}

// Record adds one sample.
func (h *Histogram) Record(d time.Duration) {
	h.samples = append(h.samples, d)
	h.sorted = false
}

// Merge adds every sample of o.
func (h *Histogram) Merge(o *Histogram) {
	h.samples = append(h.samples, o.samples...)
	h.sorted = false
}

// Count is the number of samples.
func (h *Histogram) Count() int { return len(h.samples) }

// Quantile returns the sample at quantile q in [0, 1] by the nearest-rank method; 0 with no samples.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := len(h.samples)
	if n == 0 {
		return 0
	}
	if !h.sorted {
		slices.Sort(h.samples)
		h.sorted = true
	}
	switch {
	case q <= 0:
		return h.samples[0]
	case q >= 1:
		return h.samples[n-1]
	}
	// Nearest rank: the smallest sample with at least q·n samples at or below it.
	rank := int(q*float64(n) + 0.999999999)
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	return h.samples[rank-1]
}

// Mean is the arithmetic mean; 0 with no samples.
func (h *Histogram) Mean() time.Duration {
	if len(h.samples) == 0 {
		return 0
	}
	var sum time.Duration
	for _, s := range h.samples {
		sum += s
	}
	return sum / time.Duration(len(h.samples))
}

// Latency is the summary of a Histogram kept in a report.
type Latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p999_us"`
	Max   float64 `json:"max_us"`
	Mean  float64 `json:"mean_us"`
}

// Summary returns the percentiles in microseconds.
func (h *Histogram) Summary() Latency {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return Latency{
		Count: h.Count(),
		P50:   us(h.Quantile(0.50)),
		P90:   us(h.Quantile(0.90)),
		P99:   us(h.Quantile(0.99)),
		P999:  us(h.Quantile(0.999)),
		Max:   us(h.Quantile(1)),
		Mean:  us(h.Mean()),
	}
}
