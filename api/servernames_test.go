package api_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"strings"
	"testing"

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
