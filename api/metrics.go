package api

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/ca/federation"
)

// metrics are the server's Prometheus metrics, in a private registry.
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	issued       *prometheus.CounterVec
	attestations *prometheus.CounterVec
	decisions    *prometheus.CounterVec
	delegations  *prometheus.CounterVec
	tlsRefused   prometheus.Counter
	connsOpen    prometheus.Gauge
	connsShed    *prometheus.CounterVec
	rateLimited  *prometheus.CounterVec
	witnessed    *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mandate_http_requests_total", Help: "HTTP requests answered, by route (the pattern that serves the request, such as \"POST /v1/delegations\"; the pattern without its method for a 405; unmatched: no route serves the path) and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mandate_http_request_duration_seconds", Help: "Time to serve an HTTP request, in seconds, from its headers read to its answer (reading its body included), by route as in mandate_http_requests_total.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 2.5, 10, 30},
		}, []string{"route"}),
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mandate_svids_issued_total", Help: "SVIDs issued, by kind (x509, jwt) and the holder's role (node, agent).",
		}, []string{"kind", "role"}),
		attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mandate_node_attestations_total", Help: "Node attestations, by method (join_token, tpm) and outcome (admitted, refused, error: the server's fault).",
		}, []string{"method", "outcome"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mandate_policy_decisions_total", Help: "Policy decisions answered, by API (data: each Data API query; authzen: each AuthZEN evaluation, those of a batch one by one) and outcome (true or false: for data, whether the document is defined, for authzen, the decision; error: the policy could not decide).",
		}, []string{"api", "outcome"}),
		delegations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mandate_delegations_total", Help: "Delegation requests (POST /v1/delegations of agents, POST /v1/token), each counted once, by outcome (issued, denied by policy, refused, error: the server's fault or a status unavailable).",
		}, []string{"outcome"}),
		tlsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mandate_tls_client_certificates_refused_total", Help: "TLS handshakes refused for an invalid client X509-SVID, and kept-alive connections whose client X509-SVID no longer verifies after the bundles changed (once each, for each change).",
		}),
		connsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mandate_http_connections_open", Help: "Client connections open, of every listener (each bounded by http.max_connections).",
		}),
		connsShed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mandate_http_connections_shed_total", Help: "Connections shed at a listener's http.max_connections, by how: idle_closed (the longest idle connection closed for a new one), refused (none idle: the new one closed unanswered).",
		}, []string{"how"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mandate_http_rate_limited_total", Help: "Requests refused 429 rate-limited, over their caller's http.rate_limit, by route as in mandate_http_requests_total.",
		}, []string{"route"}),
		witnessed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mandate_witness_checkpoints_total", Help: "Checkpoints submitted to this authority's witness (POST /v1/witness/add-checkpoint), by outcome: cosigned, size_conflict (not from the size cosigned last: the log asks again), inconsistent (a proof that does not verify, or another root hash at the size cosigned: evidence of a fork, in the server log), refused (malformed, an unknown log, not signed by it, a proof between equal sizes).",
		}, []string{"outcome"}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.issued, m.attestations, m.decisions, m.delegations, m.tlsRefused, m.connsOpen, m.connsShed, m.rateLimited, m.witnessed,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// auditCounters expose the audit log's group commits: entries per commit
// and time per commit are the ratios of their rates.
func auditCounters(stats func() audit.Stats) []prometheus.Collector {
	counter := func(name, help string, v func(audit.Stats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return v(stats()) })
	}
	return []prometheus.Collector{
		counter("mandate_audit_commits_total", "Audit log commits: store transactions, each made durable with a signed checkpoint.",
			func(s audit.Stats) float64 { return float64(s.Commits) }),
		counter("mandate_audit_entries_total", "Audit log entries appended.",
			func(s audit.Stats) float64 { return float64(s.Entries) }),
		counter("mandate_audit_commit_seconds_total", "Time spent in audit log commits, in seconds: writing the entries, the fsyncs, signing the checkpoint.",
			func(s audit.Stats) float64 { return s.CommitTime.Seconds() }),
		counter("mandate_audit_commit_failures_total", "Audit log commits that failed, or could not start (the stored log unreadable after a failure): nothing of them was acknowledged (a full disk, a store error).",
			func(s audit.Stats) float64 { return float64(s.Failures) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mandate_audit_tree_size", Help: "Entries durable in the audit log (its tree size)."},
			func() float64 { return float64(stats().Size) }),
		counter("mandate_audit_group_waits_total", "Audit log commits that waited for requests under way to record what they did (audit.group_commit_wait).",
			func(s audit.Stats) float64 { return float64(s.GroupWaits) }),
	}
}

// policyReloadCounters expose the policy reloads by outcome, so that an
// alert fires on one refused (by SIGHUP, only the server log says so):
// the policy directory then holds what is not in force.
func policyReloadCounters(reloads func() authority.PolicyReloads) []prometheus.Collector {
	counter := func(outcome string, v func(authority.PolicyReloads) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mandate_policy_reloads_total",
			Help:        "Policy reloads (POST /v1/admin/policy/reload, SIGHUP), by outcome: changed (a new revision is active), unchanged (the same revision was found), refused (the active revision stays).",
			ConstLabels: prometheus.Labels{"outcome": outcome}}, func() float64 { return float64(v(reloads())) })
	}
	return []prometheus.Collector{
		counter("changed", func(r authority.PolicyReloads) uint64 { return r.Changed }),
		counter("unchanged", func(r authority.PolicyReloads) uint64 { return r.Unchanged }),
		counter("refused", func(r authority.PolicyReloads) uint64 { return r.Refused }),
	}
}

// evictionCounters expose the node records removed, by whom, so that an
// alert fires on a prune that evicts more than expected.
func evictionCounters(evictions func() (admin, prune uint64)) []prometheus.Collector {
	counter := func(by string, v func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mandate_nodes_evicted_total",
			Help:        "Node records removed, by whom: admin (POST /v1/admin/nodes/{id}/evict), prune (attestation.prune_lapsed_nodes_after).",
			ConstLabels: prometheus.Labels{"by": by}}, func() float64 { return float64(v()) })
	}
	return []prometheus.Collector{
		counter("admin", func() uint64 { a, _ := evictions(); return a }),
		counter("prune", func() uint64 { _, p := evictions(); return p }),
	}
}

// signingKeyGauges expose when the active X.509 CA and JWT key expire,
// so that an alert fires while rotation can still replace them.
func signingKeyGauges(expiry func() (x509CA, jwtKey time.Time)) []prometheus.Collector {
	gauge := func(kind string, v func() time.Time) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mandate_ca_active_expiration_timestamp_seconds",
			Help:        "When the active signing authority of a kind (x509: the X.509 CA; jwt: the JWT key) expires, in seconds since the epoch. Rotation publishes its successor at half its life and makes it active at five sixths, so a sixth of its life is left at each change.",
			ConstLabels: prometheus.Labels{"kind": kind}}, func() float64 { return float64(v().Unix()) })
	}
	return []prometheus.Collector{
		gauge("x509", func() time.Time { x, _ := expiry(); return x }),
		gauge("jwt", func() time.Time { _, j := expiry(); return j }),
	}
}

// witnessGauges expose, per witness of audit.witnesses, the size of the
// latest checkpoint it cosigned: an alert fires when it falls behind
// mandate_audit_tree_size.
func witnessGauges(cosigned func() map[string]uint64) []prometheus.Collector {
	var out []prometheus.Collector
	for name := range cosigned() { // the witnesses are the configuration's, fixed
		out = append(out, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mandate_audit_witness_cosigned_tree_size",
			Help:        "The tree size of the latest checkpoint of this log a witness of audit.witnesses cosigned since the server started (0: none yet), by witness (its key's name).",
			ConstLabels: prometheus.Labels{"witness": name}}, func() float64 { return float64(cosigned()[name]) }))
	}
	return out
}

// federationGauges expose, per federated trust domain, how its bundle
// refreshes go, so that an alert fires on a peer whose bundle has not
// been fetched for long (its keys may have rotated since).
type federationGauges struct {
	status func() []federation.Status
}

var (
	federationFailuresDesc = prometheus.NewDesc("mandate_federation_bundle_refresh_failures",
		"Consecutive failed refreshes of a federated trust domain's bundle since the last success (0: the last one succeeded). The last bundle fetched is used meanwhile.",
		[]string{"trust_domain"}, nil)
	federationSuccessDesc = prometheus.NewDesc("mandate_federation_bundle_last_refresh_timestamp_seconds",
		"When a federated trust domain's bundle was last fetched successfully, in seconds since the epoch (0: not since the server started).",
		[]string{"trust_domain"}, nil)
)

func (g federationGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- federationFailuresDesc
	ch <- federationSuccessDesc
}

func (g federationGauges) Collect(ch chan<- prometheus.Metric) {
	for _, st := range g.status() {
		td := st.TrustDomain.Name()
		ch <- prometheus.MustNewConstMetric(federationFailuresDesc, prometheus.GaugeValue, float64(st.ConsecutiveFailures), td)
		var last float64
		if !st.LastSuccess.IsZero() {
			last = float64(st.LastSuccess.Unix())
		}
		ch <- prometheus.MustNewConstMetric(federationSuccessDesc, prometheus.GaugeValue, last, td)
	}
}

func (m *metrics) observe(route string, code int, d time.Duration) {
	if route == "" {
		route = "unmatched"
	}
	if code == 0 {
		code = 200
	}
	m.requests.WithLabelValues(route, itoa(code)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}

// delegated counts a delegation request by its outcome (err: nil when
// the hop was issued).
func (m *metrics) delegated(err error) {
	outcome := "issued"
	var denial *authority.PolicyDenial
	switch {
	case err == nil:
	case errors.As(err, &denial):
		outcome = "denied"
	default:
		outcome = refusedOrError(err)
	}
	m.delegations.WithLabelValues(outcome).Inc()
}

// refusedOrError names a request's failure for a metric: "refused" when
// it is answered 4xx, "error" when 5xx (the server's own fault, or
// something it could not ask).
func refusedOrError(err error) string {
	if k, known := problemOf(err); known && k.status < 500 {
		return "refused"
	}
	return "error"
}
