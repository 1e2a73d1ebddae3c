package api_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mandate.dev/mandate/api"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/logtest"
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

// A certificate whose renewals fail is served until it expires, not a
// moment longer: a renewal that fails in the last minute of its life
// does not keep it in use past its NotAfter.
func TestServerCertificateNotServedPastItsExpiry(t *testing.T) {
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	srv, ln, logs, stopRun := runLogged(t, now)
	serveCtx, stopServe := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx, ln) }()
	defer func() { stopServe(); <-served }()

	// leaf is the certificate a handshake is answered with (nil: none).
	leaf := func() *x509.Certificate {
		t.Helper()
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return nil
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	first := leaf()
	if first == nil {
		t.Fatal("no certificate served")
	}
	// The audit log stops: no certificate can be minted any more.
	stopRun()
	failures := func() int { return strings.Count(logs.String(), "renew server certificate") }
	// A renewal fails 30 s before the certificate expires.
	skew.Store(int64(time.Until(first.NotAfter.Add(-30 * time.Second))))
	if got := leaf(); got == nil || !got.Equal(first) {
		t.Fatalf("past half its life, a handshake got %v, want the certificate in use", got)
	}
	for i := 0; failures() == 0; i++ {
		if i == 400 {
			t.Fatalf("the renewal did not fail:\n%s", logs.String())
		}
		time.Sleep(25 * time.Millisecond)
	}
	// 10 s after it expired.
	skew.Store(int64(time.Until(first.NotAfter.Add(10 * time.Second))))
	if got := leaf(); got != nil && !now().Before(got.NotAfter) {
		t.Fatalf("a handshake 10 s after the certificate expired (%s) was answered with it", got.NotAfter)
	}
	// Expired, it is as good as none: a handshake is refused, and the
	// failure to make one logged once a minute, not at every handshake.
	if got := leaf(); got != nil {
		t.Fatalf("a second handshake past the expiry got a certificate (%s), with none to be made", got.NotAfter)
	}
	if n := strings.Count(logs.String(), "make server certificate"); n != 1 {
		t.Errorf("two handshakes without a valid certificate logged %d failures to make one, want 1:\n%s", n, logs.String())
	}
}

// A server stopped before it began to serve (an interrupt while the
// authority starts) logs no failure to make its certificate.
func TestServerStoppedBeforeServingLogsNoCertificateError(t *testing.T) {
	srv, ln, logs, _ := runLogged(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := srv.Serve(ctx, ln); err != nil {
		t.Fatalf("Serve() = %v", err)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("a server stopped before it served logged an error:\n%s", logs.String())
	}
}

// runLogged runs an authority of org-a.example with the clock now (nil:
// the real one) until the test ends, its log kept, and returns its API
// server, not serving yet, with a listener for it; stopRun ends the
// authority's Run (and so its audit log) sooner.
func runLogged(t *testing.T, now func() time.Time) (srv *api.Server, ln net.Listener, logs *logtest.Buffer, stopRun func()) {
	t.Helper()
	cfg := authority.Config{TrustDomain: "org-a.example", DataDir: t.TempDir(), Listen: "127.0.0.1:0"}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	logs = &logtest.Buffer{}
	a, err := authority.New(t.Context(), cfg, authority.Options{Now: now, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	runCtx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(runCtx) }()
	var once sync.Once
	stopRun = func() { once.Do(func() { cancel(); <-ran }) }
	t.Cleanup(stopRun) // before a.Close (cleanups run last first)
	if srv, err = api.New(a); err != nil {
		t.Fatal(err)
	}
	if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	return srv, ln, logs, stopRun
}

// A change of the bundle that leaves the server's certificate verifying
// (a federation added) keeps that certificate: only one whose CA left
// the bundle is made anew.
func TestServerCertificateKeptAcrossABundleChange(t *testing.T) {
	e, peer := start(t, "org-a.example"), start(t, "org-b.example")
	presented := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", strings.TrimPrefix(e.url, "https://"), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before, gen := presented(), e.a.BundleGeneration()
	e.federate(peer)
	if e.a.BundleGeneration() == gen {
		t.Fatal("the federation added left the bundle generation as it was")
	}
	if after := presented(); after != before {
		t.Errorf("the server presents another certificate (serial %s, was %s) after a bundle change that left it verifying", after, before)
	}
}
