package api

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/authority"
)

// rateLimit keeps a token bucket for each caller of the endpoints that
// record (http.rate_limit): by SPIFFE ID of this trust domain (or one
// listed in http.rate_limit.callers), by trust domain for another's (its
// authority names as many IDs as it likes), or by client address for a
// caller without a client certificate. Its memory is bounded: past
// maxBuckets callers, those whose bucket has filled again are forgotten
// (a full bucket is a caller never seen); when none has, the callers
// not yet known share one bucket, at the default rate, until some fill
// again, so that a flood from many addresses is held back as one. A
// listed caller always has its own.
type rateLimit struct {
	cfg     authority.RateLimitConfig
	log     *slog.Logger
	limited *prometheus.CounterVec // by route
	now     func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	// shared is the bucket of the callers not known when buckets is
	// full; swept is when buckets was last swept for full ones (once a
	// second at most: a sweep reads every bucket).
	shared *bucket
	swept  time.Time
	// warned is when the limit was last said in the server log (once a
	// minute at most).
	warned time.Time
}

// roles says who is an admin, and which trust domain is the authority's.
type roles interface {
	RoleOf(spiffeid.ID) authority.Role
	TrustDomain() spiffeid.TrustDomain
}

// maxBuckets bounds the callers a rateLimit keeps a bucket for: some
// 100 bytes each.
const maxBuckets = 100_000

// bucket holds tokens, a request taking one; they come back at rate a
// second, up to burst.
type bucket struct {
	rate   float64
	burst  float64
	tokens float64
	at     time.Time // when tokens was counted
}

// newRateLimit limits by cfg, on the clock now (the authority's).
func newRateLimit(cfg authority.RateLimitConfig, now func() time.Time, log *slog.Logger, m *metrics) *rateLimit {
	return &rateLimit{cfg: cfg, log: log, limited: m.rateLimited, now: now, buckets: map[string]*bucket{}}
}

// fill counts the tokens back in at now. A clock set back gives none,
// and they come back from then: a bucket does not wait for the clock to
// be where it was.
func (b *bucket) fill(now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = math.Min(b.burst, b.tokens+d.Seconds()*b.rate)
	}
	b.at = now
}

// take takes a token at now, or says how long until one is there.
func (b *bucket) take(now time.Time) (ok bool, wait time.Duration) {
	b.fill(now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

// allow takes a request of caller c, from address remote, for route:
// false, and how long to wait, when it is over the caller's rate. An
// admin is never limited.
func (l *rateLimit) allow(a roles, c *authority.Caller, remote, route string) (bool, time.Duration) {
	key, rate, burst, listed := l.keyOf(a, c, remote)
	if rate <= 0 {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	b := l.bucketOf(key, rate, burst, listed, now)
	ok, wait := b.take(now)
	warn := !ok && now.Sub(l.warned) >= time.Minute
	if warn {
		l.warned = now
	}
	l.mu.Unlock()
	if !ok {
		l.limited.WithLabelValues(route).Inc()
	}
	if warn {
		l.log.Warn("rate limit reached (http.rate_limit): requests over it are answered 429 and not recorded; said once a minute, counted in mandate_http_rate_limited_total",
			"caller", key, "requests_per_second", rate, "burst", burst, "route", route)
	}
	return ok, wait
}

// keyOf is whose bucket caller c's request (from address remote) is
// taken from, at what rate and burst; rate 0 is no limit (an admin, or
// a caller given none).
func (l *rateLimit) keyOf(a roles, c *authority.Caller, remote string) (key string, rate float64, burst int, listed bool) {
	if c == nil || c.ID.IsZero() {
		rate, burst = l.cfg.Rate(spiffeid.ID{})
		return addressKey(remote), rate, burst, false
	}
	if a.RoleOf(c.ID) == authority.RoleAdmin {
		return "", 0, 0, false
	}
	key = c.ID.String()
	_, listed = l.cfg.Callers[key]
	if !listed && c.ID.TrustDomain() != a.TrustDomain() {
		// Another trust domain's authority names as many IDs as it
		// likes: its callers share one bucket, unless listed.
		key = "trust domain " + c.ID.TrustDomain().Name()
	}
	rate, burst = l.cfg.Rate(c.ID)
	return key, rate, burst, listed
}

// charge takes n more tokens from the bucket of caller c's request, which
// allow let through: a request that records n more than one entry (an
// AuthZEN batch). The bucket may go below zero; the caller's next
// requests then wait until it has filled again, so that what it records
// is held to its rate all the same.
func (l *rateLimit) charge(a roles, c *authority.Caller, remote string, n int) {
	key, rate, burst, listed := l.keyOf(a, c, remote)
	if rate <= 0 || n <= 0 {
		return
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bucketOf(key, rate, burst, listed, now)
	b.fill(now)
	b.tokens -= float64(n)
}

// bucketOf is key's bucket, a full one if it has none (l.mu held). A
// caller listed in http.rate_limit.callers always has its own, past
// maxBuckets too (the configuration bounds them).
func (l *rateLimit) bucketOf(key string, rate float64, burst int, listed bool, now time.Time) *bucket {
	if b, ok := l.buckets[key]; ok {
		return b
	}
	if !listed && len(l.buckets) >= maxBuckets && now.Sub(l.swept) >= time.Second {
		l.swept = now
		for k, b := range l.buckets {
			if b.fill(now); b.tokens >= b.burst {
				delete(l.buckets, k)
			}
		}
	}
	if !listed && len(l.buckets) >= maxBuckets {
		if l.shared == nil { // at the default rate, whoever comes first
			rate, burst := l.cfg.Rate(spiffeid.ID{})
			l.shared = &bucket{rate: rate, burst: float64(burst), tokens: float64(burst), at: now}
		}
		return l.shared
	}
	b := &bucket{rate: rate, burst: float64(burst), tokens: float64(burst), at: now}
	l.buckets[key] = b
	return b
}

// addressKey is the key of a caller without a SPIFFE ID: its IP address,
// or the /64 of an IPv6 one (one host often has all of it).
func addressKey(remote string) string {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return "address " + remote
	}
	addr := ap.Addr().Unmap()
	if addr.Is6() {
		if p, err := addr.Prefix(64); err == nil {
			return "address " + p.String()
		}
	}
	return "address " + addr.String()
}

// rateLimited says whether pattern's requests count against the rate
// limit: those that may record (every POST, and the Data API's GET,
// which records the decision).
func rateLimited(pattern string) bool {
	method, path, _ := strings.Cut(pattern, " ")
	return method == http.MethodPost || method == http.MethodGet && isDataPath(path)
}

// takeLimit takes r, caller c's request for pattern, from the caller's
// rate limit; over it, it answers 429 and returns false.
func (s *Server) takeLimit(w http.ResponseWriter, r *http.Request, c *authority.Caller, pattern string) bool {
	ok, wait := s.limit.allow(s.a, c, r.RemoteAddr, pattern)
	if !ok {
		s.writeRateLimited(w, r, pattern, wait)
	}
	return ok
}

// errRateLimited refuses a request over its caller's rate.
var errRateLimited = errors.New("api: rate limit reached")

// writeRateLimited answers a request over its caller's rate: 429 with
// Retry-After (RFC 6585, RFC 9110 §10.2.3), in the shape of the
// endpoint's other errors: OPA's on the Data API, OAuth's on the token
// endpoint, a problem elsewhere.
func (s *Server) writeRateLimited(w http.ResponseWriter, r *http.Request, pattern string, wait time.Duration) {
	// The outcome counters count every request of their endpoints once:
	// this one too.
	switch pattern {
	case "POST /v1/delegations", "POST /v1/token":
		s.metrics.delegations.WithLabelValues("refused").Inc()
	case "POST /v1/nodes/join":
		s.metrics.attestations.WithLabelValues("join_token", "refused").Inc()
	case "POST /v1/nodes/attest/tpm/challenge", "POST /v1/nodes/attest/tpm/verify":
		s.metrics.attestations.WithLabelValues("tpm", "refused").Inc()
	}
	after := retryAfter(wait)
	w.Header().Set("Retry-After", after)
	msg := "too many requests from this caller (http.rate_limit): try again in " + after + " s"
	switch {
	case isDataPath(r.URL.Path):
		writeOPAError(w, http.StatusTooManyRequests, opaRateLimited, msg)
	case pattern == "POST /v1/token":
		oauthError(w, http.StatusTooManyRequests, "temporarily_unavailable", msg)
	default:
		writeError(w, r, s.log, fmt.Errorf("%w: %s", errRateLimited, msg))
	}
}

// opaRateLimited is the code of the Data API's 429 (OPA has none of its
// own: it does not limit).
const opaRateLimited = "too_many_requests"

// retryAfter is the Retry-After value of wait: whole seconds, at least 1.
func retryAfter(wait time.Duration) string {
	return strconv.FormatInt(max(1, int64(math.Ceil(wait.Seconds()))), 10)
}
