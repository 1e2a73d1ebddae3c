package authority

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/policy"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// CreateAgent validates and stores a new agent registration.
func (a *Authority) CreateAgent(ctx context.Context, c *Caller, ag *registry.Agent) (*registry.Agent, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return nil, err
	}
	a.changeMu.Lock()
	defer a.changeMu.Unlock()
	if err := ag.Validate(a.td); err != nil {
		return nil, err
	}
	ag.ID = registry.NewID()
	ag.CreatedAt = a.now().UTC()
	ag.UpdatedAt = ag.CreatedAt
	ev := agentEvent("agent.registered", c, ag)
	if err := a.recordable(ev, registry.ErrInvalid); err != nil {
		return nil, err
	}
	// Stored in the commit that logs it: both or neither.
	_, err := a.recordWith(ctx, ev, func(tx store.Tx) error {
		if err := registrable(tx, ag.SPIFFEID); err != nil {
			return err
		}
		return registry.CreateAgent(tx, ag)
	})
	a.agentChanged(ag.SPIFFEID)
	if err != nil {
		return nil, err
	}
	a.log.InfoContext(ctx, "agent registered", "id", ag.ID, "spiffe_id", ag.SPIFFEID, "by", c.ID.String())
	return ag, nil
}

// registrable refuses, with ErrIDRevoked, a SPIFFE ID revoked here as
// the one a registration takes: a revocation is for ever, and such a
// registration would be refused every SVID. (One revoked after it was
// registered stays, and may be changed as it stands.)
func registrable(tx store.Tx, spiffeID string) error {
	revoked, err := delegation.IDRevoked(tx, spiffeID)
	if err != nil {
		return fmt.Errorf("authority: look up the revocation of %s: %w", spiffeID, err)
	}
	if revoked {
		return fmt.Errorf("%w: %s was revoked (for ever: mandate admin revoke list), and cannot be registered again; register the agent under a new ID", ErrIDRevoked, spiffeID)
	}
	return nil
}

// IfMatch is HTTP's If-Match (RFC 9110 §13.1.1) on a registration,
// every field of it joined with ", ": a change made only while the
// registration is one of the versions it names, each an entity tag
// ("<its SHA256>", see ETag), or "*" for any version. An If-Match given
// is a condition even when it names no tag (an empty field): that names
// no version; a change without a condition is given none.
type IfMatch string

// ETag is the entity tag of registration ag's version.
func ETag(ag *registry.Agent) string { return `"` + ag.SHA256() + `"` }

// check refuses registration cur unless it is a version m names: a weak
// tag (W/"…") names none, as If-Match compares strongly. m is read as
// a list (RFC 9110 §5.6.1): empty elements are ignored, and every other
// element must be an entity tag, or the list "*" alone.
func (m IfMatch) check(cur *registry.Agent) error {
	if len(m) > maxIfMatch {
		return fmt.Errorf("%w: If-Match is over %d bytes", ErrInvalidRequest, maxIfMatch)
	}
	tags, err := entityTags(string(m))
	if err != nil {
		return fmt.Errorf("%w: If-Match: %v", ErrInvalidRequest, err)
	}
	if len(tags) == 1 && tags[0] == "*" {
		return nil
	}
	tag := ETag(cur)
	if slices.Contains(tags, tag) {
		return nil
	}
	return fmt.Errorf("%w: the registration is no longer the version If-Match names (it is %s now: read it again, and change that)", ErrPreconditionFailed, tag)
}

// entityTags reads s as If-Match's list: "*", or entity tags
// ([W/]"<etagc>*", where etagc is any visible character but the double
// quote, or obs-text), separated by commas and optional white space;
// empty elements are skipped.
func entityTags(s string) ([]string, error) {
	var tags []string
	ows := func(i int) int {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		return i
	}
	for i := 0; ; {
		// Empty elements, and the separators between elements.
		for i = ows(i); i < len(s) && s[i] == ','; i = ows(i + 1) {
		}
		if i == len(s) {
			break
		}
		start := i
		switch {
		case s[i] == '*':
			i++
		default:
			if strings.HasPrefix(s[i:], "W/") {
				i += 2
			}
			if i == len(s) || s[i] != '"' {
				return nil, fmt.Errorf("%q is not an entity tag (a quoted string, as the ETag of the registration's answers)", policy.CutUTF8(s[start:], 80))
			}
			for i++; i < len(s) && s[i] != '"'; i++ {
				if c := s[i]; c < 0x21 || c == 0x7f {
					return nil, fmt.Errorf("%q is not an entity tag (a quoted string of visible characters)", policy.CutUTF8(s[start:], 80))
				}
			}
			if i == len(s) {
				return nil, fmt.Errorf("%q is not an entity tag (its closing quote is missing)", policy.CutUTF8(s[start:], 80))
			}
			i++
		}
		tags = append(tags, s[start:i])
		if i = ows(i); i < len(s) && s[i] != ',' {
			return nil, fmt.Errorf("%q is not an entity tag (a quoted string, as the ETag of the registration's answers)", policy.CutUTF8(s[start:], 80))
		}
	}
	if slices.Contains(tags, "*") && len(tags) > 1 {
		return nil, errors.New(`"*" stands alone, not among entity tags`)
	}
	return tags, nil
}

// maxIfMatch bounds an If-Match header: a few entity tags.
const maxIfMatch = 1024

// UpdateAgent replaces registration id (if it is a version cond names,
// when given).
func (a *Authority) UpdateAgent(ctx context.Context, c *Caller, id string, ag *registry.Agent, cond ...IfMatch) (*registry.Agent, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return nil, err
	}
	a.changeMu.Lock()
	defer a.changeMu.Unlock()
	if ag.ID != "" && ag.ID != id {
		return nil, fmt.Errorf("%w: id in body %q differs from the path's %q", ErrInvalidRequest, ag.ID, id)
	}
	if err := ag.Validate(a.td); err != nil {
		return nil, err
	}
	ag.ID, ag.UpdatedAt = id, a.now().UTC()
	ev := agentEvent("agent.updated", c, ag)
	if err := a.recordable(ev, registry.ErrInvalid); err != nil {
		return nil, err
	}
	var was string // the SPIFFE ID it replaces, if it changes
	_, err := a.recordWith(ctx, ev, func(tx store.Tx) error {
		old, err := registry.GetAgent(tx, id)
		if err != nil {
			return err // not found: 404, with a condition or without
		}
		was = old.SPIFFEID
		for _, m := range cond {
			if err := m.check(old); err != nil {
				return err
			}
		}
		if ag.SPIFFEID != old.SPIFFEID {
			if err := registrable(tx, ag.SPIFFEID); err != nil {
				return err
			}
		}
		return registry.UpdateAgent(tx, ag)
	})
	a.agentChanged(was, ag.SPIFFEID)
	if err != nil {
		return nil, err
	}
	a.log.InfoContext(ctx, "agent updated", "id", id, "spiffe_id", ag.SPIFFEID, "by", c.ID.String())
	return ag, nil
}

// DeleteAgent removes registration id (if it is a version cond names,
// when given).
func (a *Authority) DeleteAgent(ctx context.Context, c *Caller, id string, cond ...IfMatch) error {
	if err := a.require(c, RoleAdmin); err != nil {
		return err
	}
	a.changeMu.Lock()
	defer a.changeMu.Unlock()
	// The entry is made, and checked, before the registration is gone.
	ag, err := viewed(ctx, a.store, func(tx store.Tx) (*registry.Agent, error) { return registry.GetAgent(tx, id) })
	if err != nil {
		return err
	}
	for _, m := range cond { // admin changes are serialized (changeMu): ag is current
		if err := m.check(ag); err != nil {
			return err
		}
	}
	ev := agentEvent("agent.deleted", c, ag)
	if a.recordable(ev, registry.ErrInvalid) != nil {
		// A registration whose whole entry the log would refuse (stored
		// before registrations were held to it, or deleted by an admin
		// with a longer SPIFFE ID than the one that made it): its id, its
		// SPIFFE ID (cut to the standard's bound) and a digest of it.
		ev = deletedAgentDigest(c, ag)
	}
	_, err = a.recordWith(ctx, ev, func(tx store.Tx) error {
		_, err := registry.DeleteAgent(tx, id)
		return err
	})
	a.agentChanged(ag.SPIFFEID)
	if err != nil {
		return err
	}
	a.log.InfoContext(ctx, "agent deleted", "id", id, "spiffe_id", ag.SPIFFEID, "by", c.ID.String())
	return nil
}

// deletedAgentDigest is the agent.deleted event of a registration too
// large for its whole entry: its id, its SPIFFE ID cut to
// registry.MaxSPIFFEIDLen bytes, and the SHA-256 of its JSON.
func deletedAgentDigest(c *Caller, ag *registry.Agent) event {
	subject := ag.SPIFFEID
	if len(subject) > registry.MaxSPIFFEIDLen {
		// A SPIFFE ID is ASCII (it was parsed as one when stored): cut
		// anywhere, it stays text.
		subject = subject[:registry.MaxSPIFFEIDLen]
	}
	return event{typ: "agent.deleted", actor: actorOf(c), subject: subject, details: map[string]any{
		"id": ag.ID, "registration_sha256": ag.SHA256(), "digest_only": true,
	}}
}

// GetAgent returns registration id.
func (a *Authority) GetAgent(ctx context.Context, c *Caller, id string) (*registry.Agent, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return nil, err
	}
	return viewed(ctx, a.store, func(tx store.Tx) (*registry.Agent, error) { return registry.GetAgent(tx, id) })
}

// ListAgents returns the registrations of page (every one with a zero
// Page), ordered by SPIFFE ID, and whether more follow.
func (a *Authority) ListAgents(ctx context.Context, c *Caller, page Page) ([]*registry.Agent, bool, error) {
	return listPage(ctx, a, c, page, registry.ListAgentsAfter)
}

// ListNodes returns the attested nodes of page (every one with a zero
// Page), ordered by SPIFFE ID, and whether more follow.
func (a *Authority) ListNodes(ctx context.Context, c *Caller, page Page) ([]*registry.Node, bool, error) {
	return listPage(ctx, a, c, page, registry.ListNodesAfter)
}

// ListRevokedIDs returns the SPIFFE IDs revoked here of page (every one
// with a zero Page), ordered by SPIFFE ID, and whether more follow. A
// revocation of a SPIFFE ID is for ever: it is never lifted.
func (a *Authority) ListRevokedIDs(ctx context.Context, c *Caller, page Page) ([]delegation.Revocation, bool, error) {
	return listPage(ctx, a, c, page, delegation.ListRevokedIDsAfter)
}

// Page is a page of a list ordered by SPIFFE ID: the entries after
// After ("": from the first), at most Limit of them (0: all).
type Page struct {
	After string
	Limit int
}

// listPage is a page of a registry list, for an admin.
func listPage[T any](ctx context.Context, a *Authority, c *Caller, page Page, list func(store.Tx, string, int) ([]T, bool, error)) ([]T, bool, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return nil, false, err
	}
	var more bool
	out, err := viewed(ctx, a.store, func(tx store.Tx) (out []T, err error) {
		out, more, err = list(tx, page.After, page.Limit)
		return out, err
	})
	return out, more, err
}

// BanNode bans a node: it and the agents it hosts get no more credentials.
func (a *Authority) BanNode(ctx context.Context, c *Caller, nodeID, reason string) (*registry.Node, error) {
	a.changeMu.Lock()
	defer a.changeMu.Unlock()
	// The ban that will stand: this one, or one made before (only bans
	// and evictions change it, and they hold changeMu).
	n, err := a.nodeToChange(ctx, c, nodeID, reason)
	if err != nil {
		return nil, err
	}
	now := a.now().UTC()
	// Every ban asked is logged, with the ban that stands: one asked of a
	// node already banned says so, and which reason was asked.
	ev := banEvent(c, nodeID, reason, reason, now, true)
	if n.Banned {
		ev = banEvent(c, nodeID, n.BanReason, reason, n.BannedAt, false)
	}
	if err := a.recordable(ev, ErrInvalidRequest); err != nil {
		return nil, err
	}
	_, err = a.recordWith(ctx, ev, func(tx store.Tx) (err error) {
		n, _, err = registry.BanNode(tx, nodeID, reason, now)
		return err
	})
	a.nodeChanged(nodeID)
	if err != nil {
		return nil, err
	}
	a.log.WarnContext(ctx, "node banned", "spiffe_id", nodeID, "reason", reason, "by", c.ID.String())
	return n, nil
}

// nodeToChange is node nodeID's record, read for an admin's change of
// it (c the admin) asked with reason; the caller holds changeMu.
func (a *Authority) nodeToChange(ctx context.Context, c *Caller, nodeID, reason string) (*registry.Node, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return nil, err
	}
	if err := optionalReason(reason); err != nil {
		return nil, err
	}
	return a.readNode(ctx, nodeID)
}

// GetNode returns the record of node nodeID (its full SPIFFE ID), for an
// admin.
func (a *Authority) GetNode(ctx context.Context, c *Caller, nodeID string) (*registry.Node, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return nil, err
	}
	return a.readNode(ctx, nodeID)
}

// readNode reads node nodeID's record.
func (a *Authority) readNode(ctx context.Context, nodeID string) (*registry.Node, error) {
	return viewed(ctx, a.store, func(tx store.Tx) (*registry.Node, error) { return registry.GetNode(tx, nodeID) })
}

// viewed is what read returns in one read-only transaction of s.
func viewed[T any](ctx context.Context, s store.Store, read func(store.Tx) (T, error)) (T, error) {
	var v T
	err := s.View(ctx, func(tx store.Tx) error {
		var err error
		v, err = read(tx)
		return err
	})
	return v, err
}

// optionalReason refuses a reason, which may be empty, that is not text
// of at most registry.MaxStringLen bytes.
func optionalReason(reason string) error {
	if len(reason) > registry.MaxStringLen || !delegation.IsPlainText(reason) {
		return fmt.Errorf("%w: reason is at most %d bytes of text (no invalid UTF-8, no control or format characters)", ErrInvalidRequest, registry.MaxStringLen)
	}
	return nil
}

// EvictNode removes a node's record (registry.EvictNode): the node and
// the agents it hosts get no more credentials until it attests again. A
// TPM node attests again at its next renewal; a join-token node cannot
// (its token is spent), and its node run stops. A banned node is
// evicted only with liftBan: its ban goes with its record, and a TPM
// node then attests again. Certificates already issued stay valid until
// they expire. The record as it was is logged (node.evicted) and
// returned; one changed (renewed, say) between its reading and its
// removal is ErrChangedMeanwhile.
func (a *Authority) EvictNode(ctx context.Context, c *Caller, nodeID, reason string, liftBan bool) (*registry.Node, error) {
	a.changeMu.Lock()
	defer a.changeMu.Unlock()
	n, err := a.nodeToChange(ctx, c, nodeID, reason)
	if err != nil {
		return nil, err
	}
	if err := a.evict(ctx, c, n, reason, liftBan); err != nil {
		return nil, err
	}
	return n, nil
}

// evict removes node n's record as read (EvictNode), for c (nil: the
// authority itself); the caller holds changeMu.
func (a *Authority) evict(ctx context.Context, c *Caller, n *registry.Node, reason string, liftBan bool) error {
	nodeID := n.SPIFFEID
	if n.Banned && !liftBan {
		return fmt.Errorf("%w: %s, banned %s; evict it with lift_ban (mandate admin node evict --lift-ban) to let it attest again", registry.ErrBanStands, nodeID, n.BannedAt.UTC().Format(time.RFC3339))
	}
	was, err := json.Marshal(n)
	if err != nil {
		return err
	}
	d := map[string]any{
		"reason": reason, "attestation_method": n.AttestationMethod, "level": n.Level,
		"attested_at": n.AttestedAt.UTC(), "svid_serial": n.SVIDSerial, "svid_expires_at": n.SVIDExpiresAt.UTC(),
	}
	if n.Banned {
		d["ban_lifted"], d["ban_reason"], d["banned_at"] = true, n.BanReason, n.BannedAt.UTC()
	}
	if n.Drifted {
		d["drifted"] = true
	}
	now := a.now().UTC()
	ev := event{typ: "node.evicted", actor: actorOf(c), subject: nodeID, details: d}
	if err := a.recordable(ev, ErrInvalidRequest); err != nil {
		return err
	}
	_, err = a.recordWith(ctx, ev, func(tx store.Tx) error {
		cur, err := registry.GetNode(tx, nodeID)
		if err != nil {
			return err
		}
		if is, err := json.Marshal(cur); err != nil {
			return err
		} else if !bytes.Equal(is, was) {
			return fmt.Errorf("%w: %s renewed, attested or was banned while it was evicted: ask again", ErrChangedMeanwhile, nodeID)
		}
		if _, err = registry.EvictNode(tx, nodeID, liftBan); err != nil {
			return err
		}
		// A TPM node (its ID names its EK) attests again only with a
		// challenge made after this: a quote kept back from before (of
		// a state since found drifted, say) does not admit it.
		if ek, ok := strings.CutPrefix(nodeID, a.td.IDString()+"/node/"+attest.MethodTPM+"/"); ok {
			return attest.VoidTPMChallenges(tx, ek, now)
		}
		return nil
	})
	a.nodeChanged(nodeID)
	if err != nil {
		return err
	}
	a.log.WarnContext(ctx, "node evicted", "spiffe_id", nodeID, "reason", reason, "ban_lifted", n.Banned, "by", actorOf(c))
	if c == nil {
		a.evictions.prune.Add(1)
	} else {
		a.evictions.admin.Add(1)
	}
	return nil
}

// NodeEvictions counts the node records removed since the authority
// started: by an admin (EvictNode), and by the prune of lapsed nodes.
func (a *Authority) NodeEvictions() (admin, prune uint64) {
	return a.evictions.admin.Load(), a.evictions.prune.Load()
}

// maxPrunedNodes bounds the nodes one round of pruneLapsedNodes evicts.
const maxPrunedNodes = 100

// pruneSince is when the prune of lapsed nodes counts from (the
// authority's start, or the latest step of its clock), as the
// authority's clock read it (wall), and Go's monotonic clock (mono).
type pruneSince struct{ wall, mono time.Time }

// maxClockStep is the most the authority's clock may move apart from the
// monotonic clock before the prune of lapsed nodes counts anew.
const maxClockStep = time.Minute

// pruneLapsedNodes evicts, as the authority, the nodes that are not
// banned and whose latest SVID expired more than
// attestation.prune_lapsed_nodes_after ago, at most maxPrunedNodes a
// round; a join-token node not before its token has expired (until
// then it may join again with it). Not before the authority has run for
// an X509-SVID's life since it started, or since its clock last stepped
// (since), nor, for a node, for less than the life of the SVID its
// record names: every node still at work has renewed by then, so a record
// restored from an older backup, left behind while the authority was
// down, or read with a clock set forward, is not taken for a node that
// lapsed.
func (a *Authority) pruneLapsedNodes(ctx context.Context, since *pruneSince) {
	after, now := a.cfg.Attestation.PruneLapsedNodesAfter.D(), a.now()
	if after <= 0 {
		return
	}
	// A wall clock stepped (set forward, a host resumed from suspend)
	// makes every record look older than it is: the nodes at work renew
	// within an X509-SVID's life of the step, counted anew.
	if step := now.Round(0).Sub(since.wall.Round(0)) - time.Since(since.mono); step > maxClockStep || step < -maxClockStep {
		a.log.Info("the clock stepped: lapsed nodes are pruned an X509-SVID's life from now at the earliest", "step", step.Round(time.Second))
		*since = pruneSince{wall: now, mono: time.Now()}
		return
	}
	if now.Round(0).Sub(since.wall.Round(0)) < a.cfg.CA.X509SVIDTTL.D() {
		return
	}
	var lapsed []*registry.Node
	err := a.store.View(ctx, func(tx store.Tx) error {
		nodes, err := registry.ListNodes(tx)
		if err != nil {
			return err
		}
		// A join-token node may still join again with its token, until
		// the token expires (a join whose answer was lost): it is left
		// until then.
		var rejoinable map[string]bool
		joinPrefix := a.td.IDString() + "/node/" + attest.MethodJoinToken + "/"
		for _, n := range nodes {
			if n.Banned || n.SVIDExpiresAt.IsZero() || now.Sub(n.SVIDExpiresAt) <= after {
				continue
			}
			// The node's SVID may live longer than the X509-SVIDs made
			// now (ca.x509_svid_ttl lowered since): at work, it renews
			// within that life, which the authority must have run for.
			if life := n.SVIDExpiresAt.Sub(n.SVIDIssuedAt); !n.SVIDIssuedAt.IsZero() && now.Round(0).Sub(since.wall.Round(0)) < life {
				continue
			}
			if token, ok := strings.CutPrefix(n.SPIFFEID, joinPrefix); ok && n.AttestationMethod == attest.MethodJoinToken {
				if rejoinable == nil {
					if rejoinable, err = attest.RejoinableTokens(tx, now); err != nil {
						return err
					}
				}
				if rejoinable[token] {
					continue
				}
			}
			if lapsed = append(lapsed, n); len(lapsed) == maxPrunedNodes {
				break
			}
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			a.log.Error("prune lapsed nodes", "err", err)
		}
		return
	}
	for _, n := range lapsed {
		reason := fmt.Sprintf("lapsed: its latest SVID expired at %s, more than attestation.prune_lapsed_nodes_after (%s) ago", n.SVIDExpiresAt.UTC().Format(time.RFC3339), after)
		a.changeMu.Lock()
		err := a.evict(ctx, nil, n, reason, false)
		a.changeMu.Unlock()
		// One renewed, attested again or banned since it was read is
		// left to the next round.
		if err != nil && !errors.Is(err, ErrChangedMeanwhile) && !errors.Is(err, registry.ErrNotFound) && !errors.Is(err, registry.ErrBanStands) {
			if ctx.Err() == nil {
				a.log.Error("prune lapsed node", "spiffe_id", n.SPIFFEID, "err", err)
			}
			return
		}
	}
}

// banEvent is the audit event of a ban asked with reason asked: the ban
// that stands (its reason and time), and whether this request made it.
func banEvent(c *Caller, nodeID, reason, asked string, at time.Time, banned bool) event {
	d := map[string]any{"reason": reason, "banned_at": at.UTC()}
	if !banned {
		d["already_banned"], d["asked_reason"] = true, asked
	}
	return event{typ: "node.banned", actor: actorOf(c), subject: nodeID, details: d}
}

// agentEvent is the audit event of a registration change: the whole
// registration (every field that decides where the agent may run and
// what it may hold), with its accountability as the accountable party.
func agentEvent(typ string, c *Caller, ag *registry.Agent) event {
	return event{typ: typ, actor: actorOf(c), subject: ag.SPIFFEID, parties: partyOf(ag), details: map[string]any{
		"id": ag.ID, "node_ids": ag.NodeIDs, "selectors": ag.Selectors, "scopes": ag.Scopes,
		"x509_ttl_seconds": ag.X509TTLSeconds, "jwt_ttl_seconds": ag.JWTTTLSeconds,
		"require_hardware_attestation": ag.RequireHardwareAttestation,
	}}
}
