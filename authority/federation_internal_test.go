package authority

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/logtest"
	"mandate.dev/mandate/store"
)

// peerBundle is a bundle of td with one X.509 authority of its own.
func peerBundle(t *testing.T, td spiffeid.TrustDomain) *spiffebundle.Bundle {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(td.ID().String())
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), URIs: []*url.URL{u}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	b := spiffebundle.New(td)
	b.AddX509Authority(cert)
	return b
}

// largeBundles gives, for a test of the bounds of the bundles handed
// out, bundleOf: a bundle of td holding the first n (up to max) of max
// CA certificates (about 700 bytes each in a bundle), and add: the
// federation with td added to a with such a bundle, by an admin.
func largeBundles(t *testing.T, a *Authority, max int) (bundleOf func(td string, n int) *spiffebundle.Bundle, add func(td string, n int) error) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for i := range max {
		tpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 1)), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		certs = append(certs, c)
	}
	admin := adminOf(t, a)
	bundleOf = func(td string, n int) *spiffebundle.Bundle {
		b := spiffebundle.New(spiffeid.RequireTrustDomainFromString(td))
		b.SetX509Authorities(certs[:n])
		return b
	}
	add = func(td string, n int) error {
		doc, err := bundleOf(td, n).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.AddFederation(t.Context(), admin, &Federation{TrustDomain: td, BundleEndpointURL: "https://127.0.0.1:1/bundle", Bundle: doc})
		return err
	}
	return bundleOf, add
}

// waitingOnMutexIn reports whether a goroutine waits for a mutex in the
// function fn (a name as stack traces print it).
func waitingOnMutexIn(fn string) bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, fn+"(") && strings.Contains(g, "Mutex).lockSlow") {
			return true
		}
	}
	return false
}

// A relationship added whose record cannot be stored is taken out of
// the federation manager again, also while a fetch of it waits to store
// the bundle it fetched: that fetch is refused, not waited for while it
// waits for the add (which would hang both, and every federation change
// after them).
func TestFederationAddFailingWhileItsFetchStores(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("org-b.example")
	doc, err := peerBundle(t, td).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(doc) }))
	defer web.Close()
	roots := filepath.Join(t.TempDir(), "web-roots.pem")
	if err := os.WriteFile(roots, credfile.EncodeCertsPEM([]*x509.Certificate{web.Certificate()}), 0o644); err != nil {
		t.Fatal(err)
	}
	// The commit of federation.added fails once the fetch of the new
	// relationship waits to store what it fetched.
	errCommit := errors.New("the commit failed")
	t.Cleanup(func() { committingEntry = nil })
	committingEntry = func(e audit.Entry) error {
		if e.Type != "federation.added" {
			return nil
		}
		for !waitingOnMutexIn("mandate.dev/mandate/authority.(*Authority).saveFederatedBundle") {
			time.Sleep(time.Millisecond)
		}
		return errCommit
	}
	a, _ := runAuthorityWith(t, Options{}, func(c *Config) { c.Federation.WebRootsFile = roots })
	added := make(chan error, 1)
	go func() {
		_, err := a.AddFederation(t.Context(), adminOf(t, a), &Federation{TrustDomain: td.Name(), BundleEndpointURL: web.URL + "/", Profile: "https_web"})
		added <- err
	}()
	select {
	case err := <-added:
		if !errors.Is(err, errCommit) {
			t.Fatalf("AddFederation = %v, want the commit's error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("AddFederation hangs: its record's failure waits for a fetch of the relationship, which waits for it")
	}
	if _, _, had := a.currentRelationship(td); had {
		t.Error("the relationship not stored is still in the federation manager")
	}
	if feds, err := a.loadFederations(t.Context()); err != nil || len(feds) != 0 {
		t.Errorf("federations stored: %v (%v), want none", feds, err)
	}
}

// A peer's bundle that changes only its WIT-SVID keys (use "wit-svid",
// which are kept and handed out with the other bundles) has other trust
// anchors: it is logged as federation.bundle_updated, naming the keys,
// and its anchors digest differs from the bundle's without them.
func TestFederatedBundleWITKeysAreAnchors(t *testing.T) {
	a := startAuthority(t)
	ctx, admin := t.Context(), adminOf(t, a)
	td := spiffeid.RequireTrustDomainFromString("org-b.example")
	held := peerBundle(t, td)
	doc, err := held.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddFederation(ctx, admin, &Federation{TrustDomain: td.Name(), BundleEndpointURL: "https://127.0.0.1:1/bundle", Bundle: doc}); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	withWIT := held.Clone()
	if err := withWIT.AddWITAuthority("wit-1", key.Public()); err != nil {
		t.Fatal(err)
	}
	if bundleAnchors(withWIT)["anchors_sha256"] == bundleAnchors(held)["anchors_sha256"] {
		t.Error("a bundle with a WIT-SVID key more has the same anchors_sha256")
	}
	before := entriesOf(t, a, "federation.bundle_updated")
	if err := a.saveFederatedBundle(ctx, td, withWIT); err != nil {
		t.Fatalf("saveFederatedBundle = %v", err)
	}
	got, _, err := a.SearchAudit(ctx, admin, audit.Query{Type: "federation.bundle_updated", Limit: 10})
	if err != nil || len(got) != before+1 {
		t.Fatalf("federation.bundle_updated entries: %d, %v; want %d: the new WIT-SVID key is trusted unlogged", len(got), err, before+1)
	}
	e, err := audit.Decode(got[len(got)-1].Entry)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		WIT []struct {
			KID string `json:"kid"`
		} `json:"wit_authorities"`
		Count int `json:"wit_authority_count"`
	}
	if err := e.ReadDetails(&d); err != nil || len(d.WIT) != 1 || d.WIT[0].KID != "wit-1" || d.Count != 1 {
		t.Errorf("federation.bundle_updated details %s (%v), want the WIT-SVID key named", e.Details, err)
	}
}

// A relationship added while a peer's fetched bundle is being stored
// cannot take the bundles handed out past maxBundlesBytes together with
// it: each was checked against the bundles without the other, so the
// add checks again once no fetch can store meanwhile.
func TestFederationAddedWhileAFetchStoresStaysWithinTheAnswer(t *testing.T) {
	a := startAuthority(t)
	ctx := t.Context()
	bundleOf, add := largeBundles(t, a, 1400)
	// Two bundles of about 0.95 MiB, and a small one: room for one more
	// large bundle, not two.
	for _, b := range []struct {
		td string
		n  int
	}{{"org-b.example", 1400}, {"org-c.example", 1400}, {"org-e.example", 1}} {
		if err := add(b.td, b.n); err != nil {
			t.Fatalf("AddFederation(%s) = %v", b.td, err)
		}
	}
	// org-e's fetched bundle grows to 0.95 MiB; while it is being
	// stored, org-d is added with as much.
	added := make(chan error, 1)
	var once sync.Once
	t.Cleanup(func() { committingEntry = nil })
	committingEntry = func(e audit.Entry) error {
		if e.Type == "federation.bundle_updated" {
			once.Do(func() {
				go func() { added <- add("org-d.example", 1400) }()
				for !waitingOnMutexIn("mandate.dev/mandate/authority.(*Authority).addFederation") {
					time.Sleep(time.Millisecond)
				}
			})
		}
		return nil
	}
	fetchErr := a.saveFederatedBundle(ctx, spiffeid.RequireTrustDomainFromString("org-e.example"), bundleOf("org-e.example", 1400))
	addErr := <-added
	if fetchErr == nil && addErr == nil {
		t.Errorf("both the fetched bundle and the relationship added were taken")
	}
	if got := len(a.bundles.Load().json); got > maxBundlesBytes {
		t.Errorf("bundles handed out: %d bytes, past %d", got, maxBundlesBytes)
	}
}

// A stored peer bundle holding keys the bundle rules leave out (here an
// X.509 authority that is no CA certificate, stored before the rule) is
// loaded at start without them, and the start says so: the operator
// sees that the peer's trust changed, and why.
func TestStoredBundleKeysLeftOutAreSaidAtStart(t *testing.T) {
	dir := t.TempDir()
	inDir := func(c *Config) { c.DataDir = dir }
	a, stop := runAuthorityWith(t, Options{}, inDir)
	td := spiffeid.RequireTrustDomainFromString("org-b.example")
	doc, err := peerBundle(t, td).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddFederation(t.Context(), adminOf(t, a), &Federation{TrustDomain: td.Name(), BundleEndpointURL: "https://127.0.0.1:1/bundle", Bundle: doc}); err != nil {
		t.Fatal(err)
	}
	stop()
	// A leaf certificate among the stored bundle's keys.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(td.ID().String() + "/endpoint")
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(9), URIs: []*url.URL{u}, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, &x509.Certificate{SerialNumber: big.NewInt(9)}, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	point, err := key.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.store.Update(t.Context(), func(tx store.Tx) error {
		v, err := tx.Get(bucketFederations, []byte(td.Name()))
		if err != nil {
			return err
		}
		f := new(Federation)
		if err := decodeRecord(v, f); err != nil {
			return err
		}
		var b map[string]any
		if err := json.Unmarshal(f.Bundle, &b); err != nil {
			return err
		}
		b["keys"] = append(b["keys"].([]any), map[string]any{"kty": "EC", "crv": "P-256", "use": "x509-svid",
			"x": base64.RawURLEncoding.EncodeToString(point[1:33]), "y": base64.RawURLEncoding.EncodeToString(point[33:]),
			"x5c": []string{base64.StdEncoding.EncodeToString(leafDER)}})
		if f.Bundle, err = json.Marshal(b); err != nil {
			return err
		}
		return putRecord(tx, bucketFederations, td.Name(), f)
	}); err != nil {
		t.Fatal(err)
	}
	a.Close()

	var logs logtest.Buffer
	b, _ := runAuthorityWith(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, inDir)
	rel, held, had := b.currentRelationship(td)
	if !had || rel.TrustDomain != td || len(held.X509Authorities()) != 1 {
		t.Fatalf("the stored relationship at start: %v %v", had, held)
	}
	if s := logs.String(); !strings.Contains(s, "level=WARN") || !strings.Contains(s, "not a CA certificate") || !strings.Contains(s, td.Name()) {
		t.Errorf("the start did not say which stored keys it left out:\n%s", s)
	}
}
