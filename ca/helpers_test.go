package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/ca"
)

var (
	testTD    = spiffeid.RequireTrustDomainFromString("example.org")
	testID    = spiffeid.RequireFromString("spiffe://example.org/workload/web")
	testStart = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
)

// fakeClock is an injectable, manually advanced clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) Add(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = f.t.Add(d)
}

// testEnv bundles what a test needs to build and rebuild a CA.
type testEnv struct {
	cfg    ca.Config
	keyDir string
}

func newEnv(t testing.TB, mod func(*ca.Config)) *testEnv {
	t.Helper()
	keyDir := filepath.Join(t.TempDir(), "keys")
	km, err := ca.NewDiskKeyManager(keyDir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ca.Config{TrustDomain: testTD, KeyManager: km, Journal: ca.NewMemoryJournal()}
	if mod != nil {
		mod(&cfg)
	}
	return &testEnv{cfg: cfg, keyDir: keyDir}
}

func (e *testEnv) newCA(t testing.TB) *ca.CA {
	t.Helper()
	c, err := ca.New(context.Background(), e.cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func newTestCA(t testing.TB, mod func(*ca.Config)) (*ca.CA, *testEnv) {
	t.Helper()
	e := newEnv(t, mod)
	return e.newCA(t), e
}

// keyFiles lists the key files in dir, sorted.
func keyFiles(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".pem") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}

func ecKey(t testing.TB, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// verifyJWTAt validates a JWT-SVID like jwtsvid.ParseAndValidate, but at
// the given instant instead of time.Now, without any exp leeway.
func verifyJWTAt(token string, b *spiffebundle.Bundle, aud []string, now time.Time) (spiffeid.ID, error) {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256, jose.ES384})
	if err != nil {
		return spiffeid.ID{}, err
	}
	key, ok := b.FindJWTAuthority(tok.Headers[0].KeyID)
	if !ok {
		return spiffeid.ID{}, errors.New("kid not in bundle")
	}
	var claims jwt.Claims
	if err := tok.Claims(key, &claims); err != nil {
		return spiffeid.ID{}, err
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{AnyAudience: aud, Time: now}, 0); err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromString(claims.Subject)
}

// authorityIDs returns the ids of the bundle's X.509 authorities (hex
// SKID, as in Status) and JWT authorities (kid).
func authorityIDs(b *spiffebundle.Bundle) []string {
	var ids []string
	for _, c := range b.X509Authorities() {
		ids = append(ids, hex.EncodeToString(c.SubjectKeyId))
	}
	for kid := range b.JWTAuthorities() {
		ids = append(ids, kid)
	}
	sort.Strings(ids)
	return ids
}

func sameAuthorities(a, b *spiffebundle.Bundle) bool {
	ia, ib := authorityIDs(a), authorityIDs(b)
	if len(ia) != len(ib) {
		return false
	}
	for i := range ia {
		if ia[i] != ib[i] {
			return false
		}
	}
	return true
}

func seqOf(t testing.TB, b *spiffebundle.Bundle) uint64 {
	t.Helper()
	s, ok := b.SequenceNumber()
	if !ok {
		t.Fatal("bundle has no sequence number")
	}
	return s
}

func chainDER(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}

func bigOne() *big.Int { return big.NewInt(1) }
