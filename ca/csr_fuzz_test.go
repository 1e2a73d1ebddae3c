package ca_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/url"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/ca"
)

// fuzzCSRID is the identity FuzzParseCSR requests. The static corpus in
// testdata/fuzz/FuzzParseCSR uses the same ID in its URI SANs.
var fuzzCSRID = spiffeid.RequireFromString("spiffe://example.org/node/join/0123456789abcdef")

func fuzzCSR(f *testing.F, key crypto.Signer, uris ...string) []byte {
	f.Helper()
	tpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "fuzz"}}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			f.Fatal(err)
		}
		tpl.URIs = append(tpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tpl, key)
	if err != nil {
		f.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// FuzzParseCSR checks that ParseCSR never panics, that every refusal is
// one of its documented errors, and that whatever it accepts is a
// well-formed, self-signed request for fuzzCSRID carrying an acceptable key.
func FuzzParseCSR(f *testing.F) {
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	valid := fuzzCSR(f, p256)
	withURI := fuzzCSR(f, p256, fuzzCSRID.String())
	f.Add(valid)
	f.Add(withURI)
	f.Add(fuzzCSR(f, p384, fuzzCSRID.String()))
	f.Add(fuzzCSR(f, p256, "spiffe://example.org/other"))
	f.Add(fuzzCSR(f, p256, fuzzCSRID.String(), fuzzCSRID.String()))
	f.Add(valid[:len(valid)/2]) // truncated PEM
	f.Add(valid[:len(valid)-len("-----END CERTIFICATE REQUEST-----\n")])
	f.Add([]byte("garbage"))
	f.Add([]byte{})
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte("-----BEGIN NEW CERTIFICATE REQUEST-----\nMAA=\n-----END NEW CERTIFICATE REQUEST-----\n"))
	if blk, _ := pem.Decode(withURI); blk != nil {
		f.Add(blk.Bytes) // DER without PEM armour
		blk.Type = "CERTIFICATE"
		f.Add(pem.EncodeToMemory(blk))
	}

	f.Fuzz(func(t *testing.T, in []byte) {
		pub, err := ca.ParseCSR(in, fuzzCSRID)
		if err != nil {
			if pub != nil {
				t.Fatalf("ParseCSR returned a key with error %v", err)
			}
			if !errors.Is(err, ca.ErrInvalidCSR) && !errors.Is(err, ca.ErrUnsupportedKey) && !errors.Is(err, ca.ErrCSRIdentity) {
				t.Fatalf("ParseCSR error %v is none of ErrInvalidCSR, ErrUnsupportedKey, ErrCSRIdentity", err)
			}
			return
		}
		if pub == nil {
			t.Fatal("ParseCSR returned neither a key nor an error")
		}
		checkFuzzedKey(t, pub)

		// What was accepted is a PEM request, self-signed, naming at most
		// the requested ID and nothing else.
		blk, _ := pem.Decode(in)
		if blk == nil {
			t.Fatal("accepted input has no PEM block")
		}
		csr, err := x509.ParseCertificateRequest(blk.Bytes)
		if err != nil {
			t.Fatalf("accepted input does not parse: %v", err)
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted CSR has a bad signature: %v", err)
		}
		if len(csr.URIs) > 1 || (len(csr.URIs) == 1 && csr.URIs[0].String() != fuzzCSRID.String()) {
			t.Fatalf("accepted CSR names %v", csr.URIs)
		}
		if len(csr.DNSNames)+len(csr.EmailAddresses)+len(csr.IPAddresses) > 0 {
			t.Fatalf("accepted CSR has DNS, e-mail or IP SANs")
		}
		if k, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pub) {
			t.Fatalf("returned key is not the CSR's key")
		}
	})
}

func checkFuzzedKey(t *testing.T, pub crypto.PublicKey) {
	t.Helper()
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			t.Fatalf("accepted ECDSA key on curve %v", k.Curve.Params().Name)
		}
		if _, err := k.Bytes(); err != nil {
			t.Fatalf("accepted invalid ECDSA point: %v", err)
		}
	case *rsa.PublicKey:
		if k.N == nil || k.N.BitLen() < 2048 {
			t.Fatalf("accepted weak RSA key")
		}
		if k.E < 3 || k.E%2 == 0 {
			t.Fatalf("accepted RSA exponent %d", k.E)
		}
	default:
		t.Fatalf("accepted key of type %T", pub)
	}
}
