package api_test

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"mandate.dev/mandate/delegation"
)

// FuzzDelegationRequests sends arbitrary requests to the delegation
// endpoints as a registered agent: token exchange forms, delegation
// bodies and status ids. Never a 5xx, never a panic; token exchange
// errors are RFC 6749 errors, the others problem documents.
func FuzzDelegationRequests(f *testing.F) {
	e := start(f, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	sig, err := delegation.SignStatement(delegation.Statement{Delegator: a.id.String(), Delegatee: b.id.String(), Principal: "alice", Scopes: []string{"calendar:read"}}, a.key, a.chain)
	if err != nil {
		f.Fatal(err)
	}
	h := e.srv.Handler()
	good := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {"alice"},
		"subject_token_type": {"urn:mandate:params:oauth:token-type:principal"}, "audience": {b.id.String()}, "scope": {"calendar:read"},
		"delegator_signature": {sig}}.Encode()
	for _, s := range []string{good, "", "grant_type=x", "a=%zz", strings.Repeat("scope=a&", 300), "subject_token_type=urn:ietf:params:oauth:token-type:jwt&subject_token=a.b.c",
		"client_id=" + url.QueryEscape(b.id.String()) + "&" + good} {
		f.Add(uint8(0), s)
	}
	body, _ := json.Marshal(map[string]any{"delegatee": b.id.String(), "scopes": []string{"calendar:read"}, "principal": "alice", "delegator_signature": sig})
	for _, s := range []string{string(body), `{"delegatee": "spiffe://org-a.example/agent/b", "scopes": ["calendar:read"], "principal": " spiffe://x", "delegator_signature": "a.b.c"}`,
		`{"parent_token": "` + strings.Repeat("A", 40000) + `"}`, `{`} {
		f.Add(uint8(1), s)
	}
	for _, s := range []string{"d1", "", "..", strings.Repeat("f", 200), "%00", "a/b"} {
		f.Add(uint8(2), s)
	}
	f.Fuzz(func(t *testing.T, kind uint8, in string) {
		var req *http.Request
		switch kind % 3 {
		case 0:
			req = httptest.NewRequest(http.MethodPost, "/v1/token", strings.NewReader(in))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		case 1:
			req = httptest.NewRequest(http.MethodPost, "/v1/delegations", strings.NewReader(in))
			req.Header.Set("Content-Type", "application/json")
		default:
			req = httptest.NewRequest(http.MethodGet, "/v1/delegations/"+url.PathEscape(in)+"/status", nil)
		}
		req.TLS = &tls.ConnectionState{PeerCertificates: a.chain}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s = %d: %s", req.Method, req.URL.Path, rec.Code, rec.Body)
		}
		if rec.Code < 400 {
			return
		}
		if kind%3 == 0 {
			var oe struct{ Error string }
			if json.Unmarshal(rec.Body.Bytes(), &oe) != nil || oe.Error == "" {
				t.Fatalf("token exchange = %d: %s, want an RFC 6749 error", rec.Code, rec.Body)
			}
			return
		}
		var p struct{ Type string }
		if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" || json.Unmarshal(rec.Body.Bytes(), &p) != nil || p.Type == "" {
			t.Fatalf("%s %s = %d with %q: %s, want a problem document", req.Method, req.URL.Path, rec.Code, ct, rec.Body)
		}
	})
}
