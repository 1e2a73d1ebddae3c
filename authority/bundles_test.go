package authority

import (
	"context"
	"testing"
	"time"
)

// TestBundleGenerationStable: rebuilding the bundle snapshot without any
// change keeps its generation (so open connections are not re-verified for
// nothing), also with two JWT keys in the bundle, whose JSON order is not
// stable; a rotation changes it.
func TestBundleGenerationStable(t *testing.T) {
	clock := &testClock{now: time.Now()}
	cfg := Config{DataDir: t.TempDir()}
	cfg.SetDefaults()
	ctx := context.Background()
	a, err := New(ctx, cfg, Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	before := a.BundleGeneration()
	clock.Advance(13 * time.Hour) // past half of the 24h CA and JWT key lifetimes
	if changed, err := a.ca.Rotate(ctx); err != nil || !changed {
		t.Fatalf("Rotate() = %v, %v; want the next authorities prepared", changed, err)
	}
	a.refreshBundles()
	gen := a.BundleGeneration()
	if gen == before {
		t.Errorf("BundleGeneration() after a rotation = %d, want a new generation", gen)
	}
	if n := len(a.Bundle().JWTAuthorities()); n != 2 {
		t.Fatalf("bundle has %d JWT keys, want 2 (active and prepared)", n)
	}
	for range 50 {
		a.refreshBundles()
	}
	if got := a.BundleGeneration(); got != gen {
		t.Errorf("BundleGeneration() after 50 rebuilds without change = %d, want %d", got, gen)
	}
}
