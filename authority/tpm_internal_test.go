package authority

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/attest/tpmdevice"
	"mandate.dev/mandate/attest/tpmtest"
	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// A known node whose TPM answer no longer matches an allowed profile is
// marked drifted in the commit that logs the refusal; with the log
// stopped it is marked all the same (fail closed), and the session used
// up; and so whether or not its client is still there.
func TestDriftIsMarkedWithItsRefusal(t *testing.T) {
	a, stop := runAuthority(t)
	ctx, now := t.Context(), time.Now()
	// The client hangs up as its answer is refused: the node is marked
	// and the session used up all the same.
	hungUp, cancel := context.WithCancel(ctx)
	cancel()
	why := fmt.Errorf("%w (PCR 7 differs)", attest.ErrPCRPolicy)
	refuse := func(ek string) (nodeID spiffeid.ID, sessionUsed bool, err error) {
		nodeID = spiffeid.RequireFromSegments(a.td, "node", attest.MethodTPM, ek)
		s := &attest.TPMSession{ID: ek[:16] + strings.Repeat("0", 32), EKHash: ek, CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
		if err := a.store.Update(ctx, func(tx store.Tx) error {
			return registry.PutNode(tx, &registry.Node{SPIFFEID: nodeID.String(), AttestedAt: now})
		}); err != nil {
			t.Fatal(err)
		}
		err = a.refuseTPMAnswer(hungUp, s, nodeID, why, true, map[string]any{}, now)
		_ = a.store.View(ctx, func(tx store.Tx) error {
			sessionUsed = errors.Is(attest.CheckTPMSession(tx, s, now), attest.ErrChallengeUsed)
			return nil
		})
		return nodeID, sessionUsed, err
	}
	drifted := func(nodeID spiffeid.ID) bool {
		var n *registry.Node
		if err := a.store.View(ctx, func(tx store.Tx) error {
			var err error
			n, err = registry.GetNode(tx, nodeID.String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return n.Drifted
	}

	nodeID, used, err := refuse(strings.Repeat("ab", 32))
	if !errors.Is(err, attest.ErrPCRPolicy) || !used || !drifted(nodeID) {
		t.Fatalf("refusal = %v, session used %v, node drifted %v; want the PCR policy's, used, drifted", err, used, drifted(nodeID))
	}
	got, _, err := a.SearchAudit(ctx, adminOf(t, a), audit.Query{Type: "node.attestation_refused", SPIFFEID: nodeID.String(), Limit: 10})
	if err != nil || len(got) != 1 || !strings.Contains(string(got[0].Entry), `"node_marked":"drifted"`) {
		t.Fatalf("refusal entries %d (%v), want one with node_marked", len(got), err)
	}

	// The log stopped: refused, the session used up, the node marked all
	// the same (fail closed).
	stop()
	nodeID, used, err = refuse(strings.Repeat("cd", 32))
	if !errors.Is(err, attest.ErrPCRPolicy) || !used || !drifted(nodeID) {
		t.Fatalf("with the log stopped: refusal = %v, session used %v, node drifted %v; want the PCR policy's, used, drifted", err, used, drifted(nodeID))
	}
}

// A TPM challenge that expires while its answer is on its way (the
// evidence checked, the SVID made, the commit to come) is not used: the
// commit checks the challenge at its own time, not at the request's
// start, as a join checks its token.
func TestTPMChallengeExpiringBeforeTheCommitIsRefused(t *testing.T) {
	holdRecords(t)
	a, _, skew := runSkewedAuthority(t)
	now := a.now()
	ek := strings.Repeat("ef", 32)
	nodeID := spiffeid.RequireFromSegments(a.td, "node", attest.MethodTPM, ek)
	s := &attest.TPMSession{ID: ek[:16] + strings.Repeat("0", 32), EKHash: ek, CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
	key, _ := newKeyAndCSR(t)
	err := whileHeld(t.Context(), func(ctx context.Context) error {
		_, err := a.admitTPMNode(ctx, s, nodeID, key.Public(), &attest.Result{Profile: "p", EKHash: ek}, now, map[string]any{})
		return err
	}, func() { skew.Add(int64(2 * time.Minute)) })
	if !errors.Is(err, attest.ErrChallengeExpired) {
		t.Fatalf("a TPM answer whose challenge expired before its commit = %v, want %v", err, attest.ErrChallengeExpired)
	}
	if err := a.store.View(t.Context(), func(tx store.Tx) error {
		_, err := registry.GetNode(tx, nodeID.String())
		return err
	}); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("the node after its answer was refused: %v, want it not stored", err)
	}
}

// A TPM node attested again with the authority's clock behind its last
// SVID's issue keeps its record's newest SVID time, also when an
// earlier release wrote the record (its svid_issued_at the newest then):
// a copy of an SVID issued before is not taken for one the record lost.
func TestTPMReattestKeepsTheNewestSVIDTime(t *testing.T) {
	for _, tc := range []struct {
		name string
		old  func(later time.Time) registry.Node
	}{
		{"record as written", func(later time.Time) registry.Node {
			return registry.Node{SVIDIssuedAt: later.Add(-time.Minute), NewestSVIDAt: later}
		}},
		{"record without newest_svid_at", func(later time.Time) registry.Node { return registry.Node{SVIDIssuedAt: later} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := runAuthority(t)
			ctx, now := t.Context(), a.now()
			later := now.Add(time.Hour).UTC() // issued before the clock stepped back
			ek := strings.Repeat("ab", 32)
			nodeID := spiffeid.RequireFromSegments(a.td, "node", attest.MethodTPM, ek)
			old := tc.old(later)
			old.SPIFFEID, old.AttestationMethod, old.Level, old.AttestedAt = nodeID.String(), attest.MethodTPM, registry.LevelHardware, later
			if err := a.store.Update(ctx, func(tx store.Tx) error { return registry.PutNode(tx, &old) }); err != nil {
				t.Fatal(err)
			}
			s := &attest.TPMSession{ID: ek[:16] + strings.Repeat("0", 32), EKHash: ek, CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
			key, _ := newKeyAndCSR(t)
			if _, err := a.admitTPMNode(ctx, s, nodeID, key.Public(), &attest.Result{Profile: "p", EKHash: ek}, now, map[string]any{}); err != nil {
				t.Fatal(err)
			}
			var n *registry.Node
			if err := a.store.View(ctx, func(tx store.Tx) (err error) { n, err = registry.GetNode(tx, nodeID.String()); return err }); err != nil {
				t.Fatal(err)
			}
			if !n.SVIDIssuedAt.Equal(now) || !n.NewestSVIDAt.Equal(later) {
				t.Errorf("attested again at %v: svid_issued_at %v, newest_svid_at %v; want %v, %v", now, n.SVIDIssuedAt, n.NewestSVIDAt, now, later)
			}
		})
	}
}

// A drifted answer of a known node that an admin evicts before the
// refusal's commit (the eviction acknowledged first) is refused for its
// PCRs all the same: the session answerable no more (voided by the
// eviction), the refusal recorded without a node marked (there is none
// to mark), and no record made again.
func TestDriftRefusalOfANodeEvictedMeanwhile(t *testing.T) {
	holdRecords(t)
	a := startAuthority(t)
	ctx, admin, now := t.Context(), adminOf(t, a), time.Now()
	ek := strings.Repeat("ef", 32)
	nodeID := spiffeid.RequireFromSegments(a.td, "node", attest.MethodTPM, ek)
	s := &attest.TPMSession{ID: ek[:16] + strings.Repeat("0", 32), EKHash: ek, CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
	if err := a.store.Update(ctx, func(tx store.Tx) error {
		return registry.PutNode(tx, &registry.Node{SPIFFEID: nodeID.String(), AttestedAt: now})
	}); err != nil {
		t.Fatal(err)
	}
	why := fmt.Errorf("%w (PCR 7 differs)", attest.ErrPCRPolicy)
	err := whileHeld(ctx, func(ctx context.Context) error {
		return a.refuseTPMAnswer(ctx, s, nodeID, why, true, map[string]any{}, now)
	}, func() {
		if _, err := a.EvictNode(ctx, admin, nodeID.String(), "retired", false); err != nil {
			t.Error(err)
		}
	})
	if !errors.Is(err, attest.ErrPCRPolicy) || errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("refusal of a node evicted meanwhile = %v, want the PCR policy's", err)
	}
	var answerable, absent bool
	_ = a.store.View(ctx, func(tx store.Tx) error {
		answerable = attest.CheckTPMSession(tx, s, now) == nil
		_, err := registry.GetNode(tx, nodeID.String())
		absent = errors.Is(err, registry.ErrNotFound)
		return nil
	})
	if answerable || !absent {
		t.Fatalf("after the refusal: session answerable %v, node record gone %v; want neither answerable nor kept", answerable, absent)
	}
	got, _, err := a.SearchAudit(ctx, admin, audit.Query{Type: "node.attestation_refused", SPIFFEID: nodeID.String(), Limit: 10})
	if err != nil || len(got) != 1 || strings.Contains(string(got[0].Entry), "node_marked") {
		t.Fatalf("refusal entries %d (%v), want one, without node_marked", len(got), err)
	}
}

// A TPM challenge is made only for a node known not to be banned: when
// its record cannot be read, none is (fail closed), as its admission
// would refuse it.
func TestTPMChallengeOfAnUnreadableNodeIsRefused(t *testing.T) {
	dev := tpmtest.Device(t, 3, tpmdevice.Options{})
	ek, err := attest.ParseTPM2BPublic("ek", dev.EKPublic())
	if err != nil {
		t.Fatal(err)
	}
	a, _ := runAuthorityWith(t, Options{}, func(c *Config) {
		c.Attestation.TPM.EKAllowlist = []string{ek.SHA256Hex()}
		c.Attestation.TPM.PCRProfiles = map[string]PCRProfileConfig{"any": {SHA256: map[string]string{"7": strings.Repeat("00", 32)}}}
		c.Attestation.TPM.AllowedProfiles = []string{"any"}
	})
	ctx := t.Context()
	if _, err := a.TPMChallenge(ctx, nil, dev.EKPublic(), nil, dev.AKPublic()); err != nil {
		t.Fatalf("challenge of a node never seen: %v", err)
	}
	nodeID, err := attest.NodeID(a.td, ek)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.store.Update(ctx, func(tx store.Tx) error {
		return tx.Put(registry.BucketNodes, []byte(nodeID.String()), []byte("{not a node"))
	}); err != nil {
		t.Fatal(err)
	}
	if ch, err := a.TPMChallenge(ctx, nil, dev.EKPublic(), nil, dev.AKPublic()); err == nil {
		t.Fatalf("challenge %s made for node %s, whose record does not read", ch.SessionID, nodeID)
	}
}
