package ca_test

import (
	"context"
	"crypto/elliptic"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/ca"
)

func TestRestartReusesState(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(testStart)
	env := newEnv(t, rotationConfig(clk))
	journal := env.cfg.Journal.(*ca.MemoryJournal)
	tests := []struct {
		name    string
		advance time.Duration // before restarting; 31m leaves a prepared authority
	}{
		{"fresh", 0},
		{"with prepared authorities", 31 * time.Minute},
		{"with old authorities", 20 * time.Minute},
	}
	c1 := env.newCA(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk.Add(tt.advance)
			if _, err := c1.Rotate(ctx); err != nil {
				t.Fatal(err)
			}
			b1, status1, files1, saves1 := c1.Bundle(), c1.Status(), keyFiles(t, env.keyDir), journal.Saves()

			km, err := ca.NewDiskKeyManager(env.keyDir) // fresh manager: no cached keys
			if err != nil {
				t.Fatal(err)
			}
			cfg := env.cfg
			cfg.KeyManager = km
			c2, err := ca.New(ctx, cfg)
			if err != nil {
				t.Fatalf("restart: %v", err)
			}
			if !c2.Bundle().Equal(b1) {
				t.Error("restarted CA serves a different bundle")
			}
			if !slices.Equal(c2.Status(), status1) {
				t.Errorf("status differs after restart:\n%+v\n%+v", c2.Status(), status1)
			}
			if files := keyFiles(t, env.keyDir); !slices.Equal(files, files1) {
				t.Errorf("key files changed on restart: %v -> %v", files1, files)
			}
			if journal.Saves() != saves1 {
				t.Error("restart saved state although nothing changed")
			}
			svid, err := c2.MintX509SVID(ctx, ca.X509Params{ID: testID, PublicKey: ecKey(t, elliptic.P256()).Public()})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := x509svid.Verify(svid.Certificates, b1, x509svid.WithTime(clk.Now())); err != nil {
				t.Errorf("SVID from restarted CA does not verify against the old bundle: %v", err)
			}
			c1 = c2
		})
	}
}

func TestRestartFailures(t *testing.T) {
	ctx := context.Background()
	t.Run("other trust domain", func(t *testing.T) {
		env := newEnv(t, nil)
		env.newCA(t)
		cfg := env.cfg
		cfg.TrustDomain = spiffeid.RequireTrustDomainFromString("other.org")
		if _, err := ca.New(ctx, cfg); err == nil {
			t.Fatal("loaded another trust domain's state")
		}
	})
	t.Run("active key missing", func(t *testing.T) {
		env := newEnv(t, nil)
		c := env.newCA(t)
		keyID := c.Status()[0].KeyID
		if err := os.Remove(filepath.Join(env.keyDir, keyID+".pem")); err != nil {
			t.Fatal(err)
		}
		km, _ := ca.NewDiskKeyManager(env.keyDir)
		cfg := env.cfg
		cfg.KeyManager = km
		if _, err := ca.New(ctx, cfg); !errors.Is(err, ca.ErrKeyNotFound) {
			t.Fatalf("New = %v, want ErrKeyNotFound", err)
		}
	})
	t.Run("corrupt journal", func(t *testing.T) {
		env := newEnv(t, nil)
		if err := env.cfg.Journal.Save(ctx, []byte(`{"version":1,"trust_domain":"example.org","authorities":[{"kind":"x509"}]}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := ca.New(ctx, env.cfg); err == nil {
			t.Fatal("loaded a corrupt journal")
		}
	})
}

func TestRestartPreparedKeyMissing(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(testStart)
	env := newEnv(t, rotationConfig(clk))
	c := env.newCA(t)
	clk.Add(31 * time.Minute)
	if _, err := c.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	var prepared ca.AuthorityInfo
	for _, a := range c.Status() {
		if a.Kind == ca.KindX509 && a.State == ca.StatePrepared {
			prepared = a
		}
	}
	if err := os.Remove(filepath.Join(env.keyDir, prepared.KeyID+".pem")); err != nil {
		t.Fatal(err)
	}
	km, _ := ca.NewDiskKeyManager(env.keyDir)
	cfg := env.cfg
	cfg.KeyManager = km
	c2, err := ca.New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	// The unusable prepared CA is demoted (still published) and replaced.
	states := map[string]ca.State{}
	for _, a := range c2.Status() {
		if a.Kind == ca.KindX509 {
			states[a.ID] = a.State
		}
	}
	if states[prepared.ID] != ca.StateOld {
		t.Errorf("prepared CA with missing key is %q, want old", states[prepared.ID])
	}
	clk.Add(time.Minute)
	if _, err := c2.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	for _, a := range c2.Status() {
		if a.Kind == ca.KindX509 && a.State == ca.StatePrepared {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d prepared x509 authorities after recovery, want 1", n)
	}
}
