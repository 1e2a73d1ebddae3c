package authority

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	jsonv1 "github.com/go-json-experiment/json/v1"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/policy"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// ErrPolicyDenied is returned when a decision point denies; the error's
// PolicyDenial carries the reasons.
var ErrPolicyDenied = errors.New("authority: denied by policy")

// PolicyDenial is a deny of one of Mandate's decision points.
type PolicyDenial struct {
	Decision policy.Decision
}

func (d *PolicyDenial) Error() string {
	why := strings.Join(d.Decision.Reasons, "; ")
	if why == "" {
		why = "the policy gave no reason"
	}
	return fmt.Sprintf("%v: %s (decision %s)", ErrPolicyDenied, why, d.Decision.ID)
}

func (d *PolicyDenial) Unwrap() error { return ErrPolicyDenied }

// openPolicy loads the policies and Mandate's documents for them.
func (a *Authority) openPolicy(ctx context.Context) error {
	eng, err := policy.New(ctx, policy.Options{Dir: a.cfg.Policy.Dir, Required: policy.DecisionDocuments(), Timeout: a.cfg.Policy.EvalTimeout.D(), Now: a.now,
		Logger: a.log.With("component", "policy")})
	if err != nil {
		return fmt.Errorf("authority: %w", err)
	}
	a.policy = eng
	a.registryChanged()
	a.log.Info("policy loaded", "revision", eng.Revision(), "modules", len(eng.Files()))
	return nil
}

// PolicyRevision is the active policy revision.
func (a *Authority) PolicyRevision() string { return a.policy.Revision() }

// registryChanged is called after a committed change that the policy
// documents follow as a whole (federation relationships, a policy
// reload): the hosting cache forgets, and the documents are rebuilt
// before the next decision. A change of one registration or node calls
// agentChanged or nodeChanged instead.
func (a *Authority) registryChanged() {
	a.hosting.invalidate()
	a.policyDirty.Lock()
	a.policyDirty.all, a.policyDirty.agents, a.policyDirty.nodes = true, nil, nil
	a.policyDirty.Unlock()
	a.policyGen.Add(1)
}

// agentChanged and nodeChanged say that one registration or node changed
// (made, replaced, deleted, banned, marked): the next decision patches
// that entry of data.mandate instead of rebuilding the documents.
func (a *Authority) agentChanged(spiffeIDs ...string) { a.entriesChanged(spiffeIDs, nil) }
func (a *Authority) nodeChanged(spiffeID string)      { a.entriesChanged(nil, []string{spiffeID}) }

// maxDirty bounds the entries remembered for the next patch; past it the
// next decision rebuilds the documents whole.
const maxDirty = 1024

func (a *Authority) entriesChanged(agents, nodes []string) {
	a.hosting.invalidate()
	d := &a.policyDirty
	d.Lock()
	if !d.all { // a rebuild is due anyway: nothing to remember
		if d.agents == nil {
			d.agents, d.nodes = map[string]bool{}, map[string]bool{}
		}
		for _, id := range agents {
			d.agents[id] = true
		}
		for _, id := range nodes {
			d.nodes[id] = true
		}
		if len(d.agents)+len(d.nodes) > maxDirty {
			d.all, d.agents, d.nodes = true, nil, nil
		}
	}
	d.Unlock()
	a.policyGen.Add(1) // after the entries: a sync that sees it sees them
}

// policyDirty is what changed in the registry since data.mandate was
// last brought up to date: all of it, or these entries.
type policyDirty struct {
	sync.Mutex
	all           bool
	agents, nodes map[string]bool // SPIFFE IDs
}

// syncPolicyData brings data.mandate.{trust_domain,
// federated_trust_domains, agents, nodes} up to date if the registry
// changed since: the changed entries patched, or the documents rebuilt
// whole (the first time, after registryChanged, or when a patch failed).
// A caller that finds an update running waits for it, so no decision is
// made on documents older than the last change it could see.
func (a *Authority) syncPolicyData(ctx context.Context) error {
	if a.policySynced.Load() >= a.policyGen.Load() {
		return nil
	}
	a.policySyncMu.Lock()
	defer a.policySyncMu.Unlock()
	want := a.policyGen.Load()
	if a.policySynced.Load() >= want {
		return nil
	}
	d := &a.policyDirty
	d.Lock()
	all, dirtyAgents, dirtyNodes := d.all || a.policySynced.Load() == 0, d.agents, d.nodes
	d.all, d.agents, d.nodes = false, nil, nil
	d.Unlock()
	var err error
	if all {
		err = a.rebuildPolicyData(ctx)
	} else {
		err = a.patchPolicyData(ctx, dirtyAgents, dirtyNodes)
	}
	if err != nil {
		d.Lock()
		d.all = true // the next decision rebuilds all
		d.Unlock()
		return err
	}
	a.policySynced.Store(want)
	return nil
}

// patchPolicyData brings the entries of data.mandate.agents and nodes
// for these SPIFFE IDs up to date with the store.
func (a *Authority) patchPolicyData(ctx context.Context, agentIDs, nodeIDs map[string]bool) error {
	patches := map[string]policy.Patch{}
	err := a.store.View(ctx, func(tx store.Tx) error {
		agents, err := patchOf(agentIDs, func(id string) (agentData, error) { return agentDataOf(tx, id) }, agentData.doc)
		if err != nil {
			return err
		}
		nodes, err := patchOf(nodeIDs, func(id string) (*registry.Node, error) { return registry.GetNode(tx, id) }, nodeDoc)
		if err != nil {
			return err
		}
		for key, p := range map[string]policy.Patch{"agents": agents, "nodes": nodes} {
			if len(p.Set)+len(p.Delete) > 0 {
				patches[key] = p
			}
		}
		return nil
	})
	if err == nil {
		err = a.policy.PatchDocuments(ctx, patches)
	}
	if err != nil {
		return fmt.Errorf("authority: policy data: %w", err)
	}
	return nil
}

// patchOf is the patch that brings the entries for ids up to date: each
// one get finds, as doc describes it, and the others deleted.
func patchOf[T any](ids map[string]bool, get func(string) (T, error), doc func(T) map[string]any) (policy.Patch, error) {
	p := policy.Patch{Set: map[string]any{}}
	for id := range ids {
		v, err := get(id)
		switch {
		case errors.Is(err, registry.ErrNotFound):
			p.Delete = append(p.Delete, id)
		case err != nil:
			return p, err
		default:
			p.Set[id] = doc(v)
		}
	}
	return p, nil
}

// rebuildPolicyData rebuilds data.mandate.{trust_domain,
// federated_trust_domains, agents, nodes} from the store.
func (a *Authority) rebuildPolicyData(ctx context.Context) error {
	agents := map[string]any{}
	nodes := map[string]any{}
	feds := []string{} // a list also when empty: a policy's count() or "in" must not meet null
	err := a.store.View(ctx, func(tx store.Tx) error {
		err := registry.EachAgent(tx, func(ag *registry.Agent) error {
			revoked, err := delegation.IDRevoked(tx, ag.SPIFFEID)
			if err != nil {
				return err
			}
			agents[ag.SPIFFEID] = agentData{ag, revoked}.doc()
			return nil
		})
		if err != nil {
			return err
		}
		ns, err := registry.ListNodes(tx)
		if err != nil {
			return err
		}
		for _, n := range ns {
			nodes[n.SPIFFEID] = nodeDoc(n)
		}
		return nil
	})
	if err == nil {
		var recs []*Federation
		if recs, err = a.loadFederations(ctx); err == nil {
			for _, f := range recs {
				feds = append(feds, f.TrustDomain)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("authority: policy data: %w", err)
	}
	slices.Sort(feds)
	docs := map[string]any{"trust_domain": a.td.Name(), "federated_trust_domains": feds, "agents": agents, "nodes": nodes}
	if err := a.policy.SetDocuments(ctx, docs); err != nil {
		return fmt.Errorf("authority: policy data: %w", err)
	}
	return nil
}

// agentData is what data.mandate.agents holds of a registration: the
// registration, and whether its SPIFFE ID is revoked (POST
// /v1/admin/revocations: for ever).
type agentData struct {
	ag      *registry.Agent
	revoked bool
}

// agentDataOf reads the agentData of the registration of SPIFFE ID id.
func agentDataOf(tx store.Tx, id string) (agentData, error) {
	ag, err := registry.AgentBySPIFFEID(tx, id)
	if err != nil {
		return agentData{}, err
	}
	revoked, err := delegation.IDRevoked(tx, id)
	return agentData{ag, revoked}, err
}

func (d agentData) doc() map[string]any {
	doc := agentDoc(d.ag)
	doc["revoked"] = d.revoked
	return doc
}

// agentDoc is what policies see of a registration.
func agentDoc(ag *registry.Agent) map[string]any {
	return map[string]any{
		"spiffe_id": ag.SPIFFEID, "scopes": nonNil(ag.Scopes), "selectors": nonNil(ag.Selectors), "node_ids": nonNil(ag.NodeIDs),
		"require_hardware_attestation": ag.RequireHardwareAttestation,
		"accountability": map[string]any{"operator": ag.Accountability.Operator, "model_provider": ag.Accountability.ModelProvider,
			"model": ag.Accountability.Model, "responsible_party": ag.Accountability.ResponsibleParty},
	}
}

// nodeDoc is what policies see of a node.
func nodeDoc(n *registry.Node) map[string]any {
	d := map[string]any{"spiffe_id": n.SPIFFEID, "attestation_method": n.AttestationMethod, "level": n.Level,
		"selectors": nonNil(n.Selectors), "banned": n.Banned, "drifted": n.Drifted, "attested_at": n.AttestedAt.UTC().Format(time.RFC3339)}
	if n.TPM != nil {
		d["tpm"] = map[string]any{"ek_sha256": n.TPM.EKSHA256, "ek_trust": n.TPM.EKTrust, "profile": n.TPM.Profile,
			"quoted_at": n.TPM.QuotedAt.UTC().Format(time.RFC3339), "pcrs_sha256": n.TPM.PCRs}
	}
	return d
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// decide asks a decision point; a deny (including a policy that cannot
// decide) is recorded and returned as a *PolicyDenial. An allow is
// returned for the caller to record with the event it allowed.
func (a *Authority) decide(ctx context.Context, c *Caller, point string, subject string, parties []audit.Party, input any) (policy.Decision, error) {
	var d policy.Decision
	if err := a.syncPolicyData(ctx); err != nil {
		// Fail closed: documents that could not be refreshed may be stale.
		d = policy.Decision{ID: policy.NewDecisionID(), Point: point, Path: policy.DecisionPaths[point], Revision: a.policy.Revision(),
			EvalTime: a.now(), Err: err, Reasons: []string{"policy could not decide: " + err.Error()}}
	} else {
		d = a.policy.Decide(ctx, point, input)
	}
	if d.Allow {
		return d, nil
	}
	if d.Err != nil {
		// Cut as the reason is: the message can quote the input at any length.
		a.log.ErrorContext(ctx, "policy could not decide: denied", "point", point, "decision_id", d.ID, "err", policy.CutUTF8(d.Err.Error(), maxRecordedError))
	}
	if _, err := a.recordDecision(ctx, c, d, subject, parties, input); err != nil {
		return d, err
	}
	return d, &PolicyDenial{Decision: d}
}

// recordDecision records one of Mandate's own decisions on its own (a
// deny, or an allow whose action then failed).
func (a *Authority) recordDecision(ctx context.Context, c *Caller, d policy.Decision, subject string, parties []audit.Party, input any) (audit.Receipt, error) {
	return a.record(ctx, event{typ: "policy.decision", actor: actorOf(c), subject: subject, parties: parties,
		details: decisionDetails(d, input), decisionID: d.ID, policyRevision: d.Revision})
}

// decisionDetails is what the audit log keeps of one of Mandate's own
// decisions: enough to replay it against its revision.
func decisionDetails(d policy.Decision, input any) map[string]any {
	details := map[string]any{"point": d.Point, "path": d.Path, "allow": d.Allow, "reasons": nonNil(d.Reasons),
		"eval_time": d.EvalTime.UTC().Format(time.RFC3339Nano), "latency_us": d.Latency.Microseconds()}
	if b, err := jsonv1.Marshal(input); err == nil && len(b) <= maxRecordedInput {
		details["input"] = json.RawMessage(b)
	} else {
		details["input_omitted"] = omittedInput
	}
	return details
}

// maxRecordedInput bounds the input kept in a decision's audit entry;
// beyond it, the entry says it was omitted.
const maxRecordedInput = 48 << 10

// issuanceInput is what the issuance decision point sees.
func issuanceInput(kind string, c *Caller, ag *registry.Agent, n *registry.Node) map[string]any {
	return map[string]any{"kind": kind, "caller": c.ID.String(), "agent": agentDoc(ag), "node": nodeDoc(n)}
}

// issuance is an allowed issuance decision, to be recorded with the SVID
// it allowed (or on its own if minting fails).
type issuance struct {
	decision policy.Decision
	input    map[string]any
}

// authorizeIssuance asks the issuance decision point whether node n may
// receive a kind SVID for agent ag.
func (a *Authority) authorizeIssuance(ctx context.Context, kind string, c *Caller, ag *registry.Agent, n *registry.Node) (*issuance, error) {
	in := issuanceInput(kind, c, ag, n)
	d, err := a.decide(ctx, c, policy.PointIssuance, ag.SPIFFEID, partyOf(ag), in)
	if err != nil {
		return nil, err
	}
	return &issuance{decision: d, input: in}, nil
}

// details are the decision's details for the svid.issued entry.
func (is *issuance) details() map[string]any { return decisionDetails(is.decision, is.input) }

// issuanceFailed records the allow on its own when the SVID it allowed
// could not be minted or logged (its commit refused it: the node banned
// since, say), and returns err.
func (a *Authority) issuanceFailed(ctx context.Context, c *Caller, is *issuance, ag *registry.Agent, err error) error {
	if _, rerr := a.recordDecision(ctx, c, is.decision, ag.SPIFFEID, partyOf(ag), is.input); rerr != nil {
		a.logNotRecorded(ctx, "audit an issuance decision", rerr)
	}
	return err
}

// ReloadPolicy re-reads the policies; a revision that does not compile or
// fails its tests is refused (policy.ErrRejected) and the active one
// stays. Every change of revision is recorded.
func (a *Authority) ReloadPolicy(ctx context.Context, c *Caller) (string, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return "", err
	}
	return a.reloadPolicy(ctx, c)
}

// ReloadPolicyOnSignal is ReloadPolicy on the operator's signal (SIGHUP):
// the change is recorded with the system as its actor.
func (a *Authority) ReloadPolicyOnSignal(ctx context.Context) (string, error) {
	return a.reloadPolicy(ctx, nil)
}

func (a *Authority) reloadPolicy(ctx context.Context, c *Caller) (string, error) {
	// The change is recorded before the new revision answers anything.
	old, cur, err := a.policy.Reload(ctx, func(old, cur string) error {
		if old == cur {
			return nil
		}
		_, err := a.record(ctx, event{typ: "policy.changed", actor: actorOf(c), subject: a.td.IDString(), details: map[string]any{
			"old_revision": old, "new_revision": cur,
		}})
		return err
	})
	if err != nil {
		a.reloads.refused.Add(1)
		a.log.WarnContext(ctx, "policy reload refused; the active revision stays", "revision", old, "err", err)
		return old, err
	}
	if old == cur {
		a.reloads.unchanged.Add(1)
	} else {
		a.reloads.changed.Add(1)
	}
	a.registryChanged()
	a.log.InfoContext(ctx, "policy reloaded", "old_revision", old, "revision", cur)
	return cur, nil
}

// PolicyReloads counts the policy reloads since the authority started
// (asked through the API or by SIGHUP), by outcome.
type PolicyReloads struct {
	Changed   uint64 // a new revision is active
	Unchanged uint64 // the same revision was found
	Refused   uint64 // refused (not compiled, tests failed, cut short...): the active revision stayed
}

// PolicyReloads counts the policy reloads so far.
func (a *Authority) PolicyReloads() PolicyReloads {
	return PolicyReloads{Changed: a.reloads.changed.Load(), Unchanged: a.reloads.unchanged.Load(), Refused: a.reloads.refused.Load()}
}

// PolicyTests runs the active revision's Rego tests.
func (a *Authority) PolicyTests(ctx context.Context, c *Caller) ([]policy.TestResult, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return nil, err
	}
	return a.policy.Test(ctx)
}

// PolicyStatus is the active policy revision and its modules: the
// answer of GET /v1/admin/policy, as the Go client reads it.
type PolicyStatus = client.PolicyStatus

// PolicyStatus reports the active revision (admin).
func (a *Authority) PolicyStatus(ctx context.Context, c *Caller) (*PolicyStatus, error) {
	if err := a.require(c, RoleAdmin); err != nil {
		return nil, err
	}
	return &PolicyStatus{Revision: a.policy.Revision(), Modules: a.policy.Files(), Dir: a.cfg.Policy.Dir}, nil
}
