package api_test

import (
	"regexp"
	"strings"
	"testing"

	"mandate.dev/mandate/client"
)

// goWords are what a detail written in Go's terms says: the Go types a
// body is read into, which a client of the JSON API cannot know.
var goWords = regexp.MustCompile(`Go struct|Go value|Go \[\]|Go map|\bu?int(8|16|32|64)?\b|float(32|64)|\[\]string|map\[|time\.Time|\b(api|authority|registry|delegation)\.`)

// TestWrongTypedMembersAreSaidInJSONTerms sends bodies whose members
// have the wrong JSON type, or that are not well formed, to the
// endpoints that read a JSON body, and checks that the refusal says
// which member was wrong, and how, in JSON's words (not Go's), and
// where in the body a syntax error is.
func TestWrongTypedMembersAreSaidInJSONTerms(t *testing.T) {
	e := start(t, "org-a.example")
	node := e.joinNode()
	alice := e.agentWithScopes("alice", "calendar:read")
	nodeC, aliceC, anon := e.client(node.chain, node.key), e.client(alice.chain, alice.key), e.client(nil, nil)

	tests := []struct {
		name         string
		c            *client.Client
		method, path string
		body         string
		want         []string // all in the detail
	}{
		{"join token ttl a string", e.admin, "POST", "/v1/admin/join-tokens", `{"ttl_seconds":"5"}`,
			[]string{`member "/ttl_seconds"`, "JSON string", "integer"}},
		{"join token ttl a fraction", e.admin, "POST", "/v1/admin/join-tokens", `{"ttl_seconds":1.5}`,
			[]string{`member "/ttl_seconds"`, "1.5", "integer"}},
		{"join token ttl too large", e.admin, "POST", "/v1/admin/join-tokens", `{"ttl_seconds":1e30}`,
			[]string{`member "/ttl_seconds"`, "1e30", "integer"}},
		{"join token ttl out of range", e.admin, "POST", "/v1/admin/join-tokens", `{"ttl_seconds":99999999999999999999}`,
			[]string{`member "/ttl_seconds"`, "99999999999999999999", "out of range"}},
		{"join token a string", anon, "POST", "/v1/nodes/join", `{"token":5,"csr":"x"}`,
			[]string{`member "/token"`, "JSON number", "string"}},
		{"agent scopes a string", e.admin, "POST", "/v1/admin/agents", `{"spiffe_id":"spiffe://org-a.example/agent/x","scopes":"a"}`,
			[]string{`member "/scopes"`, "JSON string", "array"}},
		{"agent scope a number", e.admin, "POST", "/v1/admin/agents", `{"spiffe_id":"spiffe://org-a.example/agent/x","scopes":["a",7]}`,
			[]string{`member "/scopes/1"`, "JSON number", "string"}},
		{"agent accountability member", e.admin, "POST", "/v1/admin/agents", `{"spiffe_id":"spiffe://org-a.example/agent/x","accountability":{"operator":true}}`,
			[]string{`member "/accountability/operator"`, "JSON boolean", "string"}},
		{"agent hardware flag a string", e.admin, "POST", "/v1/admin/agents", `{"spiffe_id":"spiffe://org-a.example/agent/x","require_hardware_attestation":"yes"}`,
			[]string{`member "/require_hardware_attestation"`, "JSON string", "true or false"}},
		{"agent created_at not a time", e.admin, "POST", "/v1/admin/agents", `{"spiffe_id":"spiffe://org-a.example/agent/x","created_at":"yesterday"}`,
			[]string{`member "/created_at"`, "RFC 3339"}},
		{"agent ttl an object", e.admin, "PUT", "/v1/admin/agents/x", `{"spiffe_id":"spiffe://org-a.example/agent/x","x509_ttl_seconds":{}}`,
			[]string{`member "/x509_ttl_seconds"`, "JSON object", "integer"}},
		{"federation trust domain a list", e.admin, "POST", "/v1/admin/federations", `{"trust_domain":["org-b.example"]}`,
			[]string{`member "/trust_domain"`, "JSON array", "string"}},
		{"revocation reason a number", e.admin, "POST", "/v1/admin/revocations", `{"spiffe_id":"x","reason":1}`,
			[]string{`member "/reason"`, "JSON number", "string"}},
		{"ban reason an object", e.admin, "POST", "/v1/admin/nodes/x/ban", `{"reason":{}}`,
			[]string{`member "/reason"`, "JSON object", "string"}},
		{"renewal id a number", nodeC, "POST", "/v1/svid/x509", `{"spiffe_id":5,"csr":"x"}`,
			[]string{`member "/spiffe_id"`, "JSON number", "string"}},
		{"jwt audience a string", aliceC, "POST", "/v1/svid/jwt", `{"audience":"x"}`,
			[]string{`member "/audience"`, "JSON string", "array"}},
		{"delegation ttl negative fraction", aliceC, "POST", "/v1/delegations", `{"delegatee":"x","ttl_seconds":-0.5}`,
			[]string{`member "/ttl_seconds"`, "-0.5", "integer"}},
		{"delegation scopes an object", aliceC, "POST", "/v1/delegations", `{"delegatee":"x","scopes":{"a":1}}`,
			[]string{`member "/scopes"`, "JSON object", "array"}},
		{"tpm challenge ek a number", anon, "POST", "/v1/nodes/attest/tpm/challenge", `{"ek_public":1}`,
			[]string{`member "/ek_public"`, "JSON number", "string"}},
		{"tpm verify pcrs a list", anon, "POST", "/v1/nodes/attest/tpm/verify", `{"pcrs":{"sha256":{"0":0}}}`,
			[]string{`member "/pcrs/sha256/0"`, "JSON number", "string"}},
		{"authzen evaluations a number", e.admin, "POST", "/access/v1/evaluations", `{"evaluations":5}`,
			[]string{`member "/evaluations"`, "JSON number", "array"}},
		{"authzen evaluation a string", e.admin, "POST", "/access/v1/evaluations", `{"evaluations":[{},"x"]}`,
			[]string{`member "/evaluations/1"`, "JSON string", "object"}},
		{"authzen evaluation null a member", e.admin, "POST", "/access/v1/evaluations", `{"evaluations":[true]}`,
			[]string{`member "/evaluations/0"`, "JSON boolean", "object"}},

		// Not well formed: where, in bytes from the body's start.
		{"syntax error", e.admin, "POST", "/v1/admin/join-tokens", `{"ttl_seconds":tru}`,
			[]string{"byte offset 18", `"/ttl_seconds"`}},
		{"trailing data after blanks", e.admin, "POST", "/v1/admin/join-tokens", "\n  {\"ttl_seconds\":5} {}",
			[]string{"byte offset 21"}},
		{"body cut short", e.admin, "POST", "/v1/admin/agents", `{"spiffe_id":`,
			[]string{"byte offset 13"}},
		{"name given twice", e.admin, "POST", "/v1/admin/revocations", `{"reason":"a","reason":"b"}`,
			[]string{`member "/reason"`, "twice", "byte offset 14"}},
		{"authzen syntax error", e.admin, "POST", "/access/v1/evaluations", ` {"evaluations":[}`,
			[]string{"byte offset 17"}},
		{"authzen name given twice", e.admin, "POST", "/access/v1/evaluation", `{"subject":{},"subject":{}}`,
			[]string{`member "/subject"`, "twice", "byte offset 14"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, ans := do(t, tc.c, tc.method, tc.path, "application/json", []byte(tc.body))
			detail, _ := ans["detail"].(string)
			if status != 400 || ans["type"] != "https://mandate.dev/problems/malformed-json" {
				t.Fatalf("answer %d %v, want 400 malformed-json", status, ans)
			}
			if goWords.MatchString(detail) || goPrefix.MatchString(detail) {
				t.Errorf("detail %q speaks of Go's types (%q)", detail, goWords.FindString(detail))
			}
			for _, w := range tc.want {
				if !strings.Contains(detail, w) {
					t.Errorf("detail %q does not say %q", detail, w)
				}
			}
		})
	}
}
