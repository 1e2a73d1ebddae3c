package authority

import (
	"testing"
	"time"

	"mandate.dev/mandate/registry"
)

// No credential is handed out that the audit log has not recorded: once
// the log has stopped (the store stays open), a join, a node's renewal,
// a node's request for an agent's X509-SVID or JWT-SVID, and an agent's
// own renewal all fail, and none of them returns a credential.
func TestNoCredentialWithoutItsEntry(t *testing.T) {
	a, stop := runAuthority(t)
	ctx, admin := t.Context(), adminOf(t, a)
	unused, _, err := a.CreateJoinToken(ctx, admin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	h := hostAnAgent(t, a, registry.Agent{SPIFFEID: a.td.IDString() + "/agent/w"})
	nodeSVID, node, agent, reg := h.nodeSVID, h.node, h.agent, h.reg
	stop() // the audit log stops; the store stays open

	if svid, err := a.JoinNode(ctx, unused, newCSR(t)); err == nil || svid != nil {
		t.Errorf("JoinNode with the log stopped = %v, %v; want an error and no SVID", svid, err)
	}
	if svid, err := a.MintX509(ctx, node, nodeSVID.ID.String(), newCSR(t)); err == nil || svid != nil {
		t.Errorf("a node's renewal with the log stopped = %v, %v; want an error and no SVID", svid, err)
	}
	if svid, err := a.MintX509(ctx, node, reg.SPIFFEID, newCSR(t)); err == nil || svid != nil {
		t.Errorf("an agent's X509-SVID asked by its node with the log stopped = %v, %v; want an error and no SVID", svid, err)
	}
	if svid, err := a.MintX509(ctx, agent, reg.SPIFFEID, newCSR(t)); err == nil || svid != nil {
		t.Errorf("an agent's renewal with the log stopped = %v, %v; want an error and no SVID", svid, err)
	}
	if svid, err := a.MintJWT(ctx, node, reg.SPIFFEID, []string{"x"}); err == nil || svid != nil {
		t.Errorf("an agent's JWT-SVID asked by its node with the log stopped = %v, %v; want an error and no JWT-SVID", svid, err)
	}
	if svid, err := a.MintJWT(ctx, agent, "", []string{"x"}); err == nil || svid != nil {
		t.Errorf("an agent's own JWT-SVID with the log stopped = %v, %v; want an error and no JWT-SVID", svid, err)
	}
}
