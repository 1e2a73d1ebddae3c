package ca_test

import (
	"context"
	"crypto/elliptic"
	"sync"
	"testing"
	"time"

	"mandate.dev/mandate/ca"
)

func TestSubscribe(t *testing.T) {
	clk := newFakeClock(testStart)
	c, _ := newTestCA(t, rotationConfig(clk))
	ch, cancel := c.Subscribe()
	defer cancel()
	if changed, _ := c.Rotate(context.Background()); changed {
		t.Fatal("unexpected change")
	}
	select {
	case <-ch:
		t.Fatal("notified without a change")
	default:
	}
	clk.Add(31 * time.Minute)
	if changed, err := c.Rotate(context.Background()); err != nil || !changed {
		t.Fatalf("Rotate = %v, %v", changed, err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("no notification after a change")
	}
	cancel()
	clk.Add(20 * time.Minute)
	if _, err := c.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("notified after cancel")
	default:
	}
}

func TestRun(t *testing.T) {
	clk := newFakeClock(testStart)
	c, _ := newTestCA(t, func(cfg *ca.Config) {
		rotationConfig(clk)(cfg)
		cfg.RotationInterval = 5 * time.Millisecond
	})
	ch, cancel := c.Subscribe()
	defer cancel()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	clk.Add(31 * time.Minute)
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not rotate")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// TestConcurrentMintAndRotate exercises the lock-free mint path against
// rotation; run with -race.
func TestConcurrentMintAndRotate(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(testStart)
	c, _ := newTestCA(t, rotationConfig(clk))
	key := ecKey(t, elliptic.P256())
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if _, err := c.MintX509SVID(ctx, ca.X509Params{ID: testID, PublicKey: key.Public()}); err != nil {
					errs <- err
					return
				}
				if _, err := c.MintJWTSVID(ctx, ca.JWTParams{ID: testID, Audience: []string{"a"}}); err != nil {
					errs <- err
					return
				}
				_ = c.Bundle()
				_ = c.Status()
			}
		}()
	}
	for i := 0; i < 100; i++ {
		clk.Add(time.Minute)
		if _, err := c.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
