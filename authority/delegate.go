package authority

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/ca/presented"
	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/echo"
	"mandate.dev/mandate/policy"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// Delegation lifetimes.
const (
	DefaultDelegationTTL = 10 * time.Minute
	MaxDelegationTTL     = delegation.MaxLifetime
	maxScopes            = 64
	maxTextLen           = 256
	// maxRecordedRevoked bounds the ids a delegation.revoked entry lists.
	maxRecordedRevoked = 1000
	// maxDelegatorSignature bounds a delegator signature (a JWS whose x5c
	// holds the delegator's SVID chain), which the hop's entry keeps.
	maxDelegatorSignature = 16 << 10
)

// ErrDelegationRevoked is returned when a party of the hop (the delegator,
// its host, the delegatee, a party above) or a hop of the chain above was
// revoked.
var ErrDelegationRevoked = errors.New("authority: revoked")

// ErrScopeNotGranted is returned for a scope beyond those granted to the
// delegator, whatever the policy said.
var ErrScopeNotGranted = errors.New("authority: scope not granted")

// DelegateRequest is a delegator's request for one hop.
type DelegateRequest struct {
	Delegatee string
	// DelegateeSVID is the delegatee's current X509-SVID chain, when the
	// delegator has it: the token is then bound to its leaf (cnf) and
	// expires no later than it.
	DelegateeSVID      []*x509.Certificate
	Scopes             []string
	Principal          string // a root hop's principal
	ParentToken        string // a sub-delegation's parent token
	Purpose            string
	TTL                time.Duration
	DelegatorSignature string
}

// DelegateAnswer is an issued hop.
type DelegateAnswer struct {
	ID        string
	Token     string
	ExpiresAt time.Time
	Chain     []*delegation.Claims
	Receipt   audit.Receipt
}

// Delegate issues one delegation hop: the caller (an agent of this trust
// domain, the delegator) lets the delegatee act for the principal with
// scopes, below the parent token if one is given (issued here or by a
// federated authority, and presented by the caller, its holder). The flow
// is authenticate → verify the parent → policy → sign → audit → answer:
// the hop and its decision are durable in the audit log before the token
// is returned; a deny returns the policy's reasons and is recorded too.
func (a *Authority) Delegate(ctx context.Context, c *Caller, req DelegateRequest) (*DelegateAnswer, error) {
	if err := a.require(c, RoleAgent); err != nil {
		return nil, err
	}
	ans, err := a.delegate(ctx, c, req)
	var denial *PolicyDenial
	if err != nil && !errors.As(err, &denial) && !errors.Is(err, context.Canceled) {
		// A policy deny is already recorded with its decision; every other
		// refusal of an authenticated agent is recorded here.
		a.recordRefusal(ctx, c, req, err)
	}
	return ans, err
}

// RefuseDelegation records, as Delegate records its own refusals, a
// delegation request of an agent of this trust domain that its
// transport refused before calling Delegate (an actor token or a
// certificate in the request that does not check out), and returns err.
// It records nothing for a caller that is not such an agent.
func (a *Authority) RefuseDelegation(ctx context.Context, c *Caller, req DelegateRequest, err error) error {
	if a.require(c, RoleAgent) == nil {
		a.recordRefusal(ctx, c, req, err)
	}
	return err
}

// recordRefusal writes the delegation.refused entry of req, refused
// with err.
//
// The entry is bounded (about 3 KB at most, as an issued hop's): it
// keeps the first refusedScopes scopes, each cut at refusedScopeLen
// bytes, and the number sent, so that refusals cost the append-only log
// no more than issued hops, whatever a request holds.
//
// A delegatee, principal or scope of withheldLen bytes or more that
// fails its field's check is kept by its SHA-256 and size only, and not
// quoted in the reason: it may be a credential sent in the wrong field
// (a JWT-SVID as the principal), which a log kept for ever and read by
// auditors must not hold, while its digest still matches the request it
// came from.
func (a *Authority) recordRefusal(ctx context.Context, c *Caller, req DelegateRequest, err error) {
	reason := err.Error()
	details := map[string]any{"scope_count": len(req.Scopes), "has_parent": req.ParentToken != ""}
	_, idErr := spiffeid.FromString(req.Delegatee)
	subject := refusedField(details, "delegatee", req.Delegatee, req.Delegatee == "" || idErr == nil, &reason)
	refusedField(details, "principal", req.Principal, req.Principal == "" || delegation.CheckNewPrincipal(req.Principal) == nil, &reason)
	scopes := nonNil(req.Scopes)
	if len(scopes) > refusedScopes {
		scopes = scopes[:refusedScopes]
	}
	kept, withheld := []string{}, []string(nil)
	for _, s := range scopes {
		if registry.ValidScope(s) || len(s) < withheldLen {
			kept = append(kept, clipTo(s, refusedScopeLen))
			continue
		}
		sum := sha256.Sum256([]byte(s))
		withheld = append(withheld, hex.EncodeToString(sum[:]))
		reason = withoutValue(reason, s)
	}
	details["scopes"] = kept
	if withheld != nil {
		details["scopes_sha256"] = withheld
	}
	details["reason"] = clip(reason)
	if _, rerr := a.record(ctx, event{typ: "delegation.refused", actor: c.ID.String(), subject: subject, parties: a.refusalParties(ctx, c, req), details: details}); rerr != nil {
		a.logNotRecorded(ctx, "audit a refused delegation", rerr)
	}
}

// withheldLen is the size from which a refusal record withholds a value
// that fails its field's check: credentials are longer (a join token is
// 43 bytes), and a shorter value could not be taken out of a reason
// without cutting its other words.
const withheldLen = 16

// refusedField puts v, a request's value for key, into a refusal
// record's details: as given (clipped) when valid or short, else by its
// digest and size (key_sha256, key_bytes), taken out of the reason. It
// returns what the record shows of v ("" when withheld).
func refusedField(details map[string]any, key, v string, valid bool, reason *string) string {
	if valid || len(v) < withheldLen {
		details[key] = clip(v)
		return clip(v)
	}
	sum := sha256.Sum256([]byte(v))
	details[key+"_sha256"], details[key+"_bytes"] = hex.EncodeToString(sum[:]), len(v)
	*reason = withoutValue(*reason, v)
	return ""
}

// withoutValue is reason with v taken out, as given and as quoted (%q).
func withoutValue(reason, v string) string {
	q := strconv.Quote(v)
	return strings.ReplaceAll(strings.ReplaceAll(reason, q[1:len(q)-1], "…"), v, "…")
}

// refusalParties are the accountable parties of a refused request, as
// an issued hop names them: the delegator's and, when it is an agent
// registered here, the delegatee's.
func (a *Authority) refusalParties(ctx context.Context, c *Caller, req DelegateRequest) []audit.Party {
	parties := a.registeredParty(ctx, c.ID.String())
	if req.Delegatee != c.ID.String() {
		parties = append(parties, a.registeredParty(ctx, req.Delegatee)...)
	}
	return parties
}

// registeredParty is the accountable party of id when it names an agent
// registered here (else none).
func (a *Authority) registeredParty(ctx context.Context, id string) []audit.Party {
	sid, err := spiffeid.FromString(id)
	if err != nil || !sid.MemberOf(a.td) {
		return nil
	}
	if ag := a.agentOf(ctx, sid); ag != nil {
		return partyOf(ag)
	}
	return nil
}

func (a *Authority) delegate(ctx context.Context, c *Caller, req DelegateRequest) (*DelegateAnswer, error) {
	now := a.now()
	delegatee, err := spiffeid.FromString(req.Delegatee)
	if err != nil {
		return nil, fmt.Errorf("%w: delegatee %q: %v", ErrInvalidRequest, req.Delegatee, err)
	}
	// A delegatee is a workload: never a trust domain itself, and in this
	// trust domain an agent. Its ID is within the SPIFFE ID standard's
	// bound, as an ID revoked by POST /v1/admin/revocations is: a hop to
	// a longer one could not be revoked by its delegatee's ID.
	if len(req.Delegatee) > registry.MaxSPIFFEIDLen {
		return nil, delegateeError{fmt.Sprintf("the delegatee's SPIFFE ID is at most %d bytes", registry.MaxSPIFFEIDLen)}
	}
	if delegatee.Path() == "" || (delegatee.TrustDomain() == a.td && registry.CheckAgentID(a.td, delegatee) != nil) {
		return nil, delegateeError{fmt.Sprintf("delegatee %s is not an agent", delegatee)}
	}
	if err := checkDelegationInput(req); err != nil {
		return nil, err
	}
	delegator, err := a.delegatorFacts(ctx, c)
	if err != nil {
		return nil, err
	}

	// The parent: verified offline, presented by its holder, and not
	// revoked here.
	var chain []*delegation.Claims
	var parent *delegation.Claims
	principal, depth, granted := req.Principal, 1, delegator.scopes
	if req.ParentToken != "" {
		chain, err = delegation.Verify(req.ParentToken, a, delegation.VerifyOptions{Now: now, Presenter: c.ID, PresenterCert: c.Cert})
		if err != nil {
			return nil, err
		}
		parent = chain[len(chain)-1]
		principal, depth, granted = parent.Subject, parent.Hop.Depth+1, parent.Scopes()
	}

	// The expiry: as asked (default 10 minutes), never beyond the parent's,
	// the delegatee's bound SVID or the key that signs it (nor, below,
	// the CA of the delegator's SVID).
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultDelegationTTL
	}
	exp := now.Add(ttl)
	if parent != nil && time.Unix(parent.Expiry, 0).Before(exp) {
		exp = time.Unix(parent.Expiry, 0)
	}
	if k := a.ca.JWTKeyNotAfter(); k.Before(exp) {
		exp = k
	}
	var cnf *delegation.Confirmation
	var delegateeHost map[string]any
	// The nodes the delegatee may hold the hop on: revoking one revokes
	// the hop (see delegation.Record.DelegateeHosts).
	var delegateeHosts []string
	// The node of the delegatee's SVID the hop is bound to (one of this
	// trust domain's).
	var boundHost spiffeid.ID
	if len(req.DelegateeSVID) > maxDelegateeChain {
		return nil, fmt.Errorf("%w: delegatee_x509_svid is at most %d certificates (the SVID and its intermediates)", ErrInvalidRequest, maxDelegateeChain)
	}
	if len(req.DelegateeSVID) > 0 {
		// Refused before any signature is checked if it holds an RSA
		// key of more than presented.MaxRSABits.
		id, _, err := presented.Verify(req.DelegateeSVID, a)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%w: delegatee_x509_svid is not a valid X509-SVID of %s (%v)", ErrInvalidRequest, delegatee, err)
		case id != delegatee:
			return nil, fmt.Errorf("%w: delegatee_x509_svid is an X509-SVID of %s, not of the delegatee %s", ErrInvalidRequest, id, delegatee)
		}
		leaf := req.DelegateeSVID[0]
		cnf = &delegation.Confirmation{X5tS256: delegation.Thumbprint(leaf)}
		if leaf.NotAfter.Before(exp) {
			exp = leaf.NotAfter
		}
		if delegatee.TrustDomain() == a.td {
			// Every agent SVID this authority issues names the node it
			// was issued on: one that names none (another CA's, that the
			// bundle's root vouches for) has no node to check against
			// the delegatee's registration, and binds no hop.
			host, err := HostNode(leaf)
			if err != nil {
				return nil, delegateeError{fmt.Sprintf("delegatee_x509_svid names no host node: it is not an X509-SVID this authority issued to %s on a node", delegatee)}
			}
			boundHost = host
			delegateeHosts = []string{host.String()}
		}
	}
	// The token says whole seconds (exp); so do the record and the answer.
	exp = exp.Truncate(time.Second)
	// A delegatee of this trust domain: its registration, read once.
	var delegateeReg *registry.Agent
	if delegatee.TrustDomain() == a.td {
		if delegatee == c.ID {
			// A hop to itself: the one registration already read, so
			// that the hop's entry says one thing of the agent.
			delegateeReg = delegator.reg
		} else {
			delegateeReg = a.agentOf(ctx, delegatee)
		}
	}
	if delegatee.TrustDomain() == a.td && (delegateeReg == nil || a.RoleOf(delegatee) != RoleAgent) {
		// Not an administrator or auditor either, whatever its path.
		return nil, delegateeError{fmt.Sprintf("delegatee %s is not a registered agent of this trust domain", delegatee)}
	}
	if !boundHost.IsZero() {
		// Bound to an SVID of one of our nodes: the token is then usable
		// only with a key held there. The node's ban, drift and lapse
		// are the policy's to judge (it is told them); whether the
		// delegatee's registration still lets it run there is not: a hop
		// is not bound to an SVID of a node that would give the
		// delegatee no credentials, whatever SVID it still holds there.
		if delegateeHost, err = a.boundHostFacts(ctx, delegateeReg, boundHost); err != nil {
			return nil, err
		}
	}
	if delegateeHost == nil && delegatee.TrustDomain() == a.td {
		// No SVID given: the weakest node the delegatee may run on.
		delegateeHost = a.registeredHostFacts(ctx, delegateeReg)
	}
	if delegateeHosts == nil && delegateeReg != nil && len(delegateeReg.Selectors) == 0 {
		delegateeHosts = slices.Clone(delegateeReg.NodeIDs)
		n := 0
		for _, h := range delegateeHosts {
			n += len(h)
		}
		if n > maxDelegateeHostsBytes {
			return nil, fmt.Errorf("%w: the delegatee's registration names nodes of %d bytes in all, more than an unbound hop records (%d): bind the hop to its X509-SVID (delegatee_x509_svid)",
				ErrInvalidRequest, n, maxDelegateeHostsBytes)
		}
	}

	// The delegator's own signature over the hop, before anything is
	// decided on its behalf.
	st := delegation.Statement{Delegator: c.ID.String(), Delegatee: delegatee.String(), Principal: principal, Scopes: req.Scopes,
		Purpose: req.Purpose, Parent: parentID(parent), ParentIssuer: parentIssuer(parent)}
	signer, anchorNotAfter, signed, err := delegation.VerifyStatement(req.DelegatorSignature, st, a, now)
	if err != nil {
		return nil, err
	}
	// No longer than the X.509 authority the delegator's SVID chains to
	// stays in the bundle: a rotation removes it at its expiry, and from
	// then on no verifier can check the delegator's signature.
	if anchorNotAfter.Before(exp) {
		exp = anchorNotAfter.Truncate(time.Second)
	}
	serial := signer.SerialNumber.Text(16)
	// Signed with an SVID of the node it delegates from: the hop is
	// recorded as made there (delegator_host), and revoking that node
	// reaches it.
	switch host, err := HostNode(signer); {
	case err != nil:
		return nil, fmt.Errorf("%w: signed with an X509-SVID that names no host node", delegation.ErrDelegatorSignature)
	case host.String() != delegator.hostID:
		return nil, fmt.Errorf("%w: signed with an X509-SVID of %s on %s, not on %s, the node it delegates from",
			delegation.ErrDelegatorSignature, c.ID, host, delegator.hostID)
	}
	if parent != nil {
		// A bound parent is continued with the key it is bound to: the
		// signature too, not only the connection (verifiers check it).
		if err := delegation.CheckHolderContinues(parent, req.DelegatorSignature); err != nil {
			return nil, err
		}
	}
	// No longer than the delegator signed for, and bound as it signed
	// (verifiers hold the hop to both: otherwise the token would not
	// verify).
	if signed.NotAfter != 0 && exp.Unix() > signed.NotAfter {
		if exp = time.Unix(signed.NotAfter, 0); !exp.After(now) {
			return nil, fmt.Errorf("%w: the not_after the delegator signed (%s) has passed", ErrInvalidRequest, exp.UTC().Format(time.RFC3339))
		}
	}
	if signed.Cnf != nil && (cnf == nil || cnf.X5tS256 != signed.Cnf.X5tS256) {
		return nil, fmt.Errorf("%w: the delegator signed a hop bound to the delegatee certificate %s: give that certificate as delegatee_x509_svid", ErrInvalidRequest, signed.Cnf.X5tS256)
	}
	// A hop that could not be issued is refused before any policy is
	// asked about it, saying why: one that would expire at once (its
	// parent, verified with the verifiers' clock leeway, expired; or the
	// delegatee's SVID or the signing key expires now), or one past the
	// depth a token can say.
	switch {
	case exp.Unix() <= now.Unix() && parent != nil && parent.Expiry <= now.Unix():
		return nil, fmt.Errorf("%w: the parent %s expired at %s", delegation.ErrExpired, parent.ID, time.Unix(parent.Expiry, 0).UTC().Format(time.RFC3339))
	case exp.Unix() <= now.Unix():
		return nil, fmt.Errorf("%w: the hop would expire at once (%s: the delegatee's SVID or the signing key expires now)", ErrInvalidRequest, exp.UTC().Format(time.RFC3339))
	case depth > delegation.MaxDepth:
		return nil, fmt.Errorf("%w: this hop would be hop %d; a chain is at most %d", delegation.ErrTooLarge, depth, delegation.MaxDepth)
	}
	// The SVID it signed with is one this authority issued, and logged:
	// the hop's entry names that entry, so that an auditor ties the
	// delegator's signature to the log, long after its CA is gone.
	var signerEntry uint64
	if err := a.store.View(ctx, func(tx store.Tx) error {
		signerEntry, err = svidEntryIndex(tx, serial)
		return err
	}); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("%w: signed with an X509-SVID (serial %s) this authority has no record of issuing", delegation.ErrDelegatorSignature, serial)
		}
		return nil, err
	}
	revoked, err := a.chainRevocations(ctx, chain, append([]string{c.ID.String(), delegatee.String(), delegator.hostID}, delegateeHosts...)...)
	if err != nil {
		return nil, err
	}
	// Hops issued by other authorities: their issuers say whether they
	// still hold (fail closed when one cannot be asked, once what is
	// known revoked has been said: see below).
	remote, unknown := a.remoteStatus(ctx, refsOf(chain), 0)
	if unknown != nil && !errors.Is(unknown, ErrStatusUnavailable) {
		return nil, unknown
	}
	// A link to another authority's hop names where that authority says
	// it logged it (a hop no longer active is refused below, whatever its
	// link says).
	for i := 1; i < len(chain); i++ {
		p := chain[i-1]
		if h, ok := remote[hopRef{Issuer: p.Issuer, ID: p.ID}]; ok && h.Status == delegation.StatusActive {
			if err := checkParentLink(chain[i], p, h.LogIndex, h.LeafHash); err != nil {
				return nil, err
			}
		}
	}
	var expired []string
	for r, h := range remote {
		if h.Status == delegation.StatusExpired {
			expired = append(expired, r.Issuer+" says "+r.ID)
			continue
		}
		// Another authority speaks for its own hops only, and never
		// clears what is known revoked here.
		revoked[r.key()] = revoked[r.key()] || h.Status != delegation.StatusActive
	}
	// Revocation is not left to the (replaceable) policy alone; it is
	// said first, and of the first hop or party in order.
	var gone []string
	for k, r := range revoked {
		if r {
			gone = append(gone, k)
		}
	}
	if len(gone) > 0 {
		slices.Sort(gone)
		if slices.Contains(delegateeHosts, gone[0]) {
			return nil, fmt.Errorf("%w: %s, a node the delegatee may hold the hop on (bind the hop to an X509-SVID of another of its nodes, or remove that node from its registration)",
				ErrDelegationRevoked, gone[0])
		}
		return nil, fmt.Errorf("%w: %s", ErrDelegationRevoked, gone[0])
	}
	if unknown != nil {
		return nil, unknown
	}
	if len(expired) > 0 {
		slices.Sort(expired)
		return nil, fmt.Errorf("%w: %s has expired", delegation.ErrExpired, expired[0])
	}
	// The other trust domains the hop rests on (its delegatee's, its
	// chain's issuers') that are federated as it is decided: the commit
	// requires them still federated.
	federated, err := a.federatedOf(ctx, delegatee, chain)
	if err != nil {
		return nil, err
	}
	id := delegation.NewID()
	input := map[string]any{
		"delegator": map[string]any{"spiffe_id": c.ID.String(), "trust_domain": a.td.Name(), "scopes": granted,
			"host": delegator.host, "revoked": revoked[c.ID.String()], "banned": delegator.banned},
		"delegatee": delegateeDoc(delegatee, delegateeHost, revoked[delegatee.String()]),
		"principal": principal, "scopes": req.Scopes, "depth": depth, "exp": exp.Unix(), "purpose": req.Purpose,
		"chain": chainDoc(chain, revoked),
	}
	if parent != nil {
		input["parent"] = map[string]any{"id": parent.ID, "iss": parent.Issuer, "scopes": parent.Scopes(), "exp": parent.Expiry,
			"revoked": revoked[hopRef{Issuer: parent.Issuer, ID: parent.ID}.key()]}
	}
	parties := partyOf(delegator.reg)
	if delegateeReg != nil && delegatee != c.ID {
		parties = append(parties, partyOf(delegateeReg)...)
	}
	d, err := a.decide(ctx, c, policy.PointDelegation, delegatee.String(), parties, input)
	if err != nil {
		return nil, err
	}
	// An allow is recorded with the hop it allowed; a hop that then
	// fails records the allow on its own.
	allowFailed := func(err error) error {
		if _, rerr := a.recordDecision(ctx, c, d, delegatee.String(), parties, input); rerr != nil {
			a.logNotRecorded(ctx, "audit a delegation decision", rerr, "decision_id", d.ID)
		}
		return err
	}
	// What no policy may allow: more than was granted (the expiry is
	// capped above).
	for _, s := range req.Scopes {
		if !slices.Contains(granted, s) {
			return nil, allowFailed(fmt.Errorf("%w: %q to %s (the policy allowed it; refused anyway)", ErrScopeNotGranted, s, c.ID))
		}
	}

	claims := &delegation.Claims{
		Issuer: a.td.IDString(), Subject: principal, Audience: []string{delegatee.String()},
		IssuedAt: now.Unix(), Expiry: exp.Unix(), ID: id, Scope: joinScopes(req.Scopes), Cnf: cnf,
		Act: &delegation.Actor{Subject: delegatee.String(), Actor: &delegation.Actor{Subject: c.ID.String()}},
		Hop: delegation.Hop{Delegator: c.ID.String(), Delegatee: delegatee.String(), Depth: depth, Purpose: req.Purpose,
			DelegatorSignature: req.DelegatorSignature},
	}
	if parent != nil {
		claims.Act.Actor = parent.Act
		claims.Hop.Parent = &delegation.Parent{Issuer: parent.Issuer, ID: parent.ID, Token: req.ParentToken}
		// Where the parent is logged: in this log, or as its issuer said.
		if parent.Issuer == a.td.IDString() {
			rec, err := a.delegationRecord(ctx, parent.ID)
			if err != nil {
				return nil, allowFailed(fmt.Errorf("authority: the record of parent %s: %w", parent.ID, err))
			}
			claims.Hop.Parent.LeafHash, claims.Hop.Parent.LogIndex = rec.LeafHash, rec.LogIndex
		} else {
			h := remote[hopRef{Issuer: parent.Issuer, ID: parent.ID}]
			claims.Hop.Parent.LeafHash, claims.Hop.Parent.LogIndex = h.LeafHash, h.LogIndex
		}
	}
	token, err := delegation.Issue(ctx, a.ca, claims)
	if err != nil {
		return nil, allowFailed(err)
	}

	details := decisionDetails(d, input)
	recDetails := map[string]any{
		"delegation_id": id, "parent_id": parentID(parent), "parent_iss": parentIssuer(parent),
		"delegator": c.ID.String(), "delegatee": delegatee.String(), "principal": principal, "scopes": req.Scopes,
		"depth": depth, "purpose": req.Purpose, "expires_at": exp.UTC(), "bound": cnf != nil, "decision": details,
		"ancestors": delegation.AncestorsOf(chain), "delegator_host": delegator.hostID,
		"delegator_signature": req.DelegatorSignature, "delegator_svid": SVIDEntry{Serial: serial, LogIndex: signerEntry},
	}
	if len(delegateeHosts) > 0 {
		recDetails["delegatee_hosts"] = delegateeHosts
	}
	if cnf != nil {
		// What the token is bound to, so that an auditor checks it
		// against what the delegator signed.
		recDetails["bound_to"] = cnf.X5tS256
	}
	if p := claims.Hop.Parent; p != nil {
		// Where the parent is logged, so that an auditor links the two
		// entries, not only the two ids.
		recDetails["parent_link"] = LogLink{LogIndex: p.LogIndex, LeafHash: p.LeafHash}
	}
	// The hop's record is written by the audit log's index hook, in the
	// transaction that makes its entry durable (see indexDelegation): no
	// entry without its record, no record without its entry.
	ev := event{typ: "delegation.issued", actor: c.ID.String(), subject: delegatee.String(), parties: parties,
		decisionID: d.ID, policyRevision: d.Revision, delegationID: id, details: recDetails}
	rc, err := a.recordOmittingInput(ctx, ev, details, stillDelegates(c, decidedOn{delegator: delegator, scopes: req.Scopes, root: parent == nil,
		delegatee: delegatee, delegateeReg: delegateeReg, boundHost: boundHost, boundFacts: delegateeHost, federated: federated}, a.now))
	if errors.Is(err, audit.ErrInvalidEntry) {
		// Too large even so: refused as what was asked, not failed as
		// the server's fault.
		err = fmt.Errorf("%w: the hop's audit entry would be larger than the log takes (%v): delegate fewer or shorter scopes", ErrInvalidRequest, err)
	}
	if err != nil {
		return nil, allowFailed(err)
	}
	// A revocation that committed while the hop was on its way is in its
	// record: one committed before it (the record is born revoked, see
	// indexDelegation), or one later in the same commit (its cascade
	// found the record). Nothing revoked is handed out.
	rec, err := a.delegationRecord(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("authority: the record of delegation %s: %w", id, err)
	}
	if !rec.RevokedAt.IsZero() {
		return nil, fmt.Errorf("%w: as it was issued, by %s: %s", ErrDelegationRevoked, rec.RevokedBy, rec.Reason)
	}
	a.log.DebugContext(ctx, "delegation issued", "id", id, "delegator", c.ID.String(), "delegatee", delegatee.String(), "depth", depth)
	return &DelegateAnswer{ID: id, Token: token, ExpiresAt: exp, Chain: append(chain, claims), Receipt: rc}, nil
}

func checkDelegationInput(req DelegateRequest) error {
	switch {
	case (req.Principal == "") == (req.ParentToken == ""):
		return fmt.Errorf("%w: give a principal (a root hop) or a parent_token (a sub-delegation), not both", ErrInvalidRequest)
	case len(req.Purpose) > maxTextLen:
		return fmt.Errorf("%w: purpose is at most %d bytes", ErrInvalidRequest, maxTextLen)
	case len(req.Scopes) == 0 || len(req.Scopes) > maxScopes:
		return scopeError{fmt.Sprintf("1 to %d scopes", maxScopes)}
	case req.TTL < 0 || req.TTL > MaxDelegationTTL:
		return fmt.Errorf("%w: ttl_seconds must be between 0 (default) and %d", ErrInvalidRequest, int(MaxDelegationTTL.Seconds()))
	case req.DelegatorSignature == "":
		return fmt.Errorf("%w: delegator_signature is required: without it a hop rests on the issuer's word alone", ErrInvalidRequest)
	case len(req.DelegatorSignature) > maxDelegatorSignature:
		return fmt.Errorf("%w: delegator_signature is at most %d bytes", ErrInvalidRequest, maxDelegatorSignature)
	}
	if req.Principal != "" {
		if err := delegation.CheckNewPrincipal(req.Principal); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidRequest, err)
		}
	}
	if !delegation.IsPlainText(req.Purpose) {
		return fmt.Errorf("%w: purpose is UTF-8 text (no invalid bytes, no U+FFFD, no control or format characters)", ErrInvalidRequest)
	}
	if len(slices.Compact(slices.Sorted(slices.Values(req.Scopes)))) != len(req.Scopes) {
		return scopeError{"a scope is named twice"}
	}
	for _, s := range req.Scopes {
		if !registry.ValidScope(s) {
			return scopeError{fmt.Sprintf("a scope is 1 to %d bytes of UTF-8 text without spaces, control or format characters", registry.MaxStringLen)}
		}
	}
	return nil
}

// agentOf is the registration of an agent of this trust domain (nil if
// there is none), as read within hostingCacheTTL and since the last
// change of the registry (the commit that logs a hop checks its
// delegatee's registration again: stillDelegates). The caller only
// reads it.
func (a *Authority) agentOf(ctx context.Context, id spiffeid.ID) *registry.Agent {
	ag, _ := cachedRead(&a.hosting, &a.hosting.agents, id.String(), a.now(), func() (*registry.Agent, error) {
		return viewed(ctx, a.store, func(tx store.Tx) (*registry.Agent, error) { return registry.AgentBySPIFFEID(tx, id.String()) })
	})
	return ag
}

// hostNode is node nodeID's record, as agentOf reads registrations: for
// what the policy is told of a host. The caller only reads it.
func (a *Authority) hostNode(ctx context.Context, nodeID string) (*registry.Node, error) {
	return cachedRead(&a.hosting, &a.hosting.nodes, nodeID, a.now(), func() (*registry.Node, error) { return a.readNode(ctx, nodeID) })
}

// registeredHostFacts is what the policy is told of a local agent's host
// when it did not present an SVID: the weakest of the nodes its
// registration ag (nil: none) lets it run on.
func (a *Authority) registeredHostFacts(ctx context.Context, ag *registry.Agent) map[string]any {
	if ag == nil || len(ag.NodeIDs) == 0 || len(ag.Selectors) > 0 {
		return map[string]any{"level": "unknown"}
	}
	level := "hardware"
	for _, n := range ag.NodeIDs {
		nid, err := spiffeid.FromString(n)
		if err != nil {
			return map[string]any{"level": "unknown"}
		}
		f := a.hostFacts(ctx, nid)
		if f["level"] != "hardware" {
			level, _ = f["level"].(string)
		}
	}
	return map[string]any{"level": level}
}

// maxDelegateeHostsBytes bounds the node IDs an unbound hop records as
// its delegatee's hosts (a registration's, 64 at most: ordinary node IDs
// are some 60 bytes), so that its audit entry stays well within
// audit.MaxEntrySize.
const maxDelegateeHostsBytes = 8 << 10

// maxDelegateeChain bounds the certificates of a delegatee_x509_svid.
const maxDelegateeChain = 8

// clip bounds what a refusal record keeps of a caller's string, as
// text: invalid UTF-8 becomes U+FFFD, and a cut never splits a
// character (the audit log takes text only, and a refusal it does not
// take is a refusal not recorded).
func clip(s string) string { return clipTo(s, 512) }

// shownDelegationID is id as an answer that found no delegation names
// it: as given when it is a delegation id, else not repeated, for what
// was given in its place may be the token itself (a bearer credential,
// whose claims name its id).
func shownDelegationID(id string) string {
	if delegation.ValidID(id) {
		return id
	}
	return fmt.Sprintf("id (not repeated: not 1 to %d characters of A-Z a-z 0-9 . _ -; a token's id is its jti, not the token)", delegation.MaxIDLen)
}

// What a refusal record keeps of the scopes asked.
const (
	refusedScopes   = 8
	refusedScopeLen = 128
)

// clipTo is clip at max bytes.
func clipTo(s string, max int) string {
	return echo.Cut(strings.ToValidUTF8(s, "\uFFFD"), max)
}

func joinScopes(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += " "
		}
		out += v
	}
	return out
}

// delegatorInfo is what the policy is told of the delegator.
type delegatorInfo struct {
	reg    *registry.Agent
	scopes []string
	host   map[string]any
	hostID string
	// hostNode is hostID, the node the delegator's SVID names.
	hostNode spiffeid.ID
	banned   bool
}

// delegatorFacts reads the caller's registration and host node.
func (a *Authority) delegatorFacts(ctx context.Context, c *Caller) (*delegatorInfo, error) {
	host, err := HostNode(c.Cert)
	if err != nil {
		return nil, err
	}
	// As the hosting checks of SVID issuance, from the records recently
	// read (a change made through this authority is read at once); the
	// hop's commit reads them again (stillDelegates).
	ag, node, err := a.lookupHosting(ctx, c.ID, host)
	if err == nil {
		err = lapsed(node, a.now())
	}
	if err != nil {
		return nil, err
	}
	// What the policy is told of the host is the record just checked.
	h := a.nodeFacts(node)
	banned, _ := h["banned"].(bool)
	return &delegatorInfo{reg: ag, scopes: nonNil(ag.Scopes), host: h, hostID: host.String(), hostNode: host, banned: banned}, nil
}

// delegatorHosted reads, in tx, the registration of the delegator c and
// its host node, and checks that it may delegate from there at now. The
// hosting rule, and the host node's lapse, hold whatever the policy
// says, as they do for the agent's SVIDs: an agent that would get no
// credentials on its node (banned, drifted, no longer in its
// registration, or not hardware-attested as it requires) gets no
// delegation either, whatever SVID it still holds.
func delegatorHosted(tx store.Tx, c *Caller, host spiffeid.ID, now time.Time) (*registry.Agent, *registry.Node, error) {
	ag, err := registry.AgentBySPIFFEID(tx, c.ID.String())
	if err != nil {
		return nil, nil, notFoundAs(err, ErrAgentNotRegistered, c.ID)
	}
	node, err := registry.GetNode(tx, host.String())
	if err != nil {
		return nil, nil, notFoundAs(err, ErrNodeUnknown, host)
	}
	if err := registry.CheckHosting(ag, node); err != nil {
		return nil, nil, err
	}
	return ag, node, lapsed(node, now)
}

// decidedOn is what a hop's decision was made on, which its commit
// checks again (stillDelegates).
type decidedOn struct {
	delegator *delegatorInfo
	scopes    []string // asked
	root      bool
	delegatee spiffeid.ID
	// delegateeReg is the registration of a delegatee of this trust
	// domain (nil for another's).
	delegateeReg *registry.Agent
	// boundHost is the node of the delegatee's SVID the hop is bound to
	// (zero if none), and boundFacts what the policy was told of it.
	boundHost  spiffeid.ID
	boundFacts map[string]any
	// federated are the other trust domains the hop rests on that had a
	// federation relationship when it was decided (federatedOf).
	federated []string
}

// federatedOf is those of the trust domains a hop to delegatee below
// chain rests on, other than this one (the delegatee's, and the
// issuers' of the chain), that have a federation relationship.
func (a *Authority) federatedOf(ctx context.Context, delegatee spiffeid.ID, chain []*delegation.Claims) ([]string, error) {
	var tds []string
	add := func(td spiffeid.TrustDomain) {
		if td != a.td && !slices.Contains(tds, td.Name()) {
			tds = append(tds, td.Name())
		}
	}
	add(delegatee.TrustDomain())
	for _, c := range chain {
		if id, err := spiffeid.FromString(c.Issuer); err == nil {
			add(id.TrustDomain())
		}
	}
	if len(tds) == 0 {
		return nil, nil
	}
	var out []string
	err := a.store.View(ctx, func(tx store.Tx) error {
		for _, td := range tds {
			_, err := tx.Get(bucketFederations, []byte(td))
			switch {
			case err == nil:
				out = append(out, td)
			case !errors.Is(err, store.ErrNotFound):
				return err
			}
		}
		return nil
	})
	return out, err
}

// stillDelegates checks again, in the commit that logs a hop, what
// the hop was decided on: the delegator still registered and hosted
// (delegatorHosted), and, for a root hop, every scope asked still
// granted by its registration; and, for a delegatee of this trust
// domain, that it is still registered. A ban, a drift, a deletion or an
// update committed meanwhile is not outrun by the hop. The delegator's
// and the delegatee's registrations must still be the versions the
// policy was asked about (their accountability is the entry's parties),
// the node the hop is bound to still as the policy was told (banned,
// drifted, lapsed, level), and the other trust domains it rests on
// still federated: otherwise ErrChangedMeanwhile.
func stillDelegates(c *Caller, d decidedOn, now func() time.Time) func(store.Tx) error {
	return func(tx store.Tx) error {
		at := now()
		ag, _, err := delegatorHosted(tx, c, d.delegator.hostNode, at)
		if err != nil {
			return err
		}
		if d.root {
			for _, s := range d.scopes {
				if !slices.Contains(ag.Scopes, s) {
					return fmt.Errorf("%w: %q to %s (its registration no longer grants it)", ErrScopeNotGranted, s, c.ID)
				}
			}
		}
		if err := sameRegistration(d.delegator.reg, ag); err != nil {
			return err
		}
		if d.delegateeReg != nil {
			cur, err := registry.AgentBySPIFFEID(tx, d.delegatee.String())
			if errors.Is(err, registry.ErrNotFound) {
				return delegateeError{fmt.Sprintf("delegatee %s is not a registered agent of this trust domain (its registration was deleted as the hop was made)", d.delegatee)}
			}
			if err != nil {
				return err
			}
			if err := sameRegistration(d.delegateeReg, cur); err != nil {
				return err
			}
		}
		for _, td := range d.federated {
			if _, err := tx.Get(bucketFederations, []byte(td)); errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("%w: the federation with %s, which the hop rests on, was ended while the hop was decided: ask again", ErrChangedMeanwhile, td)
			} else if err != nil {
				return err
			}
		}
		if !d.boundHost.IsZero() {
			n, err := registry.GetNode(tx, d.boundHost.String())
			if err != nil {
				return notFoundAs(err, ErrNodeUnknown, d.boundHost)
			}
			f := d.boundFacts
			if f["banned"] != n.Banned || f["drifted"] != n.Drifted || f["lapsed"] != (lapsed(n, at) != nil) || f["level"] != n.Level {
				return fmt.Errorf("%w: %s, the delegatee's node the hop is bound to, was banned, marked drifted or cleared of a drift, lapsed or attested again after a lapse while the hop was decided: ask again",
					ErrChangedMeanwhile, d.boundHost)
			}
		}
		return nil
	}
}

// hostFacts is what the policy is told of an agent's host node.
func (a *Authority) hostFacts(ctx context.Context, node spiffeid.ID) map[string]any {
	n, _ := a.hostNode(ctx, node.String())
	if n == nil {
		return map[string]any{"spiffe_id": node.String(), "level": "unknown"}
	}
	return a.nodeFacts(n)
}

// boundHostFacts is what the policy is told of host, the node of the
// delegatee's X509-SVID a hop is bound to, once the delegatee's
// registration ag is found to let it run there (registry.CheckHosting,
// but for the node's ban and drift, which the policy is told): a node
// it is not listed on (or whose selectors it lacks), one not
// hardware-attested when it requires one, or one with no record here
// is a delegateeError.
func (a *Authority) boundHostFacts(ctx context.Context, ag *registry.Agent, host spiffeid.ID) (map[string]any, error) {
	n, err := a.hostNode(ctx, host.String())
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, delegateeError{fmt.Sprintf("delegatee_x509_svid names the host node %s, which this authority has no record of", host)}
	case err != nil:
		return nil, err
	}
	// The registration's part of the rule, whatever the node's ban and
	// drift: a banned node the registration no longer allows is refused
	// here too, not left to the policy.
	active := *n
	active.Banned, active.Drifted = false, false
	if err := registry.CheckHosting(ag, &active); err != nil {
		return nil, delegateeError{fmt.Sprintf("delegatee_x509_svid is an X509-SVID of %s on %s, a node its registration no longer lets it run on (%v)",
			ag.SPIFFEID, host, err)}
	}
	return a.nodeFacts(n), nil
}

// nodeFacts is what the policy is told of the host node n.
func (a *Authority) nodeFacts(n *registry.Node) map[string]any {
	// lapsed: its latest SVID has expired, and it has neither renewed nor
	// attested again since (see lapsed): attested no longer.
	return map[string]any{"spiffe_id": n.SPIFFEID, "level": n.Level, "banned": n.Banned, "drifted": n.Drifted,
		"lapsed": lapsed(n, a.now()) != nil}
}

func delegateeDoc(id spiffeid.ID, host map[string]any, revoked bool) map[string]any {
	d := map[string]any{"spiffe_id": id.String(), "trust_domain": id.TrustDomain().Name(), "revoked": revoked}
	if host != nil {
		d["host"] = host
	}
	return d
}

// chainDoc is what the policy is told of the parties above this hop.
func chainDoc(chain []*delegation.Claims, revoked map[string]bool) []any {
	out := []any{}
	for _, c := range chain {
		for _, p := range []string{c.Hop.Delegator, c.Hop.Delegatee} {
			out = append(out, map[string]any{"spiffe_id": p, "revoked": revoked[p]})
		}
		k := hopRef{Issuer: c.Issuer, ID: c.ID}.key()
		out = append(out, map[string]any{"spiffe_id": k, "revoked": revoked[k]})
	}
	return out
}

// chainRevocations reports which parties (SPIFFE IDs) and which of the
// chain's delegations issued here (hopRef.key) were revoked here. A
// chain whose link to a hop issued here names another log position
// than the hop's record is ErrChain (see checkParentLink).
func (a *Authority) chainRevocations(ctx context.Context, chain []*delegation.Claims, ids ...string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, c := range chain {
		ids = append(ids, c.Hop.Delegator, c.Hop.Delegatee)
	}
	err := a.store.View(ctx, func(tx store.Tx) error {
		for _, id := range ids {
			r, err := delegation.IDRevoked(tx, id)
			if err != nil {
				return err
			}
			out[id] = r
		}
		for i, c := range chain {
			if c.Issuer != a.td.IDString() {
				continue // another authority's: see remoteStatus
			}
			rec, err := delegation.Get(tx, c.ID)
			if errors.Is(err, delegation.ErrNotFound) {
				return fmt.Errorf("%w: %s claims to be issued here but is not known", delegation.ErrChain, c.ID)
			}
			if err != nil {
				return err
			}
			if i+1 < len(chain) {
				if err := checkParentLink(chain[i+1], c, rec.LogIndex, rec.LeafHash); err != nil {
					return err
				}
			}
			// A hop made on, or held on, a revoked node holds no
			// longer, marked or not (a cascade that stopped at its
			// bound leaves some).
			revoked := !rec.RevokedAt.IsZero()
			if !revoked {
				host, err := revokedHost(tx, rec)
				if err != nil {
					return err
				}
				revoked = host != ""
			}
			out[hopRef{Issuer: c.Issuer, ID: c.ID}.key()] = revoked
		}
		return nil
	})
	return out, err
}

// checkParentLink checks that c's link to its parent p names where p's
// issuer logged it (logIndex, leafHash: its record here, or its
// issuer's status answer). A link that names no leaf hash (an issuer
// that did not say) is not checked; one that names another entry is
// ErrChain: another authority writes into its hop where our hop, or a
// third's, is logged, and the chain is not extended on a false word
// that only an auditor would find later.
func checkParentLink(c, p *delegation.Claims, logIndex uint64, leafHash string) error {
	l := c.Hop.Parent
	if l == nil || l.LeafHash == "" || (l.LeafHash == leafHash && l.LogIndex == logIndex) {
		return nil
	}
	return fmt.Errorf("%w: %s links its parent %s of %s to another log entry (index %d) than the one %s logged it as (index %d, leaf hash %s)",
		delegation.ErrChain, c.ID, p.ID, p.Issuer, l.LogIndex, p.Issuer, logIndex, leafHash)
}

func (a *Authority) delegationRecord(ctx context.Context, id string) (*delegation.Record, error) {
	return viewed(ctx, a.store, func(tx store.Tx) (*delegation.Record, error) { return delegation.Get(tx, id) })
}

func parentID(p *delegation.Claims) string {
	if p == nil {
		return ""
	}
	return p.ID
}

func parentIssuer(p *delegation.Claims) string {
	if p == nil {
		return ""
	}
	return p.Issuer
}

// DelegationStatus answers a delegation's status (public: a verifier or a
// federated authority asks it).
func (a *Authority) DelegationStatus(ctx context.Context, id string) (*delegation.Record, string, error) {
	rec, err := a.delegationRecord(ctx, id)
	if errors.Is(err, delegation.ErrNotFound) {
		return nil, "", fmt.Errorf("%w: delegation %s", ErrNotFound, shownDelegationID(id))
	}
	if err != nil {
		return nil, "", err
	}
	if status := rec.Status(a.now()); status != delegation.StatusActive {
		return rec, status, nil
	}
	// A hop holds only while every hop above it holds, wherever it was
	// issued: one found revoked revokes this hop (and what is below it
	// here) durably, recorded as this authority's own revocation.
	// Concurrent requests for the same hop share one check (and at most
	// one revocation).
	revoked, err := a.remote.shared(ctx, "hop "+id, 3*delegation.StatusTimeout, func(sctx context.Context) (any, error) {
		above, err := a.revokedAbove(sctx, rec)
		if err != nil || above == "" {
			return false, err
		}
		_, err = a.revoke(sctx, ServerID(a.td).String(), rec.ID, "", clip(above), false)
		return true, err
	})
	if err != nil {
		return nil, "", err
	}
	if !revoked.(bool) {
		return rec, delegation.StatusActive, nil
	}
	if rec, err = a.delegationRecord(ctx, id); err != nil {
		return nil, "", err
	}
	return rec, rec.Status(a.now()), nil
}

// Revoke revokes a delegation (and every delegation below it) or a SPIFFE
// ID: an agent (every delegation made by or to it, and below) or a node
// (every delegation its agents made while hosted on it, and below).
// Admin only; recorded with who and why.
func (a *Authority) Revoke(ctx context.Context, c *Caller, delegationID, spiffeID, reason string) ([]string, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return nil, err
	}
	if delegationID != "" && spiffeID != "" {
		return nil, fmt.Errorf("%w: give delegation_id or spiffe_id, not both", ErrInvalidRequest)
	}
	if delegationID == "" && spiffeID == "" {
		return nil, fmt.Errorf("%w: give delegation_id or spiffe_id", ErrInvalidRequest)
	}
	if !validReason(reason) {
		return nil, errReasonRequired
	}
	if spiffeID != "" {
		// The SPIFFE ID spec's bound on an ID (2048 bytes) keeps the
		// entry that records the revocation within an entry's size.
		if len(spiffeID) > registry.MaxSPIFFEIDLen {
			return nil, fmt.Errorf("%w: spiffe_id is at most %d bytes", ErrInvalidRequest, registry.MaxSPIFFEIDLen)
		}
		id, err := parseID(spiffeID)
		if err != nil && !strings.HasPrefix(spiffeID, "spiffe://") {
			// Not repeated (parseID): what was given in place of an ID
			// may be a join token, in place of the node ID it names.
			return nil, fmt.Errorf("%w; to keep a join token's node from joining, revoke the node_id its join-token create answer named, or withdraw the token by its id", err)
		}
		if err != nil {
			return nil, err
		}
		// A revocation is for ever: one of an ID that no hop can name as
		// a party would be kept and listed, and answered as made, while
		// it revokes nothing. A hop's parties are workloads (an ID with a
		// path), and here agents and nodes only: a node's ID as
		// attestation makes it, for an ID compares as written (a join
		// token's id or an EK hash in upper case names no node, and
		// revoking it would leave the node's hops standing).
		if id.Path() == "" {
			return nil, fmt.Errorf("%w: spiffe_id %s names a trust domain, not an agent or a node: no hop has it as a party (to stop trusting a trust domain, delete its federation relationship)", ErrInvalidRequest, id)
		}
		if id.MemberOf(a.td) && !strings.HasPrefix(id.Path(), "/agent/") && !attest.IsNodeID(a.td, id) {
			return nil, fmt.Errorf("%w: spiffe_id %s is neither an agent (spiffe://%s/agent/...) nor a node (spiffe://%s/node/join/<join token id: 16 lowercase hex digits> or spiffe://%s/node/tpm/<EK hash: 64 lowercase hex digits>) of this trust domain: no hop has it as a party",
				ErrInvalidRequest, id, a.td.Name(), a.td.Name(), a.td.Name())
		}
	}
	return a.revoke(ctx, c.ID.String(), delegationID, spiffeID, reason, true)
}

// revoke revokes a delegation or a SPIFFE ID, by "by", and records it.
//
// The revocation is made by the audit log's index hook (indexRevocation),
// in the commit that makes its delegation.revoked entry durable: no
// revocation without its entry, no entry without its revocation. The
// entry lists what is revoked, as read just before; what the commit
// finds below it by then is revoked too.
//
// With recordNone false, a revocation that finds nothing left to revoke
// (another request revoked it first) records nothing.
func (a *Authority) revoke(ctx context.Context, by, delegationID, spiffeID, reason string, recordNone bool) ([]string, error) {
	var revoked []string
	var more bool
	now := a.now()
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		if delegationID != "" {
			revoked, more, err = delegation.RevokePreview(tx, delegationID, now)
			if errors.Is(err, delegation.ErrNotFound) {
				return fmt.Errorf("%w: delegation %s was not issued here: revoke it at the authority that issued it (its token's iss), which revokes the hops below it wherever they were issued", ErrNotFound, shownDelegationID(delegationID))
			}
			return err
		}
		revoked, more, err = delegation.RevokeIDPreview(tx, spiffeID, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	revoked = nonNil(revoked)
	slices.Sort(revoked)
	if len(revoked) == 0 && !recordNone {
		return revoked, nil
	}
	subject := delegationID
	if subject == "" {
		subject = spiffeID
	}
	details := map[string]any{"delegation_id": delegationID, "spiffe_id": spiffeID, "reason": reason, "revoked": revoked, "revoked_count": len(revoked)}
	if more {
		// The rest below is revoked when next asked about (see
		// delegation.Revoke).
		details["more_below"] = true
	}
	if len(revoked) > maxRecordedRevoked {
		// The entry names the first ones and the hash of them all (sorted,
		// one per line).
		sum := sha256.Sum256([]byte(strings.Join(revoked, "\n")))
		details["revoked"], details["revoked_sha256"] = revoked[:maxRecordedRevoked], hex.EncodeToString(sum[:])
	}
	// An agent revoked by its ID is named with its accountable party.
	_, err = a.record(ctx, event{typ: "delegation.revoked", actor: by, subject: subject, delegationID: delegationID,
		parties: a.registeredParty(ctx, spiffeID), details: details})
	if spiffeID != "" {
		// Policies see a registration's ID revoked
		// (data.mandate.agents[id].revoked), also when the commit's
		// outcome is not known.
		a.agentChanged(spiffeID)
	}
	if err != nil {
		return nil, err
	}
	a.log.InfoContext(ctx, "revoked", "delegation_id", delegationID, "spiffe_id", spiffeID, "revoked", len(revoked), "by", by)
	return revoked, nil
}

// indexRevocation, in the transaction that makes a delegation.revoked
// entry durable, revokes what it says: the delegation and every one
// below it, or a SPIFFE ID and every delegation by, to or through it.
func indexRevocation(tx store.Tx, e audit.Entry) error {
	d, err := ReadRevoked(e)
	if err != nil {
		return err
	}
	if d.DelegationID != "" {
		_, _, err = delegation.Revoke(tx, d.DelegationID, e.Actor, d.Reason, e.Time)
	} else {
		_, _, err = delegation.RevokeID(tx, d.SPIFFEID, e.Actor, d.Reason, e.Time)
	}
	return err
}

// indexDelegation, in the transaction that makes a delegation.issued
// entry durable, writes the hop's record (with its log index and leaf
// hash), which status, revocation and chains read.
func (a *Authority) indexDelegation(tx store.Tx, index uint64, e audit.Entry, leafHash []byte) error {
	d, err := ReadIssued(e)
	if err != nil {
		return fmt.Errorf("authority: entry %d: %w", index, err)
	}
	rec := &delegation.Record{ID: d.ID, Issuer: a.td.IDString(), ParentID: d.ParentID, ParentIssuer: d.ParentIssuer,
		Delegator: d.Delegator, Delegatee: d.Delegatee, Principal: d.Principal, Scopes: d.Scopes, Depth: d.Depth, Purpose: d.Purpose,
		IssuedAt: e.Time, ExpiresAt: d.ExpiresAt, DecisionID: e.DecisionID, LogIndex: index, LeafHash: hex.EncodeToString(leafHash),
		Ancestors: d.Ancestors, DelegatorHost: d.DelegatorHost, DelegateeHosts: d.DelegateeHosts}
	// A revocation committed after the flow checked the chain, and before
	// this record exists, could not cascade to it: the record is born
	// revoked instead.
	why, err := revokedInTx(tx, a.td.IDString(), rec)
	if err != nil {
		// Not failing the commit (and the other entries in it): the hop
		// is not vouched for instead.
		why = "its chain could not be checked (" + clip(err.Error()) + ")"
	}
	if why != "" {
		// The flow waiting for this entry reads it, and hands nothing out.
		rec.RevokedAt, rec.RevokedBy, rec.Reason = e.Time, ServerID(a.td).String(), why+" while the hop was being issued"
	}
	return delegation.Put(tx, rec)
}

// indexDelegations indexes by party the delegations a data directory
// kept before it had that index (once; a new one starts indexed), so that
// revoking an agent or a node reads its own hops, not every record.
func (a *Authority) indexDelegations(ctx context.Context) error {
	var done bool
	if err := a.store.View(ctx, func(tx store.Tx) (err error) {
		done, err = delegation.PartiesIndexed(tx)
		return err
	}); err != nil {
		return fmt.Errorf("authority: index delegations by party: %w", err)
	}
	if done {
		return nil // no write transaction (and its fsync) at every start
	}
	var n, bad int
	if err := a.store.Update(ctx, func(tx store.Tx) (err error) {
		n, bad, err = delegation.IndexParties(tx)
		return err
	}); err != nil {
		return fmt.Errorf("authority: index delegations by party: %w", err)
	}
	if n > 0 || bad > 0 {
		a.log.Info("indexed the delegations kept by party", "records", n, "unreadable", bad)
	}
	return nil
}

// revokedHost is the node rec was made on (its delegator's host), or may
// be held on (its delegatee's), when that node is revoked; "" when none
// is.
func revokedHost(tx store.Tx, rec *delegation.Record) (string, error) {
	for _, h := range append([]string{rec.DelegatorHost}, rec.DelegateeHosts...) {
		if h == "" {
			continue
		}
		revoked, err := delegation.IDRevoked(tx, h)
		if err != nil || revoked {
			return h, err
		}
	}
	return "", nil
}

// revokedInTx says what of a hop about to be recorded is revoked here: a
// hop above it issued here, or issued elsewhere and said revoked by its
// issuer (kept by keepPeerRevocation), its delegator, its delegator's
// host, its delegatee, or a party above ("" when nothing is).
func revokedInTx(tx store.Tx, self string, rec *delegation.Record) (string, error) {
	parties := append([]string{rec.Delegator, rec.Delegatee, rec.DelegatorHost}, rec.DelegateeHosts...)
	for _, an := range rec.Ancestors {
		parties = append(parties, an.Delegator, an.Delegatee)
		if an.Issuer != self {
			// Its issuer's revocation, learned after the flow asked it
			// (by a status request for another hop below it).
			switch _, err := tx.Get(bucketPeerRevocations, peerRevocationKey(hopRef{Issuer: an.Issuer, ID: an.ID})); {
			case err == nil:
				return "the hop " + an.ID + " of " + an.Issuer + " above it was revoked", nil
			case !errors.Is(err, store.ErrNotFound):
				return "", fmt.Errorf("what %s said of the hop %s above it: %v", an.Issuer, an.ID, err)
			}
			continue
		}
		// A hop above issued here has its record here (the flow refuses
		// a chain claiming otherwise): one missing is not "holds", and
		// not this hop's "not found" either (%v: the store is at fault).
		r, err := delegation.Get(tx, an.ID)
		if err != nil {
			return "", fmt.Errorf("the hop %s above it: %v", an.ID, err)
		}
		if !r.RevokedAt.IsZero() {
			return "the hop " + an.ID + " above it was revoked", nil
		}
		host, err := revokedHost(tx, r)
		if err != nil {
			return "", err
		}
		if host != "" {
			return "the hop " + an.ID + " above it was made or held on " + host + ", which was revoked", nil
		}
	}
	for _, p := range parties {
		if p == "" {
			continue
		}
		revoked, err := delegation.IDRevoked(tx, p)
		if err != nil {
			return "", err
		}
		if revoked {
			return p + " was revoked", nil
		}
	}
	return "", nil
}
