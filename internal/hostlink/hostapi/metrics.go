package hostapi

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsGatherer is what GET /metrics serves: the agent process's
// registry, where the agent's start histograms and its per-instance
// collector are registered (package daemon).
var metricsGatherer prometheus.Gatherer = prometheus.DefaultGatherer

func (h *handler) metrics(w http.ResponseWriter, r *http.Request) error {
	promhttp.HandlerFor(metricsGatherer, promhttp.HandlerOpts{ErrorLog: errorLog{h}}).ServeHTTP(w, r)
	return nil
}

type errorLog struct{ h *handler }

func (l errorLog) Println(v ...any) { l.h.log.Warn("serving /metrics", "err", fmt.Sprint(v...)) }
