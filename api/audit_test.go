package api_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
)

// auditCheckpoint fetches and verifies the signed checkpoint with the
// verifier key the authority wrote to <data dir>/audit/log.vkey, using
// sumdb/note and transparency-dev/formats (code Mandate did not write).
func (e *env) auditCheckpoint(c *http.Client) *log.Checkpoint {
	e.t.Helper()
	resp, err := c.Get(e.url + "/v1/audit/checkpoint")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		e.t.Fatalf("GET checkpoint = %d %s", resp.StatusCode, body)
	}
	_, vkeyPath := authority.AuditPaths(e.dataDir)
	vkey, err := os.ReadFile(vkeyPath)
	if err != nil {
		e.t.Fatal(err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		e.t.Fatal(err)
	}
	n, err := note.Open(body, note.VerifierList(v))
	if err != nil {
		e.t.Fatalf("note.Open(checkpoint) = %v", err)
	}
	cp := new(log.Checkpoint)
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		e.t.Fatalf("checkpoint: %v", err)
	}
	if cp.Origin != e.td.Name()+"/audit" {
		e.t.Errorf("checkpoint origin = %q, want %s/audit", cp.Origin, e.td.Name())
	}
	return cp
}

type auditEntryAnswer struct {
	Index          uint64          `json:"index"`
	Entry          json.RawMessage `json:"entry"`
	EntryB64       []byte          `json:"entry_b64"`
	LeafHash       string          `json:"leaf_hash"`
	TreeSize       uint64          `json:"tree_size"`
	InclusionProof [][]byte        `json:"inclusion_proof"`
	Checkpoint     string          `json:"checkpoint"`
}

// TestAuditLogRecordsAndProves runs the identity flows and checks that
// every event is in the log, each entry's inclusion proof verifies against
// the signed checkpoint, and later checkpoints are consistent with earlier
// ones — all with transparency-dev/merkle's proof package.
func TestAuditLogRecordsAndProves(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	admin := e.adminRaw()
	first := e.auditCheckpoint(admin)

	node := e.joinNode()
	agentID := e.registerAgent("hello", node.id)
	agent := e.agentSVID(node, agentID)
	if _, err := e.client(agent.chain, agent.key).JWTSVID(ctx, "", []string{"api.example"}); err != nil {
		t.Fatal(err)
	}
	tok, err := e.admin.CreateJoinToken(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, csr, _ := client.NewKeyAndCSR()
	if _, err := e.client(nil, nil).Join(ctx, tok.Token, csr); err != nil {
		t.Fatal(err)
	}
	_, _ = e.client(nil, nil).Join(ctx, tok.Token, csr)       // a replay: refused, and recorded
	_, _ = e.client(nil, nil).Join(ctx, "no-such-token", csr) // a guess: refused, only logged

	cp := e.auditCheckpoint(admin)
	types := map[string]int{}
	var issued []map[string]any
	for i := range cp.Size {
		var ans auditEntryAnswer
		if err := e.admin.Do(ctx, "GET", fmt.Sprintf("/v1/audit/entries/%d", i), nil, &ans); err != nil {
			t.Fatalf("GET entry %d = %v", i, err)
		}
		leaf := rfc6962.DefaultHasher.HashLeaf(ans.EntryB64)
		if hex.EncodeToString(leaf) != ans.LeafHash || !bytes.Equal(ans.EntryB64, ans.Entry) || ans.TreeSize != cp.Size {
			t.Fatalf("entry %d: leaf hash or bytes inconsistent: %+v", i, ans)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, cp.Size, leaf, ans.InclusionProof, cp.Hash); err != nil {
			t.Errorf("entry %d: inclusion proof does not verify: %v", i, err)
		}
		var ent map[string]any
		if err := json.Unmarshal(ans.Entry, &ent); err != nil {
			t.Fatal(err)
		}
		types[ent["type"].(string)]++
		if ent["type"] == "svid.issued" {
			issued = append(issued, ent)
		}
	}
	for _, want := range []string{"authority.started", "join_token.created", "node.attested", "agent.registered", "svid.issued", "node.attestation_refused"} {
		if types[want] == 0 {
			t.Errorf("no %s entry in the log (have %v)", want, types)
		}
	}
	if types["node.attestation_refused"] != 1 {
		t.Errorf("%d node.attestation_refused entries, want 1 (the replay; not the guess)", types["node.attestation_refused"])
	}
	for _, ent := range issued {
		if ent["subject"] != agentID {
			continue
		}
		parties, _ := ent["accountable"].([]any)
		if len(parties) != 1 || parties[0].(map[string]any)["responsible_party"] != "ops@example.com" {
			t.Errorf("svid.issued for %s has accountable %v, want the registration's responsible party", agentID, ent["accountable"])
		}
	}

	var cons struct {
		From, To uint64
		Proof    [][]byte
	}
	if err := e.admin.Do(ctx, "GET", fmt.Sprintf("/v1/audit/proofs/consistency?from=%d&to=%d", first.Size, cp.Size), nil, &cons); err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, first.Size, cp.Size, cons.Proof, first.Hash, cp.Hash); err != nil {
		t.Errorf("consistency %d→%d does not verify: %v", first.Size, cp.Size, err)
	}
}

func TestAuditReadRefusals(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	node := e.joinNode()
	size := e.auditCheckpoint(e.adminRaw()).Size
	tests := []struct {
		name, path, want string
		c                *client.Client
	}{
		{"index out of range", fmt.Sprintf("/v1/audit/entries/%d", size+5), "audit-entry-not-found", e.admin},
		{"index beyond tree_size", "/v1/audit/entries/3?tree_size=2", "audit-entry-not-found", e.admin},
		{"tree_size beyond the log", fmt.Sprintf("/v1/audit/entries/0?tree_size=%d", size+100), "invalid-tree-size", e.admin},
		{"bad index", "/v1/audit/entries/-1", "invalid-request", e.admin},
		{"huge index", "/v1/audit/entries/99999999999999999999999", "invalid-request", e.admin},
		{"zero tree_size", "/v1/audit/entries/0?tree_size=0", "invalid-request", e.admin},
		{"from after to", "/v1/audit/proofs/consistency?from=3&to=1", "invalid-tree-size", e.admin},
		{"to beyond the log", fmt.Sprintf("/v1/audit/proofs/consistency?from=1&to=%d", size+100), "invalid-tree-size", e.admin},
		{"missing from", "/v1/audit/proofs/consistency?to=1", "invalid-request", e.admin},
		{"node may not read", "/v1/audit/checkpoint", "forbidden", e.client(node.chain, node.key)},
		{"anonymous may not read", "/v1/audit/entries/0", "unauthenticated", e.client(nil, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.c.Do(ctx, "GET", tt.path, nil, nil); problemName(err) != tt.want {
				t.Errorf("GET %s = %v, want problem %s", tt.path, err, tt.want)
			}
		})
	}
}

// TestFederatedAuditor: an auditor of another organisation, named in
// audit.auditors, reads the log with its own SVID.
func TestFederatedAuditor(t *testing.T) {
	b := start(t, "org-b.example")
	nodeB := b.joinNode()
	aud := b.agentSVID(nodeB, b.registerAgent("auditor", nodeB.id))
	a := start(t, "org-a.example", func(c *authority.Config) { c.Audit.Auditors = []string{aud.id.String()} })
	a.federate(b)
	c := a.rawClient(aud.chain, aud.key)
	cp := a.auditCheckpoint(c)
	if cp.Size == 0 {
		t.Error("federated auditor read an empty log; want the federation event at least")
	}
}
