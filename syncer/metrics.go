package syncer

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the server's Prometheus instruments. Labels never carry
// document or user IDs: those are unbounded and belong to the HTTP API.
type Metrics struct {
	connections   prometheus.Gauge
	docsLoaded    prometheus.Gauge
	ops           *prometheus.CounterVec // result
	frames        *prometheus.CounterVec // kind
	errors        *prometheus.CounterVec // code
	fsync         prometheus.Histogram
	broadcast     prometheus.Histogram
	docLoads      prometheus.Histogram
	unloads       prometheus.Counter
	evictions     prometheus.Counter
	persistErrors prometheus.Counter
	closes        *prometheus.CounterVec // reason
	rejected      *prometheus.CounterVec // what
}

// NewMetrics registers the instruments with reg, or with a private
// registry when reg is nil (tests, embedders that do not scrape).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	f := promauto.With(reg)
	lat := prometheus.ExponentialBuckets(0.0001, 2, 16)
	return &Metrics{
		connections: f.NewGauge(prometheus.GaugeOpts{Namespace: "weft", Name: "connections", Help: "Open WebSocket sessions."}),
		docsLoaded:  f.NewGauge(prometheus.GaugeOpts{Namespace: "weft", Name: "documents_loaded", Help: "Documents held in memory."}),
		ops: f.NewCounterVec(prometheus.CounterOpts{Namespace: "weft", Name: "ops_total",
			Help: "CRDT ops received in Delta frames, by result."}, []string{"result"}),
		frames: f.NewCounterVec(prometheus.CounterOpts{Namespace: "weft", Name: "frames_total",
			Help: "Frames received, by kind."}, []string{"kind"}),
		errors: f.NewCounterVec(prometheus.CounterOpts{Namespace: "weft", Name: "errors_total",
			Help: "Error frames and refusals sent, by code."}, []string{"code"}),
		fsync: f.NewHistogram(prometheus.HistogramOpts{Namespace: "weft", Name: "append_seconds",
			Help: "Time for a batch of op-log records to become durable (fsync included).", Buckets: lat}),
		broadcast: f.NewHistogram(prometheus.HistogramOpts{Namespace: "weft", Name: "broadcast_seconds",
			Help: "Time to queue one frame for every subscriber of a document.", Buckets: lat}),
		docLoads: f.NewHistogram(prometheus.HistogramOpts{Namespace: "weft", Name: "document_load_seconds",
			Help: "Time to load a document from its snapshot and log tail.", Buckets: lat}),
		unloads:       f.NewCounter(prometheus.CounterOpts{Namespace: "weft", Name: "document_unloads_total", Help: "Idle documents unloaded."}),
		evictions:     f.NewCounter(prometheus.CounterOpts{Namespace: "weft", Name: "document_evictions_total", Help: "Idle documents unloaded early to fit the memory budget."}),
		persistErrors: f.NewCounter(prometheus.CounterOpts{Namespace: "weft", Name: "append_errors_total", Help: "Failed op-log appends (retried)."}),
		closes: f.NewCounterVec(prometheus.CounterOpts{Namespace: "weft", Name: "closes_total",
			Help: "Sessions closed by the server, by reason code."}, []string{"code"}),
		rejected: f.NewCounterVec(prometheus.CounterOpts{Namespace: "weft", Name: "admission_rejected_total",
			Help: "Connections and joins refused by admission control."}, []string{"what"}),
	}
}
