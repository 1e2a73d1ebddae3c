package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mandate.dev/mandate/client"
)

// testPKI is a trust domain's root and the certificates it signs.
type testPKI struct {
	root *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serials atomic.Int64

func newTestPKI(t *testing.T, td string) *testPKI {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(serials.Add(1)), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{{Scheme: "spiffe", Host: td}}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{root: c, key: k}
}

// leaf is an X509-SVID for id.
func (p *testPKI) leaf(t *testing.T, id string) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(serials.Add(1)), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, p.root, k.Public(), p.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: c}
}

// hostileAuthority serves h over TLS on 127.0.0.1 as a genuine authority
// of org-a.example (the client authenticates it), and returns a client
// of it.
func hostileAuthority(t *testing.T, timeout time.Duration, h http.HandlerFunc) *client.Client {
	t.Helper()
	p := newTestPKI(t, "org-a.example")
	s := httptest.NewUnstartedServer(h)
	s.TLS = &tls.Config{Certificates: []tls.Certificate{p.leaf(t, "spiffe://org-a.example/mandate/server")}}
	s.StartTLS()
	t.Cleanup(s.Close)
	c, err := client.New(client.Config{Server: s.URL, Bundle: []*x509.Certificate{p.root}, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdle)
	return c
}

// A redirect is never followed: the request (here a join token) would go
// where the server was not authenticated, here in clear.
func TestClientNeverFollowsARedirect(t *testing.T) {
	var leaked atomic.Int64
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		leaked.Add(int64(len(b)) + 1)
		w.Write([]byte(`{"spiffe_id":"spiffe://org-a.example/node/x","x509_svid":"x"}`))
	}))
	t.Cleanup(plain.Close)
	c := hostileAuthority(t, 5*time.Second, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+"/steal", http.StatusTemporaryRedirect)
	})
	_, err := c.Join(context.Background(), "SECRET-JOIN-TOKEN", []byte("csr"))
	var p *client.Problem
	if !errors.As(err, &p) || p.Status != http.StatusTemporaryRedirect {
		t.Fatalf("Join answered by a redirect: %v, want a *Problem with status 307", err)
	}
	if leaked.Load() != 0 {
		t.Fatal("the redirect was followed: the join token went to an unauthenticated server in clear")
	}
}

// An answer is used only whole: one over the limit, or cut short by the
// call's time running out, is an error, never a prefix taken for it.
func TestClientRefusesAnswersNotWhole(t *testing.T) {
	t.Run("over 4 MiB", func(t *testing.T) {
		c := hostileAuthority(t, 30*time.Second, func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"token":"` + strings.Repeat("a", 5<<20) + `"}`))
		})
		if b, err := c.GetRaw(context.Background(), "/v1/audit/checkpoint"); err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Errorf("GetRaw of a 5 MiB answer: %d bytes, %v; want an error saying it is too large", len(b), err)
		}
		if _, err := c.JWTSVID(context.Background(), "", []string{"x"}); err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Errorf("JWTSVID of a 5 MiB answer: %v; want an error saying it is too large", err)
		}
	})
	t.Run("headers over 64 KiB", func(t *testing.T) {
		for _, tc := range []struct {
			pads int // headers of 8 KiB each
			ok   bool
		}{{1, true}, {128, false}} {
			c := hostileAuthority(t, 30*time.Second, func(w http.ResponseWriter, r *http.Request) {
				for i := range tc.pads {
					w.Header().Set("X-Pad-"+strconv.Itoa(i), strings.Repeat("a", 8<<10))
				}
				w.Write([]byte("checkpoint"))
			})
			if b, err := c.GetRaw(context.Background(), "/v1/audit/checkpoint"); (err == nil) != tc.ok {
				t.Errorf("GetRaw of an answer with %d KiB of headers: %q, %v; want ok=%v", tc.pads*8, b, err, tc.ok)
			}
		}
	})
	t.Run("cut by the timeout", func(t *testing.T) {
		c := hostileAuthority(t, 200*time.Millisecond, func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"checkpoint":"half`))
			w.(http.Flusher).Flush()
			<-r.Context().Done() // then end the answer as if it were whole
		})
		for range 5 {
			if b, err := c.GetRaw(context.Background(), "/v1/audit/checkpoint"); err == nil {
				t.Fatalf("an answer cut by the timeout was returned whole: %q", b)
			}
		}
	})
}

// An answer that must carry a credential and carries none is an error.
func TestClientRefusesEmptyAnswers(t *testing.T) {
	for _, body := range []string{"", "{}", `{"spiffe_id":""}`} {
		c := hostileAuthority(t, 5*time.Second, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(body)) })
		ctx := context.Background()
		if a, err := c.JWTSVID(ctx, "", []string{"x"}); err == nil {
			t.Errorf("JWTSVID answered %q: %+v and no error", body, a)
		}
		if a, err := c.X509SVID(ctx, "spiffe://org-a.example/agent/a", []byte("csr")); err == nil {
			t.Errorf("X509SVID answered %q: %+v and no error", body, a)
		}
		if a, err := c.Join(ctx, "t", []byte("csr")); err == nil {
			t.Errorf("Join answered %q: %+v and no error", body, a)
		}
		if a, err := c.AnswerTPMChallenge(ctx, "session", client.TPMEvidence{}, []byte("csr")); err == nil {
			t.Errorf("AnswerTPMChallenge answered %q: %+v and no error", body, a)
		}
	}
}

// A *Problem's Status is the answer's HTTP status, whatever its body says:
// callers decide on it whether to retry.
func TestProblemStatusIsTheAnswers(t *testing.T) {
	for _, tc := range []struct {
		code int
		body string
	}{
		{http.StatusServiceUnavailable, `{"type":"https://mandate.dev/problems/unavailable","title":"Unavailable"}`},
		{http.StatusInternalServerError, `{"type":"x","status":200}`},
		{http.StatusBadGateway, `<html>proxy error</html>`},
	} {
		c := hostileAuthority(t, 5*time.Second, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.code)
			w.Write([]byte(tc.body))
		})
		err := c.Do(context.Background(), http.MethodGet, "/v1/x", nil, nil)
		var p *client.Problem
		if !errors.As(err, &p) || p.Status != tc.code {
			t.Errorf("HTTP %d with %s: %v, want a *Problem with Status %d", tc.code, tc.body, err, tc.code)
		}
	}
}

// A client given an SVID without its key fails when it is made, not at
// its first call with a TLS alert.
func TestNewRefusesAnSVIDWithoutItsKey(t *testing.T) {
	p := newTestPKI(t, "org-a.example")
	agent := p.leaf(t, "spiffe://org-a.example/agent/a")
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]client.Config{
		"no key":        {Bundle: []*x509.Certificate{p.root}, SVID: []*x509.Certificate{agent.Leaf}},
		"another's key": {Bundle: []*x509.Certificate{p.root}, SVID: []*x509.Certificate{agent.Leaf}, Key: other},
	} {
		if _, err := client.New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if _, err := client.New(client.Config{Bundle: []*x509.Certificate{p.root}, SVID: []*x509.Certificate{agent.Leaf}, Key: agent.PrivateKey.(*ecdsa.PrivateKey)}); err != nil {
		t.Errorf("New refused an SVID with its key: %v", err)
	}
}

// An admin list ends: an authority whose pages would keep it going
// round (empty pages naming a next one, or a page token given again)
// is refused, not followed for ever.
func TestListsEndOnAPageLoop(t *testing.T) {
	for _, tc := range []struct {
		name string
		page func(token string) string
		want string
	}{
		{"empty pages, two tokens taking turns", func(token string) string {
			next := map[string]string{"": "YQ", "YQ": "Yg", "Yg": "YQ"}[token]
			return `{"agents":[],"next_page_token":"` + next + `"}`
		}, "lists nothing"},
		{"a page token given again", func(token string) string {
			next := map[string]string{"": "YQ", "YQ": "Yg", "Yg": "YQ"}[token]
			return `{"agents":[{"spiffe_id":"spiffe://org-a.example/agent/` + token + `x"}],"next_page_token":"` + next + `"}`
		}, "already listed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			c := hostileAuthority(t, 5*time.Second, func(w http.ResponseWriter, r *http.Request) {
				calls++
				io.WriteString(w, tc.page(r.URL.Query().Get("page_token")))
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.ListAgents(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) || ctx.Err() != nil {
				t.Fatalf("ListAgents after %d pages = %v; want refused: %s", calls, err, tc.want)
			}
			if calls > 3 {
				t.Errorf("ListAgents asked %d pages; want 3 at most", calls)
			}
		})
	}
}

// A negative Timeout or MaxConns is refused when the client is made: a
// negative Timeout would fail every call at once ("context deadline
// exceeded"), as if the authority never answered.
func TestNewRefusesNegativeBounds(t *testing.T) {
	p := newTestPKI(t, "org-a.example")
	for _, tc := range []struct {
		cfg client.Config
		ok  bool
	}{
		{client.Config{}, true},
		{client.Config{Timeout: time.Second, MaxConns: 1}, true},
		{client.Config{Timeout: -1}, false},
		{client.Config{MaxConns: -1}, false},
	} {
		tc.cfg.Bundle = []*x509.Certificate{p.root}
		if _, err := client.New(tc.cfg); (err == nil) != tc.ok {
			t.Errorf("New with Timeout %s, MaxConns %d = %v; want ok=%v", tc.cfg.Timeout, tc.cfg.MaxConns, err, tc.ok)
		}
	}
}

// A refused call answers nil with its *Problem: no zero value a caller
// could take for an answer.
func TestRefusedCallsAnswerNil(t *testing.T) {
	c := hostileAuthority(t, 5*time.Second, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"type":"https://mandate.dev/problems/not-found","title":"Not found","status":404}`)
	})
	ctx := context.Background()
	id := "spiffe://org-a.example/agent/a"
	calls := map[string]func() (any, error){
		"GetAgent":           func() (any, error) { return c.GetAgent(ctx, "a") },
		"CreateAgent":        func() (any, error) { return c.CreateAgent(ctx, &client.Agent{SPIFFEID: id}) },
		"UpdateAgentIfMatch": func() (any, error) { return c.UpdateAgentIfMatch(ctx, "a", `"1"`, &client.Agent{SPIFFEID: id}) },
		"CAStatus":           func() (any, error) { return c.CAStatus(ctx) },
		"RevokeCA":           func() (any, error) { return c.RevokeCA(ctx, "k", "r", false) },
		"AuditEntry":         func() (any, error) { return c.AuditEntry(ctx, 1, 0) },
		"AuditConsistency":   func() (any, error) { return c.AuditConsistency(ctx, 1, 2) },
		"CreateJoinToken":    func() (any, error) { return c.CreateJoinToken(ctx, 0) },
		"ListAgents":         func() (any, error) { return c.ListAgents(ctx) },
		"GetNode":            func() (any, error) { return c.GetNode(ctx, "spiffe://org-a.example/node/n") },
		"EvictNode":          func() (any, error) { return c.EvictNode(ctx, "spiffe://org-a.example/node/n", "r", false) },
		"X509SVID":           func() (any, error) { return c.X509SVID(ctx, id, []byte("csr")) },
		"JWTSVID":            func() (any, error) { return c.JWTSVID(ctx, id, []string{"x"}) },
		"SyncNode":           func() (any, error) { return c.SyncNode(ctx, nil) },
		"Evaluate":           func() (any, error) { return c.Evaluate(ctx, &client.Evaluation{}) },
	}
	for name, call := range calls {
		got, err := call()
		var p *client.Problem
		if !errors.As(err, &p) || p.Status != http.StatusNotFound {
			t.Errorf("%s: error %v, want the 404 *Problem", name, err)
		}
		if v := reflect.ValueOf(got); !v.IsNil() {
			t.Errorf("%s refused answered %+v, want nil", name, got)
		}
	}
}

// An answer that does not decode fails whole: no part of it (the items
// read before the one that does not decode) is answered beside the
// error.
func TestUndecodableAnswersAnswerNil(t *testing.T) {
	c := hostileAuthority(t, 5*time.Second, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"federations":[{"trust_domain":"org-b.example"},{"trust_domain":5}],`+
			`"agents":[{"id":"a"},{"id":5}],"nodes":[{"spiffe_id":"n"},{"spiffe_id":5}],"spiffe_id":5,"id":5}`)
	})
	ctx := context.Background()
	calls := map[string]func() (any, error){
		"ListFederations": func() (any, error) { return c.ListFederations(ctx) },
		"ListAgents":      func() (any, error) { return c.ListAgents(ctx) },
		"ListNodes":       func() (any, error) { return c.ListNodes(ctx) },
		"GetAgent":        func() (any, error) { return c.GetAgent(ctx, "a") },
		"GetNode":         func() (any, error) { return c.GetNode(ctx, "spiffe://org-a.example/node/n") },
	}
	for name, call := range calls {
		got, err := call()
		if err == nil || !strings.Contains(err.Error(), "decode answer") {
			t.Errorf("%s: error %v, want the answer's decoding's", name, err)
		}
		if v := reflect.ValueOf(got); !v.IsNil() {
			t.Errorf("%s of an answer that does not decode answered %+v, want nil", name, got)
		}
	}
}

// A server URL the client would misuse is refused when the client is
// made, and never echoed with a password: a user name and password
// (which net/http would send as Basic credentials, and errors would
// show, though the authority authenticates callers by their X509-SVID
// alone), a query or a fragment (which the API's paths would be
// appended to, every call then going to another path).
func TestNewRefusesAServerURLItWouldMisuse(t *testing.T) {
	p := newTestPKI(t, "org-a.example")
	for _, tc := range []struct{ server, want string }{
		{"https://ops:hunter2@127.0.0.1:8443", "user name or password"},
		{"https://ops@127.0.0.1:8443", "user name or password"},
		{"https://ops:hunter2@127.0.0.1:port", "is not an https:// URL"},
		{"https://127.0.0.1:8443?x=1", "query or fragment"},
		{"https://127.0.0.1:8443/?", "query or fragment"},
		{"https://127.0.0.1:8443#top", "query or fragment"},
	} {
		_, err := client.New(client.Config{Server: tc.server, Bundle: []*x509.Certificate{p.root}})
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("New with server %s: %v, want an error saying %q, without the password", tc.server, err, tc.want)
		}
	}
	for _, server := range []string{"https://127.0.0.1:8443", "https://127.0.0.1:8443/", "https://mandate.example/authority"} {
		if _, err := client.New(client.Config{Server: server, Bundle: []*x509.Certificate{p.root}}); err != nil {
			t.Errorf("New with server %s: %v", server, err)
		}
	}
}
