package api_test

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/client"
)

// A node's sync says which of the agents it serves it may still serve,
// each refused one with the problem its SVIDs would be refused with, and
// gives the bundles of every trust domain, federated ones included: a
// federation added reaches the node without an SVID's renewal.
func TestNodeSync(t *testing.T) {
	e, peer := start(t, "org-a.example"), start(t, "org-b.example")
	node, other := e.joinNode(), e.joinNode()
	hosted := spiffeid.RequireFromString(e.registerAgent("hosted", node.id))
	elsewhere := spiffeid.RequireFromString(e.registerAgent("elsewhere", other.id))
	gone := spiffeid.RequireFromString(e.registerAgent("gone", node.id))
	unknown := spiffeid.RequireFromSegments(e.td, "agent", "unknown")
	foreign := spiffeid.RequireFromSegments(peer.td, "agent", "x")
	ctx := ctxT(t)
	if err := e.admin.DeleteAgent(ctx, e.registrationOf(gone).ID); err != nil {
		t.Fatal(err)
	}
	nc := e.client(node.chain, node.key)
	sync := func() *client.NodeSync {
		t.Helper()
		s, err := nc.SyncNode(ctx, []spiffeid.ID{hosted, elsewhere, gone, unknown, foreign, hosted})
		if err != nil {
			t.Fatalf("SyncNode() = %v", err)
		}
		return s
	}
	s := sync()
	if s.NodeID != node.id.String() || !slices.Equal(s.Hosted, []string{hosted.String()}) {
		t.Errorf("node %s, hosted %v; want %s, [%s]", s.NodeID, s.Hosted, node.id, hosted)
	}
	want := map[string]string{
		elsewhere.String(): "agent-not-allowed-on-node",
		gone.String():      "agent-not-registered",
		unknown.String():   "agent-not-registered",
		foreign.String():   "agent-not-registered",
	}
	for _, r := range s.Refused {
		if name := r.Type[strings.LastIndex(r.Type, "/")+1:]; want[r.SPIFFEID] != name || r.Detail == "" {
			t.Errorf("refused %s as %s (%q); want %s with a detail", r.SPIFFEID, name, r.Detail, want[r.SPIFFEID])
		}
		delete(want, r.SPIFFEID)
	}
	if len(want) != 0 {
		t.Errorf("not refused: %v", want)
	}
	if _, ok := s.Bundles[e.td.String()]; !ok || len(s.Bundles) != 1 {
		t.Errorf("bundles of %v; want %s's alone", keys(s.Bundles), e.td)
	}
	e.federate(peer)
	if s := sync(); len(s.Bundles) != 2 || s.Bundles[peer.td.String()] == nil {
		t.Errorf("after the federation: bundles of %v; want %s's too", keys(s.Bundles), peer.td)
	}
	byTD, err := client.ParseBundles(s.Bundles)
	if err != nil || byTD[e.td] == nil || len(byTD[e.td].X509Authorities()) == 0 {
		t.Errorf("bundles do not parse as SPIFFE bundles: %v", err)
	}

	// An agent asks nothing of this; a banned node, however it asks, is
	// refused as a whole, as its agents' SVIDs are.
	agent := e.agentSVID(node, hosted.String())
	var p *client.Problem
	if _, err := e.client(agent.chain, agent.key).SyncNode(ctx, []spiffeid.ID{hosted}); !errors.As(err, &p) || p.Name() != "forbidden" {
		t.Errorf("SyncNode() as an agent = %v; want 403 forbidden", err)
	}
	if _, err := nc.SyncNode(ctx, make([]spiffeid.ID, 257)); !errors.As(err, &p) || p.Status != http.StatusBadRequest {
		t.Errorf("SyncNode() of 257 agents = %v; want 400", err)
	}
	if _, err := e.admin.BanNode(ctx, node.id.String(), "compromised"); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.SyncNode(ctx, []spiffeid.ID{hosted}); !errors.As(err, &p) || p.Name() != "node-banned" {
		t.Errorf("SyncNode() of a banned node = %v; want 403 node-banned", err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
