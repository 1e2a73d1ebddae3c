package api_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mandate.dev/mandate/authority"
)

// TestRoleCheckedBeforeBodyIsAsked: a caller without an endpoint's role
// is refused before the server asks for the request's body (no 100
// Continue) or waits for it, as is a request that names no endpoint.
func TestRoleCheckedBeforeBodyIsAsked(t *testing.T) {
	const gateway = "spiffe://org-a.example/agent/gateway"
	e := start(t, "org-a.example", func(c *authority.Config) {
		c.Policy.DecisionCallers = []string{gateway}
		c.Policy.CallerPaths = map[string][]string{gateway: {"mandate/delegation"}}
	})
	node := e.joinNode()
	gw := e.agentSVID(node, e.registerAgent("gateway", node.id))
	// The Data API answers in OPA's shape: its "code" is the typ below.
	for _, tc := range []struct {
		name   string
		c      *http.Client
		path   string
		status int
		typ    string
	}{
		{"anonymous to an admin endpoint", e.rawClient(nil, nil), "/v1/admin/agents", 401, "unauthenticated"},
		{"anonymous to delegations", e.rawClient(nil, nil), "/v1/delegations", 401, "unauthenticated"},
		{"anonymous to svid", e.rawClient(nil, nil), "/v1/svid/x509", 401, "unauthenticated"},
		{"anonymous to authzen", e.rawClient(nil, nil), "/access/v1/evaluation", 401, "unauthenticated"},
		{"anonymous to the data API", e.rawClient(nil, nil), "/v1/data/mandate/delegation/decision", 401, "unauthorized"},
		{"node to an admin endpoint", e.rawClient(node.chain, node.key), "/v1/admin/join-tokens", 403, "forbidden"},
		{"node to delegations", e.rawClient(node.chain, node.key), "/v1/delegations", 403, "forbidden"},
		{"node to authzen", e.rawClient(node.chain, node.key), "/access/v1/evaluations", 403, "forbidden"},
		{"node to the data API", e.rawClient(node.chain, node.key), "/v1/data", 403, "unauthorized"},
		{"decision caller to authzen outside its caller_paths", e.rawClient(gw.chain, gw.key), "/access/v1/evaluation", 403, "forbidden"},
		{"decision caller to a document outside its caller_paths", e.rawClient(gw.chain, gw.key), "/v1/data/mandate/issuance/decision", 403, "unauthorized"},
		// No endpoint: no body is read for its 404 or 405 either.
		{"anonymous to no endpoint", e.rawClient(nil, nil), "/v1/nope", 404, "not-found"},
		{"agent to a method the path does not take", e.rawClient(gw.chain, gw.key), "/v1/bundle", 405, "method-not-allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := postWithoutBody(t, tc.c, e.url+tc.path, "a request it refuses")
			status, typ := 0, ""
			if strings.HasPrefix(tc.path, "/v1/data") {
				var oe struct{ Code string }
				if err := json.NewDecoder(resp.Body).Decode(&oe); err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				status, typ = resp.StatusCode, oe.Code
			} else {
				status, typ = problemOfAnswer(t, resp)
			}
			if status != tc.status || typ != tc.typ {
				t.Fatalf("answer %d %s, want %d %s", status, typ, tc.status, tc.typ)
			}
		})
	}
}

// A caller over its http.rate_limit is answered 429 before the server
// asks for the request's body (no 100 Continue) or waits for it.
func TestRateLimitBeforeBodyIsAsked(t *testing.T) {
	e := start(t, "org-a.example", func(c *authority.Config) {
		one := 1
		c.HTTP.RateLimit = authority.RateLimitConfig{RequestsPerSecond: &one, Burst: 1}
	})
	e.frozen.Store(time.Now().UnixNano())
	c := e.rawClient(nil, nil)
	resp, err := c.Post(e.url+"/v1/nodes/join", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests {
		t.Fatal("the first request of a burst of 1 was refused 429")
	}

	resp = postWithoutBody(t, c, e.url+"/v1/nodes/join", "a request over its caller's rate")
	if status, typ := problemOfAnswer(t, resp); status != http.StatusTooManyRequests || typ != "rate-limited" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("answer %d %s (Retry-After %q), want 429 rate-limited with Retry-After", status, typ, resp.Header.Get("Retry-After"))
	}
	if !strings.Contains(string(e.scrape()), `mandate_http_rate_limited_total{route="POST /v1/nodes/join"} 1`+"\n") {
		t.Error("mandate_http_rate_limited_total does not count the request refused")
	}
}

// postWithoutBody POSTs to url as c a JSON request of 100 bytes, sent only
// once the server asks for it (Expect: 100-continue), which it must not:
// the test fails if it does (what names the request), and the answer
// is returned.
func postWithoutBody(t *testing.T, c *http.Client, url, what string) *http.Response {
	t.Helper()
	body, w := io.Pipe()
	defer w.Close()
	var asked atomic.Bool
	ctx := httptrace.WithClientTrace(ctxT(t), &httptrace.ClientTrace{Got100Continue: func() {
		// The server waits for a body that will not come.
		asked.Store(true)
		w.CloseWithError(errors.New("the body was asked for"))
	}})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
	req.ContentLength = 100
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Expect", "100-continue")
	c.Transport.(*http.Transport).ExpectContinueTimeout = time.Minute
	resp, err := c.Do(req)
	if asked.Load() {
		t.Fatalf("the server asked for the body (100 Continue) of %s", what)
	}
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
