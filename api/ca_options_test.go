package api_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/credfile"
)

// TestUpstreamCA starts an authority under an existing organisation CA:
// SVIDs chain to the upstream root, which is what the bundle carries.
func TestUpstreamCA(t *testing.T) {
	up := newTestCA(t, "Org A Root CA")
	key, root := up.key, up.cert
	certFile, keyFile := up.files(t)
	dir := filepath.Dir(certFile)

	// The upstream's key is only this user's, as every key.
	if err := os.Chmod(keyFile, 0o640); err != nil {
		t.Fatal(err)
	}
	cfg := authority.Config{TrustDomain: "org-a.example", DataDir: filepath.Join(t.TempDir(), "data"), Listen: "127.0.0.1:0"}
	cfg.CA.UpstreamCertFile, cfg.CA.UpstreamKeyFile = certFile, keyFile
	cfg.SetDefaults()
	refusedBeforeDataDir(t, cfg, "ca.upstream_key_file", "a group-readable upstream key")
	if err := os.Chmod(keyFile, 0o600); err != nil {
		t.Fatal(err)
	}
	// A key that is not the upstream certificate's is refused before
	// anything is made, as an unreadable one.
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(dir, "other.key")
	ob, _ := credfile.EncodeKeyPEM(other)
	if err := os.WriteFile(otherFile, ob, 0o600); err != nil {
		t.Fatal(err)
	}
	mismatched := cfg
	mismatched.CA.UpstreamKeyFile = otherFile
	refusedBeforeDataDir(t, mismatched, "ca.upstream_key_file", "an upstream key not the certificate's")
	// An upstream whose name constraints leave out the server
	// certificate's names (localhost, the loopback addresses) is refused
	// too: every TLS handshake would fail.
	ctpl := *root
	ctpl.SerialNumber, ctpl.PermittedDNSDomains = big.NewInt(8), []string{"corp.example"}
	narrow := cfg
	narrow.CA.UpstreamCertFile = selfSignedFile(t, filepath.Join(dir, "constrained.pem"), &ctpl, key)
	refusedBeforeDataDir(t, narrow, "server certificate's names", "an upstream whose name constraints leave out the server's names")
	// One whose constraints permit them (and leave URIs free) is taken.
	ptpl := ctpl
	ptpl.SerialNumber, ptpl.PermittedDNSDomains = big.NewInt(9), []string{"localhost"}
	ptpl.PermittedIPRanges = []*net.IPNet{{IP: net.IPv4(127, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)}, {IP: net.IPv6loopback, Mask: net.CIDRMask(128, 128)}}
	wide := cfg
	wide.CA.UpstreamCertFile, wide.DataDir = selfSignedFile(t, filepath.Join(dir, "permitting.pem"), &ptpl, key), filepath.Join(t.TempDir(), "data")
	pa, err := authority.New(ctxT(t), wide, authority.Options{})
	if err != nil {
		t.Fatalf("New with an upstream whose name constraints permit the server's names = %v", err)
	}
	pa.Close()
	// An upstream CA that expires before ca_ttl is said at start: X.509
	// CAs are cut short at its expiry, and none can be made after it.
	var logs bytes.Buffer
	cfg.CA.CATTL = authority.Duration(60 * 24 * time.Hour)
	a, err := authority.New(ctxT(t), cfg, authority.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if !strings.Contains(logs.String(), "ca.upstream_cert_file expires within ca.ca_ttl") {
		t.Errorf("an upstream CA expiring within ca_ttl, not said at start:\n%s", logs.String())
	}
	e := start(t, "org-a.example", func(c *authority.Config) {
		c.CA.UpstreamCertFile, c.CA.UpstreamKeyFile = certFile, keyFile
	})
	bundle := e.fetchBundle()
	if auth := bundle.X509Authorities(); len(auth) != 1 || !auth[0].Equal(root) {
		t.Fatalf("bundle X.509 authorities = %d certs, want the upstream root only", len(auth))
	}
	node := e.joinNode()
	agent := e.agentSVID(node, e.registerAgent("hello", node.id))
	if len(agent.chain) != 2 {
		t.Errorf("agent SVID chain has %d certificates, want leaf and intermediate", len(agent.chain))
	}
	if _, _, err := x509svid.Verify(agent.chain, bundle); err != nil {
		t.Errorf("x509svid.Verify(agent SVID under upstream) = %v", err)
	}
}

// selfSignedFile writes the certificate tpl self-signed with key to
// path, as PEM, and returns path.
func selfSignedFile(t *testing.T, path string, tpl *x509.Certificate, key *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	if err := os.WriteFile(path, credfile.EncodeCertsPEM([]*x509.Certificate{cert}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// refusedBeforeDataDir checks that New refuses cfg with an error naming
// want, before it makes the data directory.
func refusedBeforeDataDir(t *testing.T, cfg authority.Config, want, what string) {
	t.Helper()
	if a, err := authority.New(ctxT(t), cfg, authority.Options{}); err == nil || !strings.Contains(err.Error(), want) {
		if err == nil {
			a.Close()
		}
		t.Fatalf("New with %s = %v, want it refused naming %s", what, err, want)
	}
	if _, err := os.Stat(cfg.DataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("New refused %s but made the data directory (%v)", what, err)
	}
}

// TestFederationHTTPSWebFromConfig federates through the config file with
// the https_web profile: org-b's bundle endpoint is served with a Web PKI
// certificate that org-a trusts through federation.web_roots_file.
func TestFederationHTTPSWebFromConfig(t *testing.T) {
	b := start(t, "org-b.example")
	web := httptest.NewTLSServer(b.srv.BundleHandler())
	defer web.Close()
	roots := filepath.Join(t.TempDir(), "web-roots.pem")
	if err := os.WriteFile(roots, credfile.EncodeCertsPEM([]*x509.Certificate{web.Certificate()}), 0o644); err != nil {
		t.Fatal(err)
	}
	a := start(t, "org-a.example", func(c *authority.Config) {
		c.Federation.WebRootsFile = roots
		c.Federation.TrustDomains = []authority.FederatedTrustDomain{{TrustDomain: "org-b.example", BundleEndpointURL: web.URL + "/", Profile: "https_web"}}
	})
	waitRefreshed(t, a, b.td)
	// The refreshed bundle reaches the snapshot handed to agents within
	// a few seconds.
	node := a.joinNode()
	agentID := a.registerAgent("alice", node.id)
	deadline := time.Now().Add(20 * time.Second)
	for {
		agent := a.agentSVID(node, agentID)
		if doc, ok := agent.ans.Bundles[b.td.String()]; ok && len(doc) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("org-b's bundle never reached org-a's SVID answers")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
