package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"mandate.dev/mandate/authority"
)

// Every request to the delegation, join and TPM attestation endpoints
// ends in one outcome counted on /metrics, those refused before the
// flow runs (a body that is not JSON, a field that is not base64, a
// form without the token-exchange grant) included: refusals add up to
// what the endpoints answered 4xx.
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
	anon := e.rawClient(nil, nil)
	for _, r := range []struct{ path, body string }{
		{"/v1/nodes/join", `{"token": ["x"], "csr": "y"}`},
		{"/v1/nodes/attest/tpm/challenge", `{"ek_public": "not base64!", "ak_public": "AAAA"}`},
		{"/v1/nodes/attest/tpm/challenge", `{"ek_public": "AAAA"`},
		{"/v1/nodes/attest/tpm/verify", `{"session_id": 5}`},
	} {
		resp, err := anon.Post(e.url+r.path, "application/json", strings.NewReader(r.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("POST %s %q: %d, want 400", r.path, r.body, resp.StatusCode)
		}
	}
	after := e.metricsOf("mandate_")
	for name, want := range map[string]float64{
		`mandate_delegations_total{outcome="refused"}`:                           4,
		`mandate_node_attestations_total{method="join_token",outcome="refused"}`: 1,
		`mandate_node_attestations_total{method="tpm",outcome="refused"}`:        3,
	} {
		if got := after[name] - before[name]; got != want {
			t.Errorf("%s went up by %v, want %v", name, got, want)
		}
	}
}

// A policy that cannot decide shows on /metrics as such, not as an
// answer: a Data API evaluation error (OPA's 500) and an AuthZEN
// evaluation the policy could not decide (answered decision false) are
// counted with outcome "error".
func TestMetricsCountUndecidedPolicyDecisions(t *testing.T) {
	pe := startPolicy(t, func(c *authority.Config) { c.Policy.AuthZENPath = "authz/not_a_decision" })
	gw := pe.client(pe.gateway.chain, pe.gateway.key)
	before := pe.metricsOf("mandate_policy_decisions_total")
	if status, ans := do(t, gw, "POST", "/v1/data/authz/conflict", "application/json", []byte(`{"input": {"conflict": true}}`)); status != 500 {
		t.Fatalf("a conflict: %d %v, want 500", status, ans)
	}
	if status, ans := do(t, gw, "POST", "/v1/data/authz/slow", "application/json", []byte(`{"input": {"slow": true}}`)); status != 500 {
		t.Fatalf("a timeout: %d %v, want 500", status, ans)
	}
	status, ans := do(t, gw, "POST", "/access/v1/evaluation", "application/json",
		[]byte(`{"subject": {"type": "agent", "id": "x"}, "action": {"name": "a"}, "resource": {"type": "r", "id": "1"}}`))
	if status != 200 || ans["decision"] != false {
		t.Fatalf("AuthZEN on a document that is not a decision: %d %v, want decision false", status, ans)
	}
	after := pe.metricsOf("mandate_policy_decisions_total")
	for name, want := range map[string]float64{
		`mandate_policy_decisions_total{api="data",outcome="error"}`:    2,
		`mandate_policy_decisions_total{api="authzen",outcome="error"}`: 1,
		`mandate_policy_decisions_total{api="authzen",outcome="false"}`: 0,
		`mandate_policy_decisions_total{api="data",outcome="false"}`:    0,
	} {
		if got := after[name] - before[name]; got != want {
			t.Errorf("%s went up by %v, want %v", name, got, want)
		}
	}
}

// A TPM attestation the server fails to answer (5xx: here its store is
// closed) is counted as an error, not as a refusal of the device.
func TestMetricsCountTPMServerFaultsAsErrors(t *testing.T) {
	te := startTPM(t, 1, tpmSetup{allowlist: true})
	body := `{"ek_public": "` + b64s(te.dev.EKPublic()) + `", "ak_public": "` + b64s(te.dev.AKPublic()) + `"}`
	h := te.srv.Handler()
	te.stop()
	req := httptest.NewRequest(http.MethodPost, "/v1/nodes/attest/tpm/challenge", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code < 500 {
		t.Fatalf("a TPM challenge with the store closed: %d %s, want 5xx", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{
		`mandate_node_attestations_total{method="tpm",outcome="error"} 1`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(rec.Body.String(), `mandate_node_attestations_total{method="tpm",outcome="refused"}`) {
		t.Errorf("/metrics counts the server's fault as a refusal")
	}
}
