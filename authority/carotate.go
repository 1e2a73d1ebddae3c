package authority

import (
	"context"
	"fmt"
	"slices"
	"time"

	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// CARotation is an admin's request to replace the active X.509 CA or
// JWT key ahead of its schedule.
type CARotation struct {
	Kind   ca.Kind
	Reason string
	// Immediately activates a JWT key at once, before the holders of
	// the bundle may have fetched it (JWT-SVIDs and delegation tokens it
	// signs fail to validate where they have not, until they do).
	Immediately bool
}

// CARotated is the authority that takes over, and when: the answer of
// POST /v1/admin/ca/rotate, as the Go client reads it.
type CARotated = client.CARotated

// RotateCA has the active authority of r.Kind replaced ahead of its
// schedule (ca.CA.Expedite): its successor, prepared now unless it is
// already, takes over once it has been published for as long as every
// holder of this trust domain's bundle takes to fetch it again
// (propagation), or at once when asked for a JWT key. The rotation's
// ca.rotated entry names the admin and the reason.
func (a *Authority) RotateCA(ctx context.Context, c *Caller, r CARotation) (*CARotated, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return nil, err
	}
	switch {
	case r.Kind != ca.KindX509 && r.Kind != ca.KindJWT:
		return nil, fmt.Errorf("%w: kind %q: want %q (the X.509 CA) or %q (the JWT key)", ErrInvalidRequest, r.Kind, ca.KindX509, ca.KindJWT)
	case !validReason(r.Reason):
		return nil, errReasonRequired
	case r.Immediately && r.Kind == ca.KindX509:
		// A node's client trusts the bundle it was last answered with:
		// one that has not renewed since the new CA was published could
		// no longer reach the authority once its server certificate is
		// signed by it, and would have to join again.
		return nil, fmt.Errorf("%w: an X.509 CA is not activated immediately: a node that has not renewed since it was published could no longer reach the authority; leave immediately out (it activates once every holder has fetched it)", ErrInvalidRequest)
	}
	var wait time.Duration
	if !r.Immediately {
		var err error
		if wait, err = a.propagation(ctx); err != nil {
			return nil, err
		}
	}
	ctx = context.WithValue(ctx, rotationRequestKey{}, rotationRequest{by: c.ID.String(), details: map[string]any{"reason": r.Reason, "immediately": r.Immediately}})
	info, err := a.ca.Expedite(ctx, r.Kind, wait)
	if err != nil {
		return nil, err
	}
	a.refreshBundles() // published when answered, not only soon after
	// So is the admin credential's bundle.pem, which the admin CLI
	// trusts the server with: the maintenance loop looks at it once a
	// minute, and the successor may take over sooner.
	if err := a.WriteAdminCredential(ctx, false); err != nil {
		a.log.ErrorContext(ctx, "write admin credential after a CA rotation", "err", err)
	}
	// When it takes over: what the admin asked, or the schedule's time
	// when that comes first (a wait longer than the schedule leaves).
	at := info.TakesOverAt
	if info.State == ca.StateActive {
		at = a.now().Truncate(time.Second)
	}
	info.KeyStore = a.keyStore(info.KeyID)
	return &CARotated{Authority: info.AuthorityInfo, ActivatesAt: at.UTC()}, nil
}

// propagation is how long a bundle published now may take to reach
// every holder: those that fetch it (federated peers, node run's sync)
// at its refresh hint, at least every 30 s for node run, and those that
// get it with their X509-SVIDs' renewals within the longest life one may
// have (the default, or a registration's, capped by the X.509 CA's): a
// holder still at work has renewed by then, what it held before having
// expired, however late in its SVIDs' lives it renews.
func (a *Authority) propagation(ctx context.Context) (time.Duration, error) {
	longest := a.cfg.CA.X509SVIDTTL.D()
	err := a.store.View(ctx, func(tx store.Tx) error {
		return registry.EachAgent(tx, func(ag *registry.Agent) error {
			longest = max(longest, ag.X509TTL())
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	longest = min(longest, a.cfg.CA.CATTL.D())
	return max(a.cfg.Federation.BundleRefreshHint.D(), 30*time.Second, longest), nil
}

// validReason reports whether s is a reason an admin's change is
// recorded with: 1 to maxTextLen bytes of plain text.
func validReason(s string) bool {
	return s != "" && len(s) <= maxTextLen && delegation.IsPlainText(s)
}

var errReasonRequired = fmt.Errorf("%w: a reason of 1 to %d bytes of text (no control or format characters, no U+FFFD) is required", ErrInvalidRequest, maxTextLen)

// RevokeCA removes the replaced or prepared X.509 CA or JWT key id from
// the bundle before it expires (ca.CA.Revoke), so that nothing it signed
// verifies any more, and a prepared one never signs. A prepared one
// needs no force: it has signed nothing. Unless force is set, a
// replaced X.509 CA is refused (ca.ErrAuthorityInUse) until every
// holder of an X509-SVID it signed has renewed it (propagation after it
// was replaced: a node that has not would have to join again), and a
// replaced JWT key until it expires (what it signed, JWT-SVIDs and
// delegation tokens, is not renewed). The
// ca.rotated entry names the admin and the reason.
func (a *Authority) RevokeCA(ctx context.Context, c *Caller, id, reason string, force bool) (ca.AuthorityInfo, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return ca.AuthorityInfo{}, err
	}
	if !validReason(reason) {
		return ca.AuthorityInfo{}, errReasonRequired
	}
	status := a.ca.Status()
	i := slices.IndexFunc(status, func(info ca.AuthorityInfo) bool { return info.ID == id })
	if i < 0 {
		return ca.AuthorityInfo{}, fmt.Errorf("%w: no authority %q (mandate admin ca status lists them)", ErrNotFound, id)
	}
	info := status[i]
	if info.State == ca.StateActive {
		return ca.AuthorityInfo{}, fmt.Errorf("%w: the %s authority %s is active: only one replaced or prepared is revoked: rotate first (mandate admin ca rotate --kind %s), then revoke it",
			ca.ErrAuthorityInUse, info.Kind, id, info.Kind)
	}
	if info.State == ca.StateOld && !force {
		wait, err := a.propagation(ctx)
		if err != nil {
			return ca.AuthorityInfo{}, err
		}
		switch until := info.ReplacedAt.Add(wait); {
		case info.Kind == ca.KindJWT:
			return ca.AuthorityInfo{}, fmt.Errorf("%w: JWT-SVIDs and delegation tokens the JWT key %s signed are valid until it expires (%s), and none is renewed: revoking it ends those still in use; give force (mandate admin ca revoke --force) to revoke it all the same",
				ca.ErrAuthorityInUse, id, info.NotAfter.UTC().Format(time.RFC3339))
		case info.ReplacedAt.IsZero():
			return ca.AuthorityInfo{}, fmt.Errorf("%w: when the X.509 CA %s stopped signing is not known (replaced before this release, or never active): X509-SVIDs it signed may still be in use; give force (mandate admin ca revoke --force) to revoke it all the same (a node holding one would have to join again)",
				ca.ErrAuthorityInUse, id)
		case a.now().Before(until):
			return ca.AuthorityInfo{}, fmt.Errorf("%w: X509-SVIDs the X.509 CA %s signed may be in use until %s, when every one has expired or been renewed (the longest X509-SVID life, and the bundle's refresh hint, after it was replaced); give force (mandate admin ca revoke --force) to revoke it now (a node holding one would have to join again)",
				ca.ErrAuthorityInUse, id, until.UTC().Format(time.RFC3339))
		}
	}
	ctx = context.WithValue(ctx, rotationRequestKey{}, rotationRequest{by: c.ID.String(), details: map[string]any{"reason": reason, "revoked": id, "force": force}})
	out, err := a.ca.Revoke(ctx, id, info.State) // refused if a rotation changed it since
	if err != nil {
		return ca.AuthorityInfo{}, err
	}
	a.refreshBundles()
	// The admin credential, when the CA revoked signed it, is made anew
	// now, not at the maintenance loop's next look.
	if err := a.WriteAdminCredential(ctx, false); err != nil {
		a.log.ErrorContext(ctx, "write admin credential after a CA revocation", "err", err)
	}
	return out, nil
}

// rotationRequest is an admin's request a CA change is made for: the
// entry that records it names them, and details what was asked
// (caJournal.Save).
type rotationRequest struct {
	by      string
	details map[string]any
}

type rotationRequestKey struct{}
