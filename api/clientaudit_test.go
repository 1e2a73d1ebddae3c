package api_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/delegation"
)

// The Go client's audit reads, as an auditor makes them: the verifier
// key and checkpoint, entries proven in it, a consistency proof, a
// search a page at a time, and a delegation's chain.
func TestClientAuditReads(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	from := e.agentWithScopes("planner", "calendar:read")
	to := e.agentWithScopes("booker")
	sig, err := delegation.SignStatement(delegation.Statement{Delegator: from.id.String(), Delegatee: to.id.String(), Principal: "alice",
		Scopes: []string{"calendar:read"}}, from.key, from.chain)
	if err != nil {
		t.Fatal(err)
	}
	hop, err := e.client(from.chain, from.key).Delegate(ctx, &client.DelegationRequest{Delegatee: to.id.String(), Scopes: []string{"calendar:read"},
		Principal: "alice", DelegatorSignature: sig})
	if err != nil {
		t.Fatal(err)
	}

	_, vkeyPath := authority.AuditPaths(e.dataDir)
	vkey, err := os.ReadFile(vkeyPath)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := e.client(nil, nil).AuditVerifierKey(ctx); err != nil || got != strings.TrimSpace(string(vkey)) {
		t.Fatalf("AuditVerifierKey = %q, %v; want %s", got, err, vkey)
	}
	raw, err := e.admin.AuditCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cp := e.auditCheckpointFrom(string(raw))
	if cp.Size < 3 {
		t.Fatalf("AuditCheckpoint signs %d entries; want the agents' and the hop's among them", cp.Size)
	}

	// An entry, proven in the latest tree, and in a tree it names.
	ent, err := e.admin.AuditEntry(ctx, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := e.auditCheckpointFrom(ent.Checkpoint)
	h := rfc6962.DefaultHasher
	if ent.Index != 1 || at.Size != ent.TreeSize || !json.Valid(ent.Entry) {
		t.Fatalf("AuditEntry(1, 0) = index %d of tree %d, checkpoint of %d", ent.Index, ent.TreeSize, at.Size)
	}
	if err := proof.VerifyInclusion(h, 1, at.Size, h.HashLeaf(ent.EntryB64), ent.InclusionProof, at.Hash); err != nil {
		t.Fatalf("AuditEntry(1, 0): the proof does not verify: %v", err)
	}
	first, err := e.admin.AuditEntry(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	root2 := h.HashChildren(h.HashLeaf(first.EntryB64), h.HashLeaf(ent.EntryB64))
	in2, err := e.admin.AuditEntry(ctx, 1, 2)
	if err != nil || in2.TreeSize != 2 {
		t.Fatalf("AuditEntry(1, 2) = %+v, %v", in2, err)
	}
	if err := proof.VerifyInclusion(h, 1, 2, h.HashLeaf(in2.EntryB64), in2.InclusionProof, root2); err != nil {
		t.Fatalf("AuditEntry(1, 2): the proof does not verify: %v", err)
	}
	if _, err := e.admin.AuditEntry(ctx, cp.Size+100, 0); problemName(err) != "audit-entry-not-found" {
		t.Errorf("AuditEntry beyond the log = %v; want audit-entry-not-found", err)
	}
	// The log grown since, proven one history with what it was.
	if _, err := e.admin.CreateJoinToken(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	raw, err = e.admin.AuditCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	later := e.auditCheckpointFrom(string(raw))
	cons, err := e.admin.AuditConsistency(ctx, cp.Size, later.Size)
	if err != nil || cons.From != cp.Size || cons.To != later.Size || later.Size <= cp.Size {
		t.Fatalf("AuditConsistency(%d, %d) = %+v, %v", cp.Size, later.Size, cons, err)
	}
	if err := proof.VerifyConsistency(h, cp.Size, later.Size, cons.Proof, cp.Hash, later.Hash); err != nil {
		t.Fatalf("AuditConsistency: the proof does not verify: %v", err)
	}
	if _, err := e.admin.AuditConsistency(ctx, 1, later.Size+100); problemName(err) != "invalid-tree-size" {
		t.Errorf("AuditConsistency beyond the log = %v; want invalid-tree-size", err)
	}

	// A search a page at a time finds each agent's registration once.
	q := client.AuditQuery{Type: "agent.registered", Limit: 1}
	var found []string
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatalf("the search goes on past %d pages", pages)
		}
		page, err := e.admin.SearchAudit(ctx, q)
		if err != nil {
			t.Fatalf("SearchAudit(%+v) = %v", q, err)
		}
		for _, h := range page.Entries {
			var ent struct{ Subject string }
			if err := json.Unmarshal(h.Entry, &ent); err != nil {
				t.Fatal(err)
			}
			found = append(found, ent.Subject)
		}
		if page.NextPageToken == "" {
			break
		}
		q.PageToken = page.NextPageToken
	}
	if strings.Join(found, " ") != from.id.String()+" "+to.id.String() {
		t.Errorf("SearchAudit found %v; want the two agents' registrations", found)
	}
	if page, err := e.admin.SearchAudit(ctx, client.AuditQuery{DelegationID: hop.ID, Since: time.Now().Add(-time.Hour), Until: time.Now().Add(time.Hour)}); err != nil || len(page.Entries) != 1 {
		t.Errorf("SearchAudit of the hop = %+v, %v; want its entry", page, err)
	}

	hops, err := e.admin.AuditChain(ctx, hop.ID)
	if err != nil || len(hops) != 1 || hops[0].ID != hop.ID || hops[0].Principal != "alice" || hops[0].Decision == nil || hops[0].Index == nil {
		t.Fatalf("AuditChain = %+v, %v; want the hop, with its decision and entry", hops, err)
	}
	doc, err := e.admin.AuditChainDocument(ctx, hop.ID)
	if err != nil || !strings.Contains(string(doc), `"hops"`) {
		t.Fatalf("AuditChainDocument = %s, %v", doc, err)
	}
	if _, err := e.client(to.chain, to.key).AuditChain(ctx, hop.ID); problemName(err) != "forbidden" {
		t.Errorf("AuditChain as an agent = %v; want forbidden", err)
	}
}
