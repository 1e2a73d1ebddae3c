package api_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/authority"
)

// A caller over http.rate_limit is answered 429 with Retry-After, in the
// shape of the endpoint's errors, and nothing of its request is
// recorded; other callers, admins, callers given a rate of their own
// and reads go on.
func TestRateLimitPerCaller(t *testing.T) {
	const free = "spiffe://org-a.example/agent/free"
	e := start(t, "org-a.example", func(c *authority.Config) {
		one := 1
		c.HTTP.RateLimit = authority.RateLimitConfig{RequestsPerSecond: &one, Burst: 3, Callers: map[string]int{free: 0}}
		c.Policy.DecisionCallers = []string{"spiffe://org-a.example/agent/a"}
	})
	a, b, f := e.agentWithScopes("a"), e.agentWithScopes("b"), e.agentWithScopes("free")
	// The clock stands 10 s on: every bucket is full, and fills no more.
	e.frozen.Store(time.Now().Add(10 * time.Second).UnixNano())

	jwt := func(who identity) *http.Response {
		t.Helper()
		resp, err := e.rawClient(who.chain, who.key).Post(e.url+"/v1/svid/jwt", "application/json", strings.NewReader(`{"audience": ["x"]}`))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for i := range 3 {
		if resp := jwt(a); resp.StatusCode != http.StatusOK {
			t.Fatalf("JWT-SVID %d of a burst of 3: %s", i+1, resp.Status)
		}
	}
	size := e.a.AuditStats().Size
	resp := jwt(a)
	if resp.Header.Get("Retry-After") != "1" || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("429 headers: Retry-After %q, Content-Type %q; want 1, application/problem+json", resp.Header.Get("Retry-After"), resp.Header.Get("Content-Type"))
	}
	if status, typ := problemOfAnswer(t, resp); status != http.StatusTooManyRequests || typ != "rate-limited" {
		t.Fatalf("4th JWT-SVID at once = %d %s, want 429 rate-limited", status, typ)
	}
	// The token endpoint answers in OAuth's shape, the Data API in OPA's.
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}}
	resp, err := e.rawClient(a.chain, a.key).PostForm(e.url+"/v1/token", form)
	if err != nil {
		t.Fatal(err)
	}
	var oauth map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&oauth); err != nil || resp.StatusCode != http.StatusTooManyRequests || oauth["error"] != "temporarily_unavailable" || resp.Header.Get("Retry-After") == "" {
		t.Errorf("POST /v1/token over the rate = %s %v (%v), want 429 temporarily_unavailable with Retry-After", resp.Status, oauth, err)
	}
	resp.Body.Close()
	resp, err = e.rawClient(a.chain, a.key).Post(e.url+"/v1/data/app/allow", "application/json", strings.NewReader(`{"input": {}}`))
	if err != nil {
		t.Fatal(err)
	}
	var opa map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&opa); err != nil || resp.StatusCode != http.StatusTooManyRequests || opa["code"] != "too_many_requests" {
		t.Errorf("POST /v1/data over the rate = %s %v (%v), want 429 too_many_requests", resp.Status, opa, err)
	}
	resp.Body.Close()
	if got := e.a.AuditStats().Size; got != size {
		t.Errorf("the log grew by %d entries for requests refused 429, want 0", got-size)
	}
	if !strings.Contains(string(e.scrape()), `mandate_http_rate_limited_total{route="POST /v1/svid/jwt"} 1`+"\n") {
		t.Error("mandate_http_rate_limited_total does not count the one JWT-SVID request refused")
	}

	// Another agent has its own bucket; the one given 0 has none, nor
	// has an admin; reads are not limited.
	if resp := jwt(b); resp.StatusCode != http.StatusOK {
		t.Errorf("another agent: %s, want 200", resp.Status)
	}
	for i := range 10 {
		if resp := jwt(f); resp.StatusCode != http.StatusOK {
			t.Fatalf("JWT-SVID %d of %s (callers: 0, no limit): %s", i+1, free, resp.Status)
		}
	}
	for i := range 10 {
		if _, err := e.admin.CreateJoinToken(ctxT(t), time.Hour); err != nil {
			t.Fatalf("admin request %d: %v", i+1, err)
		}
	}
	for i := range 10 {
		resp, err := e.rawClient(a.chain, a.key).Get(e.url + "/v1/bundle")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/bundle %d by the limited agent: %v %v", i+1, resp, err)
		}
		resp.Body.Close()
	}

	// A caller without a certificate is limited by its address.
	for i := range 4 {
		resp, err := e.rawClient(nil, nil).Post(e.url+"/v1/nodes/join", "application/json", strings.NewReader(`{"token": "not-a-token", "csr": "x"}`))
		if err != nil {
			t.Fatal(err)
		}
		status, typ := problemOfAnswer(t, resp)
		if want := http.StatusTooManyRequests; (i < 3) == (status == want) {
			t.Errorf("anonymous join %d from one address: %d %s", i+1, status, typ)
		}
	}

	// The outcome counters count the requests refused 429 too.
	metrics := string(e.scrape())
	for _, want := range []string{`mandate_node_attestations_total{method="join_token",outcome="refused"} 4`, `mandate_delegations_total{outcome="refused"} 1`} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics has no line %s", want)
		}
	}

	// A second later, one more.
	e.frozen.Add(int64(time.Second))
	if resp := jwt(a); resp.StatusCode != http.StatusOK {
		t.Errorf("a second later: %s, want 200 (1 a second)", resp.Status)
	}
	if resp := jwt(a); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a second later, the 2nd: %s, want 429", resp.Status)
	}
	if !strings.Contains(e.logs.String(), "rate limit reached") {
		t.Error("the server log does not say the rate limit was reached")
	}
}

// An AuthZEN batch is charged one token per evaluation (each is a
// decision recorded): a batch of 8 leaves 2 of a burst of 10.
func TestRateLimitChargesEachEvaluation(t *testing.T) {
	e := start(t, "org-a.example", func(c *authority.Config) {
		one := 1
		c.HTTP.RateLimit = authority.RateLimitConfig{RequestsPerSecond: &one, Burst: 10}
		c.Policy.DecisionCallers = []string{"spiffe://org-a.example/agent/gw"}
	})
	gw := e.agentWithScopes("gw")
	e.frozen.Store(time.Now().Add(20 * time.Second).UnixNano()) // every bucket full, and filling no more
	hc := e.rawClient(gw.chain, gw.key)
	one := `{"subject": {"type": "agent", "id": "x"}, "action": {"name": "read"}, "resource": {"type": "doc", "id": "1"}}`
	batch := `{"subject": {"type": "agent", "id": "x"}, "action": {"name": "read"}, "evaluations": [` +
		strings.TrimSuffix(strings.Repeat(`{"resource": {"type": "doc", "id": "1"}},`, 8), ",") + `]}`
	for i, c := range []struct {
		path, body string
		want       int
	}{
		{"/access/v1/evaluations", batch, http.StatusOK},
		{"/access/v1/evaluation", one, http.StatusOK},
		{"/access/v1/evaluation", one, http.StatusOK},
		{"/access/v1/evaluation", one, http.StatusTooManyRequests},
	} {
		resp, err := hc.Post(e.url+c.path, "application/json", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("request %d (%s): %s, want %d", i+1, c.path, resp.Status, c.want)
		}
	}
}
