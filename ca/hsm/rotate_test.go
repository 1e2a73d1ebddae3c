package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/ca/hsm"
	"mandate.dev/mandate/ca/hsm/hsmtest"
)

// failingJournal fails its saves while fail is set.
type failingJournal struct {
	ca.Journal
	mu   sync.Mutex
	fail bool
}

func (j *failingJournal) setFail(f bool) { j.mu.Lock(); j.fail = f; j.mu.Unlock() }

func (j *failingJournal) Save(ctx context.Context, b []byte) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.fail {
		return errors.New("disk full")
	}
	return j.Journal.Save(ctx, b)
}

// recorder is a KeyManager of the token that notes the keys it made.
type recorder struct {
	*hsm.KeyManager
	mu   sync.Mutex
	made []string
}

func (r *recorder) GenerateKey(ctx context.Context, id string, kt ca.KeyType) (crypto.Signer, error) {
	r.mu.Lock()
	r.made = append(r.made, id)
	r.mu.Unlock()
	return r.KeyManager.GenerateKey(ctx, id, kt)
}

func (r *recorder) madeSoFar() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.made)
}

// A CA whose keys are in the token, of either key type, rotates through
// several lives of its X.509 CA and JWT key: what it signs verifies with
// its bundle at every step (the token's ECDSA signatures, in a
// certificate and as a JWS), a key is deleted from the token once its
// authority is pruned, a step whose save fails leaves no key behind in
// the token, and the token holds exactly the keys of the authorities the
// CA has.
func TestCARotatesWithKeysInTheToken(t *testing.T) {
	for _, tc := range []struct {
		kt    ca.KeyType
		curve elliptic.Curve
		alg   jose.SignatureAlgorithm
	}{{ca.KeyTypeECP256, elliptic.P256(), jose.ES256}, {ca.KeyTypeECP384, elliptic.P384(), jose.ES384}} {
		t.Run(string(tc.kt), func(t *testing.T) {
			cfg := hsmtest.Token(t, "mandate")
			m, err := hsm.Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			ctx := context.Background()
			now := time.Now().Truncate(time.Second)
			clock := func() time.Time { return now }
			journal := &failingJournal{Journal: ca.NewMemoryJournal()}
			td := spiffeid.RequireTrustDomainFromString("org-a.example")
			km := &recorder{KeyManager: m}
			c, err := ca.New(ctx, ca.Config{TrustDomain: td, KeyManager: km, Journal: journal, KeyType: tc.kt,
				CATTL: time.Hour, JWTKeyTTL: time.Hour, X509SVIDTTL: 20 * time.Minute, JWTSVIDTTL: 5 * time.Minute, Now: clock})
			if err != nil {
				t.Fatal(err)
			}
			leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			id := spiffeid.RequireFromString("spiffe://org-a.example/agent/x")
			// keysOf are the key ids of the authorities the CA has.
			keysOf := func() []string {
				var ids []string
				for _, a := range c.Status() {
					ids = append(ids, a.KeyID)
				}
				slices.Sort(ids)
				return ids
			}
			for step := range 24 { // 4 hours: 4 lives of each
				if step == 10 {
					// A step whose save fails: the keys it made are
					// deleted from the token again.
					made := len(km.madeSoFar())
					journal.setFail(true)
					for range 6 {
						if _, err := c.Rotate(ctx); err != nil {
							break
						}
						now = now.Add(10 * time.Minute)
					}
					journal.setFail(false)
					if len(km.madeSoFar()) == made {
						t.Fatal("no key was made for the step whose save failed")
					}
					if got := inToken(t, m, km.madeSoFar()); !slices.Equal(got, keysOf()) {
						t.Errorf("after a failed save, the token holds %v, want %v", got, keysOf())
					}
				}
				if _, err := c.Rotate(ctx); err != nil {
					t.Fatalf("step %d: Rotate: %v", step, err)
				}
				svid, err := c.MintX509SVID(ctx, ca.X509Params{ID: id, PublicKey: leafKey.Public()})
				if err != nil {
					t.Fatalf("step %d: MintX509SVID: %v", step, err)
				}
				roots := x509.NewCertPool()
				for _, r := range c.X509Authorities() {
					roots.AddCert(r)
					if pub, ok := r.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != tc.curve {
						t.Fatalf("step %d: an X.509 authority's key is %T, want one on %s", step, r.PublicKey, tc.curve.Params().Name)
					}
				}
				if _, err := svid.Certificates[0].Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
					t.Errorf("step %d: the X509-SVID does not verify with the bundle: %v", step, err)
				}
				jwt, err := c.MintJWTSVID(ctx, ca.JWTParams{ID: id, Audience: []string{"api"}})
				if err != nil {
					t.Fatalf("step %d: MintJWTSVID: %v", step, err)
				}
				jws, err := jose.ParseSignedCompact(jwt.Token, []jose.SignatureAlgorithm{tc.alg})
				if err != nil {
					t.Fatalf("step %d: the JWT-SVID: %v", step, err)
				}
				pub, ok := c.Bundle().FindJWTAuthority(jwt.KeyID)
				if !ok {
					t.Fatalf("step %d: the JWT-SVID's key %s is not in the bundle", step, jwt.KeyID)
				}
				if _, err := jws.Verify(pub); err != nil {
					t.Errorf("step %d: the JWT-SVID does not verify with the bundle: %v", step, err)
				}
				now = now.Add(10 * time.Minute)
			}
			all := km.madeSoFar()
			if len(all) < 8 {
				t.Fatalf("%d keys over 4 hours: the CA did not rotate", len(all))
			}
			if got := inToken(t, m, all); !slices.Equal(got, keysOf()) {
				t.Errorf("the token holds %v, want the keys of the CA's authorities only: %v", got, keysOf())
			}
		})
	}
}

// inToken are those of ids whose key is in the token, sorted.
func inToken(t *testing.T, m *hsm.KeyManager, ids []string) []string {
	t.Helper()
	var in []string
	for _, id := range ids {
		_, err := m.GetKey(context.Background(), id)
		switch {
		case err == nil:
			if !slices.Contains(in, id) {
				in = append(in, id)
			}
		case !errors.Is(err, ca.ErrKeyNotFound):
			t.Fatal(err)
		}
	}
	slices.Sort(in)
	return in
}
