package authority

import (
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// A ban committed after an agent SVID request was checked (here: one the
// hosting cache has not seen yet) is not outrun: the commit that would
// log the SVID checks the node again, and nothing is issued or logged.
func TestAgentSVIDRechecksItsNodeInItsCommit(t *testing.T) {
	a := startAuthority(t)
	ctx, admin := t.Context(), adminOf(t, a)
	nodeID := putNode(t, a, "n1")
	agent, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/w", NodeIDs: []string{nodeID}})
	if err != nil {
		t.Fatal(err)
	}
	node := &Caller{ID: spiffeid.RequireFromString(nodeID)}
	if _, err := a.MintJWT(ctx, node, agent.SPIFFEID, []string{"x"}); err != nil {
		t.Fatalf("first JWT-SVID: %v", err)
	}
	// Banned behind the cache's back: the first check still sees the node
	// as it was.
	if err := a.store.Update(ctx, func(tx store.Tx) error {
		_, _, err := registry.BanNode(tx, nodeID, "stolen", time.Now())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.MintJWT(ctx, node, agent.SPIFFEID, []string{"x"}); !errors.Is(err, registry.ErrBanned) {
		t.Fatalf("JWT-SVID after the ban = %v, want registry.ErrBanned", err)
	}
	got, _, err := a.SearchAudit(ctx, admin, audit.Query{Type: "svid.issued", SPIFFEID: agent.SPIFFEID, Limit: 10})
	if err != nil || len(got) != 1 { // the first only
		t.Errorf("the agent's svid.issued entries: %d (%v), want 1", len(got), err)
	}
}
