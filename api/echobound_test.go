package api_test

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestRefusalsRepeatABoundedPartOfTheRequest sends requests whose
// refusal repeats part of them (a member's name or pointer, a number, a
// Content-Type, a method, a path) at a length only the request limits
// bound: the detail repeats the first bytes of it, enough to tell which,
// followed by "…", not the whole of it.
func TestRefusalsRepeatABoundedPartOfTheRequest(t *testing.T) {
	e := start(t, "org-a.example")
	anon := e.client(nil, nil)
	long := strings.Repeat("a", 30000)
	digits := strings.Repeat("9", 30000)
	header := long[:10000] // within the 16 KiB of a request's headers
	tests := []struct {
		name                      string
		method, path, contentType string
		body                      string
		status                    int
		typ                       string
		want                      string // the start of what is repeated
	}{
		{"an unknown member", "POST", "/v1/nodes/join", "application/json", `{"` + long + `":1}`, 400, "unknown-field", `"aaaa`},
		{"a member given twice", "POST", "/v1/nodes/attest/tpm/verify", "application/json", `{"pcrs":{"sha256":{"` + long + `":"0","` + long + `":"1"}}}`, 400, "malformed-json", `member "/pcrs/sha256/aaaa`},
		{"a member of a map", "POST", "/v1/nodes/attest/tpm/verify", "application/json", `{"pcrs":{"sha256":{"` + long + `":0}}}`, 400, "malformed-json", `member "/pcrs/sha256/aaaa`},
		{"a number out of range", "POST", "/v1/admin/join-tokens", "application/json", `{"ttl_seconds":` + digits + `}`, 400, "malformed-json", "the number 9999"},
		{"a Content-Type", "POST", "/v1/nodes/join", "application/" + header, `{}`, 415, "unsupported-media-type", `"application/aaaa`},
		{"a charset", "POST", "/v1/nodes/join", "application/json; charset=" + header, `{}`, 415, "unsupported-media-type", `charset "aaaa`},
		{"a path", "GET", "/" + header, "", "", 404, "not-found", "GET /aaaa"},
		{"a path of two-byte characters", "GET", "/" + strings.Repeat("é", 2000), "", "", 404, "not-found", "GET /éé"},
		{"a method", strings.ToUpper(header), "/healthz", "", "", 405, "method-not-allowed", "method AAAA"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := anon
			if tc.path == "/v1/admin/join-tokens" {
				c = e.admin
			}
			status, ans := do(t, c, tc.method, tc.path, tc.contentType, []byte(tc.body))
			detail, _ := ans["detail"].(string)
			if status != tc.status || ans["type"] != "https://mandate.dev/problems/"+tc.typ {
				t.Fatalf("answer %d %.300v, want %d %s", status, ans, tc.status, tc.typ)
			}
			if !strings.Contains(detail, tc.want) || !strings.Contains(detail, "…") || len(detail) > 1024 || strings.ContainsRune(detail, utf8.RuneError) {
				t.Errorf("detail of %d bytes %.300q…: want it to repeat %q and at most a few hundred bytes of the request, then … (no character cut in two)", len(detail), detail, tc.want)
			}
		})
	}
}
