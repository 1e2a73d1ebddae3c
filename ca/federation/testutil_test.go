package federation

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	spiffefed "github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/logtest"
)

var (
	tdA = spiffeid.RequireTrustDomainFromString("org-a.example") // local
	tdB = spiffeid.RequireTrustDomainFromString("org-b.example") // peer
	tdC = spiffeid.RequireTrustDomainFromString("org-c.example")

	endpointB = spiffeid.RequireFromString("spiffe://org-b.example/mandate/server")
)

// testCA is a tiny SPIFFE CA: a self-signed root whose URI SAN is the trust
// domain's ID.
type testCA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  crypto.Signer
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newTestCA(t testing.TB, td spiffeid.TrustDomain) *testCA {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{Organization: []string{td.Name()}, CommonName: "test root"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{td: td, cert: cert, key: key}
}

// serverCert issues an X.509-SVID server certificate for id.
func (ca *testCA) serverCert(t *testing.T, id spiffeid.ID) tls.Certificate {
	t.Helper()
	key := newKey(t)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: "bundle endpoint"},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{id.URL()},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// bundleOf returns a bundle of ca's trust domain with the given roots.
func bundleOf(td spiffeid.TrustDomain, seq uint64, hint time.Duration, roots ...*testCA) *spiffebundle.Bundle {
	b := spiffebundle.New(td)
	for _, r := range roots {
		b.AddX509Authority(r.cert)
	}
	if seq > 0 {
		b.SetSequenceNumber(seq)
	}
	if hint >= 0 {
		b.SetRefreshHint(hint)
	}
	return b
}

// peer is a bundle endpoint of a foreign trust domain, served with go-spiffe's
// federation.NewHandler over real TLS on 127.0.0.1. It can go down and come
// back on the same address.
type peer struct {
	t    *testing.T
	td   spiffeid.TrustDomain
	hits atomic.Int64

	mu     sync.Mutex
	bundle *spiffebundle.Bundle
	srv    *httptest.Server
	addr   string
	tlsCfg *tls.Config
}

func (p *peer) GetBundleForTrustDomain(td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hits.Add(1)
	return p.bundle.Clone(), nil
}

func (p *peer) setBundle(b *spiffebundle.Bundle) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bundle = b.Clone()
}

// startPeer serves b for td, presenting cert.
func startPeer(t *testing.T, td spiffeid.TrustDomain, b *spiffebundle.Bundle, cert tls.Certificate) *peer {
	t.Helper()
	p := &peer{t: t, td: td, bundle: b.Clone(), tlsCfg: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *peer) start() {
	p.t.Helper()
	h, err := spiffefed.NewHandler(p.td, p)
	if err != nil {
		p.t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	// Silence "TLS handshake error" logs for handshakes the client refuses.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if p.addr == "" {
		p.addr = srv.Listener.Addr().String()
	} else {
		// Come back on the same address.
		srv.Listener.Close()
		var ln net.Listener
		waitFor(p.t, "peer listener to reopen", func() bool {
			ln, err = net.Listen("tcp", p.addr)
			return err == nil
		})
		srv.Listener = ln
	}
	srv.TLS = p.tlsCfg
	srv.StartTLS()
	p.mu.Lock()
	p.srv = srv
	p.mu.Unlock()
}

func (p *peer) stop() {
	p.mu.Lock()
	srv := p.srv
	p.srv = nil
	p.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

func (p *peer) url() string { return "https://" + p.addr + "/bundle" }

func spiffeRel(p *peer) Relationship {
	return Relationship{TrustDomain: p.td, BundleEndpointURL: p.url(), Profile: ProfileHTTPSSPIFFE, EndpointSPIFFEID: endpointB}
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runManager runs m.Run until the test ends and checks it returns nil.
func runManager(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
}

// fastConfig is a Config with tiny refresh and backoff durations.
func fastConfig() Config {
	return Config{
		DefaultRefresh: time.Hour, // long, so any quick refresh is due to a hint or a retry
		MinRefresh:     10 * time.Millisecond,
		RetryBackoff:   10 * time.Millisecond,
		FetchTimeout:   5 * time.Second,
		Logger:         slog.New(slog.DiscardHandler),
	}
}

// logBuffer is a concurrency-safe log sink.
type logBuffer = logtest.Buffer

// loggingManager is a manager of fastConfig whose log is written, as
// text, to the buffer it returns.
func loggingManager() (*Manager, *logBuffer) {
	logs := &logBuffer{}
	cfg := fastConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	return NewManager(cfg), logs
}
