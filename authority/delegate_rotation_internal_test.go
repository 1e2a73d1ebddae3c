package authority

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/registry"
)

// A hop signed by a delegator whose X509-SVID is from an X.509 CA a
// rotation has made old expires no later than that CA does: until it
// expires, every verifier checks the delegator's signature against the
// bundle the authority serves, which drops the CA at its expiry.
func TestHopExpiresWithItsDelegatorsCA(t *testing.T) {
	clock := &testClock{now: time.Now()}
	a, _ := runAuthorityWith(t, Options{Now: clock.Now})
	ctx := t.Context()
	admin := adminOf(t, a)
	n1 := putNode(t, a, "n1")
	delegator, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/c", NodeIDs: []string{n1},
		Scopes: []string{"calendar:read"}, X509TTLSeconds: 12 * 3600, Accountability: registry.Accountability{Operator: "team-a"}})
	if err != nil {
		t.Fatal(err)
	}
	delegatee, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/d", NodeIDs: []string{n1},
		Accountability: registry.Accountability{ResponsibleParty: "ops@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	first := a.ca.X509CANotAfter()
	// A rotation step, and the bundles the authority verifies with rebuilt
	// at once (not when its watcher next runs).
	rotate := func() {
		t.Helper()
		if _, err := a.ca.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		a.refreshBundles()
	}

	// Past half the CA's 24 h its successors are prepared; the
	// delegator's SVID, asked later, is still from the first CA.
	clock.Advance(13 * time.Hour)
	rotate()
	clock.Advance(6 * time.Hour)
	svid, key := agentSVID(t, a, n1, delegator.SPIFFEID)
	// Past 5/6: the successors sign, the first CA is old.
	clock.Advance(3 * time.Hour)
	rotate()
	if a.ca.X509CANotAfter().Equal(first) {
		t.Fatal("the X.509 CA was not rotated")
	}

	st := delegation.Statement{Delegator: delegator.SPIFFEID, Delegatee: delegatee.SPIFFEID, Principal: "alice", Scopes: []string{"calendar:read"}}
	sig, err := delegation.SignStatement(st, key, svid.Certificates)
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Delegate(ctx, &Caller{ID: svid.ID, Cert: svid.Certificates[0]}, DelegateRequest{Delegatee: delegatee.SPIFFEID,
		Principal: "alice", Scopes: []string{"calendar:read"}, TTL: MaxDelegationTTL, DelegatorSignature: sig})
	if err != nil {
		t.Fatal(err)
	}

	// Its last second: the bundle served then still verifies it.
	clock.Advance(res.ExpiresAt.Add(-time.Second).Sub(clock.Now()))
	rotate()
	if _, err := delegation.Verify(res.Token, a, delegation.VerifyOptions{Now: clock.Now(), Leeway: delegation.NoLeeway,
		Presenter: spiffeid.RequireFromString(delegatee.SPIFFEID)}); err != nil {
		t.Errorf("hop expiring at %s (its delegator's CA at %s), verified a second before it expires: %v", res.ExpiresAt, first, err)
	}

	// Just past it, within the verifiers' default leeway on exp: still
	// accepted, as a hop whose delegator's CA lives on is (the CA, like
	// a JWT key, leaves the bundle only once that leeway has passed).
	clock.Advance(6 * time.Second)
	rotate()
	if _, err := delegation.Verify(res.Token, a, delegation.VerifyOptions{Now: clock.Now(),
		Presenter: spiffeid.RequireFromString(delegatee.SPIFFEID)}); err != nil {
		t.Errorf("hop that expired at %s, verified 5 s later with the default leeway: %v", res.ExpiresAt, err)
	}
}
