package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kanga-run/kanga/api"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The API's request metrics. The route label is the route's pattern
// (/v1/instances/{name}), never the path, so that its values are the
// routes of Routes and not one per instance name; requests no route
// matches share "unmatched".
var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "kanga", Subsystem: "api", Name: "requests_total",
		Help: "API requests answered, by method, route pattern and HTTP status code.",
	}, []string{"method", "route", "code"})
	requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "kanga", Subsystem: "api", Name: "request_duration_seconds",
		Help: "Time to answer an API request, by method and route pattern (streams such as logs -f and wait last as long as they are followed).",
		// Default buckets stop at 10 s; waits and streams take longer.
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"method", "route"})
)

func init() {
	prometheus.MustRegister(requestsTotal, requestDuration)
}

// instrumented counts and times every request the mux answers. It wraps
// the mux rather than each route, so 401s, 403s and 404s count too, and
// reads the matched pattern off the request after the mux set it.
func instrumented(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		route := routeLabel(r.Pattern)
		code := rec.status
		if code == 0 {
			code = http.StatusOK // nothing written: net/http answers 200
		}
		requestsTotal.WithLabelValues(r.Method, route, strconv.Itoa(code)).Inc()
		requestDuration.WithLabelValues(r.Method, route).Observe(time.Since(start).Seconds())
	})
}

// routeLabel is a mux pattern ("GET /v1/instances/{name}") without its
// method; the catch-all and no match are "unmatched".
func routeLabel(pattern string) string {
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		pattern = pattern[i+1:]
	}
	if pattern == "" || pattern == "/" {
		return "unmatched"
	}
	return pattern
}

// metrics serves the process's Prometheus registry: the API's, the
// control-plane loop's and, under kanga up, the host's (the agent shares
// the process). metrics:read, an administrator's scope, guards it: the
// per-instance series name every tenant's instances.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) error {
	promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{ErrorLog: slogPrinter{s.logger(r.Context())}}).ServeHTTP(w, r)
	return nil
}

// slogPrinter logs promhttp's errors (a collector that failed).
type slogPrinter struct {
	log interface{ Warn(string, ...any) }
}

func (p slogPrinter) Println(v ...any) { p.log.Warn("serving /metrics", "err", fmt.Sprint(v...)) }

var (
	descHostReady = prometheus.NewDesc("kanga_host_ready",
		"1 while the host holds its lease (Ready), else 0.", []string{"host"}, nil)
	descHostCordoned = prometheus.NewDesc("kanga_host_cordoned",
		"1 while the host is cordoned (gets no new instances), else 0.", []string{"host"}, nil)
)

// hostsCollector reports the hosts' health from the store on each scrape:
// one read, whichever replica is scraped.
type hostsCollector struct{ store HostStore }

func (c hostsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descHostReady
	ch <- descHostCordoned
}

func (c hostsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hosts, err := c.store.ListHosts(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descHostReady, fmt.Errorf("listing the hosts: %w", err))
		return
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, h := range hosts {
		ch <- prometheus.MustNewConstMetric(descHostReady, prometheus.GaugeValue, b(h.Status.Phase == api.HostReady), h.Name)
		ch <- prometheus.MustNewConstMetric(descHostCordoned, prometheus.GaugeValue, b(h.Cordoned), h.Name)
	}
}

// newGatherer is what GET /metrics serves: the process's metrics and
// this server's own collectors, which read its store.
func newGatherer(process prometheus.Gatherer, st HostStore) prometheus.Gatherer {
	if process == nil {
		process = prometheus.DefaultGatherer
	}
	own := prometheus.NewRegistry()
	own.MustRegister(hostsCollector{st})
	return prometheus.Gatherers{process, own}
}
