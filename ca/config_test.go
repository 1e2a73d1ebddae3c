package ca_test

import (
	"context"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/ca"
)

func TestNewRejectsInvalidConfig(t *testing.T) {
	root, rootKey := newUpstreamRoot(t, time.Now(), 48*time.Hour)
	pathLenZero, pathLenZeroKey := newUpstreamIntermediate(t, root, rootKey, time.Now(), 24*time.Hour, true)
	expired, expiredKey := newUpstreamRoot(t, time.Now().Add(-48*time.Hour), time.Hour)
	inter, interKey := newUpstreamIntermediate(t, root, rootKey, time.Now(), 24*time.Hour, false)
	otherRoot, _ := newUpstreamRoot(t, time.Now(), 48*time.Hour)
	tests := []struct {
		name string
		mod  func(*ca.Config)
	}{
		{"no trust domain", func(c *ca.Config) { c.TrustDomain = spiffeid.TrustDomain{} }},
		{"no key manager", func(c *ca.Config) { c.KeyManager = nil }},
		{"no journal", func(c *ca.Config) { c.Journal = nil }},
		{"unknown key type", func(c *ca.Config) { c.KeyType = "rsa-2048" }},
		{"negative ca ttl", func(c *ca.Config) { c.CATTL = -time.Hour }},
		{"negative jwt svid ttl", func(c *ca.Config) { c.JWTSVIDTTL = -time.Minute }},
		{"svid ttl above ca ttl", func(c *ca.Config) { c.CATTL = time.Hour; c.X509SVIDTTL = 2 * time.Hour }},
		{"jwt ttl above key ttl", func(c *ca.Config) { c.JWTKeyTTL = time.Hour; c.JWTSVIDTTL = 2 * time.Hour }},
		{"refresh hint too long", func(c *ca.Config) { c.CATTL = time.Hour; c.X509SVIDTTL = time.Minute; c.RefreshHint = 30 * time.Minute }},
		{"rotation interval too long", func(c *ca.Config) { c.RotationInterval = 5 * time.Hour }},
		{"upstream without signer", func(c *ca.Config) { c.Upstream = &ca.Upstream{Chain: []*x509.Certificate{root}} }},
		{"upstream empty chain", func(c *ca.Config) { c.Upstream = &ca.Upstream{Signer: rootKey} }},
		{"upstream signer mismatch", func(c *ca.Config) {
			c.Upstream = &ca.Upstream{Chain: []*x509.Certificate{root}, Signer: ecKey(t, elliptic.P256())}
		}},
		{"upstream broken chain", func(c *ca.Config) {
			c.Upstream = &ca.Upstream{Chain: []*x509.Certificate{inter, otherRoot}, Signer: interKey}
		}},
		{"upstream path length zero", func(c *ca.Config) {
			c.Upstream = &ca.Upstream{Chain: []*x509.Certificate{pathLenZero, root}, Signer: pathLenZeroKey}
		}},
		{"upstream expired", func(c *ca.Config) { c.Upstream = &ca.Upstream{Chain: []*x509.Certificate{expired}, Signer: expiredKey} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, tt.mod)
			c, err := ca.New(context.Background(), env.cfg)
			if !errors.Is(err, ca.ErrInvalidConfig) {
				t.Fatalf("New err = %v, want ErrInvalidConfig", err)
			}
			if c != nil {
				t.Error("got a CA with an error")
			}
			if files := keyFiles(t, env.keyDir); len(files) != 0 {
				t.Errorf("keys created despite invalid config: %v", files)
			}
		})
	}
}

func TestBundleAndStatus(t *testing.T) {
	c, _ := newTestCA(t, func(cfg *ca.Config) { cfg.RefreshHint = 3 * time.Minute })
	b := c.Bundle()
	if b.TrustDomain() != testTD || c.TrustDomain() != testTD {
		t.Errorf("trust domain = %s / %s", b.TrustDomain(), c.TrustDomain())
	}
	if seqOf(t, b) != 1 {
		t.Errorf("sequence = %d, want 1", seqOf(t, b))
	}
	if hint, ok := b.RefreshHint(); !ok || hint != 3*time.Minute {
		t.Errorf("refresh hint = %s, %v", hint, ok)
	}
	if len(b.X509Authorities()) != 1 || len(b.JWTAuthorities()) != 1 || len(c.X509Authorities()) != 1 {
		t.Fatalf("bundle has %d x509 and %d jwt authorities", len(b.X509Authorities()), len(b.JWTAuthorities()))
	}
	data, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := spiffebundleParse(data)
	if err != nil {
		t.Fatalf("parse marshalled bundle: %v", err)
	}
	if !parsed.Equal(b) {
		t.Error("bundle does not round-trip through its JSON form")
	}
	// The returned bundle is a clone.
	b.SetX509Authorities(nil)
	if len(c.Bundle().X509Authorities()) != 1 {
		t.Error("Bundle() exposes internal state")
	}
	st := c.Status()
	if len(st) != 2 || st[0].Kind != ca.KindX509 || st[1].Kind != ca.KindJWT {
		t.Fatalf("status = %+v", st)
	}
	for _, a := range st {
		if a.State != ca.StateActive || a.ID == "" || a.KeyID == "" || !a.NotAfter.After(a.NotBefore) || a.Upstream {
			t.Errorf("bad status entry %+v", a)
		}
	}
	if _, ok := b.FindJWTAuthority(st[1].ID); !ok {
		t.Error("jwt status id is not the bundle kid")
	}
}

// The CA certificate's default common name names the trust domain
// within RFC 5280's 64 characters (ub-common-name), however long the
// trust domain's name (up to 255).
func TestCACommonNameWithinBound(t *testing.T) {
	for _, name := range []string{"mandate.localhost", strings.Repeat("a", 55) + ".x", strings.Repeat("a", 246) + ".example"} {
		t.Run(name[:10], func(t *testing.T) {
			td := spiffeid.RequireTrustDomainFromString(name)
			c, _ := newTestCA(t, func(cfg *ca.Config) { cfg.TrustDomain = td })
			cn := c.X509Authorities()[0].Subject.CommonName
			if n := utf8.RuneCountInString(cn); n > 64 {
				t.Errorf("common name %q has %d characters, RFC 5280 allows 64", cn, n)
			}
			if want := name + " X.509 CA"; len(want) <= 64 && cn != want {
				t.Errorf("common name %q, want %q", cn, want)
			}
			if !strings.HasPrefix(cn, name[:min(len(name), 40)]) {
				t.Errorf("common name %q does not start with the trust domain %s", cn, name)
			}
		})
	}
}
