package ca_test

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/ca"
)

func spiffebundleParse(data []byte) (*spiffebundle.Bundle, error) {
	return spiffebundle.Parse(testTD, data)
}

func newUpstreamRoot(t testing.TB, notBefore time.Time, ttl time.Duration) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := ecKey(t, elliptic.P384())
	tmpl := &x509.Certificate{
		SerialNumber:          bigOne(),
		Subject:               pkix.Name{CommonName: "Upstream Root"},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(ttl),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	return createCert(t, tmpl, tmpl, key.Public(), key), key
}

func newUpstreamIntermediate(t testing.TB, parent *x509.Certificate, parentKey crypto.Signer, notBefore time.Time, ttl time.Duration, pathLenZero bool) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := ecKey(t, elliptic.P256())
	tmpl := &x509.Certificate{
		SerialNumber:          bigOne(),
		Subject:               pkix.Name{CommonName: "Upstream Intermediate"},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(ttl),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        pathLenZero,
		MaxPathLen:            -1,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if pathLenZero {
		tmpl.MaxPathLen = 0
	}
	return createCert(t, tmpl, parent, key.Public(), parentKey), key
}

func createCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestUpstreamCA(t *testing.T) {
	now := time.Now()
	root, rootKey := newUpstreamRoot(t, now.Add(-time.Hour), 72*time.Hour)
	inter, interKey := newUpstreamIntermediate(t, root, rootKey, now.Add(-time.Hour), 3*time.Hour, false)
	tests := []struct {
		name      string
		upstream  *ca.Upstream
		wantChain []*x509.Certificate // after the leaf and our CA
		limit     time.Time
	}{
		{"root signs", &ca.Upstream{Chain: []*x509.Certificate{root}, Signer: rootKey}, nil, root.NotAfter},
		{"intermediate signs", &ca.Upstream{Chain: []*x509.Certificate{inter, root}, Signer: interKey}, []*x509.Certificate{inter}, inter.NotAfter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newTestCA(t, func(cfg *ca.Config) { cfg.Upstream = tt.upstream })
			b := c.Bundle()
			if auths := b.X509Authorities(); len(auths) != 1 || !auths[0].Equal(root) {
				t.Fatalf("bundle x509 authorities should be exactly the upstream root")
			}
			key := ecKey(t, elliptic.P256())
			svid, err := c.MintX509SVID(context.Background(), ca.X509Params{ID: testID, PublicKey: key.Public()})
			if err != nil {
				t.Fatal(err)
			}
			if _, chains, err := x509svid.Verify(svid.Certificates, b); err != nil || len(chains) == 0 {
				t.Fatalf("x509svid.Verify: %v", err)
			}
			keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
			if _, err := x509svid.ParseRaw(chainDER(svid.Certificates), keyDER); err != nil {
				t.Errorf("x509svid.ParseRaw: %v", err)
			}
			if got, want := len(svid.Certificates), 2+len(tt.wantChain); got != want {
				t.Fatalf("chain length = %d, want %d", got, want)
			}
			for i, want := range tt.wantChain {
				if !svid.Certificates[2+i].Equal(want) {
					t.Errorf("chain[%d] is not the upstream intermediate", 2+i)
				}
			}
			ours := svid.Certificates[1]
			if ours.NotAfter.After(tt.limit) {
				t.Errorf("our CA expires %s, after the upstream %s", ours.NotAfter, tt.limit)
			}
			if err := ours.CheckSignatureFrom(tt.upstream.Chain[0]); err != nil {
				t.Errorf("our CA is not signed by the upstream: %v", err)
			}
			if st := c.Status(); !st[0].Upstream {
				t.Errorf("status does not flag the upstream-signed CA: %+v", st[0])
			}
		})
	}
}

func TestUpstreamRotationKeepsRootBundle(t *testing.T) {
	clk := newFakeClock(time.Now().Truncate(time.Second))
	c, _, root := newUpstreamTestCA(t, clk)
	key := ecKey(t, elliptic.P256())
	var svids []*ca.X509SVID
	cas := map[string]bool{}
	for step := 0; step < 4*60; step++ {
		clk.Add(time.Minute)
		if _, err := c.Rotate(context.Background()); err != nil {
			t.Fatal(err)
		}
		b := c.Bundle()
		if auths := b.X509Authorities(); len(auths) != 1 || !auths[0].Equal(root) {
			t.Fatalf("step %d: bundle x509 authorities are not just the upstream root", step)
		}
		svid, err := c.MintX509SVID(context.Background(), ca.X509Params{ID: testID, PublicKey: key.Public()})
		if err != nil {
			t.Fatal(err)
		}
		cas[string(svid.Certificates[1].Raw)] = true
		svids = append(svids, svid)
		for _, s := range svids {
			if clk.Now().After(s.ExpiresAt) {
				continue
			}
			if _, _, err := x509svid.Verify(s.Certificates, b, x509svid.WithTime(clk.Now())); err != nil {
				t.Fatalf("step %d: unexpired svid no longer verifies: %v", step, err)
			}
		}
	}
	if len(cas) < 4 {
		t.Errorf("only %d intermediates used over 4h with a 1h CA ttl", len(cas))
	}
}

// TestUpstreamConstraintsAreHeld: an upstream CA's name constraints and
// extended key usages bind everything below it. One that leaves out the
// trust domain's SPIFFE IDs, or the serverAuth and clientAuth usages of
// every X509-SVID, is refused at start (also by a restart with state
// made under another upstream); a DNS or IP name it does not allow is
// refused at issuance. What it allows verifies with go-spiffe.
func TestUpstreamConstraintsAreHeld(t *testing.T) {
	now := time.Now()
	constrained := func(mod func(*x509.Certificate)) *ca.Upstream {
		key := ecKey(t, elliptic.P256())
		tmpl := &x509.Certificate{
			SerialNumber: bigOne(), Subject: pkix.Name{CommonName: "Constrained Upstream"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(72 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		}
		mod(tmpl)
		return &ca.Upstream{Chain: []*x509.Certificate{createCert(t, tmpl, tmpl, key.Public(), key)}, Signer: key}
	}
	refused := map[string]*ca.Upstream{
		"uri constraint of another domain":  constrained(func(c *x509.Certificate) { c.PermittedURIDomains = []string{"other.example"} }),
		"uri constraint excluding this one": constrained(func(c *x509.Certificate) { c.ExcludedURIDomains = []string{"example.org"} }),
		"server auth only":                  constrained(func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }),
		"code signing only":                 constrained(func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning} }),
	}
	for name, up := range refused {
		t.Run(name, func(t *testing.T) {
			env := newEnv(t, func(cfg *ca.Config) { cfg.Upstream = up })
			if _, err := ca.New(context.Background(), env.cfg); !errors.Is(err, ca.ErrInvalidConfig) {
				t.Fatalf("New = %v, want ErrInvalidConfig", err)
			}
			if files := keyFiles(t, env.keyDir); len(files) != 0 {
				t.Errorf("keys created for a refused upstream: %v", files)
			}
			// A restart under it, with a CA made under a plain upstream.
			root, rootKey := newUpstreamRoot(t, now.Add(-time.Hour), 72*time.Hour)
			env.cfg.Upstream = &ca.Upstream{Chain: []*x509.Certificate{root}, Signer: rootKey}
			env.newCA(t)
			env.cfg.Upstream = up
			if _, err := ca.New(context.Background(), env.cfg); !errors.Is(err, ca.ErrInvalidConfig) {
				t.Fatalf("restart: New = %v, want ErrInvalidConfig", err)
			}
		})
	}

	up := constrained(func(c *x509.Certificate) {
		c.PermittedURIDomains = []string{"example.org"}
		c.PermittedDNSDomains = []string{"corp.example"}
		c.PermittedIPRanges = []*net.IPNet{{IP: net.IPv4(10, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)}}
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	})
	c, _ := newTestCA(t, func(cfg *ca.Config) { cfg.Upstream = up })
	pub := ecKey(t, elliptic.P256()).Public()
	for _, p := range []ca.X509Params{
		{ID: testID, PublicKey: pub},
		{ID: testID, PublicKey: pub, DNSNames: []string{"mandate.corp.example"}, IPAddresses: []net.IP{net.IPv4(10, 1, 2, 3)}},
	} {
		svid, err := c.MintX509SVID(context.Background(), p)
		if err != nil {
			t.Fatalf("MintX509SVID(%v) = %v", p.DNSNames, err)
		}
		if _, _, err := x509svid.Verify(svid.Certificates, c.Bundle()); err != nil {
			t.Errorf("x509svid.Verify(SVID with %v under a constrained upstream) = %v", p.DNSNames, err)
		}
	}
	for _, p := range []ca.X509Params{
		{ID: testID, PublicKey: pub, DNSNames: []string{"localhost"}},
		{ID: testID, PublicKey: pub, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}},
	} {
		if svid, err := c.MintX509SVID(context.Background(), p); !errors.Is(err, ca.ErrInvalidParams) {
			t.Errorf("MintX509SVID(%v %v) outside the upstream's name constraints = %v, %v; want ErrInvalidParams", p.DNSNames, p.IPAddresses, svid, err)
		}
	}
}

// An intermediate of the upstream CA that is prepared, and so has signed
// nothing, is discarded when revoked (its key deleted, it never
// becomes active); one replaced is refused: the upstream's root stays
// in the bundle, and what it signed would still verify.
func TestUpstreamRevocation(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(time.Now().Truncate(time.Second))
	c, env, _ := newUpstreamTestCA(t, clk)
	first, _ := authorityOf(c, ca.KindX509, ca.StateActive)
	clk.Add(31 * time.Minute)
	if _, err := c.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	prepared, ok := authorityOf(c, ca.KindX509, ca.StatePrepared)
	if !ok || !prepared.Upstream {
		t.Fatalf("prepared = %+v, %v; want an intermediate of the upstream CA", prepared, ok)
	}
	keysBefore := len(keyFiles(t, env.keyDir))
	if _, err := c.Revoke(ctx, prepared.ID, ca.StatePrepared); err != nil {
		t.Fatalf("Revoke(the prepared intermediate) = %v", err)
	}
	if n := len(keyFiles(t, env.keyDir)); n != keysBefore-1 {
		t.Errorf("%d key files after the revocation, want %d: its key deleted", n, keysBefore-1)
	}
	next, err := c.Expedite(ctx, ca.KindX509, 0)
	if err != nil || next.ID == prepared.ID {
		t.Fatalf("the rotation after the revocation = %+v, %v; want another intermediate", next, err)
	}
	if _, err := c.Revoke(ctx, first.ID, ca.StateOld); !errors.Is(err, ca.ErrInvalidParams) {
		t.Errorf("Revoke(the intermediate replaced) = %v; want ErrInvalidParams (revoke it at the upstream CA)", err)
	}
}

// newUpstreamTestCA is a CA under an intermediate of an upstream root
// (returned), its CAs living an hour, on clk.
func newUpstreamTestCA(t *testing.T, clk *fakeClock) (*ca.CA, *testEnv, *x509.Certificate) {
	t.Helper()
	root, rootKey := newUpstreamRoot(t, clk.Now().Add(-time.Hour), 72*time.Hour)
	inter, interKey := newUpstreamIntermediate(t, root, rootKey, clk.Now().Add(-time.Hour), 24*time.Hour, false)
	c, env := newTestCA(t, func(cfg *ca.Config) {
		cfg.Now = clk.Now
		cfg.CATTL = time.Hour
		cfg.X509SVIDTTL = 10 * time.Minute
		cfg.Upstream = &ca.Upstream{Chain: []*x509.Certificate{inter, root}, Signer: interKey}
	})
	return c, env, root
}
