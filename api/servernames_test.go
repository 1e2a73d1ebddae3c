package api_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/authority"
)

// A plain HTTPS client (curl --cacert bundle.pem) verifies the server's
// certificate by the name it dialled: localhost and the loopback
// addresses, public_url's host and every http.server_names entry are in
// it; another name is not.
func TestServerCertificateNames(t *testing.T) {
	e := start(t, "org-a.example", func(c *authority.Config) {
		c.HTTP.PublicURL = "https://mandate.org-a.example:8443"
		c.HTTP.ServerNames = []string{"mandate.internal.example", "192.0.2.7"}
	})
	addr := strings.TrimPrefix(e.url, "https://")
	roots := x509.NewCertPool()
	for _, c := range e.bundle {
		roots.AddCert(c)
	}
	get := func(name string) error {
		hc := &http.Client{Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: name},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr) // every name resolves here
			},
		}}
		defer hc.CloseIdleConnections()
		resp, err := hc.Get("https://" + net.JoinHostPort(name, "8443") + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	for _, name := range []string{"localhost", "127.0.0.1", "mandate.org-a.example", "mandate.internal.example", "192.0.2.7"} {
		if err := get(name); err != nil {
			t.Errorf("GET https://%s/healthz: %v, want the certificate to name it", name, err)
		}
	}
	if err := get("other.example"); err == nil {
		t.Error("the certificate verified for a name it was not given")
	}
	// A public_url host no certificate can carry (a URL allows more) is
	// left out of it, never allowed to fail every handshake; a trailing
	// dot names the same host.
	for _, host := range []string{"my_host.internal", "bücher.example", "mandate.org-b.example."} {
		e := start(t, "org-b.example", func(c *authority.Config) { c.HTTP.PublicURL = "https://" + host + ":8443" })
		resp, err := e.rawClient(nil, nil).Get(e.url + "/healthz")
		if err != nil {
			t.Errorf("public_url host %q: GET /healthz: %v", host, err)
			continue
		}
		resp.Body.Close()
	}
}

// The server's certificate is renewed in the background once half of its
// life has passed: the handshakes meanwhile are answered at once with the
// certificate in use (none waits on a mint, an audit commit, and so
// risks its 5 s deadline), and a later one gets the renewed certificate.
func TestServerCertificateRenewedInTheBackground(t *testing.T) {
	e := start(t, "org-a.example")
	addr := strings.TrimPrefix(e.url, "https://")
	roots := x509.NewCertPool()
	for _, c := range e.bundle {
		roots.AddCert(c)
	}
	leaf := func() *x509.Certificate {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1",
			Time: func() time.Time { return time.Now().Add(time.Duration(e.skew.Load())) }}) // the authority's clock
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	first := leaf()
	// Past half of its life (the authority's clock moved on).
	e.skew.Add(int64(time.Until(first.NotAfter)/2 + time.Minute))
	if got := leaf(); !got.Equal(first) {
		t.Fatalf("the first handshake past half the certificate's life got serial %s, want the one in use (%s) while it is renewed",
			got.SerialNumber, first.SerialNumber)
	}
	for range 200 { // the renewal is one mint: a few milliseconds
		if got := leaf(); !got.Equal(first) {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatal("the server certificate was not renewed")
}
