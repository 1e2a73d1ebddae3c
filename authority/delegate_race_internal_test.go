package authority

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/registry"
)

// agentSVID is an X509-SVID of agent id, asked by node nodeID, and its
// key.
func agentSVID(t *testing.T, a *Authority, nodeID, id string) (*ca.X509SVID, *ecdsa.PrivateKey) {
	t.Helper()
	key, csr := newKeyAndCSR(t)
	svid, err := a.MintX509(t.Context(), &Caller{ID: spiffeid.RequireFromString(nodeID)}, id, csr)
	if err != nil {
		t.Fatal(err)
	}
	return svid, key
}

// hopParties is a running authority with nodes n1 and n2, a delegator
// registered to n1 and granted calendar:read, a delegatee registered to
// both, the delegator's X509-SVID (from n1) and key, and the delegatee's
// X509-SVID from n2, which a hop given with it is bound to. Records are
// held as holdRecords makes them (whileHeld).
type hopParties struct {
	a                    *Authority
	admin                *Caller
	n1, n2               string
	delegator, delegatee *registry.Agent
	svid, bound          *ca.X509SVID
	key                  *ecdsa.PrivateKey
}

func newHopParties(t *testing.T) *hopParties {
	t.Helper()
	holdRecords(t)
	p := &hopParties{a: startAuthority(t)}
	ctx, a := t.Context(), p.a
	p.admin = adminOf(t, a)
	p.n1, p.n2 = putNode(t, a, "n1"), putNode(t, a, "n2")
	var err error
	if p.delegator, err = a.CreateAgent(ctx, p.admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/c", NodeIDs: []string{p.n1},
		Scopes: []string{"calendar:read"}, Accountability: registry.Accountability{Operator: "team-a"}}); err != nil {
		t.Fatal(err)
	}
	if p.delegatee, err = a.CreateAgent(ctx, p.admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/d", NodeIDs: []string{p.n1, p.n2},
		Accountability: registry.Accountability{ResponsibleParty: "ops@example.com"}}); err != nil {
		t.Fatal(err)
	}
	p.svid, p.key = agentSVID(t, a, p.n1, p.delegator.SPIFFEID)
	p.bound, _ = agentSVID(t, a, p.n2, p.delegatee.SPIFFEID)
	return p
}

// hop asks for a root hop of calendar:read for principal, by the
// delegator to delegatee, bound to the chain given (none if nil).
func (p *hopParties) hop(ctx context.Context, delegatee, principal string, bound []*x509.Certificate) error {
	st := delegation.Statement{Delegator: p.delegator.SPIFFEID, Delegatee: delegatee, Principal: principal, Scopes: []string{"calendar:read"}}
	sig, err := delegation.SignStatement(st, p.key, p.svid.Certificates)
	if err != nil {
		return err
	}
	_, err = p.a.Delegate(ctx, &Caller{ID: p.svid.ID, Cert: p.svid.Certificates[0]}, DelegateRequest{Delegatee: delegatee, DelegateeSVID: bound,
		Principal: principal, Scopes: []string{"calendar:read"}, DelegatorSignature: sig})
	return err
}

// updated is reg as an admin would send it back with change made.
func updated(reg *registry.Agent, change func(*registry.Agent)) *registry.Agent {
	upd := *reg
	upd.NodeIDs, upd.Scopes, upd.Selectors = slices.Clone(reg.NodeIDs), slices.Clone(reg.Scopes), slices.Clone(reg.Selectors)
	change(&upd)
	return &upd
}

// A hop decided before an admin change, and committed after it (the
// change acknowledged first), is not issued when the change touches
// what it was decided on: the delegator's or the delegatee's
// registration (their accountability is the hop's parties, their
// registrations the policy's input), or the ban of the node the hop is
// bound to (the policy was told it is not banned).
func TestHopIsNotIssuedOnWhatChangedMeanwhile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, p *hopParties)
	}{
		{"the delegator's registration updated", func(t *testing.T, p *hopParties) {
			upd := updated(p.delegator, func(ag *registry.Agent) { ag.Accountability.Operator = "team-b" })
			if _, err := p.a.UpdateAgent(t.Context(), p.admin, p.delegator.ID, upd); err != nil {
				t.Fatal(err)
			}
		}},
		{"the delegatee's registration updated", func(t *testing.T, p *hopParties) {
			upd := updated(p.delegatee, func(ag *registry.Agent) { ag.Accountability.ResponsibleParty = "someone-else@example.com" })
			if _, err := p.a.UpdateAgent(t.Context(), p.admin, p.delegatee.ID, upd); err != nil {
				t.Fatal(err)
			}
		}},
		{"the node the hop is bound to banned", func(t *testing.T, p *hopParties) {
			if _, err := p.a.BanNode(t.Context(), p.admin, p.n2, "stolen"); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newHopParties(t)
			ctx := t.Context()
			err := whileHeld(ctx, func(ctx context.Context) error {
				return p.hop(ctx, p.delegatee.SPIFFEID, "alice", p.bound.Certificates)
			}, func() { tc.change(t, p) })
			if !errors.Is(err, ErrChangedMeanwhile) {
				t.Fatalf("a hop decided before the change, committed after = %v, want ErrChangedMeanwhile", err)
			}
			got, _, err := p.a.SearchAudit(ctx, p.admin, audit.Query{Type: "delegation.issued", Limit: 10})
			if err != nil || len(got) != 0 {
				t.Fatalf("delegation.issued entries: %d (%v), want none", len(got), err)
			}
		})
	}
}

// A hop to a delegatee of a federated trust domain, decided while the
// federation held and committed after it was deleted (the deletion
// acknowledged first), is not issued: the policy was told the trust
// domain is federated.
func TestHopIsNotIssuedAcrossAnEndedFederation(t *testing.T) {
	p := newHopParties(t)
	a, ctx, admin := p.a, t.Context(), p.admin
	doc, err := peerBundle(t, spiffeid.RequireTrustDomainFromString("org-b.example")).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddFederation(ctx, admin, &Federation{TrustDomain: "org-b.example", BundleEndpointURL: "https://127.0.0.1:1/bundle", Bundle: doc}); err != nil {
		t.Fatal(err)
	}
	const delegatee = "spiffe://org-b.example/agent/x"
	err = whileHeld(ctx, func(ctx context.Context) error { return p.hop(ctx, delegatee, "alice", nil) }, func() {
		if err := a.DeleteFederation(ctx, admin, "org-b.example"); err != nil {
			t.Error(err)
		}
	})
	if !errors.Is(err, ErrChangedMeanwhile) {
		t.Fatalf("a hop decided before the federation ended, committed after = %v, want ErrChangedMeanwhile", err)
	}
}

// What agents and nodes do on their own while a hop is decided (another
// SVID for either party, another hop by the same delegator, the bound
// node attested again with the same facts) is no change of what the hop
// was decided on: the hop is issued.
func TestHopIsIssuedOverOrdinaryWorkMeanwhile(t *testing.T) {
	for _, tc := range []struct {
		name string
		work func(t *testing.T, p *hopParties)
	}{
		{"an X509-SVID for the delegator", func(t *testing.T, p *hopParties) {
			agentSVID(t, p.a, p.n1, p.delegator.SPIFFEID)
		}},
		{"a JWT-SVID for the delegator", func(t *testing.T, p *hopParties) {
			if _, err := p.a.MintJWT(t.Context(), &Caller{ID: spiffeid.RequireFromString(p.n1)}, p.delegator.SPIFFEID, []string{"calendar"}); err != nil {
				t.Fatal(err)
			}
		}},
		{"an X509-SVID for the delegatee on the bound node", func(t *testing.T, p *hopParties) {
			agentSVID(t, p.a, p.n2, p.delegatee.SPIFFEID)
		}},
		{"another hop by the delegator", func(t *testing.T, p *hopParties) {
			if err := p.hop(t.Context(), p.delegatee.SPIFFEID, "bob", p.bound.Certificates); err != nil {
				t.Fatal(err)
			}
		}},
		{"the bound node attested again", func(t *testing.T, p *hopParties) {
			putNode(t, p.a, p.n2[strings.LastIndex(p.n2, "/")+1:])
			p.a.nodeChanged(p.n2)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newHopParties(t)
			err := whileHeld(t.Context(), func(ctx context.Context) error {
				return p.hop(ctx, p.delegatee.SPIFFEID, "alice", p.bound.Certificates)
			}, func() { tc.work(t, p) })
			if err != nil {
				t.Fatalf("a hop with %s meanwhile = %v, want it issued", tc.name, err)
			}
		})
	}
}
