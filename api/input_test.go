package api_test

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
)

// rawClient is a plain HTTP client presenting chain/key (or no
// certificate when chain is nil), for requests the typed client would
// never send.
func (e *env) rawClient(chain []*x509.Certificate, key crypto.Signer) *http.Client {
	bundle := x509bundle.FromX509Authorities(e.td, e.bundle)
	authz := tlsconfig.AuthorizeID(authority.ServerID(e.td))
	cfg := tlsconfig.TLSClientConfig(bundle, authz)
	if chain != nil {
		svid := &x509svid.SVID{ID: spiffeid.RequireFromString(chain[0].URIs[0].String()), Certificates: chain, PrivateKey: key}
		cfg = tlsconfig.MTLSClientConfig(svid, bundle, authz)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	e.t.Cleanup(c.CloseIdleConnections)
	return c
}

func (e *env) adminRaw() *http.Client {
	chain, key, _, err := credfile.Load(authority.AdminPaths(e.dataDir))
	if err != nil {
		e.t.Fatal(err)
	}
	return e.rawClient(chain, key)
}

// adminChain is the bootstrap admin's certificate chain.
func (e *env) adminChain() []*x509.Certificate {
	chain, _, _, err := credfile.Load(authority.AdminPaths(e.dataDir))
	if err != nil {
		e.t.Fatal(err)
	}
	return chain
}

func csrPEM(t *testing.T, key crypto.Signer, tpl *x509.CertificateRequest) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func mustJSON(t testing.TB, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBadInputGetsAProblem sends malformed and hostile requests and checks
// each gets its 4xx problem+json answer and changes nothing.
func TestBadInputGetsAProblem(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	node := e.joinNode()
	agentID := e.registerAgent("hello", node.id)
	tok, err := e.admin.CreateJoinToken(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	agentURL, _ := url.Parse(agentID)
	otherURL, _ := url.Parse(spiffeid.RequireFromSegments(e.td, "agent", "other").String())
	goodCSR := csrPEM(t, p256, &x509.CertificateRequest{})
	x509Req := func(csr string) string { return mustJSON(t, map[string]string{"spiffe_id": agentID, "csr": csr}) }
	joinReq := func(csr string) string { return mustJSON(t, map[string]string{"token": tok.Token, "csr": csr}) }
	blk, _ := pem.Decode([]byte(goodCSR))
	blk.Bytes[len(blk.Bytes)-2] ^= 0xff // inside the signature
	garbledCSR := string(pem.EncodeToMemory(blk))

	admin, nodeC, public := e.adminRaw(), e.rawClient(node.chain, node.key), e.rawClient(nil, nil)
	tests := []struct {
		name         string
		c            *http.Client
		method, path string
		ctype, body  string
		status       int
		problem      string
	}{
		{"malformed json", admin, "POST", "/v1/admin/agents", "application/json", `{"spiffe_id":`, 400, "malformed-json"},
		{"json array", admin, "POST", "/v1/admin/join-tokens", "application/json", `[1,2]`, 400, "malformed-json"},
		{"trailing data", admin, "POST", "/v1/admin/join-tokens", "application/json", `{"ttl_seconds":5}{}`, 400, "malformed-json"},
		{"unknown field", admin, "POST", "/v1/admin/join-tokens", "application/json", `{"ttl":5}`, 400, "unknown-field"},
		{"wrong type", admin, "POST", "/v1/admin/join-tokens", "application/json", `{"ttl_seconds":"5"}`, 400, "malformed-json"},
		{"wrong content type", admin, "POST", "/v1/admin/join-tokens", "text/plain", `{}`, 415, "unsupported-media-type"},
		{"no content type", admin, "POST", "/v1/admin/join-tokens", "", `{}`, 415, "unsupported-media-type"},
		{"body too large", admin, "POST", "/v1/admin/agents", "application/json", `{"spiffe_id":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "body-too-large"},
		{"negative ttl", admin, "POST", "/v1/admin/join-tokens", "application/json", `{"ttl_seconds":-1}`, 400, "invalid-ttl"},
		{"huge ttl", admin, "POST", "/v1/admin/join-tokens", "application/json", `{"ttl_seconds":9223372036854775807}`, 400, "invalid-ttl"},
		{"agent in other trust domain", admin, "POST", "/v1/admin/agents", "application/json", `{"spiffe_id":"spiffe://evil.example/agent/x"}`, 400, "invalid-registration"},
		{"duplicate agent", admin, "POST", "/v1/admin/agents", "application/json", mustJSON(t, map[string]string{"spiffe_id": agentID}), 409, "already-exists"},
		{"unknown agent", admin, "GET", "/v1/admin/agents/nope", "", "", 404, "not-found"},
		{"show unknown node", admin, "GET", "/v1/admin/nodes/" + url.PathEscape("spiffe://org-a.example/node/join/x"), "", "", 404, "not-found"},
		{"ban unknown node", admin, "POST", "/v1/admin/nodes/" + url.PathEscape("spiffe://org-a.example/node/join/x") + "/ban", "application/json", `{}`, 404, "not-found"},
		{"evict unknown node", admin, "POST", "/v1/admin/nodes/" + url.PathEscape("spiffe://org-a.example/node/join/x") + "/evict", "application/json", `{}`, 404, "not-found"},
		{"unknown path", public, "GET", "/v1/nope", "", "", 404, "not-found"},
		// A path not in clean form is not redirected (text/html) to its
		// cleaned form: it names no endpoint.
		{"empty segment", admin, "GET", "/v1//admin/nodes", "", "", 404, "not-found"},
		{"dot-dot segment", admin, "POST", "/v1/admin/../admin/agents", "application/json", `{}`, 404, "not-found"},
		{"unencoded node id", admin, "POST", "/v1/admin/nodes/spiffe://org-a.example/node/join/x/ban", "application/json", `{}`, 404, "not-found"},
		{"empty id", public, "GET", "/v1/delegations//status", "", "", 404, "not-found"},
		{"wrong method", public, "DELETE", "/v1/bundle", "", "", 405, "method-not-allowed"},
		{"tile path without its slash", public, "GET", "/tile", "", "", 404, "not-found"},
		{"tile path without its slash, posted", public, "POST", "/tile", "", "", 404, "not-found"},
		// Who may call is checked before the body is read: a caller
		// without the role learns nothing of the endpoint's validation.
		{"anonymous, bad ttl", public, "POST", "/v1/admin/join-tokens", "application/json", `{"ttl_seconds":-1}`, 401, "unauthenticated"},
		{"anonymous, malformed json", public, "POST", "/v1/admin/agents", "application/json", `x`, 401, "unauthenticated"},
		{"anonymous, wrong content type", public, "POST", "/v1/admin/federations", "text/plain", `{}`, 401, "unauthenticated"},
		{"anonymous delegation, bad ttl", public, "POST", "/v1/delegations", "application/json", `{"ttl_seconds":999999}`, 401, "unauthenticated"},
		{"anonymous svid, malformed json", public, "POST", "/v1/svid/jwt", "application/json", `x`, 401, "unauthenticated"},
		{"anonymous evaluation, malformed json", public, "POST", "/access/v1/evaluation", "application/json", `x`, 401, "unauthenticated"},
		{"node, malformed json to admin", nodeC, "POST", "/v1/admin/agents", "application/json", `x`, 403, "forbidden"},
		{"node, malformed json to delegations", nodeC, "POST", "/v1/delegations", "application/json", `x`, 403, "forbidden"},
		{"malformed csr", nodeC, "POST", "/v1/svid/x509", "application/json", x509Req("not a csr"), 400, "invalid-csr"},
		{"garbled csr", nodeC, "POST", "/v1/svid/x509", "application/json", x509Req(garbledCSR), 400, "invalid-csr"},
		{"csr for another id", nodeC, "POST", "/v1/svid/x509", "application/json", x509Req(csrPEM(t, p256, &x509.CertificateRequest{URIs: []*url.URL{otherURL}})), 400, "csr-identity-mismatch"},
		{"csr with dns san", nodeC, "POST", "/v1/svid/x509", "application/json", x509Req(csrPEM(t, p256, &x509.CertificateRequest{URIs: []*url.URL{agentURL}, DNSNames: []string{"evil.example"}})), 400, "csr-identity-mismatch"},
		{"weak rsa key", nodeC, "POST", "/v1/svid/x509", "application/json", x509Req(csrPEM(t, rsa1024, &x509.CertificateRequest{})), 400, "weak-key"},
		{"p224 key", nodeC, "POST", "/v1/svid/x509", "application/json", x509Req(csrPEM(t, p224, &x509.CertificateRequest{})), 400, "unsupported-key"},
		{"ed25519 key", nodeC, "POST", "/v1/svid/x509", "application/json", x509Req(csrPEM(t, edKey, &x509.CertificateRequest{})), 400, "unsupported-key"},
		{"join with malformed csr", public, "POST", "/v1/nodes/join", "application/json", joinReq("garbage"), 400, "invalid-csr"},
		{"join csr naming an agent", public, "POST", "/v1/nodes/join", "application/json", joinReq(csrPEM(t, p256, &x509.CertificateRequest{URIs: []*url.URL{agentURL}})), 400, "csr-identity-mismatch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, tt.method, e.url+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			resp, err := tt.c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d; body %s", resp.StatusCode, tt.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q, want application/problem+json", ct)
			}
			if allow := resp.Header.Get("Allow"); tt.status == 405 && allow != "GET, HEAD" {
				t.Errorf("Allow = %q, want GET, HEAD", allow)
			}
			var p struct {
				Type, Title, Detail string
				Status              int
			}
			if err := json.NewDecoder(bytes.NewReader(body)).Decode(&p); err != nil {
				t.Fatalf("problem body %q: %v", body, err)
			}
			if want := "https://mandate.dev/problems/" + tt.problem; p.Type != want || p.Status != tt.status || p.Title == "" || p.Detail == "" {
				t.Errorf("problem = %+v, want type %s status %d with title and detail", p, want, tt.status)
			}
		})
	}

	// The join token survived every refused join: it still works once.
	if _, err := e.client(nil, nil).Join(ctx, tok.Token, []byte(goodCSR)); err != nil {
		t.Errorf("Join() after refused attempts = %v, want success", err)
	}
	agents, err := e.admin.ListAgents(ctx)
	if err != nil || len(agents) != 1 {
		t.Errorf("ListAgents() = %d agents, %v; want 1 (refused requests change nothing)", len(agents), err)
	}
}

// TestStalledBodyIsATimeout: a body that stops arriving is answered 408
// request-timeout, with nothing of the connection (its addresses) in the
// answer.
func TestStalledBodyIsATimeout(t *testing.T) {
	e := start(t, "org-a.example", func(c *authority.Config) { c.HTTP.ReadTimeout = authority.Duration(time.Second) })
	cfg := e.adminRaw().Transport.(*http.Transport).TLSClientConfig // the Data API needs an SVID
	for _, path := range []string{"/v1/nodes/join", "/v1/data/mandate"} {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(e.url, "https://"), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "POST "+path+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"to"); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // a guard, not a measurement
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: no answer to a stalled body: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout || strings.Contains(string(body), "127.0.0.1") {
			t.Errorf("%s: stalled body answered %d %s; want 408 without the connection's addresses", path, resp.StatusCode, body)
		}
		if path == "/v1/nodes/join" && !strings.Contains(string(body), "/request-timeout") {
			t.Errorf("%s: problem %s, want request-timeout", path, body)
		}
	}
}

// TestBodyOverLimitClosesTheConnection: a body over the limit is
// refused with 413, and the connection is closed after the answer
// (Connection: close), not kept for another request after the server
// has read and thrown away the rest of the body.
func TestBodyOverLimitClosesTheConnection(t *testing.T) {
	e := start(t, "org-a.example")
	cfg := e.adminRaw().Transport.(*http.Transport).TLSClientConfig // the Data API needs an SVID
	// Over the 64 KiB limit by less than what Go's server would read
	// and discard after the handler (256 KiB) to keep the connection.
	body := strings.Repeat(" ", 64<<10+100<<10)
	for _, path := range []string{"/v1/nodes/join", "/v1/data/mandate"} {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(e.url, "https://"), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second)) // a guard, not a measurement
		go func() {
			// Its write fails once the server has closed the connection.
			_, _ = fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
		}()
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
			t.Errorf("%s: answered %d with Connection %q; want 413 and the connection closed", path, resp.StatusCode, resp.Header.Get("Connection"))
		}
	}
}

// TestSlowBodyLeavesTheWorkItsTime: a body that arrives within
// http.read_timeout, however late, leaves its request the whole time for
// its work: it is served, not answered 503 timeout (the server's fault)
// for time the client took.
func TestSlowBodyLeavesTheWorkItsTime(t *testing.T) {
	// The body will come after the answer's time (http.write_timeout)
	// counted from the headers: that time counts from the body too.
	e := start(t, "org-a.example", func(c *authority.Config) {
		c.HTTP.ReadTimeout, c.HTTP.WriteTimeout = authority.Duration(time.Minute), authority.Duration(2*time.Second)
	})
	// A server of e's authority whose requests' work may take 2 s.
	const work = 2 * time.Second
	_, ln := e.serveWithWorkTime(work)

	tok, err := e.admin.CreateJoinToken(ctxT(t), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, csr, err := client.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	body := mustJSON(t, map[string]string{"token": tok.Token, "csr": string(csr)})
	cfg := e.rawClient(nil, nil).Transport.(*http.Transport).TLSClientConfig
	conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second)) // a guard, not a measurement
	if _, err := fmt.Fprintf(conn, "POST /v1/nodes/join HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:10]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(work + work/2) // the rest of the body comes after the work's time
	if _, err := io.WriteString(conn, body[10:]); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("join with a slow body = %d %s; want 200", resp.StatusCode, b)
	}
}

// TestSlowClientIsCut: a client that opens a connection and never finishes
// its request headers is disconnected by the server's read timeout.
func TestSlowClientIsCut(t *testing.T) {
	e := start(t, "org-a.example", func(c *authority.Config) { c.HTTP.ReadTimeout = authority.Duration(time.Second) })
	cfg := tlsconfig.TLSClientConfig(x509bundle.FromX509Authorities(e.td, e.bundle), tlsconfig.AuthorizeID(authority.ServerID(e.td)))
	conn, err := tls.Dial("tcp", strings.TrimPrefix(e.url, "https://"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /v1/nodes/join HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // a guard, not a measurement
	b, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server kept a stalled request open: %v", err)
	}
	if strings.Contains(string(b), "200 OK") {
		t.Errorf("stalled request answered %q", b)
	}
}

// TestWrongMethodAndUnknownPathAnswers: a wrong method under /v1/data is
// answered in OPA's shape, with Allow; requests to unknown paths are
// counted under route "unmatched".
func TestWrongMethodAndUnknownPathAnswers(t *testing.T) {
	e := start(t, "org-a.example")
	c := e.adminRaw()
	do := func(method, path string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctxT(t), method, e.url+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := do(http.MethodPut, "/v1/data/mandate/x")
	var opa struct{ Code, Message string }
	if resp.StatusCode != 405 || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &opa) != nil ||
		opa.Code != "invalid_operation" || opa.Message == "" {
		t.Errorf("PUT /v1/data/mandate/x = %d %s %s; want 405 in OPA's shape", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if allow := resp.Header.Get("Allow"); allow != "POST, GET" {
		t.Errorf("Allow = %q, want POST, GET", allow)
	}
	// As OPA, HEAD is no method of the Data API: 405, not a decision
	// evaluated (and recorded) whose answer is dropped.
	for _, path := range []string{"/v1/data/mandate/x", "/v1/data"} {
		resp, body := do(http.MethodHead, path)
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST, GET" || body != "" {
			t.Errorf("HEAD %s = %d (Allow %q) %q; want OPA's 405", path, resp.StatusCode, resp.Header.Get("Allow"), body)
		}
	}
	if resp, body := do(http.MethodGet, "/v1/no-such-endpoint"); resp.StatusCode != 404 {
		t.Fatalf("unknown path = %d %s", resp.StatusCode, body)
	}
	if _, body := do(http.MethodGet, "/metrics"); !strings.Contains(body, `mandate_http_requests_total{code="404",route="unmatched"}`) {
		t.Errorf("metrics do not count the unknown path under route unmatched:\n%s", body)
	}
}

// HEAD on the bundle endpoint is answered as GET, without the body.
func TestBundleEndpointAnswersHEAD(t *testing.T) {
	e := start(t, "org-a.example")
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodHead, e.url+"/v1/bundle", nil)
	resp, err := e.rawClient(nil, nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" || len(body) != 0 {
		t.Errorf("HEAD /v1/bundle = %d %q, %d bytes; want 200 application/json, no body", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
}

// A JSON answer says its length, however large (not sent in chunks),
// and a HEAD of it says the length its GET would send.
func TestJSONAnswersSayTheirLength(t *testing.T) {
	e := start(t, "org-a.example")
	node := e.joinNode()
	for i := range 40 {
		e.registerAgent(fmt.Sprintf("agent-with-a-longish-name-%02d", i), node.id)
	}
	var lengths []int64
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req, _ := http.NewRequestWithContext(ctxT(t), method, e.url+"/v1/admin/agents", nil)
		resp, err := e.adminRaw().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s /v1/admin/agents = %d, %v", method, resp.StatusCode, err)
		}
		if len(resp.TransferEncoding) > 0 || resp.ContentLength < 0 {
			t.Errorf("%s: sent in chunks (%v), length %d", method, resp.TransferEncoding, resp.ContentLength)
		}
		if method == http.MethodGet && (len(body) < 8<<10 || int64(len(body)) != resp.ContentLength) {
			t.Errorf("GET: %d bytes, Content-Length %d; want the same, over 8 KiB", len(body), resp.ContentLength)
		}
		lengths = append(lengths, resp.ContentLength)
	}
	if lengths[0] != lengths[1] {
		t.Errorf("HEAD says %d bytes, GET sends %d", lengths[1], lengths[0])
	}
}

// The body of a ban or an eviction is optional: one that holds no bytes
// is taken as absent however it is framed (a Content-Length of 0, or
// chunked with no chunk), with or without a Content-Type.
func TestNodeActionEmptyBodyIsNoBody(t *testing.T) {
	e := start(t, "org-a.example")
	node := e.joinNode()
	c := e.adminRaw()
	path := e.url + "/v1/admin/nodes/" + url.PathEscape(node.id.String())
	for _, tc := range []struct {
		name, action, contentType string
		chunked                   bool
	}{
		{"ban, Content-Length 0", "ban", "", false},
		{"ban, chunked, empty", "ban", "", true},
		{"ban, chunked, empty, JSON", "ban", "application/json", true},
		{"evict, chunked, empty, JSON", "evict", "application/json", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = http.NoBody
			if tc.chunked {
				body = struct{ io.Reader }{strings.NewReader("")} // length unknown: sent chunked
			}
			req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, path+"/"+tc.action, body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK && !(tc.action == "evict" && resp.StatusCode == http.StatusConflict && strings.Contains(string(b), "node-ban-stands")) {
				t.Errorf("POST %s with an empty body = %d %s; want it taken as no body", tc.action, resp.StatusCode, b)
			}
		})
	}
}
