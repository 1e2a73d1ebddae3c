package ca_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"mandate.dev/mandate/ca"
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
