package authority

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/credfile"
)

// Each CA change made while the authority runs is stored in the commit
// that logs ca.rotated with the authorities it leaves; with the log
// stopped, the CA does not change.
func TestCAChangesAreStoredWithTheirEntry(t *testing.T) {
	clock := &testClock{now: time.Now()}
	advance := clock.Advance
	a, stop := runAuthorityWith(t, Options{Now: clock.Now})
	ctx := t.Context()
	rotated := func() [][]ca.AuthorityInfo {
		t.Helper()
		got, _, err := a.SearchAudit(ctx, adminOf(t, a), audit.Query{Type: "ca.rotated", Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var out [][]ca.AuthorityInfo
		for _, h := range got {
			var e struct {
				Details struct {
					Authorities []ca.AuthorityInfo `json:"authorities"`
				} `json:"details"`
			}
			if err := json.Unmarshal(h.Entry, &e); err != nil {
				t.Fatal(err)
			}
			out = append(out, e.Details.Authorities)
		}
		return out
	}
	if got := rotated(); len(got) != 0 {
		t.Fatalf("ca.rotated before any rotation: %v", got)
	}

	advance(13 * time.Hour) // past half the CA's 24 h: successors are prepared
	// (by this call, or by the CA's own ticker if it fired meanwhile)
	if _, err := a.ca.Rotate(ctx); err != nil {
		t.Fatalf("Rotate() = %v", err)
	}
	prepared := a.ca.Status()
	got := rotated()
	if len(got) != 1 || !sameAuthorities(got[0], prepared) {
		t.Fatalf("ca.rotated entries %v, want one with %v", got, prepared)
	}

	stop()                 // the audit log stops
	advance(8 * time.Hour) // past 5/6: the prepared ones would be activated
	if changed, err := a.ca.Rotate(ctx); err == nil || changed {
		t.Fatalf("Rotate() with the log stopped = %v, %v; want an error", changed, err)
	}
	if st := a.ca.Status(); !sameAuthorities(st, prepared) {
		t.Errorf("CA after a rotation the log could not record: %v, want it unchanged %v", st, prepared)
	}
	stored, err := caJournal{a}.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if infos, err := ca.StateAuthorities(a.td, stored); err != nil || !sameAuthorities(infos, prepared) {
		t.Errorf("stored CA state %v (%v), want it unchanged", infos, err)
	}
}

// sameAuthorities compares authority lists as JSON (times as logged).
func sameAuthorities(x, y []ca.AuthorityInfo) bool {
	jx, _ := json.Marshal(x)
	jy, _ := json.Marshal(y)
	var vx, vy any
	_ = json.Unmarshal(jx, &vx)
	_ = json.Unmarshal(jy, &vy)
	return reflect.DeepEqual(vx, vy)
}

// An upstream chain that does not end with a root is said at start: its
// last certificate is the bundle's trust anchor, which relying parties
// that want a chain to end at a self-signed root refuse.
func TestUpstreamChainWithoutRootIsSaid(t *testing.T) {
	now := time.Now()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	sign := func(tpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
		der, err := x509.CreateCertificate(rand.Reader, tpl, parent, pub, key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rootKey, interKey := newKey(), newKey()
	rootTpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Org Root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(60 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	root := sign(rootTpl, rootTpl, rootKey.Public(), rootKey)
	interTpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Org Issuing CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(50 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		MaxPathLen: 1, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	inter := sign(interTpl, root, interKey.Public(), rootKey)
	// Roots naming a trust domain (a SPIFFE ID URI SAN): another's makes
	// the bundle that trust domain's, which clients and peers refuse.
	namedRoot := func(td string) *x509.Certificate {
		tpl := *rootTpl
		u, _ := url.Parse("spiffe://" + td)
		tpl.URIs = []*url.URL{u}
		return sign(&tpl, &tpl, rootKey.Public(), rootKey)
	}

	for _, tt := range []struct {
		name    string
		chain   []*x509.Certificate
		key     crypto.Signer
		said    bool
		refused string // in New's error
	}{
		{"a root", []*x509.Certificate{root}, rootKey, false, ""},
		{"an intermediate and its root", []*x509.Certificate{inter, root}, interKey, false, ""},
		{"an intermediate alone", []*x509.Certificate{inter}, interKey, true, ""},
		{"a root of this trust domain", []*x509.Certificate{namedRoot("org-a.example")}, rootKey, false, ""},
		{"a root of another trust domain", []*x509.Certificate{namedRoot("corp.example")}, rootKey, false, `names "spiffe://corp.example"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			certFile, keyFile := filepath.Join(dir, "up.pem"), filepath.Join(dir, "up.key")
			kb, err := credfile.EncodeKeyPEM(tt.key)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(certFile, credfile.EncodeCertsPEM(tt.chain), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(keyFile, kb, 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := Config{TrustDomain: "org-a.example", DataDir: filepath.Join(dir, "data"), Listen: "127.0.0.1:0"}
			cfg.CA.UpstreamCertFile, cfg.CA.UpstreamKeyFile = certFile, keyFile
			cfg.SetDefaults()
			var logs bytes.Buffer
			a, err := New(t.Context(), cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if tt.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("New = %v, want it refused: %s", err, tt.refused)
				}
				if _, err := os.Stat(cfg.DataDir); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("the data directory was made (%v): want nothing made before the refusal", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New = %v", err)
			}
			a.Close()
			if said := strings.Contains(logs.String(), "does not end with a root certificate"); said != tt.said {
				t.Errorf("said a chain without a root = %v, want %v; log:\n%s", said, tt.said, logs.String())
			}
		})
	}
}
