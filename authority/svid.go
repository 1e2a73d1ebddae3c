package authority

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// MintX509 issues an X509-SVID for spiffeID to the caller:
//   - a node, for an agent registered to it, or for itself (renewal);
//   - an agent, for itself (renewal), checked against the node that hosts
//     it as recorded in its current SVID.
//
// The CSR proves possession of the key only; the authority decides the
// certificate's contents.
func (a *Authority) MintX509(ctx context.Context, c *Caller, spiffeID string, csrPEM []byte) (*ca.X509SVID, error) {
	if c == nil || c.ID.IsZero() {
		return nil, ErrUnauthenticated
	}
	id, err := parseID(spiffeID)
	if err != nil {
		return nil, err
	}
	pub, err := ca.ParseCSR(csrPEM, id)
	if err != nil {
		return nil, err
	}
	if a.RoleOf(id) == RoleNode {
		if c.ID != id {
			return nil, fmt.Errorf("%w: a node SVID is renewed only by that node", ErrForbidden)
		}
		return a.renewNode(ctx, c, id, pub)
	}
	agent, node, err := a.authorizeAgent(ctx, c, id)
	if err != nil {
		return nil, err
	}
	is, err := a.authorizeIssuance(ctx, "x509", c, agent, node)
	if err != nil {
		return nil, err
	}
	nodeID := spiffeid.RequireFromString(node.SPIFFEID)
	svid, err := a.ca.MintX509SVID(ctx, ca.X509Params{ID: id, PublicKey: pub, TTL: agent.X509TTL(), Subject: hostNodeSubject(nodeID)})
	if err != nil {
		return nil, a.issuanceFailed(ctx, c, is, agent, err)
	}
	err = a.recordIssued(ctx, event{typ: "svid.issued", actor: c.ID.String(), subject: id.String(), parties: partyOf(agent), details: map[string]any{
		"kind": "x509", "serial": svid.SerialNumber.Text(16), "certificate_sha256": CertificateSHA256(svid.Certificates[0]), "node": node.SPIFFEID,
		"ttl_seconds": int64(svid.ExpiresAt.Sub(svid.Certificates[0].NotBefore).Seconds()), "expires_at": svid.ExpiresAt.UTC(),
	}, decisionID: is.decision.ID, policyRevision: is.decision.Revision}, is, stillHosts(id, agent, c, node.SPIFFEID, a.now()))
	if err != nil {
		return nil, a.issuanceFailed(ctx, c, is, agent, err)
	}
	return svid, nil
}

// recordIssued records ev, the svid.issued entry of an agent SVID, with
// the decision is that allowed it, in the commit that runs check (see
// recordOmittingInput: rather than failing after the SVID was made).
func (a *Authority) recordIssued(ctx context.Context, ev event, is *issuance, check func(store.Tx) error) error {
	d := is.details()
	ev.details["decision"] = d
	_, err := a.recordOmittingInput(ctx, ev, d, check)
	return err
}

// stillHosts checks again, in the commit that logs an agent SVID asked
// by c, that the node hosts the agent (both recorded, the node neither
// banned nor drifted nor lapsed at now, the registration allowing it, and
// a node asking with its latest SVID): a ban, a drift, a deletion or a
// renewal committed since the first check is not outrun by the issuance,
// nor is an eviction (ErrNodeUnknown, as for a node evicted before).
// The registration must still be decided, the one the policy was asked
// about (its TTL made the SVID, its accountability is the entry's
// party): one updated, or deleted and registered again, since is
// ErrChangedMeanwhile.
func stillHosts(agentID spiffeid.ID, decided *registry.Agent, c *Caller, nodeID string, now time.Time) func(tx store.Tx) error {
	return func(tx store.Tx) error {
		agent, err := registry.AgentBySPIFFEID(tx, agentID.String())
		if err != nil {
			return notFoundAs(err, ErrAgentNotRegistered, agentID)
		}
		if err := notRevoked(tx, nodeID, agentID.String()); err != nil {
			return err
		}
		node, err := registry.GetNode(tx, nodeID)
		if err != nil { // not found: evicted since the first check
			return notFoundAs(err, ErrNodeUnknown, nodeID)
		}
		if err := registry.CheckHosting(agent, node); err != nil {
			return err
		}
		if err := sameRegistration(decided, agent); err != nil {
			return err
		}
		return stillAttested(node, c, now)
	}
}

// sameRegistration refuses cur, a registration read in a commit, unless
// it is decided, the version a flow's decision was made on.
func sameRegistration(decided, cur *registry.Agent) error {
	if decided.SHA256() != cur.SHA256() {
		return fmt.Errorf("%w: the registration of %s was changed while this was issued (by an admin, after the policy decided on the version before): ask again",
			ErrChangedMeanwhile, cur.SPIFFEID)
	}
	return nil
}

// stillAttested refuses node at now when it is lapsed, or, when it is
// the caller c itself, when c asks with an SVID other than its latest
// (latestNodeSVID).
func stillAttested(node *registry.Node, c *Caller, now time.Time) error {
	if err := lapsed(node, now); err != nil {
		return err
	}
	if node.SPIFFEID == c.ID.String() {
		return latestNodeSVID(node, c, now)
	}
	return nil
}

// lapsed refuses a node whose latest SVID expired before now: it has
// neither renewed nor attested again since, so it is attested no longer,
// and the agents it hosted get nothing through it (not even an agent
// renewing by itself, whose key may have been taken from a host that
// stopped). A node renews its SVID to stay attested: a join-token node
// with mandate node run, a TPM node with a fresh quote. A record without
// an expiry is not held to it.
func lapsed(node *registry.Node, now time.Time) error {
	if !node.SVIDExpiresAt.IsZero() && !now.Before(node.SVIDExpiresAt) {
		return fmt.Errorf("%w: %s is attested no longer: its latest SVID expired at %s, and it has neither renewed nor attested again since",
			ErrNodeUnknown, node.SPIFFEID, node.SVIDExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// MintJWT issues a JWT-SVID for the given audience. An agent asks for
// itself (spiffeID empty or its own); a node asks for an agent it hosts.
func (a *Authority) MintJWT(ctx context.Context, c *Caller, spiffeID string, audience []string) (*ca.JWTSVID, error) {
	if c == nil || c.ID.IsZero() {
		return nil, ErrUnauthenticated
	}
	if err := checkAudience(audience); err != nil {
		return nil, err
	}
	if spiffeID == "" {
		spiffeID = c.ID.String()
	}
	id, err := parseID(spiffeID)
	if err != nil {
		return nil, err
	}
	agent, node, err := a.authorizeAgent(ctx, c, id)
	if err != nil {
		return nil, err
	}
	is, err := a.authorizeIssuance(ctx, "jwt", c, agent, node)
	if err != nil {
		return nil, err
	}
	svid, err := a.ca.MintJWTSVID(ctx, ca.JWTParams{ID: id, Audience: audience, TTL: agent.JWTTTL()})
	if err != nil {
		return nil, a.issuanceFailed(ctx, c, is, agent, err)
	}
	err = a.recordIssued(ctx, event{typ: "svid.issued", actor: c.ID.String(), subject: id.String(), parties: partyOf(agent), details: map[string]any{
		"kind": "jwt", "audience": svid.Audience, "key_id": svid.KeyID, "node": node.SPIFFEID, "expires_at": svid.ExpiresAt.UTC(),
	}, decisionID: is.decision.ID, policyRevision: is.decision.Revision}, is, stillHosts(id, agent, c, node.SPIFFEID, a.now()))
	if err != nil {
		return nil, a.issuanceFailed(ctx, c, is, agent, err)
	}
	return svid, nil
}

// Audience bounds of a JWT-SVID request.
const (
	maxAudiences   = 16
	maxAudienceLen = 512
)

func checkAudience(aud []string) error {
	if len(aud) == 0 {
		return fmt.Errorf("%w: audience is required", ErrInvalidRequest)
	}
	if len(aud) > maxAudiences {
		return fmt.Errorf("%w: at most %d audiences", ErrInvalidRequest, maxAudiences)
	}
	for _, s := range aud {
		if s == "" || len(s) > maxAudienceLen {
			return fmt.Errorf("%w: each audience is 1 to %d bytes", ErrInvalidRequest, maxAudienceLen)
		}
		// Text, as a verifier compares it: no control or format
		// characters, no invalid UTF-8 (each of which the audit entry
		// would also hold escaped, at up to six times its size).
		if !delegation.IsPlainText(s) {
			return fmt.Errorf("%w: an audience is UTF-8 text without control or format characters", ErrInvalidRequest)
		}
	}
	return nil
}

// parseID reads a spiffe_id a caller sent. One that is refused is
// repeated only when it looks like an ID (spiffe://…) and is within an
// ID's bound: what was sent in place of one may be a secret, and is
// the caller's to know.
func parseID(s string) (spiffeid.ID, error) {
	if s == "" {
		return spiffeid.ID{}, fmt.Errorf("%w: spiffe_id is required", ErrInvalidRequest)
	}
	id, err := spiffeid.FromString(s)
	switch {
	case err == nil:
		return id, nil
	case !strings.HasPrefix(s, "spiffe://"):
		return spiffeid.ID{}, fmt.Errorf("%w: spiffe_id is not a SPIFFE ID (its scheme is not spiffe://: spiffe://<trust domain>/<path>), and is not repeated: it may be a secret", ErrInvalidRequest)
	case len(s) > registry.MaxSPIFFEIDLen:
		return spiffeid.ID{}, fmt.Errorf("%w: spiffe_id is at most %d bytes", ErrInvalidRequest, registry.MaxSPIFFEIDLen)
	}
	return spiffeid.ID{}, fmt.Errorf("%w: spiffe_id %q: %v", ErrInvalidRequest, s, err)
}

// authorizeAgent checks that caller c may obtain credentials for agent id
// and returns the registration and the hosting node.
func (a *Authority) authorizeAgent(ctx context.Context, c *Caller, id spiffeid.ID) (*registry.Agent, *registry.Node, error) {
	if c == nil || c.ID.IsZero() {
		return nil, nil, ErrUnauthenticated
	}
	var nodeID spiffeid.ID
	switch a.RoleOf(c.ID) {
	case RoleNode:
		nodeID = c.ID
	case RoleAgent:
		if c.ID != id {
			return nil, nil, fmt.Errorf("%w: agent %s may only obtain its own SVIDs, not %s", ErrForbidden, c.ID, id)
		}
		host, err := HostNode(c.Cert)
		if err != nil {
			return nil, nil, err
		}
		nodeID = host
	default:
		return nil, nil, fmt.Errorf("%w: %s is neither a node nor an agent of %s", ErrForbidden, c.ID, a.td)
	}
	if err := registry.CheckAgentID(a.td, id); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrAgentNotRegistered, err)
	}
	agent, node, err := a.lookupHosting(ctx, id, nodeID)
	if err != nil {
		return nil, nil, err
	}
	// An ID revoked gets no SVID, nor do the agents of a node revoked
	// (a delegation checks its parties' revocations itself).
	if err := a.store.View(ctx, func(tx store.Tx) error { return notRevoked(tx, nodeID.String(), id.String()) }); err != nil {
		return nil, nil, err
	}
	if err := stillAttested(node, c, a.now()); err != nil {
		if errors.Is(err, ErrSVIDSuperseded) {
			a.supersededSVID(ctx, "node.superseded_svid", c.ID, callerSerial(c), err, map[string]any{"asked_for": id.String()})
		}
		return nil, nil, err
	}
	return agent, node, nil
}

// latestNodeSVID refuses node c asking for an agent's SVID with an SVID
// other than its latest: one replaced since (renewed, joined or attested
// again) is a copy of an old credential, or a node that lost its
// renewal's answer (it renews with it, then asks again). The SVID the
// latest replaced is still taken for supersededGrace after the latest
// was issued: requests made with it just before are under way (a
// process that read the node's credential as mandate node run renewed
// it). A record without a serial is not held to it.
func latestNodeSVID(node *registry.Node, c *Caller, now time.Time) error {
	serial := callerSerial(c)
	switch {
	case node.SVIDSerial == "" || serial == node.SVIDSerial:
		return nil
	case serial != "" && serial == node.PrevSVIDSerial && now.Before(node.SVIDIssuedAt.Add(supersededGrace)):
		return nil
	case newerThanRecord(node, c):
		return nil
	}
	return fmt.Errorf("%w: %s asks with an SVID replaced since (serial %s): the node's credential was renewed or attested again since; ask with its latest SVID (a copy of the old one may be in use)",
		ErrSVIDSuperseded, c.ID, serial)
}

// newerThanRecord reports whether c's certificate (issued by this
// authority: it authenticated c) was issued after the latest SVID that
// node's record knows of. Only a record restored from a backup made
// before the node's later renewals misses them: an SVID's issue and the
// record naming it are one commit. A copy of a credential replaced since
// is older than the record's, never newer, and is still refused.
func newerThanRecord(node *registry.Node, c *Caller) bool {
	newest := node.NewestSVID()
	return c.Cert != nil && !newest.IsZero() && c.Cert.NotBefore.After(newest)
}

// supersededGrace is how long after a node's SVID is replaced the one it
// replaced still gets its agents' SVIDs.
const supersededGrace = 30 * time.Second

// callerSerial is the serial of c's certificate, "" without one.
func callerSerial(c *Caller) string {
	if c.Cert == nil {
		return ""
	}
	return c.Cert.SerialNumber.Text(16)
}

func (a *Authority) lookupHosting(ctx context.Context, id, nodeID spiffeid.ID) (*registry.Agent, *registry.Node, error) {
	key := hostingKey{agent: id.String(), node: nodeID.String()}
	now := a.now()
	cached, gen, ok := a.hosting.get(key, now)
	if ok {
		return cached.agent, cached.node, nil
	}
	var agent *registry.Agent
	var node *registry.Node
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		if agent, err = registry.AgentBySPIFFEID(tx, id.String()); err != nil {
			return notFoundAs(err, ErrAgentNotRegistered, id)
		}
		if node, err = registry.GetNode(tx, nodeID.String()); err != nil {
			return notFoundAs(err, ErrNodeUnknown, nodeID)
		}
		return registry.CheckHosting(agent, node)
	})
	if err != nil {
		return nil, nil, err
	}
	a.hosting.put(key, gen, hostingEntry{agent: agent, node: node, expires: now.Add(hostingCacheTTL)})
	return agent, node, nil
}

func (a *Authority) renewNode(ctx context.Context, c *Caller, id spiffeid.ID, pub crypto.PublicKey) (*ca.X509SVID, error) {
	presented := callerSerial(c)
	// The node may renew (checked before the SVID is made, and again in
	// the commit that logs svid.issued and stores the node's new serial:
	// both durable, or neither). It renews with its latest SVID, or the
	// one before (whose renewal's answer it may have lost): an SVID
	// replaced since, a copy of an old credential, renews no more.
	renewable := func(tx store.Tx) (*registry.Node, error) {
		node, err := unbannedNode(tx, id)
		switch {
		case err != nil:
			return nil, err
		case node.Level == registry.LevelHardware:
			return nil, fmt.Errorf("%w: a hardware-attested node renews through attestation", ErrForbidden)
		case presented == "" || (node.SVIDSerial != "" && presented != node.SVIDSerial && presented != node.PrevSVIDSerial && !newerThanRecord(node, c)):
			return nil, fmt.Errorf("%w: %s renews with an SVID replaced since (serial %s); the node's credential was renewed elsewhere: a copy of it may be in use", ErrSVIDSuperseded, id, presented)
		}
		return node, nil
	}
	// The node's latest serial as this renewal found it: the commit
	// requires it unchanged, so that of renewals racing from one SVID
	// only one is issued (each of the others would be an SVID replaced
	// as it is handed out, unable to renew).
	var seen string
	if err := a.store.View(ctx, func(tx store.Tx) error {
		node, err := renewable(tx)
		if err == nil {
			seen = node.SVIDSerial
		}
		return err
	}); err != nil {
		if errors.Is(err, ErrSVIDSuperseded) {
			a.supersededSVID(ctx, "node.renewal_refused", id, presented, err, nil)
		}
		return nil, err
	}
	svid, err := a.ca.MintX509SVID(ctx, ca.X509Params{ID: id, PublicKey: pub})
	if err != nil {
		return nil, err
	}
	_, err = a.recordWith(ctx, nodeSVIDIssued(id, svid, map[string]any{"renewal": true}), func(tx store.Tx) error {
		node, err := renewable(tx)
		if err != nil {
			return err
		}
		if node.SVIDSerial != seen {
			return fmt.Errorf("%w: %s was renewed by another request while this one was made; use the SVID that request got, or ask again", ErrRenewedMeanwhile, id)
		}
		return putNodeSVID(tx, node, presented, svid, a.now())
	})
	// Only the SVID serials and expiry changed: the policy documents hold
	// none of them.
	a.hosting.invalidate()
	if err != nil {
		return nil, err
	}
	return svid, nil
}

// nodeSVIDIssued is the svid.issued event of node id's own X509-SVID
// (a renewal, a join asked again), with extra details.
func nodeSVIDIssued(id spiffeid.ID, svid *ca.X509SVID, extra map[string]any) event {
	details := map[string]any{"kind": "x509", "serial": svid.SerialNumber.Text(16), "certificate_sha256": CertificateSHA256(svid.Certificates[0]),
		"node": id.String(), "expires_at": svid.ExpiresAt.UTC()}
	maps.Copy(details, extra)
	return event{typ: "svid.issued", actor: id.String(), subject: id.String(), details: details}
}

// putNodeSVID stores svid, issued at now, as node's latest SVID, prev (a
// serial) as the one it replaces.
func putNodeSVID(tx store.Tx, node *registry.Node, prev string, svid *ca.X509SVID, now time.Time) error {
	node.PrevSVIDSerial = prev
	node.SVIDSerial, node.SVIDExpiresAt = svid.SerialNumber.Text(16), svid.ExpiresAt
	node.IssuedSVIDAt(now)
	return registry.PutNode(tx, node)
}

// unbannedNode is node id's record: ErrNodeUnknown without one,
// registry.ErrBanned if it is banned, ErrIDRevoked if its ID is revoked.
func unbannedNode(tx store.Tx, id spiffeid.ID) (*registry.Node, error) {
	node, err := registry.GetNode(tx, id.String())
	switch {
	case err != nil:
		return nil, notFoundAs(err, ErrNodeUnknown, id)
	case node.Banned:
		return nil, fmt.Errorf("%w: %s", registry.ErrBanned, id)
	}
	return node, notRevoked(tx, id.String())
}

// notRevoked refuses, with ErrIDRevoked, the first of ids (SPIFFE IDs)
// revoked here: a revocation is for ever, and ends the SVIDs of the ID
// as well as its delegations.
func notRevoked(tx store.Tx, ids ...string) error {
	for _, id := range ids {
		revoked, err := delegation.IDRevoked(tx, id)
		if err != nil {
			return fmt.Errorf("authority: look up the revocation of %s: %w", id, err)
		}
		if revoked {
			return fmt.Errorf("%w: %s was revoked (for ever: mandate admin revoke list); register a new ID", ErrIDRevoked, id)
		}
	}
	return nil
}

// supersededSVID records a request refused for a node SVID replaced
// since (typ: node.renewal_refused for a renewal, node.superseded_svid
// for an agent's SVID): in the server's log every time, and in the audit
// log once per typ and SVID while the authority runs (its holder
// authenticated as the node: two holders of one node's credential is
// what an operator must see).
func (a *Authority) supersededSVID(ctx context.Context, typ string, id spiffeid.ID, serial string, reason error, extra map[string]any) {
	a.log.WarnContext(ctx, "node SVID replaced since presented: refused", "event", typ, "spiffe_id", id.String(), "serial", serial)
	if !a.firstRefusal(typ + " " + id.String() + " " + serial) {
		return
	}
	details := map[string]any{"serial": serial, "reason": reason.Error()}
	maps.Copy(details, extra)
	if _, err := a.record(ctx, event{typ: typ, actor: id.String(), subject: id.String(), details: details}); err != nil {
		a.logNotRecorded(ctx, "audit a refused request", err, "event", typ)
	}
}

// notFoundAs turns a registry "not found" of id (a SPIFFE ID, parsed or
// as written) into the caller-facing sentinel as; any other error (the
// store failing) is the server's own and is returned wrapped, unchanged
// in kind.
func notFoundAs(err, as error, id any) error {
	if errors.Is(err, registry.ErrNotFound) {
		return fmt.Errorf("%w: %s", as, id)
	}
	return fmt.Errorf("authority: look up %s: %w", id, err)
}
