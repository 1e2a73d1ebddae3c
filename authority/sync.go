package authority

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// MaxSyncIDs bounds the agents one node sync asks about.
const MaxSyncIDs = 256

// NodeSync is what a node learns from a sync: which of the agents it
// asked about it may still serve, and the trust bundles to serve with
// them.
type NodeSync struct {
	NodeID spiffeid.ID
	// Hosted are the agents asked about that the node may serve;
	// Refused, by agent, why it may not (ErrAgentNotRegistered,
	// registry.ErrNotHosted, ...): each asked about is in one of them.
	Hosted  []spiffeid.ID
	Refused map[spiffeid.ID]error
	// Bundles is this trust domain's bundle and those it federates
	// with, as in every answer with an X509-SVID.
	Bundles json.RawMessage
}

// SyncNode answers node c, which serves the agents ids on its host (its
// Workload API), which of them it may still serve, as the issuance of
// their SVIDs would decide it before the policy (the agent registered
// to be hosted by the node), and the trust bundles: a node that syncs
// stops serving an agent deleted, or moved to another node, without
// waiting for its next renewal, and serves a federation added, or a
// peer's new keys, at once. A node refused as a whole (banned, drifted,
// its ID revoked, its SVID expired or replaced since) is refused with
// the error of its SVIDs' issuance; an agent whose ID is revoked is
// refused (ErrIDRevoked).
func (a *Authority) SyncNode(ctx context.Context, c *Caller, ids []string) (*NodeSync, error) {
	if err := a.require(c, RoleNode); err != nil {
		return nil, err
	}
	if len(ids) > MaxSyncIDs {
		return nil, fmt.Errorf("%w: spiffe_ids lists %d agents, more than %d", ErrInvalidRequest, len(ids), MaxSyncIDs)
	}
	asked := make([]spiffeid.ID, 0, len(ids))
	for _, s := range ids {
		id, err := parseID(s)
		if err != nil {
			return nil, err
		}
		asked = append(asked, id)
	}
	// The node and every agent asked, in one read.
	var node *registry.Node
	out := &NodeSync{NodeID: c.ID, Refused: map[spiffeid.ID]error{}}
	if err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		if node, err = registry.GetNode(tx, c.ID.String()); err != nil {
			return notFoundAs(err, ErrNodeUnknown, c.ID)
		}
		if err := notRevoked(tx, c.ID.String()); err != nil {
			return err
		}
		seen := map[spiffeid.ID]bool{}
		for _, id := range asked {
			if seen[id] {
				continue
			}
			seen[id] = true
			err := hostedOn(tx, a.td, id, node)
			switch {
			case err == nil:
				out.Hosted = append(out.Hosted, id)
			case errors.Is(err, ErrAgentNotRegistered), errors.Is(err, registry.ErrNotHosted),
				errors.Is(err, registry.ErrBanned), errors.Is(err, registry.ErrNodeDrifted), errors.Is(err, ErrIDRevoked):
				out.Refused[id] = err
			default:
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := registry.CheckActive(node); err != nil {
		return nil, err
	}
	// A record restored from a backup made before the node's latest
	// renewals may read as lapsed: the SVID it asks with, newer than any
	// it knows, says it is not (its next renewal is taken, and records it).
	if err := stillAttested(node, c, a.now()); err != nil && !(errors.Is(err, ErrNodeUnknown) && newerThanRecord(node, c)) {
		if errors.Is(err, ErrSVIDSuperseded) {
			a.supersededSVID(ctx, "node.superseded_svid", c.ID, callerSerial(c), err, nil)
		}
		return nil, err
	}
	out.Bundles = a.BundlesJSON()
	return out, nil
}

// hostedOn refuses agent id on node as its SVIDs' issuance would, the
// node's own state aside: not an agent of td or not registered
// (ErrAgentNotRegistered), its registration not allowing the node
// (registry.CheckHosting), its ID revoked (ErrIDRevoked).
func hostedOn(tx store.Tx, td spiffeid.TrustDomain, id spiffeid.ID, node *registry.Node) error {
	if err := registry.CheckAgentID(td, id); err != nil {
		return fmt.Errorf("%w: %v", ErrAgentNotRegistered, err)
	}
	agent, err := registry.AgentBySPIFFEID(tx, id.String())
	if err != nil {
		return notFoundAs(err, ErrAgentNotRegistered, id)
	}
	if err := registry.CheckHosting(agent, node); err != nil {
		return err
	}
	return notRevoked(tx, id.String())
}
