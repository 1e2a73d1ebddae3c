package credfile

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func testPair(t *testing.T) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, k
}

// TestRepeatedInterruptedRenewals: renewals interrupted after the key and
// before the certificate, several times in a row, still leave the last
// complete pair loadable.
func TestRepeatedInterruptedRenewals(t *testing.T) {
	p := In(t.TempDir())
	cert, key := testPair(t)
	if err := Write(p, []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, next := testPair(t)
		if err := replaceKey(p, next); err != nil { // the first half of Write, then a crash
			t.Fatal(err)
		}
		chain, got, _, err := Load(p)
		if err != nil || !chain[0].Equal(cert) || !KeyMatches(got, cert) {
			t.Fatalf("Load after an interrupted renewal = %v; want the last complete pair", err)
		}
	}
}

// TestNilKeyWriteAfterInterruptedRenewal: a renewal cut short between the
// key and the certificate leaves the old pair loadable (the old key in
// svid.key.prev); a certificate for that key, written next with the key
// kept (nil), must leave the pair loadable, not the certificate without
// its key.
func TestNilKeyWriteAfterInterruptedRenewal(t *testing.T) {
	p := In(t.TempDir())
	cert, key := testPair(t)
	if err := Write(p, []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	_, next := testPair(t)
	if err := replaceKey(p, next); err != nil { // the first half of Write, then a crash
		t.Fatal(err)
	}
	// The holder loads the pair (the old key, from svid.key.prev) and
	// renews with that key.
	_, held, _, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	renewed := certFor(t, held)
	if err := Write(p, []*x509.Certificate{renewed}, nil, []*x509.Certificate{renewed}); err != nil {
		t.Fatal(err)
	}
	chain, got, _, err := Load(p)
	if err != nil {
		t.Fatalf("Load after writing the renewed certificate with the key kept: %v", err)
	}
	if !chain[0].Equal(renewed) || !KeyMatches(got, renewed) {
		t.Fatal("Load did not return the renewed certificate with its key")
	}
}

// certFor is a self-signed stand-in certificate for key's public key
// (signed by another key: only the public key matters here).
func certFor(t *testing.T, key crypto.Signer) *x509.Certificate {
	t.Helper()
	_, signer := testPair(t)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// TestBundleLandsBeforeTheCertificate: a write cut short before the
// certificate lands has already written the new bundle, so the holder of
// the old certificate trusts the authority's current CAs and can reach
// it to renew.
func TestBundleLandsBeforeTheCertificate(t *testing.T) {
	p := In(t.TempDir())
	cert, key := testPair(t)
	if err := Write(p, []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	// The certificate cannot be replaced: a directory stands in its way.
	if err := os.Remove(p.Cert); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(p.Cert, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	next, nextKey := testPair(t)
	newCA, _ := testPair(t)
	if err := Write(p, []*x509.Certificate{next}, nextKey, []*x509.Certificate{newCA, cert}); err == nil {
		t.Fatal("Write replaced a certificate that cannot be replaced")
	}
	b, err := os.ReadFile(p.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ParseCertsPEM(b); err != nil || len(got) != 2 || !got[0].Equal(newCA) {
		t.Fatalf("the bundle after a write cut short before the certificate: %d certificates (%v), want the new bundle", len(got), err)
	}
}
