package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/delegation"
)

func BenchmarkMintX509SVID(b *testing.B) {
	c, _ := newTestCA(b, nil)
	p := ca.X509Params{ID: testID, PublicKey: ecKey(b, elliptic.P256()).Public()}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.MintX509SVID(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMintX509SVIDParallel(b *testing.B) {
	c, _ := newTestCA(b, nil)
	p := ca.X509Params{ID: testID, PublicKey: ecKey(b, elliptic.P256()).Public()}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.MintX509SVID(ctx, p); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkMintJWTSVID(b *testing.B) {
	c, _ := newTestCA(b, nil)
	p := ca.JWTParams{ID: testID, Audience: []string{"spiffe://example.org/db"}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.MintJWTSVID(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawECDSAP256Sign(b *testing.B) {
	key := ecKey(b, elliptic.P256())
	digest := sha256.Sum256([]byte("benchmark payload"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ecdsa.SignASN1(rand.Reader, key, digest[:]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawECDSAP256Verify(b *testing.B) {
	key := ecKey(b, elliptic.P256())
	digest := sha256.Sum256([]byte("benchmark payload"))
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig) {
			b.Fatal("verify failed")
		}
	}
}

// BenchmarkSignJWT signs delegation tokens' claims: a root hop (its
// delegator's signature, x5c inside, about 1.5 KB) and a hop whose parent
// token (8 KB) it carries.
func BenchmarkSignJWT(b *testing.B) {
	c, _ := newTestCA(b, nil)
	ctx := context.Background()
	exp := time.Now().Add(5 * time.Minute).Truncate(time.Second)
	claims := func(parent int) *delegation.Claims {
		cl := &delegation.Claims{Issuer: "spiffe://example.org", Subject: "alice", Audience: []string{"spiffe://example.org/agent/b"},
			IssuedAt: exp.Unix() - 300, Expiry: exp.Unix(), ID: "0123456789abcdef0123456789abcdef", Scope: "calendar:read",
			Act: &delegation.Actor{Subject: "spiffe://example.org/agent/b", Actor: &delegation.Actor{Subject: "spiffe://example.org/agent/a"}},
			Hop: delegation.Hop{Delegator: "spiffe://example.org/agent/a", Delegatee: "spiffe://example.org/agent/b", Depth: 1, Purpose: "plan",
				DelegatorSignature: strings.Repeat("eyJhbGciOiJFUzI1NiJ9", 75)}}
		if parent > 0 {
			cl.Hop.Depth = 2
			cl.Hop.Parent = &delegation.Parent{Issuer: "spiffe://example.org", ID: "fedcba9876543210fedcba9876543210", LogIndex: 7,
				LeafHash: strings.Repeat("ab", 32), Token: strings.Repeat("eyJhbGciOiJFUzI1NiJ9", parent/20)}
		}
		return cl
	}
	for _, bc := range []struct {
		name   string
		parent int
	}{{"root", 0}, {"parent8k", 8 << 10}} {
		b.Run(bc.name, func(b *testing.B) {
			cl := claims(bc.parent)
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := c.SignJWT(ctx, delegation.JWTType, cl, exp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
