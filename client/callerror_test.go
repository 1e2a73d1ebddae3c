package client_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/client"
)

// A call that gets no answer says the call and its URL once (not again
// in net/http's words, nor x509svid's), and what to check: the server,
// the bundle file, or the credential.
func TestCallErrorSaysWhatToCheck(t *testing.T) {
	a, other := newTestPKI(t, "org-a.example"), newTestPKI(t, "org-a.example")
	ok := func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("{}")) }
	serve := func(p *testPKI, clientCAs *x509.CertPool) string {
		s := httptest.NewUnstartedServer(http.HandlerFunc(ok))
		s.Config.ErrorLog = log.New(io.Discard, "", 0)
		s.TLS = &tls.Config{Certificates: []tls.Certificate{p.leaf(t, "spiffe://org-a.example/mandate/server")}}
		if clientCAs != nil {
			s.TLS.ClientAuth, s.TLS.ClientCAs = tls.RequireAndVerifyClientCert, clientCAs
		}
		s.StartTLS()
		t.Cleanup(s.Close)
		return s.URL
	}
	orgB := newTestPKI(t, "org-b.example")
	sB := httptest.NewUnstartedServer(http.HandlerFunc(ok))
	sB.Config.ErrorLog = log.New(io.Discard, "", 0)
	sB.TLS = &tls.Config{Certificates: []tls.Certificate{orgB.leaf(t, "spiffe://org-b.example/mandate/server")}}
	sB.StartTLS()
	t.Cleanup(sB.Close)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "https://" + l.Addr().String()
	l.Close()
	// A server that fails its own side of the handshake (no certificate
	// to serve) sends an alert too, whatever the client presents.
	broken := httptest.NewUnstartedServer(http.HandlerFunc(ok))
	broken.Config.ErrorLog = log.New(io.Discard, "", 0)
	broken.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return nil, errors.New("no server certificate")
	}}
	broken.StartTLS()
	t.Cleanup(broken.Close)
	poolA := x509.NewCertPool()
	poolA.AddCert(a.root)
	agent := other.leaf(t, "spiffe://org-a.example/agent/a")

	for _, tc := range []struct {
		name    string
		cfg     client.Config
		want    string
		refused bool // the server refused the client's credential
	}{
		{"nothing listens", client.Config{Server: closed, Bundle: []*x509.Certificate{a.root}},
			"client: GET " + closed + "/v1/bundle: dial tcp ", false},
		{"another authority's certificate", client.Config{Server: serve(a, nil), Bundle: []*x509.Certificate{other.root}, BundleFrom: "other/bundle.pem"},
			"the server's certificate is not signed by the trust bundle in other/bundle.pem: is it the authority that bundle is for?", false},
		{"another trust domain", client.Config{Server: sB.URL, Bundle: []*x509.Certificate{a.root}},
			`/v1/bundle: the server is an authority of trust domain "org-b.example", and the trust bundle given is "org-a.example"'s`, false},
		{"a credential the server refuses", client.Config{Server: serve(a, poolA), Bundle: []*x509.Certificate{a.root},
			SVID: []*x509.Certificate{agent.Leaf}, Key: agent.PrivateKey.(crypto.Signer), SVIDFrom: "agent-dir"},
			"the authority refused the credential in agent-dir: is it one of this authority's, or of a trust domain it federates with, and not signed by an X.509 CA revoked since (then get a new one: a node's with mandate node join or attest", true},
		{"a server failing its side of the handshake, to a client with a credential", client.Config{Server: broken.URL, Bundle: []*x509.Certificate{a.root},
			SVID: []*x509.Certificate{agent.Leaf}, Key: agent.PrivateKey.(crypto.Signer), SVIDFrom: "agent-dir"},
			"remote error: tls: internal error", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Timeout = 10 * time.Second
			c, err := client.New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.CloseIdle)
			_, err = c.GetRaw(context.Background(), "/v1/bundle")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("GetRaw = %v, want an error saying %q", err, tc.want)
			}
			if errors.Is(err, client.ErrCredentialRefused) != tc.refused {
				t.Errorf("GetRaw = %v: ErrCredentialRefused %v, want %v", err, !tc.refused, tc.refused)
			}
			if !tc.refused && strings.Contains(err.Error(), "refused the credential") {
				t.Errorf("GetRaw = %v: says the credential was refused", err)
			}
			for _, noise := range []string{`Get "`, "x509svid: could not get", "client: client:"} {
				if strings.Contains(err.Error(), noise) {
					t.Errorf("GetRaw = %v: says %q", err, noise)
				}
			}
		})
	}
}
