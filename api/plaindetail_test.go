package api_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"mandate.dev/mandate/client"
)

// goPrefix matches a Go package's name where a clause of an error's
// text begins ("federation: …", "…: x509: …"): the code's words, which
// a refusal's detail leaves out.
var goPrefix = regexp.MustCompile(`(^|: |; )(api|attest|audit|authority|ca|credfile|delegation|federation|policy|registry|store|bolt|store/bolt|` +
	`asn1|x509|pem|json|jsontext|go-jose/go-jose|jose|spiffeid|spiffebundle|x509bundle|jwtbundle|x509svid|jwtsvid|tpm2): `)

// TestRefusalDetailsArePlainText sends requests a user can get wrong
// (federation bundles, registrations, CSRs, join tokens, delegations,
// policy decisions, token exchanges) and checks that no refusal's detail
// speaks of the Go package that refused it, while still saying what
// was wrong.
func TestRefusalDetailsArePlainText(t *testing.T) {
	e := start(t, "org-a.example")
	node := e.joinNode()
	alice := e.agentWithScopes("alice", "calendar:read")
	bob := e.agentWithScopes("bob", "calendar:read")
	nodeC, aliceC, anon := e.client(node.chain, node.key), e.client(alice.chain, alice.key), e.client(nil, nil)

	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := csrPEM(t, p256, &x509.CertificateRequest{})
	blk, _ := pem.Decode([]byte(good))
	der := append([]byte(nil), blk.Bytes...)
	der[len(der)-2] ^= 0xff // inside the signature
	garbled := string(pem.EncodeToMemory(&pem.Block{Type: blk.Type, Bytes: der}))
	truncated := string(pem.EncodeToMemory(&pem.Block{Type: blk.Type, Bytes: blk.Bytes[:20]}))
	tok, err := e.admin.CreateJoinToken(ctxT(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	join := func(csr string) string { return mustJSON(t, map[string]string{"token": tok.Token, "csr": csr}) }
	renew := func(csr string) string {
		return mustJSON(t, map[string]string{"spiffe_id": alice.id.String(), "csr": csr})
	}
	fed := func(extra string) string {
		return `{"trust_domain":"org-b.example","bundle_endpoint_url":"https://127.0.0.1:1/v1/bundle"` + extra + `}`
	}
	delegate := func(extra string) string {
		return `{"delegatee":"` + bob.id.String() + `","scopes":["calendar:read"]` + extra + `}`
	}

	tests := []struct {
		name         string
		c            *client.Client
		method, path string
		body         string
		problem      string
		want         string // a word of what went wrong, kept
	}{
		{"bundle without keys", e.admin, "POST", "/v1/admin/federations", fed(`,"bundle":{"keys":[]}`), "invalid-federation", "no authorities"},
		{"bundle without a keys member", e.admin, "POST", "/v1/admin/federations", fed(`,"bundle":{}`), "invalid-federation", "no keys member"},
		{"bundle not an object", e.admin, "POST", "/v1/admin/federations", fed(`,"bundle":5`), "invalid-federation", "JSON number"},
		{"bundle sequence not a number", e.admin, "POST", "/v1/admin/federations", fed(`,"bundle":{"keys":[],"spiffe_sequence":"1"}`), "invalid-federation", "spiffe_sequence"},
		{"bundle of an unreadable key", e.admin, "POST", "/v1/admin/federations", fed(`,"bundle":{"keys":[{"kty":"EC","use":"jwt-svid","crv":"P-256","x":"AA","y":"AA"}]}`), "invalid-federation", "wrong length"},
		{"bundle key without its certificate", e.admin, "POST", "/v1/admin/federations", fed(`,"bundle":{"keys":[{"kty":"EC","use":"x509-svid"}]}`), "invalid-federation", "unsupported key type"},
		{"http endpoint", e.admin, "POST", "/v1/admin/federations", `{"trust_domain":"org-b.example","bundle_endpoint_url":"http://127.0.0.1:1/v1/bundle"}`, "invalid-federation", "https scheme"},
		{"no endpoint", e.admin, "POST", "/v1/admin/federations", `{"trust_domain":"org-b.example","bundle_endpoint_url":""}`, "invalid-federation", "is empty"},
		{"endpoint with user info", e.admin, "POST", "/v1/admin/federations", `{"trust_domain":"org-b.example","bundle_endpoint_url":"https://u:p@127.0.0.1:1/v1/bundle"}`, "invalid-federation", "user info"},
		{"endpoint not a url", e.admin, "POST", "/v1/admin/federations", `{"trust_domain":"org-b.example","bundle_endpoint_url":"https://%zz/v1/bundle"}`, "invalid-federation", "escape"},
		{"unknown profile", e.admin, "POST", "/v1/admin/federations", fed(`,"profile":"ftp"`), "invalid-federation", `"ftp"`},
		{"https_web with an endpoint id", e.admin, "POST", "/v1/admin/federations", fed(`,"profile":"https_web","endpoint_spiffe_id":"spiffe://org-b.example/x"`), "invalid-federation", "only used with profile"},
		{"https_spiffe without a bundle", e.admin, "POST", "/v1/admin/federations", fed(``), "invalid-federation", "needs an initial bundle"},
		{"bad trust domain", e.admin, "POST", "/v1/admin/federations", `{"trust_domain":"Org B!","bundle_endpoint_url":"https://127.0.0.1:1/v1/bundle"}`, "invalid-federation", "trust domain characters"},
		{"agent id not a spiffe id", e.admin, "POST", "/v1/admin/agents", `{"spiffe_id":"x"}`, "invalid-registration", "scheme"},
		{"agent on a non-node", e.admin, "POST", "/v1/admin/agents", `{"spiffe_id":"spiffe://org-a.example/agent/x","node_ids":["spiffe://org-a.example/agent/y"]}`, "invalid-registration", "is not a node"},
		{"agent scope with a space", e.admin, "POST", "/v1/admin/agents", `{"spiffe_id":"spiffe://org-a.example/agent/x","scopes":["a b"]}`, "invalid-registration", "without spaces"},
		{"join token ttl", e.admin, "POST", "/v1/admin/join-tokens", `{"ttl_seconds":-1}`, "invalid-ttl", "ttl_seconds"},
		{"unknown join token", anon, "POST", "/v1/nodes/join", mustJSON(t, map[string]string{"token": "nope", "csr": good}), "join-token-unknown", "join token"},
		{"withdraw a malformed token id", e.admin, "DELETE", "/v1/admin/join-tokens/nope", "", "not-found", "16 lowercase hex"},
		{"join csr truncated", anon, "POST", "/v1/nodes/join", join(truncated), "invalid-csr", "truncated"},
		{"join csr signature", anon, "POST", "/v1/nodes/join", join(garbled), "invalid-csr", "verification failure"},
		{"renewal csr truncated", nodeC, "POST", "/v1/svid/x509", renew(truncated), "invalid-csr", "truncated"},
		{"renewal csr signature", nodeC, "POST", "/v1/svid/x509", renew(garbled), "invalid-csr", "verification failure"},
		{"delegatee not a spiffe id", aliceC, "POST", "/v1/delegations", `{"delegatee":"x","scopes":["calendar:read"],"principal":"p"}`, "invalid-request", "scheme"},
		{"delegation without signature", aliceC, "POST", "/v1/delegations", delegate(`,"principal":"p"`), "invalid-request", "delegator_signature"},
		{"delegation signature not a JWS", aliceC, "POST", "/v1/delegations", delegate(`,"principal":"p","delegator_signature":"x"`), "delegator-signature-invalid", "JWS"},
		{"delegatee certificate not PEM", aliceC, "POST", "/v1/delegations", delegate(`,"principal":"p","delegatee_x509_svid":"x"`), "invalid-request", "PEM"},
		{"authzen evaluation not an object", e.admin, "POST", "/access/v1/evaluations", `{"evaluations":[{"subject":5}]}`, "invalid-request", "subject must be an object"},
		{"authzen evaluations not a list", e.admin, "POST", "/access/v1/evaluations", `{"evaluations":5}`, "malformed-json", "JSON number"},
		{"revocation of a non-id", e.admin, "POST", "/v1/admin/revocations", `{"spiffe_id":"x","reason":"x"}`, "invalid-request", "scheme"},
		{"revocation naming a hop and an id", e.admin, "POST", "/v1/admin/revocations", `{"delegation_id":"x","spiffe_id":"spiffe://org-a.example/agent/x","reason":"x"}`, "invalid-request", "not both"},
		{"revocation of a hop not issued here", e.admin, "POST", "/v1/admin/revocations", `{"delegation_id":"nope","reason":"x"}`, "not-found", "revoke it at the authority that issued it"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, ans := do(t, tc.c, tc.method, tc.path, "application/json", []byte(tc.body))
			detail, _ := ans["detail"].(string)
			if status < 400 || ans["type"] != "https://mandate.dev/problems/"+tc.problem {
				t.Fatalf("answer %d %v, want problem %s", status, ans, tc.problem)
			}
			if goPrefix.MatchString(detail) || !strings.Contains(detail, tc.want) {
				t.Errorf("detail %q: want plain text (no Go package's name) saying %q", detail, tc.want)
			}
		})
	}

	// A token exchange's refusal is OAuth's error_description: plain
	// text too.
	for _, form := range []url.Values{
		{"subject_token": {"x.y.z"}, "audience": {e.td.IDString()}},
		{"subject_token": {"x.y.z"}, "audience": {bob.id.String()}},
	} {
		form.Set("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange")
		form.Set("subject_token_type", "urn:ietf:params:oauth:token-type:jwt")
		form.Set("scope", "calendar:read")
		status, ans := e.exchange(&alice, form)
		desc, _ := ans["error_description"].(string)
		if status != 400 || desc == "" || goPrefix.MatchString(desc) {
			t.Errorf("exchange %v: %d %v; want 400 with plain text error_description", form, status, ans)
		}
	}
}
