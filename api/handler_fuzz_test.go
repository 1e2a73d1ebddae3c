package api_test

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzAPIRequests sends arbitrary bodies to every endpoint that decodes a
// body, as a node (client certificate), as an admin and without one, and
// requires a clean answer: never a 5xx, never a panic, and every error a
// problem+json document.
func FuzzAPIRequests(f *testing.F) {
	e := start(f, "org-a.example")
	node := e.joinNode()
	agentID := e.registerAgent("hello", node.id)
	adminChain := e.adminChain()
	h := e.srv.Handler()
	routes := []string{"/v1/nodes/join", "/v1/svid/x509", "/v1/svid/jwt", "/v1/admin/join-tokens", "/v1/admin/agents", "/v1/admin/federations",
		"/v1/nodes/attest/tpm/challenge", "/v1/nodes/attest/tpm/verify",
		"/v1/data/mandate/issuance/decision", "/v1/data", "/access/v1/evaluation", "/access/v1/evaluations", "/v1/admin/policy/reload",
		"/v1/delegations", "/v1/admin/revocations"}
	seeds := []string{
		`{}`, `{"token":"x","csr":"y"}`, `{"spiffe_id":"` + agentID + `","csr":"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"}`,
		`{"audience":["a"],"spiffe_id":"` + agentID + `"}`, `{"ttl_seconds":1e300}`, `{"spiffe_id":"spiffe://org-a.example/agent/x","node_ids":["spiffe://org-a.example/node/join/1"],"x509_ttl_seconds":-5}`,
		`{"trust_domain":"org-b.example","bundle_endpoint_url":"https://127.0.0.1:1/","bundle":{"keys":[{"kty":"EC"}]}}`,
		`{"ek_public":"AAE=","ak_public":"AAE=","ek_cert":"MAA="}`,
		`{"session_id":"00","secret":"AA==","quote":"/1RDR4AY","signature":"ABg=","pcrs":{"sha256":{"0":"00"}},"csr":""}`,
		`{"input": {"agent": {"spiffe_id": "x"}, "node": {"banned": true}}}`, `{"input": null}`, "{\"input\": \"\xff\"}",
		`{"subject": {"type": "agent", "id": "x"}, "action": {"name": "a"}, "resource": {"type": "r", "id": "1"}}`,
		`{"subject": {"type": "agent", "id": "x"}, "evaluations": [{"action": {"name": "a"}, "resource": {}}]}`,
		`{"delegatee": "spiffe://org-a.example/agent/x", "scopes": ["a"], "principal": "p", "delegator_signature": "a.b.c"}`,
		`{"delegatee": "spiffe://org-a.example/agent/x", "scopes": ["a"], "parent_token": "eyJhbGciOiJub25lIn0.e30.", "delegator_signature": "x"}`,
		`{"delegation_id": "x", "reason": "r"}`, `{"spiffe_id": "spiffe://org-a.example/agent/x", "reason": "r"}`,
		`[`, `null`, `"x"`, `{"a":`, "\x00", strings.Repeat("[", 10000),
	}
	for i, s := range seeds {
		for who := range 3 {
			f.Add(uint8(i), uint8(who), s)
		}
	}
	f.Fuzz(func(t *testing.T, route, who uint8, body string) {
		path := routes[int(route)%len(routes)]
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		switch who % 3 {
		case 1:
			req.TLS = &tls.ConnectionState{PeerCertificates: node.chain}
		case 2:
			req.TLS = &tls.ConnectionState{PeerCertificates: adminChain}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("POST %s (%d bytes) as %d = %d: %s", path, len(body), who%3, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && strings.HasPrefix(path, "/v1/data") {
			// The Data API answers errors as OPA does: {"code", "message"}.
			var e struct{ Code, Message string }
			if json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Code == "" || e.Message == "" {
				t.Fatalf("POST %s = %d: %s, want OPA's error shape", path, rec.Code, rec.Body)
			}
		} else if rec.Code >= 400 {
			var p struct{ Type string }
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" || json.Unmarshal(rec.Body.Bytes(), &p) != nil || p.Type == "" {
				t.Fatalf("POST %s = %d with %q: %s, want a problem document", path, rec.Code, ct, rec.Body)
			}
		}
	})
}

// FuzzAuditReads sends arbitrary paths and queries to the audit read
// endpoints as an admin and requires a clean answer: never a 5xx.
func FuzzAuditReads(f *testing.F) {
	e := start(f, "org-a.example")
	e.joinNode()
	adminChain := e.adminChain()
	h := e.srv.Handler()
	for _, s := range []string{"entries/0", "entries/1?tree_size=2", "entries/18446744073709551615?tree_size=18446744073709551615",
		"proofs/consistency?from=0&to=1", "proofs/consistency?from=2&to=1", "proofs/consistency?from=-1&to=x", "checkpoint",
		"entries/%00", "proofs/consistency?from=1&from=2&to=3", "entries/1?tree_size=0",
		"search?type=svid.issued&limit=3", "search?spiffe_id=spiffe://org-a.example/agent/x&since=2026-01-01T00:00:00Z&until=2025-01-01T00:00:00Z",
		"search?limit=-1", "search?page_token=18446744073709551615", "search?decision_id=%ff%fe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tail string) {
		req, err := http.NewRequest(http.MethodGet, "https://mandate/v1/audit/"+tail, nil)
		if err != nil {
			return // not a URL a client could send
		}
		req.TLS = &tls.ConnectionState{PeerCertificates: adminChain}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("GET /v1/audit/%s = %d: %s", tail, rec.Code, rec.Body)
		}
	})
}
