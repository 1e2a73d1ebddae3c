package api_test

import (
	"net/http"
	"strings"
	"testing"
)

// Every request to the delegation and join endpoints ends in one
// outcome counted on /metrics, those refused before the flow runs (a
// body that is not JSON, a form without the token-exchange grant)
// included: refusals add up to what the endpoints answered 4xx.
func TestMetricsCountEveryRefusal(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	before := e.metricsOf("mandate_")
	hc := e.rawClient(a.chain, a.key)
	post := func(path, contentType, body string) {
		t.Helper()
		resp, err := hc.Post(e.url+path, contentType, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("POST %s %q: %d, want 400", path, body, resp.StatusCode)
		}
	}
	post("/v1/delegations", "application/json", `{"delegatee": 5}`)
	post("/v1/delegations", "application/json", `{"scopes": ["calendar:read"], "not_a_field": true}`)
	post("/v1/token", "application/x-www-form-urlencoded", "grant_type=password&username=a")
	post("/v1/token", "application/x-www-form-urlencoded", "grant_type=urn:ietf:params:oauth:grant-type:token-exchange&scope=a&scope=b")
	resp, err := e.rawClient(nil, nil).Post(e.url+"/v1/nodes/join", "application/json", strings.NewReader(`{"token": ["x"], "csr": "y"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	after := e.metricsOf("mandate_")
	for name, want := range map[string]float64{
		`mandate_delegations_total{outcome="refused"}`:                           4,
		`mandate_node_attestations_total{method="join_token",outcome="refused"}`: 1,
	} {
		if got := after[name] - before[name]; got != want {
			t.Errorf("%s went up by %v, want %v", name, got, want)
		}
	}
}
