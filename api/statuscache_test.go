package api_test

import (
	"net/http"
	"testing"
)

// A delegation's status is never stored by a cache between the
// authority and a verifier (a reverse proxy, a CDN in front of the
// public endpoint): an "active" kept there would outlive a revocation,
// and a "not found" or "unavailable" would outlive the hop's issuance or
// the peer's return.
func TestDelegationStatusIsNotCached(t *testing.T) {
	e := start(t, "org-a.example")
	_, hop := e.rootHop()
	hc := e.rawClient(nil, nil)
	get := func(id string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, e.url+"/v1/delegations/"+id+"/status", nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	check := func(what, id string, code int) {
		t.Helper()
		resp := get(id)
		if resp.StatusCode != code || resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("status of %s: %d, Cache-Control %q; want %d, no-store", what, resp.StatusCode, resp.Header.Get("Cache-Control"), code)
		}
	}
	check("an active hop", hop, http.StatusOK)
	check("an unknown hop", "0123456789abcdef0123456789abcdef", http.StatusNotFound)
	if err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"delegation_id": hop, "reason": "done"}, nil); err != nil {
		t.Fatal(err)
	}
	check("a revoked hop", hop, http.StatusOK)
}
