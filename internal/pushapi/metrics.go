package pushapi

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the client's Prometheus series. A nil *Metrics records nothing.
type Metrics struct {
	requests      *prometheus.CounterVec
	retries       *prometheus.CounterVec
	throttled     *prometheus.CounterVec
	retryAfter    *prometheus.CounterVec
	limiterWait   *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	batchRows     *prometheus.HistogramVec
	inFlight      *prometheus.GaugeVec
	quotaRequests *prometheus.GaugeVec
	quotaRows     *prometheus.GaugeVec
	quotaShare    *prometheus.GaugeVec
	quotaUsed     *quotaUseCollector
	rowsAccepted  *prometheus.CounterVec
	tokenRenewals *prometheus.CounterVec
	tokenFailures *prometheus.CounterVec
}

// NewMetrics creates the client's series and registers them on reg (nothing
// is registered when reg is nil). Labels: dataset (id), table, code (HTTP
// status, or "error" when no response came), method (auth method).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_powerbi_requests_total",
			Help: "Power BI API requests by dataset, table and HTTP status code (\"error\" when no response came).",
		}, []string{"dataset", "table", "code"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_powerbi_retries_total",
			Help: "Power BI API requests retried after a retryable failure.",
		}, []string{"dataset", "table"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_powerbi_throttled_total",
			Help: "HTTP 429 answers from Power BI.",
		}, []string{"dataset", "table"}),
		retryAfter: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_powerbi_retry_after_seconds_total",
			Help: "Seconds requests slept because of a 429 (Retry-After, or backoff when absent).",
		}, []string{"dataset"}),
		limiterWait: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_powerbi_limiter_wait_seconds_total",
			Help: "Seconds requests waited for the dataset's quota limiter (rate, rows, in-flight slots, pauses).",
		}, []string{"dataset"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pushd_powerbi_request_duration_seconds",
			Help:    "Latency of Power BI API requests, from send to the end of the response.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}, []string{"dataset"}),
		batchRows: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pushd_powerbi_batch_rows",
			Help:    "Rows per PostRows call.",
			Buckets: []float64{1, 10, 100, 500, 1000, 2500, 5000, 10000},
		}, []string{"dataset", "table"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushd_powerbi_requests_in_flight",
			Help: "PostRows requests in flight per dataset.",
		}, []string{"dataset"}),
		quotaRequests: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushd_powerbi_quota_requests_remaining",
			Help: "Requests the dataset's limiter allows now without waiting (tokens in its bucket).",
		}, []string{"dataset"}),
		quotaRows: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushd_powerbi_quota_rows_remaining",
			Help: "Rows the dataset's limiter allows now without waiting (tokens in its bucket).",
		}, []string{"dataset"}),
		quotaShare: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushd_powerbi_quota_share_ratio",
			Help: "The share of the dataset's quotas this process keeps to (1 when it is the only writer; set by limits.share or by a Kafka source's partitions).",
		}, []string{"dataset"}),
		quotaUsed: &quotaUseCollector{desc: prometheus.NewDesc("pushd_powerbi_quota_used_ratio",
			"Used/allowed of this process's share of the dataset's quotas over the last window: requests and rows (in flight included), in_flight (its peak over the last request window).",
			[]string{"dataset", "quota"}, nil)},
		rowsAccepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_powerbi_rows_accepted_total",
			Help: "Rows Power BI accepted.",
		}, []string{"dataset", "table"}),
		tokenRenewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_auth_token_renewals_total",
			Help: "Access tokens obtained from the identity provider (or re-read from the token file).",
		}, []string{"method"}),
		tokenFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_auth_token_failures_total",
			Help: "Failed attempts to obtain an access token.",
		}, []string{"method"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.retries, m.throttled, m.retryAfter, m.limiterWait, m.latency,
			m.batchRows, m.inFlight, m.quotaRequests, m.quotaRows, m.quotaShare, m.quotaUsed, m.rowsAccepted, m.tokenRenewals, m.tokenFailures)
	}
	return m
}

func (m *Metrics) request(dataset, table string, status int, d time.Duration) {
	if m == nil {
		return
	}
	code := "error"
	if status > 0 {
		code = strconv.Itoa(status)
	}
	m.requests.WithLabelValues(dataset, table, code).Inc()
	if status > 0 {
		m.latency.WithLabelValues(dataset).Observe(d.Seconds())
	}
}

func (m *Metrics) retry(dataset, table string) {
	if m != nil {
		m.retries.WithLabelValues(dataset, table).Inc()
	}
}

func (m *Metrics) throttle(dataset, table string, slept time.Duration) {
	if m != nil {
		m.throttled.WithLabelValues(dataset, table).Inc()
		m.retryAfter.WithLabelValues(dataset).Add(slept.Seconds())
	}
}

func (m *Metrics) waited(dataset string, d time.Duration) {
	if m != nil && d > 0 {
		m.limiterWait.WithLabelValues(dataset).Add(d.Seconds())
	}
}

func (m *Metrics) batch(dataset, table string, rows int) {
	if m != nil {
		m.batchRows.WithLabelValues(dataset, table).Observe(float64(rows))
	}
}

func (m *Metrics) inFlightAdd(dataset string, delta float64) {
	if m != nil {
		m.inFlight.WithLabelValues(dataset).Add(delta)
	}
}

func (m *Metrics) quota(dataset string, requests, rows float64) {
	if m != nil {
		m.quotaRequests.WithLabelValues(dataset).Set(requests)
		m.quotaRows.WithLabelValues(dataset).Set(rows)
	}
}

func (m *Metrics) accepted(dataset, table string, rows int) {
	if m != nil {
		m.rowsAccepted.WithLabelValues(dataset, table).Add(float64(rows))
	}
}

func (m *Metrics) tokenRenewed(method string) {
	if m != nil {
		m.tokenRenewals.WithLabelValues(method).Inc()
	}
}

func (m *Metrics) tokenFailed(method string) {
	if m != nil {
		m.tokenFailures.WithLabelValues(method).Inc()
	}
}

func (m *Metrics) share(dataset string, s float64) {
	if m != nil {
		m.quotaShare.WithLabelValues(dataset).Set(s)
	}
}

// watch makes the used ratios of use's datasets part of every scrape.
func (m *Metrics) watch(use func() []QuotaUse) {
	if m == nil {
		return
	}
	m.quotaUsed.mu.Lock()
	defer m.quotaUsed.mu.Unlock()
	m.quotaUsed.sources = append(m.quotaUsed.sources, use)
}

// quotaUseCollector computes pushd_powerbi_quota_used_ratio when scraped,
// so that the ratio falls as the window empties, with no request to update
// it.
type quotaUseCollector struct {
	desc    *prometheus.Desc
	mu      sync.Mutex
	sources []func() []QuotaUse
}

func (c *quotaUseCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *quotaUseCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	sources := append([]func() []QuotaUse(nil), c.sources...)
	c.mu.Unlock()
	seen := make(map[string]bool)
	for _, use := range sources {
		for _, u := range use() {
			if seen[u.Dataset] {
				continue // two clients on one registry: the first one's
			}
			seen[u.Dataset] = true
			for _, q := range [...]struct {
				name  string
				ratio float64
			}{{"requests", u.Requests}, {"rows", u.Rows}, {"in_flight", u.InFlight}} {
				ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, q.ratio, u.Dataset, q.name)
			}
		}
	}
}
