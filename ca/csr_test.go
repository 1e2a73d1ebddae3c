package ca_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/ca"
)

func csrPEM(t *testing.T, key crypto.Signer, uris ...string) []byte {
	t.Helper()
	tpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tpl.URIs = append(tpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestParseCSR(t *testing.T) {
	p256 := ecKey(t, elliptic.P256())
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tampered := func() []byte {
		block, _ := pem.Decode(csrPEM(t, p256))
		block.Bytes[len(block.Bytes)-1] ^= 0xff
		return pem.EncodeToMemory(block)
	}()
	// Made with openssl: a P-256 key's CSR signed over SHA-1 (a proof
	// of possession no longer accepted), and a CSR of a secp256k1 key.
	fixture := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want error // nil: accepted
	}{
		{"signed over sha-1", fixture("csr-p256-sha1.pem"), ca.ErrInvalidCSR},
		{"secp256k1", fixture("csr-secp256k1.pem"), ca.ErrUnsupportedKey},
		{"no uri", csrPEM(t, p256), nil},
		{"matching uri", csrPEM(t, p256, testID.String()), nil},
		{"other id", csrPEM(t, p256, "spiffe://example.org/other"), ca.ErrCSRIdentity},
		{"two uris", csrPEM(t, p256, testID.String(), testID.String()), ca.ErrCSRIdentity},
		{"weak rsa", csrPEM(t, rsa1024), ca.ErrWeakKey},
		{"ed25519", csrPEM(t, edKey), ca.ErrUnsupportedKey},
		{"bad signature", tampered, ca.ErrInvalidCSR},
		{"garbage", []byte("hello"), ca.ErrInvalidCSR},
		{"certificate instead", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), ca.ErrInvalidCSR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub, err := ca.ParseCSR(tt.in, testID)
			if tt.want == nil {
				if err != nil || !p256.PublicKey.Equal(pub) {
					t.Fatalf("ParseCSR = %v, %v", pub, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestJWTAlgorithm(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, tt := range []struct {
		pub  crypto.PublicKey
		want string
	}{
		{ecKey(t, elliptic.P256()).Public(), "ES256"},
		{ecKey(t, elliptic.P384()).Public(), "ES384"},
		{rsaKey.Public(), ""},
	} {
		if got := ca.JWTAlgorithm(tt.pub); got != tt.want {
			t.Errorf("JWTAlgorithm(%T) = %q, want %q", tt.pub, got, tt.want)
		}
	}
}

func TestMintX509SVIDSubjectAndIPs(t *testing.T) {
	c, _ := newTestCA(t, nil)
	key := ecKey(t, elliptic.P256())
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	subject := pkix.Name{Organization: []string{"Mandate"}, OrganizationalUnit: []string{"host:spiffe://example.org/node/1"}}
	svid, err := c.MintX509SVID(context.Background(), ca.X509Params{ID: testID, PublicKey: key.Public(), IPAddresses: ips, Subject: subject})
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(ips[0]) || !leaf.IPAddresses[1].Equal(ips[1]) {
		t.Errorf("ip sans = %v", leaf.IPAddresses)
	}
	if len(leaf.Subject.OrganizationalUnit) != 1 || leaf.Subject.OrganizationalUnit[0] != subject.OrganizationalUnit[0] {
		t.Errorf("subject = %v", leaf.Subject)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, c.Bundle()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MintX509SVID(context.Background(), ca.X509Params{ID: testID, PublicKey: key.Public(), IPAddresses: []net.IP{{1, 2}}}); !errors.Is(err, ca.ErrInvalidParams) {
		t.Errorf("malformed ip accepted: %v", err)
	}
}
