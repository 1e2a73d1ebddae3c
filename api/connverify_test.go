package api_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/api"
	"mandate.dev/mandate/authority"
)

// A new connection's client certificate chain is verified once, in its
// handshake: its requests verify it again only once the bundles change.
func TestNewConnectionVerifiesItsClientChainOnce(t *testing.T) {
	n := api.CountChainVerifications(t) // before the server starts
	e := start(t, "org-a.example")
	node := e.joinNode()
	c := e.rawClient(node.chain, node.key)
	get := func() {
		t.Helper()
		resp, err := c.Get(e.url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /healthz: %d", resp.StatusCode)
		}
	}
	before := n.Load()
	get() // a new connection, and its first request
	get() // the same connection
	if got := n.Load() - before; got != 1 {
		t.Errorf("a new connection and two requests on it verified the client chain %d times, want 1", got)
	}
}

// sessionSeen is a client session cache that says when a session ticket
// came: in TLS 1.3, the server sends it once it has verified the client's
// certificate, that is, once its side of the handshake is done.
type sessionSeen struct {
	tls.ClientSessionCache
	came chan struct{}
}

func (s *sessionSeen) Put(key string, cs *tls.ClientSessionState) {
	s.ClientSessionCache.Put(key, cs)
	select {
	case s.came <- struct{}{}:
	default:
	}
}

// A federated admin whose connection's handshake was verified while the
// federation held, and whose first request comes after it ended, is
// refused at that request, as on a connection that served requests
// before; with the federation still in place it is served.
func TestTrustEndedBetweenHandshakeAndFirstRequest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ended bool
		want  int
	}{
		{"trust held", false, http.StatusOK},
		{"trust ended", true, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, opsID := federatedAdmin(t)

			cfg := a.rawClient(opsID.chain, opsID.key).Transport.(*http.Transport).TLSClientConfig.Clone()
			seen := &sessionSeen{ClientSessionCache: tls.NewLRUClientSessionCache(1), came: make(chan struct{}, 1)}
			cfg.ClientSessionCache = seen
			u, err := url.Parse(a.url)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := tls.Dial("tcp", u.Host, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			req, err := http.NewRequest(http.MethodGet, a.url+"/v1/admin/nodes", nil)
			if err != nil {
				t.Fatal(err)
			}
			type answer struct {
				code int
				err  error
			}
			answered := make(chan answer, 1)
			go func() { // reads the session ticket, then the answer
				resp, err := http.ReadResponse(bufio.NewReader(conn), req)
				if err != nil {
					answered <- answer{err: err}
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				answered <- answer{code: resp.StatusCode}
			}()
			<-seen.came // the server's side of the handshake is done
			if tc.ended {
				if err := a.admin.DeleteFederation(ctxT(t), b.td.String()); err != nil {
					t.Fatal(err)
				}
			}
			if err := req.Write(conn); err != nil {
				t.Fatal(err)
			}
			if got := <-answered; got.err != nil || got.code != tc.want {
				t.Errorf("first request: %d, %v; want %d", got.code, got.err, tc.want)
			}
		})
	}
}

// Serve's connections negotiate HTTP/1.1 by ALPN with a client that
// offers it, with a client certificate or without: the configuration
// each connection gets of its own keeps what the HTTP server adds.
func TestServeNegotiatesHTTP1(t *testing.T) {
	e := start(t, "org-a.example")
	node := e.joinNode()
	u, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	bundle := x509bundle.FromX509Authorities(e.td, e.bundle)
	authz := tlsconfig.AuthorizeID(authority.ServerID(e.td))
	svid := &x509svid.SVID{ID: spiffeid.RequireFromString(node.chain[0].URIs[0].String()), Certificates: node.chain, PrivateKey: node.key}
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"no client certificate", tlsconfig.TLSClientConfig(bundle, authz)},
		{"a node's certificate", tlsconfig.MTLSClientConfig(svid, bundle, authz)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.NextProtos = []string{"http/1.1"}
			c, err := tls.Dial("tcp", u.Host, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.ConnectionState().NegotiatedProtocol; got != "http/1.1" {
				t.Errorf("negotiated protocol %q, want http/1.1", got)
			}
		})
	}
}

// A kept-alive connection whose client chain no longer verifies once the
// bundles changed is refused at each request, but its chain is verified
// again (and the refusal counted) once: its later requests under the same
// bundles are refused at once.
func TestConnectionRefusedAfterTrustEndedIsVerifiedOnce(t *testing.T) {
	n := api.CountChainVerifications(t) // before the servers start
	a, b, opsID := federatedAdmin(t)
	u, err := url.Parse(a.url)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, a.rawClient(opsID.chain, opsID.key).Transport.(*http.Transport).TLSClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	ask := func() int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, a.url+"/v1/admin/nodes", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := req.Write(conn); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := ask(); code != http.StatusOK {
		t.Fatalf("before the federation ended: %d", code)
	}
	if err := a.admin.DeleteFederation(ctxT(t), b.td.String()); err != nil {
		t.Fatal(err)
	}
	before := n.Load()
	for i := range 3 {
		if code := ask(); code != http.StatusUnauthorized {
			t.Fatalf("request %d after the federation ended: %d, want 401", i+1, code)
		}
	}
	if got := n.Load() - before; got != 1 {
		t.Errorf("three requests refused on one connection verified its chain %d times, want 1", got)
	}
}

// The listener speaks TLS 1.3 only: a client that offers at most TLS
// 1.2 gets no handshake, and one that offers 1.3 negotiates it.
func TestServeOffersOnlyTLS13(t *testing.T) {
	e := start(t, "org-a.example")
	u, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	bundle := x509bundle.FromX509Authorities(e.td, e.bundle)
	authz := tlsconfig.AuthorizeID(authority.ServerID(e.td))
	for _, tc := range []struct {
		name string
		max  uint16
		ok   bool
	}{
		{"TLS 1.2", tls.VersionTLS12, false},
		{"TLS 1.3", tls.VersionTLS13, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tlsconfig.TLSClientConfig(bundle, authz)
			cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tc.max
			c, err := tls.Dial("tcp", u.Host, cfg)
			if err == nil {
				defer c.Close()
			}
			if ok := err == nil; ok != tc.ok {
				t.Fatalf("handshake offering at most %s: %v, want success %v", tc.name, err, tc.ok)
			}
			if tc.ok && c.ConnectionState().Version != tls.VersionTLS13 {
				t.Errorf("negotiated version %#x, want TLS 1.3", c.ConnectionState().Version)
			}
		})
	}
}

// A client certificate chain of more than 8 certificates is refused in
// the handshake, however the certificates after the leaf would verify
// (here: copies of the leaf, which the path search passes over); one of
// 8 is taken.
func TestClientChainOfMoreThanEightCertificatesIsRefused(t *testing.T) {
	e := start(t, "org-a.example")
	node := e.joinNode()
	for _, tc := range []struct {
		n  int
		ok bool
	}{{8, true}, {9, false}} {
		chain := []*x509.Certificate{node.chain[0]}
		for len(chain) < tc.n {
			chain = append(chain, node.chain[0])
		}
		resp, err := e.rawClient(chain, node.key).Get(e.url + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		if ok := err == nil && resp.StatusCode == http.StatusOK; ok != tc.ok {
			t.Errorf("a chain of %d certificates: %v; want accepted %v", tc.n, err, tc.ok)
		}
	}
}
