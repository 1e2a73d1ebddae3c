package ca_test

import (
	"context"
	"crypto/elliptic"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/ca"
)

// authorityOf is the authority of kind in state in the CA's status.
func authorityOf(c *ca.CA, kind ca.Kind, state ca.State) (ca.AuthorityInfo, bool) {
	for _, a := range c.Status() {
		if a.Kind == kind && a.State == state {
			return a, true
		}
	}
	return ca.AuthorityInfo{}, false
}

// An expedited rotation prepares the successor at once, published in
// the bundle, and activates it once it has been published for the wait
// asked, not at five sixths of the active one's life; what the old one
// signed still verifies, and a restart keeps the activation time.
func TestExpediteActivatesAfterTheWait(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(testStart)
	c, env := newTestCA(t, rotationConfig(clk))
	leaf := ecKey(t, elliptic.P256())
	before, err := c.MintX509SVID(ctx, ca.X509Params{ID: testID, PublicKey: leaf.Public()})
	if err != nil {
		t.Fatal(err)
	}
	old, _ := authorityOf(c, ca.KindX509, ca.StateActive)
	for _, kind := range []ca.Kind{ca.KindX509, ca.KindJWT} {
		info, err := c.Expedite(ctx, kind, 10*time.Minute)
		if err != nil {
			t.Fatalf("Expedite(%s) = %v", kind, err)
		}
		if info.State != ca.StatePrepared || !info.ActivatesAt.Equal(clk.Now().Add(10*time.Minute)) {
			t.Fatalf("Expedite(%s) = %+v; want prepared, activating in 10 minutes", kind, info)
		}
		if got, ok := authorityOf(c, kind, ca.StatePrepared); !ok || got.ID != info.ID || !got.ActivatesAt.Equal(info.ActivatesAt) {
			t.Errorf("status shows %+v as the prepared %s authority; want %+v", got, kind, info)
		}
		if !slices.Contains(authorityIDs(c.Bundle()), info.ID) {
			t.Errorf("the prepared %s authority %s is not in the bundle", kind, info.ID)
		}
	}
	// Asked again with a longer wait, the activation is not put off.
	if info, err := c.Expedite(ctx, ca.KindX509, time.Hour); err != nil || !info.ActivatesAt.Equal(clk.Now().Add(10*time.Minute)) {
		t.Errorf("Expedite again with a longer wait = %+v, %v; want the activation kept 10 minutes on", info, err)
	}
	// A restart keeps it.
	c = env.newCA(t)
	if got, _ := authorityOf(c, ca.KindX509, ca.StatePrepared); got.ActivatesAt.IsZero() {
		t.Fatalf("after a restart the prepared authority is %+v; want its activation time kept", got)
	}
	clk.Add(9 * time.Minute)
	if _, err := c.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := authorityOf(c, ca.KindX509, ca.StateActive); got.ID != old.ID {
		t.Fatalf("activated %s before the wait passed", got.ID)
	}
	clk.Add(time.Minute)
	if _, err := c.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []ca.Kind{ca.KindX509, ca.KindJWT} {
		if _, ok := authorityOf(c, kind, ca.StatePrepared); ok {
			t.Errorf("a %s authority is still prepared once the wait passed", kind)
		}
		if got, _ := authorityOf(c, kind, ca.StateActive); !got.ActivatesAt.IsZero() {
			t.Errorf("the active %s authority still shows an activation time", kind)
		}
	}
	after, err := c.MintX509SVID(ctx, ca.X509Params{ID: testID, PublicKey: leaf.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(after.Certificates[0].AuthorityKeyId) == old.ID {
		t.Error("an X509-SVID minted after the activation is signed by the old CA")
	}
	for _, svid := range []*ca.X509SVID{before, after} {
		if _, _, err := x509svid.Verify(svid.Certificates, c.Bundle().X509Bundle(), x509svid.WithTime(clk.Now())); err != nil {
			t.Errorf("an X509-SVID does not verify with the bundle: %v", err)
		}
	}
}

// Expedited with no wait, the successor (the one prepared already, or a
// new one) is active at once; a kind that is neither is refused.
func TestExpediteAtOnce(t *testing.T) {
	ctx := context.Background()
	c, _, prepared := withSuccessors(t, ca.KindJWT)
	if info, err := c.Expedite(ctx, ca.KindJWT, 0); err != nil || info.ID != prepared.ID || info.State != ca.StateActive {
		t.Errorf("Expedite(jwt, 0) = %+v, %v; want %s active", info, err, prepared.ID)
	}
	old, _ := authorityOf(c, ca.KindX509, ca.StateActive)
	info, err := c.Expedite(ctx, ca.KindX509, 0)
	if err != nil || info.State != ca.StateActive || info.ID == old.ID {
		t.Fatalf("Expedite(x509, 0) = %+v, %v; want a new active CA", info, err)
	}
	if got, _ := authorityOf(c, ca.KindX509, ca.StateActive); got.ID != info.ID {
		t.Errorf("the active CA is %s; want %s", got.ID, info.ID)
	}
	if !slices.Contains(authorityIDs(c.Bundle()), old.ID) {
		t.Error("the CA replaced left the bundle: what it signed no longer verifies")
	}
	if _, err := c.Expedite(ctx, "rsa", 0); !errors.Is(err, ca.ErrInvalidParams) {
		t.Errorf("Expedite of kind rsa = %v; want ErrInvalidParams", err)
	}
}

// An authority replaced is revoked before it expires: out of the
// bundle, its key deleted, so that nothing it signed verifies any more,
// also after a restart. The active authority is not.
func TestRevokeAReplacedAuthority(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(testStart)
	c, env := newTestCA(t, rotationConfig(clk))
	leaf := ecKey(t, elliptic.P256())
	signed, err := c.MintX509SVID(ctx, ca.X509Params{ID: testID, PublicKey: leaf.Public()})
	if err != nil {
		t.Fatal(err)
	}
	old, _ := authorityOf(c, ca.KindX509, ca.StateActive)
	if _, err := c.Revoke(ctx, old.ID, ca.StateActive); !errors.Is(err, ca.ErrAuthorityInUse) {
		t.Errorf("Revoke(the active CA) = %v; want ErrAuthorityInUse", err)
	}
	if _, err := c.Revoke(ctx, "00", ca.StateOld); !errors.Is(err, ca.ErrUnknownAuthority) {
		t.Errorf("Revoke(an unknown id) = %v; want ErrUnknownAuthority", err)
	}
	clk.Add(time.Minute)
	if _, err := c.Expedite(ctx, ca.KindX509, 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := authorityOf(c, ca.KindX509, ca.StateOld); got.ID != old.ID || !got.ReplacedAt.Equal(clk.Now()) {
		t.Fatalf("the CA replaced is %+v; want %s, replaced now", got, old.ID)
	}
	keysBefore := len(keyFiles(t, env.keyDir))
	got, err := c.Revoke(ctx, old.ID, ca.StateOld)
	if err != nil || got.ID != old.ID {
		t.Fatalf("Revoke(the CA replaced) = %+v, %v", got, err)
	}
	if n := len(keyFiles(t, env.keyDir)); n != keysBefore-1 {
		t.Errorf("%d key files after the revocation, want %d: its key deleted", n, keysBefore-1)
	}
	for _, c := range []*ca.CA{c, env.newCA(t)} { // and after a restart
		if slices.Contains(authorityIDs(c.Bundle()), old.ID) {
			t.Error("the CA revoked is still in the bundle")
		}
		if _, _, err := x509svid.Verify(signed.Certificates, c.Bundle().X509Bundle(), x509svid.WithTime(clk.Now())); err == nil {
			t.Error("an X509-SVID the revoked CA signed still verifies with the bundle")
		}
	}
}

// An admin's rotation whose wait is longer than the schedule leaves (the
// longest SVID life past the active authority's own) is taken over at
// the schedule's time, and Expedite's answer says that one, not the
// wait's; one asked sooner than the schedule is taken over when asked,
// and one activated at once, at once.
func TestExpediteSaysWhenItTakesOver(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(testStart)
	c, _ := newTestCA(t, rotationConfig(clk))
	old, _ := authorityOf(c, ca.KindX509, ca.StateActive)
	info, err := c.Expedite(ctx, ca.KindX509, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	due := old.NotBefore.Add(old.NotAfter.Sub(old.NotBefore) / 6 * 5) // 5/6 of the active one's life
	if !info.TakesOverAt.Equal(due) || !due.Before(info.ActivatesAt) {
		t.Fatalf("TakesOverAt = %v (asked for %v), want the schedule's %v", info.TakesOverAt, info.ActivatesAt, due)
	}
	clk.Add(due.Add(-time.Second).Sub(clk.Now()))
	if _, err := c.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := authorityOf(c, ca.KindX509, ca.StateActive); got.ID != old.ID {
		t.Fatalf("activated %s before %v", got.ID, due)
	}
	clk.Add(due.Sub(clk.Now()))
	if _, err := c.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := authorityOf(c, ca.KindX509, ca.StateActive); got.ID != info.ID {
		t.Fatalf("at %v the active CA is %s, want %s", due, got.ID, info.ID)
	}
	jwt, err := c.Expedite(ctx, ca.KindJWT, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if jwt.ActivatesAt.IsZero() || !jwt.TakesOverAt.Equal(jwt.ActivatesAt) {
		t.Errorf("TakesOverAt(jwt) = %v, want the time asked, %v", jwt.TakesOverAt, jwt.ActivatesAt)
	}
	now, err := c.Expedite(ctx, ca.KindJWT, 0)
	if err != nil || now.State != ca.StateActive || !now.TakesOverAt.Equal(clk.Now()) {
		t.Errorf("Expedite(jwt, 0) = %+v, %v; want it active, taking over at %v", now, err, clk.Now())
	}
}

// A rotation whose successor would expire before it could take over
// (its life shortened since the active one was made, below the wait) is
// refused, saying so, with nothing changed: it would be retired unused
// and the rotation do nothing. Activated at once, it is done.
func TestExpediteRefusesASuccessorThatWouldExpireFirst(t *testing.T) {
	ctx := context.Background()
	clk := newFakeClock(testStart)
	c, env := newTestCA(t, func(cfg *ca.Config) {
		rotationConfig(clk)(cfg)
		cfg.JWTKeyTTL = 24 * time.Hour
	})
	old, _ := authorityOf(c, ca.KindJWT, ca.StateActive)
	clk.Add(2 * time.Hour)
	env.cfg.JWTKeyTTL = 30 * time.Minute // a restart with a shorter life
	c = env.newCA(t)
	before := c.Status()
	_, err := c.Expedite(ctx, ca.KindJWT, time.Hour)
	if !errors.Is(err, ca.ErrInvalidParams) || !strings.Contains(err.Error(), "would expire") {
		t.Fatalf("Expedite(jwt, an hour) with keys of 30 minutes = %v, want it refused as expiring first", err)
	}
	if after := c.Status(); !slices.EqualFunc(before, after, func(a, b ca.AuthorityInfo) bool { return a.ID == b.ID && a.State == b.State }) {
		t.Errorf("a refused rotation changed the authorities: %+v, then %+v", before, after)
	}
	info, err := c.Expedite(ctx, ca.KindJWT, 0)
	if err != nil || info.State != ca.StateActive || info.ID == old.ID {
		t.Errorf("Expedite(jwt, 0) = %+v, %v; want a new key active", info, err)
	}
}

// A prepared authority, whose key may have been exposed with the active
// one's (both in keys/ and in every backup), is revoked before it ever
// signs: out of the bundle, its key deleted, also after a restart; the
// rotation that follows activates a key made after it, not that one.
func TestRevokeAPreparedAuthority(t *testing.T) {
	for _, kind := range []ca.Kind{ca.KindX509, ca.KindJWT} {
		t.Run(string(kind), func(t *testing.T) {
			ctx := context.Background()
			c, env, prepared := withSuccessors(t, kind)
			keysBefore := len(keyFiles(t, env.keyDir))
			got, err := c.Revoke(ctx, prepared.ID, ca.StatePrepared)
			if err != nil || got.ID != prepared.ID {
				t.Fatalf("Revoke(the prepared %s authority) = %+v, %v", kind, got, err)
			}
			if n := len(keyFiles(t, env.keyDir)); n != keysBefore-1 {
				t.Errorf("%d key files after the revocation, want %d: its key deleted", n, keysBefore-1)
			}
			for _, c := range []*ca.CA{c, env.newCA(t)} { // and after a restart
				if slices.Contains(authorityIDs(c.Bundle()), prepared.ID) {
					t.Error("the authority revoked is still in the bundle")
				}
				if info, ok := authorityOf(c, kind, ca.StatePrepared); ok && info.ID == prepared.ID {
					t.Error("the authority revoked is still prepared")
				}
			}
			info, err := c.Expedite(ctx, kind, 0)
			if err != nil {
				t.Fatal(err)
			}
			if info.ID == prepared.ID || info.State != ca.StateActive {
				t.Errorf("the rotation after the revocation activated %+v; want a key made after it", info)
			}
		})
	}
}

// withSuccessors is a CA past half its authorities' life, where the
// rotation schedule has prepared their successors, and the successor of
// kind.
func withSuccessors(t *testing.T, kind ca.Kind) (*ca.CA, *testEnv, ca.AuthorityInfo) {
	t.Helper()
	clk := newFakeClock(testStart)
	c, env := newTestCA(t, rotationConfig(clk))
	clk.Add(31 * time.Minute)
	if _, err := c.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	prepared, ok := authorityOf(c, kind, ca.StatePrepared)
	if !ok {
		t.Fatalf("no %s authority prepared at half its predecessor's life", kind)
	}
	return c, env, prepared
}

// A revocation names the state its caller saw (a prepared authority
// needs no force, a replaced one may): one that rotations have since
// made active and then replaced, so that it has signed, is refused, and
// stays in the bundle.
func TestRevokeRefusesAnAuthorityChangedSince(t *testing.T) {
	ctx := context.Background()
	c, _, seen := withSuccessors(t, ca.KindJWT)
	for range 2 { // active, then replaced
		if _, err := c.Expedite(ctx, ca.KindJWT, 0); err != nil {
			t.Fatal(err)
		}
	}
	if i := slices.IndexFunc(c.Status(), func(a ca.AuthorityInfo) bool { return a.ID == seen.ID }); i < 0 || c.Status()[i].State != ca.StateOld {
		t.Fatalf("the key once prepared is not replaced: %+v", c.Status())
	}
	if _, err := c.Revoke(ctx, seen.ID, ca.StatePrepared); !errors.Is(err, ca.ErrAuthorityInUse) {
		t.Errorf("Revoke(as prepared) of a key replaced since = %v; want ErrAuthorityInUse", err)
	}
	if !slices.Contains(authorityIDs(c.Bundle()), seen.ID) {
		t.Error("the key left the bundle")
	}
}
