package ca_test

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/ca"
)

// gatedKeys hands out signers that, once armed, stop in their next Sign
// until released: a signature under way while the state changes. With
// destroys, a signer whose key has been deleted fails, as one of an HSM
// whose key object was destroyed does.
type gatedKeys struct {
	ca.KeyManager
	destroys bool
	mu       sync.Mutex
	armed    bool
	entered  chan struct{}
	released chan struct{}
	deleted  map[string]bool
}

func (g *gatedKeys) DeleteKey(ctx context.Context, id string) error {
	g.mu.Lock()
	if g.deleted == nil {
		g.deleted = map[string]bool{}
	}
	g.deleted[id] = true
	g.mu.Unlock()
	return g.KeyManager.DeleteKey(ctx, id)
}

func (g *gatedKeys) arm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.armed, g.entered, g.released = true, make(chan struct{}), make(chan struct{})
}

func (g *gatedKeys) wrap(id string, s crypto.Signer, err error) (crypto.Signer, error) {
	if err != nil {
		return nil, err
	}
	return gatedSigner{s, g, id}, nil
}

func (g *gatedKeys) GenerateKey(ctx context.Context, id string, kt ca.KeyType) (crypto.Signer, error) {
	s, err := g.KeyManager.GenerateKey(ctx, id, kt)
	return g.wrap(id, s, err)
}

func (g *gatedKeys) GetKey(ctx context.Context, id string) (crypto.Signer, error) {
	s, err := g.KeyManager.GetKey(ctx, id)
	return g.wrap(id, s, err)
}

type gatedSigner struct {
	crypto.Signer
	g  *gatedKeys
	id string
}

func (s gatedSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.g.mu.Lock()
	armed := s.g.armed
	s.g.armed = false
	entered, released := s.g.entered, s.g.released
	s.g.mu.Unlock()
	if armed {
		close(entered)
		<-released
	}
	s.g.mu.Lock()
	destroyed := s.g.destroys && s.g.deleted[s.id]
	s.g.mu.Unlock()
	if destroyed {
		return nil, errors.New("the key object no longer exists")
	}
	return s.Signer.Sign(r, digest, opts)
}

// An authority revoked while an SVID it signs is being made (replaced,
// then revoked by an admin) does not hand that SVID out: it would verify
// with no bundle, and it is signed by a key its owner has disowned.
// What is handed out verifies with the bundle of the moment, also when
// the revoked authority's key, destroyed with it, can no longer sign.
func TestMintDuringRevocation(t *testing.T) {
	for _, tc := range []struct {
		what     string
		destroys bool
	}{
		{"x509-svid", false}, {"jwt-svid", false}, {"signed jwt", false},
		{"x509-svid", true}, {"jwt-svid", true}, {"signed jwt", true},
	} {
		what := tc.what
		kind := ca.KindJWT
		if what == "x509-svid" {
			kind = ca.KindX509
		}
		name := what
		if tc.destroys {
			name += ", its key destroyed"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			clk := newFakeClock(testStart)
			gk := &gatedKeys{destroys: tc.destroys}
			env := newEnv(t, rotationConfig(clk))
			gk.KeyManager = env.cfg.KeyManager
			env.cfg.KeyManager = gk
			c := env.newCA(t)
			old, _ := authorityOf(c, kind, ca.StateActive)
			clk.Add(time.Minute)
			leaf := ecKey(t, elliptic.P256())

			gk.arm()
			type result struct {
				x509  *ca.X509SVID
				jwt   *ca.JWTSVID
				token string
				err   error
			}
			done := make(chan result, 1)
			go func() {
				var r result
				switch what {
				case "x509-svid":
					r.x509, r.err = c.MintX509SVID(ctx, ca.X509Params{ID: testID, PublicKey: leaf.Public()})
				case "jwt-svid":
					r.jwt, r.err = c.MintJWTSVID(ctx, ca.JWTParams{ID: testID, Audience: []string{"db"}})
				default:
					exp := clk.Now().Add(time.Minute)
					r.token, _, r.err = c.SignJWT(ctx, "test+jwt", map[string]any{"exp": exp.Unix()}, exp)
				}
				done <- r
			}()
			<-gk.entered
			if _, err := c.Expedite(ctx, kind, 0); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Revoke(ctx, old.ID, ca.StateOld); err != nil {
				t.Fatal(err)
			}
			close(gk.released)
			r := <-done
			if r.err != nil {
				t.Fatalf("mint: %v", r.err)
			}
			switch what {
			case "x509-svid":
				if _, _, err := x509svid.Verify(r.x509.Certificates, c.Bundle().X509Bundle(), x509svid.WithTime(clk.Now())); err != nil {
					t.Errorf("the X509-SVID handed out does not verify with the bundle: %v", err)
				}
			case "jwt-svid":
				if _, err := verifyJWTAt(r.jwt.Token, c.Bundle(), []string{"db"}, clk.Now()); err != nil {
					t.Errorf("the JWT-SVID handed out does not verify with the bundle: %v", err)
				}
			default:
				tok, err := jose.ParseSignedCompact(r.token, []jose.SignatureAlgorithm{jose.ES256})
				if err != nil {
					t.Fatal(err)
				}
				key, ok := c.Bundle().FindJWTAuthority(tok.Signatures[0].Header.KeyID)
				if !ok {
					t.Fatal("the token handed out is signed by a key not in the bundle")
				}
				if _, err := tok.Verify(key); err != nil {
					t.Errorf("the token handed out does not verify with the bundle: %v", err)
				}
			}
		})
	}
}
