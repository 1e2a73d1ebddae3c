package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"mandate.dev/mandate/api"
)

// TestBodyIsUTF8: a JSON body is UTF-8 (RFC 8259 §8.1). One that says
// it is in another charset is refused (415), and one that is not valid
// UTF-8 is malformed (400), not read with its bytes replaced by U+FFFD.
func TestBodyIsUTF8(t *testing.T) {
	e := start(t, "org-a.example")
	admin := e.adminRaw()
	for _, tc := range []struct {
		name, path, ctype, body string
		status                  int
		typ                     string
	}{
		{"charset utf-8", "/v1/admin/join-tokens", "application/json; charset=utf-8", `{"ttl_seconds":60}`, 201, ""},
		{"charset UTF-8 quoted", "/v1/admin/join-tokens", `application/json; charset="UTF-8"`, `{"ttl_seconds":60}`, 201, ""},
		{"charset utf8, as often spelt", "/v1/admin/join-tokens", "application/json; charset=utf8", `{"ttl_seconds":60}`, 201, ""},
		{"charset latin1", "/v1/admin/join-tokens", "application/json; charset=iso-8859-1", `{"ttl_seconds":60}`, 415, "unsupported-media-type"},
		{"charset utf-16", "/v1/admin/join-tokens", "application/json; charset=utf-16", `{"ttl_seconds":60}`, 415, "unsupported-media-type"},
		{"invalid UTF-8 in a value", "/v1/admin/federations", "application/json",
			"{\"trust_domain\":\"peer.example\",\"bundle_endpoint_url\":\"https://peer.example/caf\xe9\",\"profile\":\"https_web\"}", 400, "malformed-json"},
		{"invalid UTF-8 in a name", "/v1/admin/join-tokens", "application/json", "{\"ttl_seconds\":60,\"x\xff\":1}", 400, "malformed-json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctxT(t), http.MethodPost, e.url+tc.path, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.ctype)
			resp, err := admin.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if status, typ := problemOfAnswer(t, resp); status != tc.status || typ != tc.typ {
				t.Fatalf("answer %d %q, want %d %q", status, typ, tc.status, tc.typ)
			}
		})
	}
}

// problemOfAnswer reads resp (and closes its body): its status, and the
// name of its problem type ("" for an answer that is no problem).
func problemOfAnswer(t *testing.T, resp *http.Response) (status int, typ string) {
	t.Helper()
	defer resp.Body.Close()
	var p struct{ Type string }
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, strings.TrimPrefix(p.Type, api.ProblemBase)
}
