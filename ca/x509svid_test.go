package ca_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/ca"
)

func TestMintX509SVID(t *testing.T) {
	// A clock that stands (at a whole second, as certificates say
	// it): the SVIDs' validity is exactly known, however long a mint
	// takes.
	clk := newFakeClock(time.Now().Truncate(time.Second))
	c, _ := newTestCA(t, func(cfg *ca.Config) { cfg.Now = clk.Now })
	ctx := context.Background()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		key       crypto.Signer
		ttl       time.Duration
		dns       []string
		wantUsage x509.KeyUsage
		wantTTL   time.Duration
	}{
		{"p256 default ttl", ecKey(t, elliptic.P256()), 0, nil, x509.KeyUsageDigitalSignature, ca.DefaultX509SVIDTTL},
		{"p384 custom ttl", ecKey(t, elliptic.P384()), 10 * time.Minute, nil, x509.KeyUsageDigitalSignature, 10 * time.Minute},
		{"rsa 2048", rsaKey, 0, nil, x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ca.DefaultX509SVIDTTL},
		{"dns names", ecKey(t, elliptic.P256()), 0, []string{"mandate.example.org", "localhost"}, x509.KeyUsageDigitalSignature, ca.DefaultX509SVIDTTL},
		{"ttl capped at ca expiry", ecKey(t, elliptic.P256()), 1000 * time.Hour, nil, x509.KeyUsageDigitalSignature, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := clk.Now()
			svid, err := c.MintX509SVID(ctx, ca.X509Params{ID: testID, PublicKey: tt.key.Public(), TTL: tt.ttl, DNSNames: tt.dns})
			if err != nil {
				t.Fatalf("MintX509SVID: %v", err)
			}
			checkX509SVID(t, c, svid, tt.key)
			leaf := svid.Certificates[0]
			if leaf.KeyUsage != tt.wantUsage {
				t.Errorf("key usage = %v, want %v", leaf.KeyUsage, tt.wantUsage)
			}
			if !slices.Equal(leaf.DNSNames, tt.dns) {
				t.Errorf("dns names = %v, want %v", leaf.DNSNames, tt.dns)
			}
			// RFC 5280 4.2.1.2: end-entity certificates SHOULD name their
			// key; RFC 7093 method 1, as the CA certificates do.
			if want := keyIdentifier(t, leaf.RawSubjectPublicKeyInfo); !bytes.Equal(leaf.SubjectKeyId, want) {
				t.Errorf("subject key identifier = %x, want %x", leaf.SubjectKeyId, want)
			}
			caCert := issuerOf(t, c, svid.Certificates[0])
			wantNotAfter := caCert.NotAfter
			if tt.wantTTL != 0 {
				wantNotAfter = before.Add(tt.wantTTL)
			}
			if !leaf.NotAfter.Equal(wantNotAfter) {
				t.Errorf("NotAfter = %s, want %s", leaf.NotAfter, wantNotAfter)
			}
			if want := before.Add(-10 * time.Second); !leaf.NotBefore.Equal(want) {
				t.Errorf("NotBefore = %s, want now-10s (%s)", leaf.NotBefore, want)
			}
			if !svid.ExpiresAt.Equal(leaf.NotAfter) || svid.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
				t.Errorf("ExpiresAt/SerialNumber do not match the leaf")
			}
		})
	}
}

// checkX509SVID validates an X509-SVID the way go-spiffe consumers do.
func checkX509SVID(t *testing.T, c *ca.CA, svid *ca.X509SVID, key crypto.Signer) {
	t.Helper()
	id, chains, err := x509svid.Verify(svid.Certificates, c.Bundle())
	if err != nil {
		t.Fatalf("x509svid.Verify: %v", err)
	}
	if id != testID || svid.ID != testID {
		t.Errorf("id = %s / %s, want %s", id, svid.ID, testID)
	}
	if len(chains) == 0 {
		t.Fatal("no verified chains")
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509svid.ParseRaw(chainDER(svid.Certificates), keyDER); err != nil {
		t.Errorf("x509svid.ParseRaw: %v", err)
	}
	if len(svid.Certificates) != 1 {
		t.Fatalf("chain length = %d, want 1 (the leaf; the self-signed CA is in the bundle)", len(svid.Certificates))
	}
	leaf := svid.Certificates[0]
	caCert := issuerOf(t, c, leaf)
	switch {
	case len(leaf.URIs) != 1 || leaf.URIs[0].String() != testID.String():
		t.Errorf("URIs = %v", leaf.URIs)
	case leaf.IsCA || !leaf.BasicConstraintsValid:
		t.Error("leaf must have valid basic constraints with CA=false")
	case !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}):
		t.Errorf("EKU = %v", leaf.ExtKeyUsage)
	case leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 128:
		t.Errorf("serial %s is not a positive 128-bit number", leaf.SerialNumber)
	case leaf.NotAfter.After(caCert.NotAfter):
		t.Error("leaf outlives its CA")
	}
	if !caCert.IsCA || caCert.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign ||
		len(caCert.URIs) != 1 || caCert.URIs[0].String() != "spiffe://example.org" {
		t.Errorf("CA certificate properties wrong: isCA=%v usage=%v uris=%v", caCert.IsCA, caCert.KeyUsage, caCert.URIs)
	}
}

func TestMintX509SVIDRefusals(t *testing.T) {
	c, _ := newTestCA(t, nil)
	ctx := context.Background()
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p256 := ecKey(t, elliptic.P256()).Public()
	badPoint := &ecdsa.PublicKey{Curve: elliptic.P256(), X: bigOne(), Y: bigOne()}
	tests := []struct {
		name string
		p    ca.X509Params
		want error
	}{
		{"rsa 1024 is weak", ca.X509Params{ID: testID, PublicKey: &rsa1024.PublicKey}, ca.ErrWeakKey},
		{"rsa 1024 is unsupported too", ca.X509Params{ID: testID, PublicKey: &rsa1024.PublicKey}, ca.ErrUnsupportedKey},
		{"ed25519", ca.X509Params{ID: testID, PublicKey: edPub}, ca.ErrUnsupportedKey},
		{"p224", ca.X509Params{ID: testID, PublicKey: ecKey(t, elliptic.P224()).Public()}, ca.ErrUnsupportedKey},
		{"point not on curve", ca.X509Params{ID: testID, PublicKey: badPoint}, ca.ErrUnsupportedKey},
		{"nil key", ca.X509Params{ID: testID}, ca.ErrInvalidParams},
		{"other trust domain", ca.X509Params{ID: spiffeid.RequireFromString("spiffe://evil.org/web"), PublicKey: p256}, ca.ErrInvalidParams},
		{"zero id", ca.X509Params{PublicKey: p256}, ca.ErrInvalidParams},
		{"trust domain id", ca.X509Params{ID: testTD.ID(), PublicKey: p256}, ca.ErrInvalidParams},
		{"negative ttl", ca.X509Params{ID: testID, PublicKey: p256, TTL: -time.Second}, ca.ErrInvalidParams},
		{"wildcard dns", ca.X509Params{ID: testID, PublicKey: p256, DNSNames: []string{"*.example.org"}}, ca.ErrInvalidParams},
		{"empty dns label", ca.X509Params{ID: testID, PublicKey: p256, DNSNames: []string{"a..b"}}, ca.ErrInvalidParams},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svid, err := c.MintX509SVID(ctx, tt.p)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if svid != nil {
				t.Error("got an SVID with an error")
			}
		})
	}
}

func TestMintX509SVIDAfterExpiryWithoutRotation(t *testing.T) {
	clk := newFakeClock(testStart)
	c, _ := newTestCA(t, func(cfg *ca.Config) { cfg.Now = clk.Now })
	clk.Add(ca.DefaultCATTL + time.Minute)
	_, err := c.MintX509SVID(context.Background(), ca.X509Params{ID: testID, PublicKey: ecKey(t, elliptic.P256()).Public()})
	if !errors.Is(err, ca.ErrAuthorityExpired) {
		t.Fatalf("err = %v, want ErrAuthorityExpired", err)
	}
	if _, err := c.MintJWTSVID(context.Background(), ca.JWTParams{ID: testID, Audience: []string{"a"}}); !errors.Is(err, ca.ErrAuthorityExpired) {
		t.Fatalf("jwt err = %v, want ErrAuthorityExpired", err)
	}
}

// issuerOf returns the bundle authority that signed leaf.
func issuerOf(t *testing.T, c *ca.CA, leaf *x509.Certificate) *x509.Certificate {
	t.Helper()
	for _, root := range c.X509Authorities() {
		if leaf.CheckSignatureFrom(root) == nil {
			return root
		}
	}
	t.Fatalf("no bundle authority signed the leaf")
	return nil
}

// keyIdentifier is the RFC 7093 (section 2, method 1) key identifier of
// a DER SubjectPublicKeyInfo: the leftmost 160 bits of the SHA-256 hash
// of its subjectPublicKey BIT STRING.
func keyIdentifier(t *testing.T, spkiDER []byte) []byte {
	t.Helper()
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(spkiDER, &spki); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(spki.PublicKey.Bytes)
	return h[:20]
}
