package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"mandate.dev/mandate/credfile"
)

// pendingJoin tells a join's own unfinished write (join.key, and a valid
// credential holding its key) from a join.key an expired credential
// holds (never asked with again) and from anything else.
func TestPendingJoin(t *testing.T) {
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	cred := func(dir string, key *ecdsa.PrivateKey, notAfter time.Time) {
		id, _ := url.Parse("spiffe://mandate.localhost/node/join/n1")
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), URIs: []*url.URL{id}, NotBefore: notAfter.Add(-2 * time.Hour), NotAfter: notAfter,
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		if err := credfile.Write(credfile.In(dir), []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
			t.Fatal(err)
		}
	}
	joinKeyFile := func(dir string, key *ecdsa.PrivateKey) {
		b, err := credfile.EncodeKeyPEM(key)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "join.key"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name              string
		setup             func(dir string)
		wantHeld, wantOld bool
	}{
		{"nothing there", func(string) {}, false, false},
		{"join.key alone", func(dir string) { joinKeyFile(dir, newKey()) }, false, false},
		{"a valid credential alone", func(dir string) { cred(dir, newKey(), time.Now().Add(time.Hour)) }, false, false},
		{"a valid credential of join.key", func(dir string) {
			k := newKey()
			cred(dir, k, time.Now().Add(time.Hour))
			joinKeyFile(dir, k)
		}, true, false},
		{"a valid credential of another key", func(dir string) {
			cred(dir, newKey(), time.Now().Add(time.Hour))
			joinKeyFile(dir, newKey())
		}, false, false},
		{"an expired credential of join.key", func(dir string) {
			k := newKey()
			cred(dir, k, time.Now().Add(-time.Hour))
			joinKeyFile(dir, k)
		}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(dir)
			if held, stale := pendingJoin(dir); held != tc.wantHeld || stale != tc.wantOld {
				t.Fatalf("pendingJoin = held %v, stale %v; want %v, %v", held, stale, tc.wantHeld, tc.wantOld)
			}
		})
	}
}
