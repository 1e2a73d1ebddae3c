package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/credfile"
)

// A still valid credential of another identity is not written over
// because something else in its directory keeps it from loading as it
// is (its key made readable by others, its bundle damaged): fixed, it is
// usable again, and its key is nowhere else.
func TestOutHeldWhateverElseIsWrong(t *testing.T) {
	dir := t.TempDir()
	url := startServe(t, dir)
	t.Chdir(dir)
	must := func(args ...string) string { t.Helper(); return mustCLI(t, url, dir, args...) }
	nodeID := joinNode(t, url, dir, "")
	for _, name := range []string{"a1", "a2"} {
		must("admin", "agent", "create", "--spiffe-id", "spiffe://mandate.localhost/agent/"+name, "--node-id", nodeID,
			"--operator", "team", "--responsible-party", "x@mandate.localhost")
	}
	for _, tc := range []struct {
		name  string
		spoil func(dir string) error
	}{
		{"key readable by others", func(dir string) error { return os.Chmod(filepath.Join(dir, "svid.key"), 0o644) }},
		{"bundle damaged", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "bundle.pem"), []byte("damaged"), 0o644)
		}},
	} {
		out := "agent-" + strings.ReplaceAll(tc.name, " ", "-")
		must("svid", "x509", "--spiffe-id", "spiffe://mandate.localhost/agent/a1", "--out", out)
		key, err := os.ReadFile(filepath.Join(out, "svid.key"))
		if err != nil {
			t.Fatal(err)
		}
		if err := tc.spoil(out); err != nil {
			t.Fatal(err)
		}
		_, err = cli(t, url, dir, "svid", "x509", "--spiffe-id", "spiffe://mandate.localhost/agent/a2", "--out", out)
		if err == nil || !strings.Contains(err.Error(), "holds the credential of spiffe://mandate.localhost/agent/a1") || !strings.Contains(err.Error(), "does not load as it is") {
			t.Errorf("%s: svid x509 of a2 into a1's credential = %v, want it refused", tc.name, err)
		}
		if now, err := os.ReadFile(filepath.Join(out, "svid.key")); err != nil || !bytes.Equal(now, key) {
			t.Errorf("%s: a1's key was replaced (%v)", tc.name, err)
		}
	}
}

// A still valid certificate with its key in --out that is no X509-SVID
// (no SPIFFE ID, or more than one) is no identity the command may
// replace: it is refused, not written over, whatever identity is asked.
func TestOutHeldNotAnSVID(t *testing.T) {
	for _, tc := range []struct {
		name string
		uris []string
	}{
		{"no URI", nil},
		{"two SPIFFE IDs", []string{"spiffe://mandate.localhost/agent/a1", "spiffe://mandate.localhost/agent/a2"}},
		{"another scheme", []string{"https://mandate.localhost/a1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			tpl := &x509.Certificate{
				SerialNumber: big.NewInt(1),
				Subject:      pkix.Name{CommonName: "not an svid"},
				NotBefore:    time.Now().Add(-time.Minute),
				NotAfter:     time.Now().Add(time.Hour),
			}
			for _, u := range tc.uris {
				pu, err := url.Parse(u)
				if err != nil {
					t.Fatal(err)
				}
				tpl.URIs = append(tpl.URIs, pu)
			}
			der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := credfile.Write(credfile.In(out), []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
				t.Fatal(err)
			}
			err = checkOut(out, "--out", func(spiffeid.ID) bool { return true })
			if !errors.Is(err, errOutHeld) || !strings.Contains(err.Error(), "not an X509-SVID") {
				t.Errorf("checkOut of an --out holding a certificate with %s = %v, want it refused as not an X509-SVID", tc.name, err)
			}
		})
	}
}
