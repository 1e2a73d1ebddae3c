package authority

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
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

// A hop decided before an admin change, and committed after it (the
// change acknowledged first), is not issued when the change touches
// what it was decided on: the delegator's or the delegatee's
// registration (their accountability is the hop's parties, their
// registrations the policy's input), or the ban of the node the hop is
// bound to (the policy was told it is not banned).
func TestHopIsNotIssuedOnWhatChangedMeanwhile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, a *Authority, admin *Caller, delegator, delegatee *registry.Agent, n2 string)
	}{
		{"the delegator's registration updated", func(t *testing.T, a *Authority, admin *Caller, delegator, _ *registry.Agent, _ string) {
			upd := *delegator
			upd.NodeIDs, upd.Scopes = slices.Clone(delegator.NodeIDs), slices.Clone(delegator.Scopes)
			upd.Accountability.Operator = "team-b"
			if _, err := a.UpdateAgent(t.Context(), admin, delegator.ID, &upd); err != nil {
				t.Fatal(err)
			}
		}},
		{"the delegatee's registration updated", func(t *testing.T, a *Authority, admin *Caller, _, delegatee *registry.Agent, _ string) {
			upd := *delegatee
			upd.NodeIDs = slices.Clone(delegatee.NodeIDs)
			upd.Accountability.ResponsibleParty = "someone-else@example.com"
			if _, err := a.UpdateAgent(t.Context(), admin, delegatee.ID, &upd); err != nil {
				t.Fatal(err)
			}
		}},
		{"the node the hop is bound to banned", func(t *testing.T, a *Authority, admin *Caller, _, _ *registry.Agent, n2 string) {
			if _, err := a.BanNode(t.Context(), admin, n2, "stolen"); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			holdRecords(t)
			a := startAuthority(t)
			ctx, admin := t.Context(), adminOf(t, a)
			n1, n2 := putNode(t, a, "n1"), putNode(t, a, "n2")
			delegator, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/c", NodeIDs: []string{n1},
				Scopes: []string{"calendar:read"}, Accountability: registry.Accountability{Operator: "team-a"}})
			if err != nil {
				t.Fatal(err)
			}
			delegatee, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/d", NodeIDs: []string{n1, n2},
				Accountability: registry.Accountability{ResponsibleParty: "ops@example.com"}})
			if err != nil {
				t.Fatal(err)
			}
			svid, key := agentSVID(t, a, n1, delegator.SPIFFEID)
			bound, _ := agentSVID(t, a, n2, delegatee.SPIFFEID)
			st := delegation.Statement{Delegator: delegator.SPIFFEID, Delegatee: delegatee.SPIFFEID, Principal: "alice", Scopes: []string{"calendar:read"}}
			sig, err := delegation.SignStatement(st, key, svid.Certificates)
			if err != nil {
				t.Fatal(err)
			}
			req := DelegateRequest{Delegatee: delegatee.SPIFFEID, DelegateeSVID: bound.Certificates, Principal: "alice",
				Scopes: []string{"calendar:read"}, DelegatorSignature: sig}
			c := &Caller{ID: svid.ID, Cert: svid.Certificates[0]}
			err = whileHeld(ctx, func(ctx context.Context) error {
				_, err := a.Delegate(ctx, c, req)
				return err
			}, func() { tc.change(t, a, admin, delegator, delegatee, n2) })
			if !errors.Is(err, ErrChangedMeanwhile) {
				t.Fatalf("a hop decided before the change, committed after = %v, want ErrChangedMeanwhile", err)
			}
			got, _, err := a.SearchAudit(ctx, admin, audit.Query{Type: "delegation.issued", Limit: 10})
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
	holdRecords(t)
	a := startAuthority(t)
	ctx, admin := t.Context(), adminOf(t, a)
	peerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, peerKey.Public(), peerKey)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("org-b.example"), []*x509.Certificate{root}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddFederation(ctx, admin, &Federation{TrustDomain: "org-b.example", BundleEndpointURL: "https://127.0.0.1:1/bundle", Bundle: doc}); err != nil {
		t.Fatal(err)
	}
	n1 := putNode(t, a, "n1")
	delegator, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/c", NodeIDs: []string{n1}, Scopes: []string{"calendar:read"}})
	if err != nil {
		t.Fatal(err)
	}
	svid, key := agentSVID(t, a, n1, delegator.SPIFFEID)
	const delegatee = "spiffe://org-b.example/agent/x"
	st := delegation.Statement{Delegator: delegator.SPIFFEID, Delegatee: delegatee, Principal: "alice", Scopes: []string{"calendar:read"}}
	sig, err := delegation.SignStatement(st, key, svid.Certificates)
	if err != nil {
		t.Fatal(err)
	}
	req := DelegateRequest{Delegatee: delegatee, Principal: "alice", Scopes: []string{"calendar:read"}, DelegatorSignature: sig}
	c := &Caller{ID: svid.ID, Cert: svid.Certificates[0]}
	err = whileHeld(ctx, func(ctx context.Context) error {
		_, err := a.Delegate(ctx, c, req)
		return err
	}, func() {
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
		work func(t *testing.T, a *Authority, n1, n2 string, delegator, delegatee *registry.Agent, again func() error)
	}{
		{"an X509-SVID for the delegator", func(t *testing.T, a *Authority, n1, _ string, delegator, _ *registry.Agent, _ func() error) {
			agentSVID(t, a, n1, delegator.SPIFFEID)
		}},
		{"a JWT-SVID for the delegator", func(t *testing.T, a *Authority, n1, _ string, delegator, _ *registry.Agent, _ func() error) {
			if _, err := a.MintJWT(t.Context(), &Caller{ID: spiffeid.RequireFromString(n1)}, delegator.SPIFFEID, []string{"calendar"}); err != nil {
				t.Fatal(err)
			}
		}},
		{"an X509-SVID for the delegatee on the bound node", func(t *testing.T, a *Authority, _, n2 string, _, delegatee *registry.Agent, _ func() error) {
			agentSVID(t, a, n2, delegatee.SPIFFEID)
		}},
		{"another hop by the delegator", func(t *testing.T, _ *Authority, _, _ string, _, _ *registry.Agent, again func() error) {
			if err := again(); err != nil {
				t.Fatal(err)
			}
		}},
		{"the bound node attested again", func(t *testing.T, a *Authority, _, n2 string, _, _ *registry.Agent, _ func() error) {
			putNode(t, a, n2[strings.LastIndex(n2, "/")+1:])
			a.nodeChanged(n2)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			holdRecords(t)
			a := startAuthority(t)
			ctx, admin := t.Context(), adminOf(t, a)
			n1, n2 := putNode(t, a, "n1"), putNode(t, a, "n2")
			delegator, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/c", NodeIDs: []string{n1},
				Scopes: []string{"calendar:read"}, Accountability: registry.Accountability{Operator: "team-a"}})
			if err != nil {
				t.Fatal(err)
			}
			delegatee, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/d", NodeIDs: []string{n1, n2},
				Accountability: registry.Accountability{ResponsibleParty: "ops@example.com"}})
			if err != nil {
				t.Fatal(err)
			}
			svid, key := agentSVID(t, a, n1, delegator.SPIFFEID)
			bound, _ := agentSVID(t, a, n2, delegatee.SPIFFEID)
			c := &Caller{ID: svid.ID, Cert: svid.Certificates[0]}
			hop := func(ctx context.Context, principal string) error {
				st := delegation.Statement{Delegator: delegator.SPIFFEID, Delegatee: delegatee.SPIFFEID, Principal: principal, Scopes: []string{"calendar:read"}}
				sig, err := delegation.SignStatement(st, key, svid.Certificates)
				if err != nil {
					return err
				}
				_, err = a.Delegate(ctx, c, DelegateRequest{Delegatee: delegatee.SPIFFEID, DelegateeSVID: bound.Certificates, Principal: principal,
					Scopes: []string{"calendar:read"}, DelegatorSignature: sig})
				return err
			}
			err = whileHeld(ctx, func(ctx context.Context) error { return hop(ctx, "alice") }, func() {
				tc.work(t, a, n1, n2, delegator, delegatee, func() error { return hop(ctx, "bob") })
			})
			if err != nil {
				t.Fatalf("a hop with %s meanwhile = %v, want it issued", tc.name, err)
			}
		})
	}
}
