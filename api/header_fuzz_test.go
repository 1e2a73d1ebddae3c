package api_test

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// headerFuzzRoutes are the requests FuzzRequestHeaders sends, each with
// a body it accepts or refuses for itself, not for a header.
var headerFuzzRoutes = []struct {
	method, path string
	who          int // asAdmin or asAgent
	contentType  string
}{
	{http.MethodPost, "/v1/token", asAgent, "application/x-www-form-urlencoded"},
	{http.MethodPost, "/v1/data/mandate/issuance/decision", asAdmin, "application/json"},
	{http.MethodGet, "/v1/audit/entries/0", asAdmin, ""},
	{http.MethodPost, "/access/v1/evaluation", asAdmin, "application/json"},
	{http.MethodPost, "/v1/admin/join-tokens", asAdmin, "application/json"},
}

// headerFuzzNames are the header fields FuzzRequestHeaders sets: those a
// handler or the middleware reads.
var headerFuzzNames = []string{"Authorization", "Content-Type", "Content-Encoding", "Accept-Encoding", "X-Request-Id"}

// oauthErrors are the error codes of RFC 6749 §5.2 and RFC 8693 §2.2.2.
var oauthErrors = []string{"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type", "invalid_scope", "invalid_target"}

// wwwAuthenticate is the challenge of a 401 at the token endpoint: a
// scheme (RFC 9110 token) and Mandate's parameters.
var wwwAuthenticate = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32} realm=\"mandate\", error=\"invalid_client\"$")

// FuzzRequestHeaders sends requests whose header fields a client (or
// whatever is between it and the server) wrote: Authorization and
// Content-Type at the token endpoint, Content-Encoding and Content-Type
// on the Data API, Accept-Encoding on the audit reads, X-Request-Id
// anywhere. Never a 5xx, never a panic; a refusal is in the endpoint's
// shape (an RFC 6749 error with a known code at the token endpoint, a
// 401 challenging with a well-formed scheme; OPA's on the Data API; a
// problem document elsewhere); and the answer's X-Request-Id is the
// request's when that is 1 to 256 printable ASCII characters, else one
// of the server's own.
func FuzzRequestHeaders(f *testing.F) {
	e := start(f, "org-a.example", noRateLimit)
	agent := e.agentWithScopes("a", "calendar:read")
	adminChain := e.adminChain()
	h := e.srv.Handler()
	b := e.agentWithScopes("b")
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {"alice"},
		"subject_token_type": {"urn:mandate:params:oauth:token-type:principal"}, "audience": {b.id.String()}, "scope": {"calendar:read"}}.Encode()
	bodies := []string{form, `{"input": {"agent": {"spiffe_id": "x"}}}`, "", `{"subject": {"type": "agent", "id": "x"}, "action": {"name": "a"}, "resource": {"type": "r", "id": "1"}}`, `{"ttl_seconds": 600}`}
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	for _, s := range []struct {
		route, name uint8
		value       string
	}{
		{0, 0, basic(url.QueryEscape(agent.id.String()), "")},
		{0, 0, basic(agent.id.String(), "x")},
		{0, 0, basic(b.id.String(), "")},
		{0, 0, "Basic %%%"},
		{0, 0, "Basic " + base64.StdEncoding.EncodeToString([]byte("no colon"))},
		{0, 0, "Bearer eyJhbGciOiJub25lIn0.e30."},
		{0, 0, "DPoP x"},
		{0, 0, "Bearer"},
		{0, 0, " Basic x"},
		{0, 0, "Ba\"sic x"},
		{0, 0, strings.Repeat("A", 40) + " x"},
		{0, 0, "\x7f x"},
		{0, 1, "application/x-www-form-urlencoded; charset=utf-8"},
		{0, 1, "application/json"},
		{0, 1, "application/x-www-form-urlencoded; ;"},
		{0, 1, ""},
		{0, 4, "abc-123"},
		{1, 2, "gzip"},
		{1, 2, "identity, gzip"},
		{1, 2, "gzip, gzip"},
		{1, 2, "br"},
		{1, 2, " , ,"},
		{1, 1, "application/yaml"},
		{1, 1, "text/x-yaml; charset=utf-8"},
		{1, 1, "application/json; charset=latin1"},
		{2, 3, "gzip"},
		{2, 3, "gzip;q=0"},
		{2, 3, "br, gzip;Q=0.5"},
		{2, 3, "gzip;q=NaN"},
		{2, 3, "gzip;q=x"},
		{2, 3, "*"},
		{3, 1, "application/json; charset=utf8"},
		{3, 1, "application/json; charset=\"utf-8\""},
		{3, 1, "text/plain"},
		{3, 1, "application/json; a"},
		{3, 4, strings.Repeat("r", 256)},
		{3, 4, strings.Repeat("r", 257)},
		{4, 4, "a\tb"},
		{4, 4, "é"},
		{4, 1, "application/problem+json"},
	} {
		f.Add(s.route, s.name, s.value)
	}
	f.Fuzz(func(t *testing.T, route, name uint8, value string) {
		rt := headerFuzzRoutes[int(route)%len(headerFuzzRoutes)]
		field := headerFuzzNames[int(name)%len(headerFuzzNames)]
		body := bodies[int(route)%len(bodies)]
		req := httptest.NewRequest(rt.method, rt.path, strings.NewReader(body))
		if rt.contentType != "" {
			req.Header.Set("Content-Type", rt.contentType)
		}
		req.Header[field] = []string{value}
		chain := adminChain
		if rt.who == asAgent {
			chain = agent.chain
		}
		req.TLS = &tls.ConnectionState{PeerCertificates: chain}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		what := func() string { return rt.method + " " + rt.path + " with " + field + ": " + strconv.Quote(value) }
		if rec.Code >= 500 {
			t.Fatalf("%s = %d: %s", what(), rec.Code, rec.Body)
		}
		id := rec.Header().Get("X-Request-Id")
		if field == "X-Request-Id" && value != "" && len(value) <= 256 && !strings.ContainsFunc(value, func(c rune) bool { return c < 0x20 || c > 0x7e }) {
			if id != value {
				t.Fatalf("%s: the answer's X-Request-Id is %q", what(), id)
			}
		} else if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(id) {
			t.Fatalf("%s: the answer's X-Request-Id is %q, want the server's own", what(), id)
		}
		if rec.Code < 400 {
			return
		}
		switch {
		case rt.path == "/v1/token":
			var oe struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
			}
			if json.Unmarshal(rec.Body.Bytes(), &oe) != nil || !slices.Contains(oauthErrors, oe.Error) {
				t.Fatalf("%s = %d: %s, want an RFC 6749 error", what(), rec.Code, rec.Body)
			}
			if strings.ContainsFunc(oe.Description, func(c rune) bool { return c < 0x20 || c == '"' || c == '\\' || c > 0x7e }) {
				t.Fatalf("%s: error_description %q has characters RFC 6749 §5.2 does not allow", what(), oe.Description)
			}
			if c := rec.Header().Get("WWW-Authenticate"); rec.Code == http.StatusUnauthorized && !wwwAuthenticate.MatchString(c) {
				t.Fatalf("%s = 401 with WWW-Authenticate %q", what(), c)
			}
		case strings.HasPrefix(rt.path, "/v1/data"):
			var oe struct{ Code, Message string }
			if json.Unmarshal(rec.Body.Bytes(), &oe) != nil || oe.Code == "" || oe.Message == "" {
				t.Fatalf("%s = %d: %s, want OPA's error shape", what(), rec.Code, rec.Body)
			}
		default:
			var p struct{ Type string }
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" || json.Unmarshal(rec.Body.Bytes(), &p) != nil || p.Type == "" {
				t.Fatalf("%s = %d with %q: %s, want a problem document", what(), rec.Code, ct, rec.Body)
			}
		}
	})
}
