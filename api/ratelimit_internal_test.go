package api

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/authority"
)

// limitAt is a rateLimit of rate and burst on a clock the test moves.
func limitAt(rate, burst int) (*rateLimit, *time.Time, *metrics) {
	return limitOf(authority.RateLimitConfig{RequestsPerSecond: &rate, Burst: burst})
}

func limitOf(cfg authority.RateLimitConfig) (*rateLimit, *time.Time, *metrics) {
	m := newMetrics()
	at := time.Unix(1_800_000_000, 0)
	l := newRateLimit(cfg, func() time.Time { return at }, slog.New(slog.DiscardHandler), m)
	return l, &at, m
}

// orgA is the roles of an authority of org-a.example without admins.
type orgA struct{}

func (orgA) RoleOf(spiffeid.ID) authority.Role { return authority.RoleAgent }
func (orgA) TrustDomain() spiffeid.TrustDomain {
	return spiffeid.RequireTrustDomainFromString("org-a.example")
}

// letThrough is how many of n requests at once of the caller id l lets
// through.
func letThrough(l *rateLimit, id string, n int) int {
	c := &authority.Caller{ID: spiffeid.RequireFromString(id)}
	let := 0
	for range n {
		if ok, _ := l.allow(orgA{}, c, "192.0.2.9:1", "POST /v1/token"); ok {
			let++
		}
	}
	return let
}

// Callers of this trust domain each have a bucket; those of another
// share one (its authority names as many IDs as it likes), but for one
// listed in http.rate_limit.callers.
func TestRateLimitKeysOtherTrustDomainsTogether(t *testing.T) {
	two := 2
	l, _, _ := limitOf(authority.RateLimitConfig{RequestsPerSecond: &two, Burst: 3, Callers: map[string]int{"spiffe://org-b.example/gw": 5}})
	for _, c := range []struct {
		id   string
		want int
	}{
		{"spiffe://org-a.example/agent/x", 3},
		{"spiffe://org-a.example/agent/y", 3},
		{"spiffe://org-b.example/agent/p", 3},
		{"spiffe://org-b.example/agent/q", 0}, // p's bucket, spent
		{"spiffe://org-b.example/gw", 10},     // its own: 5 a second, burst 10
		{"spiffe://org-c.example/agent/p", 3},
	} {
		if got := letThrough(l, c.id, 20); got != c.want {
			t.Errorf("%s: %d of 20 at once let through, want %d", c.id, got, c.want)
		}
	}
}

// takes is how many requests key's bucket lets through at once.
func takes(l *rateLimit, key string) int {
	n := 0
	for {
		l.mu.Lock()
		ok, _ := l.bucketOf(key, 2, 4, false, l.now()).take(l.now())
		l.mu.Unlock()
		if !ok {
			return n
		}
		n++
	}
}

func TestBucketRefillsAtItsRate(t *testing.T) {
	l, at, m := limitAt(2, 4)
	for i := range 4 {
		if ok, _ := l.allow(nil, nil, "192.0.2.1:4000", "POST /v1/nodes/join"); !ok {
			t.Fatalf("request %d of a burst of 4 refused", i+1)
		}
	}
	ok, wait := l.allow(nil, nil, "192.0.2.1:4001", "POST /v1/nodes/join")
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("the 5th request at once = %v, wait %v; want refused, a token back in 500ms (2 a second)", ok, wait)
	}
	if got := retryAfter(wait); got != "1" {
		t.Errorf("Retry-After of %v = %q, want 1 (whole seconds, rounded up)", wait, got)
	}
	if got := retryAfter(2500 * time.Millisecond); got != "3" {
		t.Errorf("Retry-After of 2.5s = %q, want 3", got)
	}
	if got := testutil.ToFloat64(m.rateLimited.WithLabelValues("POST /v1/nodes/join")); got != 1 {
		t.Errorf("mandate_http_rate_limited_total = %v, want 1", got)
	}
	// Another address has its bucket.
	if ok, _ := l.allow(nil, nil, "192.0.2.2:4000", "POST /v1/nodes/join"); !ok {
		t.Error("another address was refused: the limit is per caller")
	}
	*at = at.Add(time.Second)
	for i := range 2 {
		if ok, _ := l.allow(nil, nil, "192.0.2.1:4000", "POST /v1/nodes/join"); !ok {
			t.Fatalf("a second later, request %d of 2 refused", i+1)
		}
	}
	if ok, _ := l.allow(nil, nil, "192.0.2.1:4000", "POST /v1/nodes/join"); ok {
		t.Error("a second later, a third request was let through at 2 a second")
	}
	// A quiet time fills the bucket to its burst, no more.
	*at = at.Add(time.Hour)
	if n := takes(l, addressKey("192.0.2.1:4000")); n != 4 {
		t.Errorf("after an hour, %d requests at once, want the burst: 4", n)
	}
	// A clock set back gives nothing; tokens come back from then on.
	*at = at.Add(-time.Hour)
	if ok, _ := l.allow(nil, nil, "192.0.2.1:4000", "POST /v1/nodes/join"); ok {
		t.Error("the clock set back gave a token")
	}
	*at = at.Add(time.Second)
	if n := takes(l, addressKey("192.0.2.1:4000")); n != 2 {
		t.Errorf("a second after the clock was set back, %d requests at once, want 2 (2 a second)", n)
	}
}

func TestAddressKey(t *testing.T) {
	for _, c := range []struct{ remote, want string }{
		{"192.0.2.1:443", "address 192.0.2.1"},
		{"[::ffff:192.0.2.1]:443", "address 192.0.2.1"}, // the same host over a dual-stack socket
		{"[2001:db8:1:2:3:4:5:6]:443", "address 2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:9", "address 2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:443", "address fe80::/64"},
		{"not an address", "address not an address"},
	} {
		if got := addressKey(c.remote); got != c.want {
			t.Errorf("addressKey(%q) = %q, want %q", c.remote, got, c.want)
		}
	}
}

// Past maxBuckets callers, those whose bucket filled again are forgotten;
// when none has, the new callers share one bucket: a flood from ever new
// addresses takes no more memory, and no more than one caller's rate.
func TestRateLimitMemoryIsBounded(t *testing.T) {
	l, at, _ := limitAt(1, 2)
	for i := range maxBuckets {
		l.allow(nil, nil, fmt.Sprintf("10.%d.%d.%d:1", i>>16, (i>>8)&255, i&255), "POST /v1/nodes/join")
	}
	if len(l.buckets) != maxBuckets {
		t.Fatalf("%d buckets, want %d", len(l.buckets), maxBuckets)
	}
	// None full again: new callers share one bucket of burst 2.
	let := 0
	for i := range 10 {
		if ok, _ := l.allow(nil, nil, fmt.Sprintf("172.16.0.%d:1", i), "POST /v1/nodes/join"); ok {
			let++
		}
	}
	if len(l.buckets) != maxBuckets || let != 2 {
		t.Errorf("10 new callers at the bound: %d buckets, %d let through; want %d buckets, 2 let through (one shared bucket)", len(l.buckets), let, maxBuckets)
	}
	// A second later every bucket is full (2 a second, 1 taken): swept.
	*at = at.Add(time.Second)
	if ok, _ := l.allow(nil, nil, "172.16.1.1:1", "POST /v1/nodes/join"); !ok {
		t.Error("a new caller after the sweep was refused")
	}
	if len(l.buckets) != 1 {
		t.Errorf("after the sweep, %d buckets, want 1 (the new caller's)", len(l.buckets))
	}
}

// A caller listed in http.rate_limit.callers has its own bucket past the
// bound too: a flood of new addresses does not put it in theirs.
func TestRateLimitListedCallerPastTheBound(t *testing.T) {
	one := 1
	l, _, _ := limitOf(authority.RateLimitConfig{RequestsPerSecond: &one, Burst: 2, Callers: map[string]int{"spiffe://org-a.example/platform/gw": 50}})
	for i := range maxBuckets + 10 {
		l.allow(nil, nil, fmt.Sprintf("10.%d.%d.%d:1", i>>16, (i>>8)&255, i&255), "POST /v1/nodes/join")
	}
	if got := letThrough(l, "spiffe://org-a.example/platform/gw", 200); got != 100 {
		t.Errorf("the listed caller past the bound: %d of 200 let through, want its own burst, 100", got)
	}
	if got := letThrough(l, "spiffe://org-a.example/agent/new", 10); got != 0 {
		t.Errorf("a new unlisted caller past the bound: %d let through, want 0 (the shared bucket is spent)", got)
	}
}

func TestRateLimitedEndpoints(t *testing.T) {
	for pattern, want := range map[string]bool{
		"POST /v1/delegations":            true,
		"POST /v1/token":                  true,
		"POST /v1/nodes/join":             true,
		"POST /v1/svid/jwt":               true,
		"GET /v1/data/{path...}":          true,  // records the decision
		"HEAD /v1/data":                   false, // 405, as OPA
		"POST /access/v1/evaluation":      true,
		"GET /v1/bundle":                  false,
		"GET /v1/audit/search":            false,
		"GET /v1/delegations/{id}/status": false,
		"GET /healthz":                    false,
	} {
		if got := rateLimited(pattern); got != want {
			t.Errorf("rateLimited(%q) = %v, want %v", pattern, got, want)
		}
	}
}

// BenchmarkRateLimitAllow is what the limit costs a request: one caller
// of 10,000 taking a token, from as many goroutines as cores.
// `go test -run '^$' -bench RateLimitAllow -cpu 2 ./api/`
func BenchmarkRateLimitAllow(b *testing.B) {
	big := 1_000_000
	l, _, _ := limitOf(authority.RateLimitConfig{RequestsPerSecond: &big})
	l.now = time.Now
	callers := make([]*authority.Caller, 10_000)
	for i := range callers {
		callers[i] = &authority.Caller{ID: spiffeid.RequireFromString(fmt.Sprintf("spiffe://org-a.example/agent/a%d", i))}
	}
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.allow(orgA{}, callers[next.Add(1)%int64(len(callers))], "192.0.2.1:1", "POST /v1/delegations")
		}
	})
}

// A request that records more than one entry (an AuthZEN batch) is
// charged for each: the bucket goes below zero, and the caller's next
// requests wait until it has filled again.
func TestRateLimitChargeIsADebt(t *testing.T) {
	l, at, _ := limitAt(2, 4)
	c := &authority.Caller{ID: spiffeid.RequireFromString("spiffe://org-a.example/agent/gw")}
	if ok, _ := l.allow(orgA{}, c, "", "POST /access/v1/evaluations"); !ok {
		t.Fatal("the batch's request was refused")
	}
	l.charge(orgA{}, c, "", 7) // 3 left, 7 more evaluations: 4 owed
	ok, wait := l.allow(orgA{}, c, "", "POST /access/v1/evaluations")
	if ok || wait != 2500*time.Millisecond {
		t.Fatalf("after the batch: %v, wait %v; want refused for 2.5s (5 tokens at 2 a second)", ok, wait)
	}
	*at = at.Add(2500 * time.Millisecond)
	if got := letThrough(l, c.ID.String(), 5); got != 1 {
		t.Errorf("2.5s after: %d let through, want 1", got)
	}
}
