package ca_test

import (
	"context"
	"crypto/elliptic"
	"encoding/json"
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

// The bundle's refresh hint is part of its contents: a restart with
// another Config.RefreshHint publishes the bundle with it under a new
// sequence number (SPIFFE Trust Domain and Bundle §4.1.1); one with the
// same hint changes nothing.
func TestRestartWithAnotherRefreshHint(t *testing.T) {
	ctx := context.Background()
	env := newEnv(t, func(c *ca.Config) { c.RefreshHint = 5 * time.Minute })
	journal := env.cfg.Journal.(*ca.MemoryJournal)
	first := env.newCA(t).Bundle()
	seq, _ := first.SequenceNumber()
	tests := []struct {
		name    string
		hint    time.Duration
		wantSeq uint64
	}{
		{"same hint", 5 * time.Minute, seq},
		{"another hint", 10 * time.Minute, seq + 1},
		{"that hint again", 10 * time.Minute, seq + 1},
		{"the first hint back", 5 * time.Minute, seq + 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			saves := journal.Saves()
			cfg := env.cfg
			cfg.RefreshHint = tt.hint
			c, err := ca.New(ctx, cfg)
			if err != nil {
				t.Fatalf("restart: %v", err)
			}
			b := c.Bundle()
			gotSeq, _ := b.SequenceNumber()
			gotHint, _ := b.RefreshHint()
			if gotSeq != tt.wantSeq || gotHint != tt.hint {
				t.Errorf("bundle after restart: sequence %d, hint %s; want %d, %s", gotSeq, gotHint, tt.wantSeq, tt.hint)
			}
			if changed := gotSeq != seq; changed != (journal.Saves() > saves) {
				t.Errorf("sequence %d -> %d, journal saves %d -> %d: want a save exactly when the bundle changed", seq, gotSeq, saves, journal.Saves())
			}
			if !c.Bundle().X509Bundle().Equal(first.X509Bundle()) || !c.Bundle().JWTBundle().Equal(first.JWTBundle()) {
				t.Error("the authorities changed with the hint")
			}
			seq = gotSeq
		})
	}
}

// A state saved before the hint was kept with it: the hint it was
// published with is unknown, so the bundle is published once more under
// a new sequence number, then restarts change nothing.
func TestRestartFromAStateWithoutItsHint(t *testing.T) {
	ctx := context.Background()
	env := newEnv(t, nil)
	journal := env.cfg.Journal.(*ca.MemoryJournal)
	seq, _ := env.newCA(t).Bundle().SequenceNumber()
	data, err := journal.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	delete(rec, "bundle_refresh_hint_ns")
	if data, err = json.Marshal(rec); err != nil {
		t.Fatal(err)
	}
	if err := journal.Save(ctx, data); err != nil {
		t.Fatal(err)
	}
	for _, want := range []uint64{seq + 1, seq + 1} {
		if got, _ := env.newCA(t).Bundle().SequenceNumber(); got != want {
			t.Errorf("sequence after restart = %d, want %d", got, want)
		}
	}
}

// TestRestartsKeepEverySVIDVerifiable steps an injected clock minute by
// minute through four hours, restarting the CA every 17 minutes with
// other authority lifetimes (shorter and longer than those of the
// authorities it finds) and leaving it down for 50 minutes twice. SVIDs
// are asked for with a lifetime longer than any authority's, so each is
// cut at its signer's expiry: at every step every SVID not yet expired
// must still verify against the bundle the CA serves.
func TestRestartsKeepEverySVIDVerifiable(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(testStart)
	env := newEnv(t, rotationConfig(clk))
	c := env.newCA(t)
	aud := []string{"spiffe://example.org/db"}
	leafKey := ecKey(t, elliptic.P256())
	lifetimes := []time.Duration{time.Hour, 30 * time.Minute, 2 * time.Hour, 45 * time.Minute}
	var x509s []*ca.X509SVID
	var jwts []*ca.JWTSVID
	restarts := 0
	for step := 1; step <= 4*60; step++ {
		if step%97 == 0 {
			clk.Add(50 * time.Minute) // down
		}
		clk.Add(time.Minute)
		now := clk.Now()
		if step%17 == 0 {
			km, err := ca.NewDiskKeyManager(env.keyDir) // fresh manager: no cached keys
			if err != nil {
				t.Fatal(err)
			}
			cfg := env.cfg
			cfg.KeyManager = km
			cfg.JWTKeyTTL = lifetimes[(step/17)%len(lifetimes)]
			cfg.CATTL = lifetimes[(step/17+1)%len(lifetimes)]
			cfg.X509SVIDTTL = min(cfg.CATTL/2, 20*time.Minute)
			if c, err = ca.New(ctx, cfg); err != nil {
				t.Fatalf("step %d: restart: %v", step, err)
			}
			restarts++
		}
		if _, err := c.Rotate(ctx); err != nil {
			t.Fatalf("step %d: Rotate: %v", step, err)
		}
		b := c.Bundle()
		x, err := c.MintX509SVID(ctx, ca.X509Params{ID: testID, PublicKey: leafKey.Public(), TTL: 3 * time.Hour})
		if err != nil {
			t.Fatalf("step %d: MintX509SVID: %v", step, err)
		}
		j, err := c.MintJWTSVID(ctx, ca.JWTParams{ID: testID, Audience: aud, TTL: 3 * time.Hour})
		if err != nil {
			t.Fatalf("step %d: MintJWTSVID: %v", step, err)
		}
		x509s, jwts = append(x509s, x), append(jwts, j)
		for i, m := range x509s {
			if now.After(m.ExpiresAt) {
				continue
			}
			if _, _, err := x509svid.Verify(m.Certificates, b, x509svid.WithTime(now)); err != nil {
				t.Fatalf("step %d: x509-svid %d (expires %s) does not verify: %v", step, i, m.ExpiresAt, err)
			}
		}
		for i, m := range jwts {
			if now.After(m.ExpiresAt) {
				continue
			}
			if _, err := verifyJWTAt(m.Token, b, aud, now); err != nil {
				t.Fatalf("step %d: jwt-svid %d (kid %s, expires %s) does not verify: %v", step, i, m.KeyID, m.ExpiresAt, err)
			}
		}
	}
	if restarts != 14 {
		t.Errorf("%d restarts, want 14", restarts)
	}
}

// The key of an active authority that has expired may be gone: deleted
// once it expired, the state then restored from a backup made before,
// when backups hold no keys (a token keeps them: KeysNotRestored). Such
// an authority signs nothing any more: a start replaces it, and what the
// new one signs verifies, where one whose active authority is still
// valid and whose key is gone is refused (TestRestartFailures). Where
// backups hold the keys, a key gone is lost (or in a token left out),
// and the start is refused.
func TestRestartExpiredActiveKeyMissing(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(testStart)
	env := newEnv(t, rotationConfig(clk))
	c := env.newCA(t)
	var active ca.AuthorityInfo
	for _, a := range c.Status() {
		if a.Kind == ca.KindX509 && a.State == ca.StateActive {
			active = a
		}
	}
	if err := os.Remove(filepath.Join(env.keyDir, active.KeyID+".pem")); err != nil {
		t.Fatal(err)
	}
	km, _ := ca.NewDiskKeyManager(env.keyDir)
	cfg := env.cfg
	cfg.KeyManager = km
	clk.Add(2 * time.Hour) // past the active authority's life (1h)
	if _, err := ca.New(ctx, cfg); !errors.Is(err, ca.ErrKeyNotFound) {
		t.Fatalf("New with the expired active authority's key gone from keys that backups hold: %v, want ErrKeyNotFound", err)
	}
	cfg.KeysNotRestored = true
	c2, err := ca.New(ctx, cfg)
	if err != nil {
		t.Fatalf("New with the expired active authority's key gone: %v", err)
	}
	for _, a := range c2.Status() {
		if a.Kind == ca.KindX509 && a.State == ca.StateActive && a.ID == active.ID {
			t.Fatal("the expired authority whose key is gone is still active")
		}
	}
	svid, err := c2.MintX509SVID(ctx, ca.X509Params{ID: testID, PublicKey: ecKey(t, elliptic.P256()).Public()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, c2.Bundle(), x509svid.WithTime(clk.Now())); err != nil {
		t.Errorf("an SVID of the new authority does not verify: %v", err)
	}
}
