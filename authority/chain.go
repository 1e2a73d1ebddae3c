package authority

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/delegation"
)

// ChainHop is one hop of an accountability chain, as an auditor reads it
// (GET /v1/audit/chains/{id}, as the Go client reads it).
type ChainHop = client.ChainHop

// ChainDecision is the policy decision of a hop.
type ChainDecision = client.ChainDecision

// AuditChain returns every hop from the principal down to delegation id,
// root first (auditors and admins).
func (a *Authority) AuditChain(ctx context.Context, c *Caller, id string) ([]ChainHop, error) {
	if err := a.requireReader(c); err != nil {
		return nil, err
	}
	rec, err := a.delegationRecord(ctx, id)
	if errors.Is(err, delegation.ErrNotFound) {
		return nil, fmt.Errorf("%w: delegation %s was not issued here: ask the authority that issued it (the token's iss), with the last hop's id for the whole chain", ErrNotFound, shownDelegationID(id))
	}
	if err != nil {
		return nil, err
	}
	var hops []ChainHop
	for _, an := range rec.Ancestors {
		h := ChainHop{ID: an.ID, Issuer: an.Issuer, Delegator: an.Delegator, Delegatee: an.Delegatee, Principal: an.Principal,
			Scopes: an.Scopes, Depth: an.Depth}
		if an.Issuer == a.td.IDString() {
			if local, err := a.delegationRecord(ctx, an.ID); err == nil {
				if err := a.withLogEntry(ctx, c, &h, local); err != nil {
					return nil, err
				}
			}
		} else {
			h.LogURL = a.chainURL(ctx, an.Issuer, an.ID)
		}
		hops = append(hops, h)
	}
	h := ChainHop{ID: rec.ID, Issuer: rec.Issuer, Delegator: rec.Delegator, Delegatee: rec.Delegatee, Principal: rec.Principal,
		Scopes: rec.Scopes, Depth: rec.Depth}
	if err := a.withLogEntry(ctx, c, &h, rec); err != nil {
		return nil, err
	}
	return append(hops, h), nil
}

// withLogEntry fills a hop from its audit entry and inclusion proof.
func (a *Authority) withLogEntry(ctx context.Context, c *Caller, h *ChainHop, rec *delegation.Record) error {
	e, err := a.ReadAuditEntry(ctx, c, rec.LogIndex, 0)
	if err != nil {
		return err
	}
	entry, err := audit.Decode(e.Entry)
	if err != nil || entry.DelegationID != rec.ID {
		return fmt.Errorf("authority: audit entry %d is not the issuance of delegation %s", rec.LogIndex, rec.ID)
	}
	d, err := ReadIssued(entry)
	if err != nil {
		return fmt.Errorf("authority: audit entry %d is not the issuance of delegation %s", rec.LogIndex, rec.ID)
	}
	idx := e.Index
	h.Index, h.LeafHash, h.TreeSize, h.InclusionProof, h.Checkpoint, h.EntryB64 = &idx, e.LeafHash, e.TreeSize, e.InclusionProof, e.Checkpoint, e.EntryB64
	// Its own log, as it is: an entry naming a party twice is shown with
	// the first (an auditor refuses it).
	h.Decision, h.Accountability, _ = d.ChainView(entry)
	return nil
}

// chainURL is where the issuer iss answers the chain of delegation id:
// the host of its bundle endpoint (https_spiffe federation).
func (a *Authority) chainURL(ctx context.Context, iss, id string) string {
	td, err := spiffeid.TrustDomainFromString(iss)
	if err != nil {
		return ""
	}
	recs, err := a.loadFederations(ctx)
	if err != nil {
		return ""
	}
	for _, f := range recs {
		if f.TrustDomain == td.Name() && f.Profile == "https_spiffe" {
			if u, err := url.Parse(f.BundleEndpointURL); err == nil {
				return (&url.URL{Scheme: "https", Host: u.Host, Path: "/v1/audit/chains/" + url.PathEscape(id)}).String()
			}
		}
	}
	return ""
}
