package api_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/client"
)

// FuzzAPIRequests sends arbitrary bodies to every endpoint that decodes a
// body, as a node (client certificate), as an admin, as an agent and
// without a certificate, and requires a clean answer: never a 5xx, never
// a panic, and every error a problem+json document. With fill set, the
// target puts in what only its own process can make: a new join token
// (POST /v1/nodes/join) or the agent's signature of the hop
// (POST /v1/delegations), so that a join and a delegation get past
// those checks in every worker too.
func FuzzAPIRequests(f *testing.F) {
	z := newAPIFuzz(f)
	for _, s := range z.seeds(f) {
		f.Add(s.route, s.who, s.fill, s.body)
	}
	f.Fuzz(func(t *testing.T, route, who uint8, fill bool, body string) {
		z.serve(t, route, who, fill, body)
	})
}

// apiFuzzRoutes are the paths FuzzAPIRequests posts to.
var apiFuzzRoutes = []string{"/v1/nodes/join", "/v1/svid/x509", "/v1/svid/jwt", "/v1/admin/join-tokens", "/v1/admin/agents", "/v1/admin/federations",
	"/v1/nodes/attest/tpm/challenge", "/v1/nodes/attest/tpm/verify",
	"/v1/data/mandate/issuance/decision", "/v1/data", "/access/v1/evaluation", "/access/v1/evaluations", "/v1/admin/policy/reload",
	"/v1/delegations", "/v1/admin/revocations", "/v1/nodes/sync",
	// A node the setup has not joined: the body is decoded and checked
	// before the node is looked for.
	"/v1/admin/nodes/spiffe:%2F%2Forg-a.example%2Fnode%2Fjoin%2F0000000000000000/evict"}

// FuzzAPIRequests's callers (who, modulo 4).
const (
	asNobody = iota
	asNode
	asAdmin
	asAgent
	callers
)

// apiFuzz is FuzzAPIRequests's setup: an authority, a node hosting the
// agent hello, an agent a with the scope calendar:read, and the admin.
type apiFuzz struct {
	e          *env
	node       identity
	agentID    string // hello's SPIFFE ID
	agent      identity
	adminChain []*x509.Certificate
	h          http.Handler
	joinToken  string // a join token not used yet, or ""
}

func newAPIFuzz(t testing.TB) *apiFuzz {
	e := start(t, "org-a.example", noRateLimit)
	node := e.joinNode()
	return &apiFuzz{e: e, node: node, agentID: e.registerAgent("hello", node.id), agent: e.agentWithScopes("a", "calendar:read"),
		adminChain: e.adminChain(), h: e.srv.Handler()}
}

// apiSeed is an input of FuzzAPIRequests.
type apiSeed struct {
	route, who uint8
	fill       bool
	body       string
	want       int // if not 0, the status it is answered with
}

// seeds are FuzzAPIRequests's seeds: each body for the route it is
// written for, from each caller. Those with a status to want are
// accepted requests, in any process with z's setup.
func (z *apiFuzz) seeds(t testing.TB) []apiSeed {
	route := func(path string) uint8 {
		i := slices.Index(apiFuzzRoutes, path)
		if i < 0 {
			t.Fatalf("no route %s", path)
		}
		return uint8(i)
	}
	// A CSR holds its own key: it is as good in another process.
	_, joinCSR, err := client.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := client.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	helloCSR, err := client.CSRFor(key, spiffeid.RequireFromString(z.agentID))
	if err != nil {
		t.Fatal(err)
	}
	// A bundle given as org-b's holding this authority's own CA, which
	// names org-a: not org-b's bundle, refused.
	otherTD := spiffebundle.New(spiffeid.RequireTrustDomainFromString("org-b.example"))
	otherTD.AddX509Authority(z.e.bundle[0])
	otherTDBundle, err := otherTD.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	type body struct {
		path string
		who  int
		fill bool
		want int
		body string
	}
	bodies := []body{
		{path: "/v1/nodes/join", body: `{"token":"x","csr":"y"}`},
		{path: "/v1/nodes/join", who: asNobody, fill: true, want: http.StatusOK, body: mustJSON(t, map[string]string{"token": "", "csr": string(joinCSR)})},
		{path: "/v1/svid/x509", body: `{"spiffe_id":"` + z.agentID + `","csr":"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"}`},
		{path: "/v1/svid/x509", who: asNode, want: http.StatusOK, body: mustJSON(t, map[string]string{"spiffe_id": z.agentID, "csr": string(helloCSR)})},
		{path: "/v1/svid/jwt", who: asNode, want: http.StatusOK, body: `{"audience":["a"],"spiffe_id":"` + z.agentID + `"}`},
		{path: "/v1/nodes/sync", who: asNode, want: http.StatusOK, body: `{"spiffe_ids":["` + z.agentID + `","spiffe://org-a.example/agent/x","spiffe://org-b.example/agent/y"]}`},
		{path: "/v1/nodes/sync", who: asNode, body: `{"spiffe_ids":["spiffe://org-a.example/agent/%zz"]}`},
		{path: apiFuzzRoutes[len(apiFuzzRoutes)-1], who: asAdmin, want: http.StatusNotFound, body: `{"reason":"retired","lift_ban":true}`},
		{path: apiFuzzRoutes[len(apiFuzzRoutes)-1], who: asAdmin, body: `{"reason":"\u202e","lift_ban":"yes"}`},
		{path: "/v1/admin/join-tokens", body: `{"ttl_seconds":1e300}`},
		{path: "/v1/admin/join-tokens", who: asAdmin, want: http.StatusCreated, body: `{"ttl_seconds":600}`},
		{path: "/v1/admin/agents", body: `{"spiffe_id":"spiffe://org-a.example/agent/x","node_ids":["spiffe://org-a.example/node/join/1"],"x509_ttl_seconds":-5}`},
		{path: "/v1/admin/agents", who: asAdmin, want: http.StatusCreated, body: `{"spiffe_id":"spiffe://org-a.example/agent/x","node_ids":["spiffe://org-a.example/node/join/1"],"scopes":["calendar:read"]}`},
		{path: "/v1/admin/federations", body: `{"trust_domain":"org-b.example","bundle_endpoint_url":"https://127.0.0.1:1/","bundle":{"keys":[{"kty":"EC"}]}}`},
		{path: "/v1/admin/federations", body: `{"trust_domain":"org-b.example","bundle_endpoint_url":"https://127.0.0.1:1/","bundle":` + string(otherTDBundle) + `}`},
		{path: "/v1/nodes/attest/tpm/challenge", body: `{"ek_public":"AAE=","ak_public":"AAE=","ek_cert":"MAA="}`},
		{path: "/v1/nodes/attest/tpm/verify", body: `{"session_id":"00","secret":"AA==","quote":"/1RDR4AY","signature":"ABg=","pcrs":{"sha256":{"0":"00"}},"csr":""}`},
		{path: "/v1/data/mandate/issuance/decision", who: asAdmin, want: http.StatusOK, body: `{"input": {"agent": {"spiffe_id": "x"}, "node": {"banned": true}}}`},
		{path: "/v1/data", body: `{"input": null}`},
		{path: "/v1/data", body: "{\"input\": \"\xff\"}"},
		{path: "/access/v1/evaluation", body: `{"subject": {"type": "agent", "id": "x"}, "action": {"name": "a"}, "resource": {"type": "r", "id": "1"}}`},
		{path: "/access/v1/evaluations", body: `{"subject": {"type": "agent", "id": "x"}, "evaluations": [{"action": {"name": "a"}, "resource": {}}]}`},
		{path: "/access/v1/evaluations", body: `{"subject": {"type": "agent", "id": "x", "properties": null}, "evaluations": [{"action": {"name": "a", "properties": null, "n": 1e5}, "resource": {"type": "r", "id": "1"}}]}`},
		{path: "/v1/admin/policy/reload", body: `{}`},
		{path: "/v1/delegations", body: `{"delegatee": "spiffe://org-a.example/agent/x", "scopes": ["a"], "principal": "p", "delegator_signature": "a.b.c"}`},
		{path: "/v1/delegations", body: `{"delegatee": "spiffe://org-a.example/agent/x", "scopes": ["a"], "parent_token": "eyJhbGciOiJub25lIn0.e30.", "delegator_signature": "x"}`},
		{path: "/v1/delegations", who: asAgent, fill: true, want: http.StatusCreated,
			body: `{"delegatee": "` + z.agent.id.String() + `", "scopes": ["calendar:read"], "principal": "alice", "purpose": "p", "delegator_signature": ""}`},
		{path: "/v1/admin/revocations", body: `{"delegation_id": "x", "reason": "r"}`},
		{path: "/v1/admin/revocations", body: `{"spiffe_id": "spiffe://org-a.example/agent/x", "reason": "r"}`},
	}
	var seeds []apiSeed
	for _, b := range bodies {
		for who := range callers {
			s := apiSeed{route: route(b.path), who: uint8(who), fill: b.fill, body: b.body}
			if who == b.who {
				s.want = b.want
			}
			seeds = append(seeds, s)
		}
	}
	// Bodies no endpoint reads, each to one route.
	for i, b := range []string{`[`, `null`, `"x"`, `{"a":`, "\x00", strings.Repeat("[", 10000)} {
		for who := range callers {
			seeds = append(seeds, apiSeed{route: uint8((i*7 + 3) % len(apiFuzzRoutes)), who: uint8(who), body: b})
		}
	}
	return seeds
}

// unusedJoinToken is a join token of this authority not used yet, made
// through the API by the admin when there is none.
func (z *apiFuzz) unusedJoinToken(t testing.TB) string {
	t.Helper()
	if z.joinToken != "" {
		return z.joinToken
	}
	r := httptest.NewRequest(http.MethodPost, "/v1/admin/join-tokens", strings.NewReader(`{"ttl_seconds": 600}`))
	r.Header.Set("Content-Type", "application/json")
	r.TLS = &tls.ConnectionState{PeerCertificates: z.adminChain}
	rec := httptest.NewRecorder()
	z.h.ServeHTTP(rec, r)
	var ans struct{ Token string }
	if rec.Code != http.StatusCreated || json.Unmarshal(rec.Body.Bytes(), &ans) != nil || ans.Token == "" {
		t.Fatalf("POST /v1/admin/join-tokens = %d: %s", rec.Code, rec.Body)
	}
	z.joinToken = ans.Token
	return ans.Token
}

// serve posts body to a route of FuzzAPIRequests as who, with what only
// this process can make put in if fill is set, and checks the answer:
// never a 5xx, and an error is a problem document (OPA's error shape on
// the Data API).
func (z *apiFuzz) serve(t testing.TB, route, who uint8, fill bool, body string) *httptest.ResponseRecorder {
	t.Helper()
	path := apiFuzzRoutes[int(route)%len(apiFuzzRoutes)]
	if fill {
		switch path {
		case "/v1/nodes/join":
			body = withJoinToken(t, body, func() string { return z.unusedJoinToken(t) })
		case "/v1/delegations":
			body = z.e.signedDelegation(t, z.agent, body)
		}
	}
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	switch who % callers {
	case asNode:
		req.TLS = &tls.ConnectionState{PeerCertificates: z.node.chain}
	case asAdmin:
		req.TLS = &tls.ConnectionState{PeerCertificates: z.adminChain}
	case asAgent:
		req.TLS = &tls.ConnectionState{PeerCertificates: z.agent.chain}
	}
	rec := httptest.NewRecorder()
	z.h.ServeHTTP(rec, req)
	if fill && path == "/v1/nodes/join" && rec.Code != http.StatusBadRequest {
		// Used up, or refused for itself (expired): the next join gets
		// a new one. A body refused as malformed left it unused: it is
		// kept, so that mutations that never join cost no commit.
		z.joinToken = ""
	}
	if rec.Code >= 500 {
		t.Fatalf("POST %s (%d bytes) as %d = %d: %s", path, len(body), who%callers, rec.Code, rec.Body)
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
	return rec
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
		"search?limit=-1", "search?page_token=18446744073709551615", "search?decision_id=%ff%fe",
		"checkpoint/witnessed?cosignatures=99999999999999999999&witness=a", "checkpoint/witnessed?witness=x&witness=&cosignatures=2"} {
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
