package api_test

import (
	"encoding/hex"
	"slices"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"mandate.dev/mandate/client"
	"mandate.dev/mandate/delegation"
)

// The Go client's delegation calls, as a third party's agent and admin
// would make them: a hop asked with a signed statement, its receipt (an
// inclusion proof of its entry against the signed checkpoint), its
// status, and its revocation.
func TestClientDelegationCalls(t *testing.T) {
	e := start(t, "org-a.example")
	from := e.agentWithScopes("planner", "calendar:read")
	to := e.agentWithScopes("booker")
	st := delegation.Statement{Delegator: from.id.String(), Delegatee: to.id.String(), Principal: "alice", Scopes: []string{"calendar:read"}, Purpose: "plan"}
	sig, err := delegation.SignStatement(st, from.key, from.chain)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	ans, err := e.client(from.chain, from.key).Delegate(ctx, &client.DelegationRequest{Delegatee: to.id.String(), Scopes: []string{"calendar:read"},
		Principal: "alice", Purpose: "plan", DelegatorSignature: sig})
	if err != nil {
		t.Fatalf("Delegate = %v", err)
	}
	chain, err := delegation.Verify(ans.Token, e.a, delegation.VerifyOptions{Presenter: to.id})
	if err != nil || chain[len(chain)-1].ID != ans.ID || ans.ExpiresAt.IsZero() || len(ans.Chain) == 0 {
		t.Fatalf("Delegate answer %+v: token verifies %v, %v", ans, chain, err)
	}
	// The receipt proves the hop's entry in the checkpoint it carries.
	r := ans.Receipt
	leaf, err := hex.DecodeString(r.LeafHash)
	if err != nil {
		t.Fatal(err)
	}
	cp := e.auditCheckpointFrom(r.Checkpoint)
	if cp.Size != r.TreeSize {
		t.Fatalf("checkpoint size %d, receipt tree_size %d", cp.Size, r.TreeSize)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, r.Index, cp.Size, leaf, r.InclusionProof, cp.Hash); err != nil {
		t.Fatalf("the receipt's proof does not prove its entry in its checkpoint: %v", err)
	}

	public := e.client(nil, nil)
	if s, err := public.DelegationStatus(ctx, ans.ID); err != nil || s.Status != "active" || s.ID != ans.ID || s.LogIndex == nil || *s.LogIndex != r.Index {
		t.Fatalf("DelegationStatus = %+v, %v; want active", s, err)
	}
	revoked, err := e.admin.RevokeDelegation(ctx, ans.ID, "alice cancelled")
	if err != nil || !slices.Contains(revoked, ans.ID) {
		t.Fatalf("RevokeDelegation = %v, %v; want %s revoked", revoked, err, ans.ID)
	}
	if s, err := public.DelegationStatus(ctx, ans.ID); err != nil || s.Status != "revoked" || s.Reason != "alice cancelled" || s.RevokedAt.IsZero() {
		t.Fatalf("DelegationStatus after the revocation = %+v, %v", s, err)
	}
	// Revoking the delegatee's ID revokes its live hops.
	again, err := e.client(from.chain, from.key).Delegate(ctx, &client.DelegationRequest{Delegatee: to.id.String(), Scopes: []string{"calendar:read"},
		Principal: "alice", Purpose: "plan", DelegatorSignature: sig})
	if err != nil {
		t.Fatal(err)
	}
	revoked, err = e.admin.RevokeSPIFFEID(ctx, to.id.String(), "retired")
	if err != nil || !slices.Equal(revoked, []string{again.ID}) {
		t.Fatalf("RevokeSPIFFEID = %v, %v; want %s revoked (the other hop was already)", revoked, err, again.ID)
	}
	if revoked, err = e.admin.RevokeSPIFFEID(ctx, to.id.String(), "again"); err != nil || revoked == nil || len(revoked) != 0 {
		t.Fatalf("RevokeSPIFFEID again = %#v, %v; want nothing newly revoked, as an empty list", revoked, err)
	}
	if ids, err := e.admin.ListRevokedIDs(ctx); err != nil || len(ids) != 1 || ids[0].SPIFFEID != to.id.String() {
		t.Fatalf("revoked IDs = %+v, %v; want the booker's", ids, err)
	}
}
