package api_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"mandate.dev/mandate/api"
	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/policies"
)

// agentWithScopes registers an agent with scopes on a new node and
// returns its X509-SVID.
func (e *env) agentWithScopes(name string, scopes ...string) identity {
	e.t.Helper()
	node := e.joinNode()
	id := spiffeid.RequireFromSegments(e.td, "agent", name).String()
	if _, err := e.admin.CreateAgent(ctxT(e.t), &client.Agent{SPIFFEID: id, NodeIDs: []string{node.id.String()}, Scopes: scopes,
		Accountability: client.Accountability{Operator: "team-" + name, ModelProvider: "acme", Model: "m1", ResponsibleParty: name + "@" + e.td.Name()}}); err != nil {
		e.t.Fatal(err)
	}
	return e.agentSVID(node, id)
}

type delegateReq struct {
	delegatee         identity
	delegateeID       string // instead of delegatee, for IDs without an SVID here
	scopes            []string
	principal, parent string
	bind              bool
	signer            *identity // default: the delegator
	noSig             bool
	notAfter          int64 // the statement's not_after (0: none)
	signCnf           bool  // the statement names the delegatee's certificate (cnf)
}

// mustDelegate is delegate for a hop that must be issued.
// rootHop is the id of a root hop (alice's calendar:read) that an agent
// of e delegated to another, and that other agent, its delegatee.
func (e *env) rootHop() (delegatee identity, id string) {
	e.t.Helper()
	a, b := e.agentWithScopes("a", "calendar:read"), e.agentWithScopes("b")
	tok := e.mustDelegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice"})
	chain, err := delegation.Verify(tok, e.a, delegation.VerifyOptions{AnyHolder: true})
	if err != nil {
		e.t.Fatal(err)
	}
	return b, chain[0].ID
}

func (e *env) mustDelegate(from identity, r delegateReq) string {
	e.t.Helper()
	tok, p := e.delegate(from, r)
	if p != nil {
		e.t.Fatalf("delegate: %+v", p)
	}
	return tok
}

// delegate has from ask its authority e for a hop; it returns the token
// or the problem.
func (e *env) delegate(from identity, r delegateReq) (string, *client.Problem) {
	e.t.Helper()
	ans, p := e.delegateAnswer(from, r)
	if p != nil {
		return "", p
	}
	return ans.Token, nil
}

// delegateAnswer is the answer of POST /v1/delegations.
type delegateAnswer struct {
	ID      string `json:"id"`
	Token   string `json:"token"`
	Receipt struct {
		Index          uint64   `json:"index"`
		LeafHash       string   `json:"leaf_hash"`
		Entry          []byte   `json:"entry_b64"` // never sent: see TestDelegationReceiptProvesTheHop
		TreeSize       uint64   `json:"tree_size"`
		Checkpoint     string   `json:"checkpoint"`
		InclusionProof [][]byte `json:"inclusion_proof"`
	} `json:"receipt"`
}

// delegateAnswer is delegate, with the whole answer.
func (e *env) delegateAnswer(from identity, r delegateReq) (*delegateAnswer, *client.Problem) {
	e.t.Helper()
	delegatee := r.delegateeID
	if delegatee == "" {
		delegatee = r.delegatee.id.String()
	}
	st := delegation.Statement{Delegator: from.id.String(), Delegatee: delegatee, Principal: r.principal, Scopes: r.scopes, Purpose: "book the offsite",
		NotAfter: r.notAfter}
	if r.signCnf {
		st.Cnf = &delegation.Confirmation{X5tS256: delegation.Thumbprint(r.delegatee.chain[0])}
	}
	if r.parent != "" {
		// The delegator reads the principal and the parent's id from the
		// parent token it holds.
		if chain, err := delegation.Verify(r.parent, e.a, delegation.VerifyOptions{Presenter: from.id, PresenterCert: from.chain[0]}); err == nil {
			st.Principal, st.Parent, st.ParentIssuer = chain[len(chain)-1].Subject, chain[len(chain)-1].ID, chain[len(chain)-1].Issuer
		}
	}
	signer := from
	if r.signer != nil {
		signer = *r.signer
	}
	sig, err := delegation.SignStatement(st, signer.key, signer.chain)
	if err != nil {
		e.t.Fatal(err)
	}
	body := map[string]any{"delegatee": delegatee, "scopes": r.scopes, "purpose": "book the offsite"}
	if !r.noSig {
		body["delegator_signature"] = sig
	}
	if r.principal != "" {
		body["principal"] = r.principal
	}
	if r.parent != "" {
		body["parent_token"] = r.parent
	}
	if r.bind {
		body["delegatee_x509_svid"] = string(credfile.EncodeCertsPEM(r.delegatee.chain))
	}
	out := new(delegateAnswer)
	err = e.client(from.chain, from.key).Do(ctxT(e.t), http.MethodPost, "/v1/delegations", body, out)
	var p *client.Problem
	if errors.As(err, &p) {
		return nil, p
	}
	if err != nil {
		e.t.Fatalf("delegate: %v", err)
	}
	if out.Token == "" || out.ID == "" || out.Receipt.Checkpoint == "" {
		e.t.Fatalf("delegate answered %+v", out)
	}
	return out, nil
}

// A delegation's receipt proves, with the log's key alone, that the hop
// is in the log: its leaf hash is the one the issuer's status endpoint
// (and a child hop's parent link) names for the hop, and the inclusion
// proof holds against the signed checkpoint. The entry itself is the
// auditors' to read, not in the receipt: it names the delegatee's
// accountable party, its nodes and the policy's input.
func TestDelegationReceiptProvesTheHop(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	ans, p := e.delegateAnswer(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice"})
	if p != nil {
		t.Fatal(p)
	}
	r := ans.Receipt
	if r.Entry != nil {
		t.Errorf("the receipt carries the logged entry (%d bytes), which only auditors may read", len(r.Entry))
	}
	var st struct {
		LogIndex uint64 `json:"log_index"`
		LeafHash string `json:"leaf_hash"`
	}
	if err := e.client(nil, nil).Do(ctxT(t), http.MethodGet, "/v1/delegations/"+ans.ID+"/status", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.LogIndex != r.Index || st.LeafHash != r.LeafHash {
		t.Fatalf("receipt index %d, leaf %s; the status says %d, %s", r.Index, r.LeafHash, st.LogIndex, st.LeafHash)
	}
	leaf, err := hex.DecodeString(r.LeafHash)
	if err != nil {
		t.Fatal(err)
	}
	cp := e.auditCheckpointFrom(r.Checkpoint)
	if cp.Size != r.TreeSize {
		t.Fatalf("checkpoint size %d, receipt tree_size %d", cp.Size, r.TreeSize)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, r.Index, cp.Size, leaf, r.InclusionProof, cp.Hash); err != nil {
		t.Fatalf("inclusion proof: %v", err)
	}
	// The leaf is the hop's issuance, as an auditor reads it.
	var entry struct {
		EntryB64 []byte `json:"entry_b64"`
	}
	if err := e.admin.Do(ctxT(t), http.MethodGet, fmt.Sprintf("/v1/audit/entries/%d", r.Index), nil, &entry); err != nil {
		t.Fatal(err)
	}
	logged, err := audit.Decode(entry.EntryB64)
	if err != nil || hex.EncodeToString(rfc6962.DefaultHasher.HashLeaf(entry.EntryB64)) != r.LeafHash ||
		logged.Type != "delegation.issued" || logged.DelegationID != ans.ID {
		t.Fatalf("entry %d is not the hop's issuance: %+v %v", r.Index, logged, err)
	}
}

// A hop an agent delegates to itself names the agent's accountable party
// once, as one read of its registration says it: an entry naming it
// twice, differently (an administrator's edit between two reads), could
// never be verified.
func TestSelfDelegationNamesItsPartyOnce(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	ans, p := e.delegateAnswer(a, delegateReq{delegatee: a, scopes: []string{"calendar:read"}, principal: "alice"})
	if p != nil {
		t.Fatalf("a hop to oneself: %v (the shipped policy allows it)", p)
	}
	var entry struct {
		EntryB64 []byte `json:"entry_b64"`
	}
	if err := e.admin.Do(ctxT(t), http.MethodGet, fmt.Sprintf("/v1/audit/entries/%d", ans.Receipt.Index), nil, &entry); err != nil {
		t.Fatal(err)
	}
	logged, err := audit.Decode(entry.EntryB64)
	if err != nil {
		t.Fatal(err)
	}
	if len(logged.Accountable) != 1 || logged.Accountable[0].SPIFFEID != a.id {
		t.Fatalf("the hop's accountable parties: %+v, want %s once", logged.Accountable, a.id)
	}
}

// The entries about an agent name its accountable party: a refused
// request names its delegator's and its delegatee's (agents registered
// here), and revoking an agent by its ID names the agent's.
func TestRefusalsAndRevocationsNameAccountableParties(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b", "calendar:read")
	if _, p := e.delegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice", parent: "not a token"}); p == nil {
		t.Fatal("a request with both a principal and a malformed parent was not refused")
	}
	var out struct{}
	if err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"spiffe_id": b.id.String(), "reason": "compromised"}, &out); err != nil {
		t.Fatal(err)
	}
	var page struct {
		Entries []struct {
			Entry struct {
				Type        string `json:"type"`
				Accountable []struct {
					SPIFFEID string `json:"spiffe_id"`
				} `json:"accountable"`
			} `json:"entry"`
		} `json:"entries"`
	}
	for typ, want := range map[string][]string{"delegation.refused": {a.id.String(), b.id.String()}, "delegation.revoked": {b.id.String()}} {
		if err := e.admin.Do(ctxT(t), http.MethodGet, "/v1/audit/search?type="+typ, nil, &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Entries) != 1 {
			t.Fatalf("%d %s entries, want 1", len(page.Entries), typ)
		}
		var got []string
		for _, p := range page.Entries[0].Entry.Accountable {
			got = append(got, p.SPIFFEID)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s names the accountable parties %v, want %v", typ, got, want)
		}
	}
}

// An unbound hop records the nodes its delegatee's registration names;
// a registration naming more than a hop's entry holds is refused with a
// way out (bind the hop), not answered 500.
func TestUnboundHopToAnAgentOfManyLongNodeIDs(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	var nodes []string
	for i := range 31 {
		nodes = append(nodes, fmt.Sprintf("spiffe://org-a.example/node/join/%02d%s", i, strings.Repeat("n", 2000)))
	}
	if _, err := e.admin.CreateAgent(ctxT(t), &client.Agent{SPIFFEID: "spiffe://org-a.example/agent/wide", NodeIDs: nodes}); err != nil {
		t.Fatal(err)
	}
	_, p := e.delegate(a, delegateReq{delegateeID: "spiffe://org-a.example/agent/wide", scopes: []string{"calendar:read"}, principal: "alice"})
	if p == nil || p.Status != http.StatusBadRequest || !strings.Contains(p.Detail, "delegatee_x509_svid") {
		t.Fatalf("an unbound hop to an agent of 31 node IDs of 2 KB: %+v, want 400 naming delegatee_x509_svid", p)
	}
}

// A hop bound to its delegatee's certificate is continued only with that
// certificate's key, in the signature as on the connection: the holder
// renewed to another SVID cannot sign the next hop with it, and a
// verifier checks the same from the chain alone.
func TestBoundHopContinuedByItsHolder(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b", "calendar:read")
	c := e.agentWithScopes("c")
	bound := e.mustDelegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice", bind: true})
	renewed := e.agentSVIDWith(e.client(b.chain, b.key), b.id.String())
	if _, p := e.delegate(b, delegateReq{delegatee: c, scopes: []string{"calendar:read"}, parent: bound, signer: &renewed}); p == nil || p.Name() != "delegation-not-holder" {
		t.Fatalf("a bound hop continued with a signature of another SVID of its holder: %+v, want delegation-not-holder", p)
	}
	below := e.mustDelegate(b, delegateReq{delegatee: c, scopes: []string{"calendar:read"}, parent: bound})
	if _, err := delegation.Verify(below, e.a, delegation.VerifyOptions{AnyHolder: true}); err != nil {
		t.Fatalf("a bound hop continued by its holder: %v", err)
	}
}

// federatedPair is two authorities, org-a and org-b, each federated with
// the other.
func federatedPair(t *testing.T) (orgA, orgB *env) {
	orgA, orgB = start(t, "org-a.example"), start(t, "org-b.example")
	orgA.federate(orgB)
	orgB.federate(orgA)
	return orgA, orgB
}

func TestCrossOrganisationDelegation(t *testing.T) {
	orgA, orgB := federatedPair(t)
	planner := orgA.agentWithScopes("planner", "calendar:read", "mail:send", "payments:write")
	booker := orgB.agentWithScopes("booker")
	payer := orgB.agentWithScopes("payer")

	// user → planner (org-a) → booker (org-b) → payer (org-b)
	t1, p := orgA.delegate(planner, delegateReq{delegatee: booker, scopes: []string{"calendar:read", "mail:send"}, principal: "alice@org-a.example", bind: true})
	if p != nil {
		t.Fatalf("root hop: %v", p)
	}
	t2, p := orgB.delegate(booker, delegateReq{delegatee: payer, scopes: []string{"calendar:read"}, parent: t1})
	if p != nil {
		t.Fatalf("cross-organisation hop: %v", p)
	}
	// Offline, with the bundles any party federated with both holds.
	chain, err := delegation.Verify(t2, orgB.a, delegation.VerifyOptions{Presenter: payer.id, Audience: payer.id.String()})
	if err != nil || len(chain) != 2 || chain[0].Issuer != "spiffe://org-a.example" || chain[1].Issuer != "spiffe://org-b.example" {
		t.Fatalf("Verify = %v, %v", chain, err)
	}
	if chain[0].Cnf == nil || chain[0].Cnf.X5tS256 != delegation.Thumbprint(booker.chain[0]) {
		t.Fatalf("the root hop is not bound to the booker's SVID: %+v", chain[0].Cnf)
	}
	// Each issuer recorded its own hop.
	if got := orgA.auditOf("delegation.issued", booker.id.String()); len(got) != 1 || got[0]["delegation_id"] != chain[0].ID {
		t.Fatalf("org-a's log: %v", got)
	}
	if got := orgB.auditOf("delegation.issued", payer.id.String()); len(got) != 1 || got[0]["parent_id"] != chain[0].ID {
		t.Fatalf("org-b's log: %v", got)
	}

	// org-c trusts org-b, but org-b does not trust org-c.
	orgC := start(t, "org-c.example")
	orgC.federate(orgB)
	stranger := orgC.agentWithScopes("stranger", "calendar:read")
	foreign, p := orgC.delegate(stranger, delegateReq{delegateeID: booker.id.String(), scopes: []string{"calendar:read"}, principal: "eve"})
	if p != nil {
		t.Fatalf("org-c's hop to org-b: %v", p)
	}

	for _, tc := range []struct {
		name string
		do   func() *client.Problem
		want string
	}{
		{"scope escalation", func() *client.Problem {
			_, p := orgB.delegate(booker, delegateReq{delegatee: payer, scopes: []string{"payments:write"}, parent: t1})
			return p
		}, "policy-denied"},
		{"delegatee not federated", func() *client.Problem {
			_, p := orgA.delegate(planner, delegateReq{delegateeID: "spiffe://org-z.example/agent/x", scopes: []string{"calendar:read"}, principal: "alice"})
			return p
		}, "policy-denied"},
		{"parent presented by someone else", func() *client.Problem {
			_, p := orgB.delegate(payer, delegateReq{delegatee: booker, scopes: []string{"calendar:read"}, parent: t1})
			return p
		}, "delegation-not-holder"},
		{"forged parent", func() *client.Problem {
			parts := strings.Split(t1, ".")
			forged := parts[0] + "." + parts[1][:len(parts[1])-4] + "AAAA." + parts[2]
			_, p := orgB.delegate(booker, delegateReq{delegatee: payer, scopes: []string{"calendar:read"}, parent: forged})
			return p
		}, ""},
		{"parent from an issuer not trusted here", func() *client.Problem {
			_, p := orgB.delegate(booker, delegateReq{delegatee: payer, scopes: []string{"calendar:read"}, parent: foreign})
			return p
		}, "delegation-issuer-untrusted"},
		{"delegator signature by another agent", func() *client.Problem {
			_, p := orgA.delegate(planner, delegateReq{delegatee: booker, scopes: []string{"calendar:read"}, principal: "alice", signer: &payer})
			return p
		}, "delegator-signature-invalid"},
		{"a scope named twice", func() *client.Problem {
			_, p := orgA.delegate(planner, delegateReq{delegatee: booker, scopes: []string{"calendar:read", "calendar:read"}, principal: "alice"})
			return p
		}, "invalid-request"},
		{"no delegator signature", func() *client.Problem {
			_, p := orgA.delegate(planner, delegateReq{delegatee: booker, scopes: []string{"calendar:read"}, principal: "alice", noSig: true})
			return p
		}, "invalid-request"},
		{"sensitive scope from a token-attested host", func() *client.Problem {
			_, p := orgA.delegate(planner, delegateReq{delegatee: booker, scopes: []string{"payments:write"}, principal: "alice"})
			return p
		}, "policy-denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.do()
			if p == nil || (tc.want != "" && p.Name() != tc.want) || p.Status < 400 || p.Status >= 500 {
				t.Fatalf("problem = %+v, want %s", p, tc.want)
			}
			if p.Name() == "policy-denied" && (len(p.Reasons) == 0 || p.DecisionID == "") {
				t.Fatalf("a deny without reasons: %+v", p)
			}
		})
	}
	// Denials are recorded with their reasons, and so is every other
	// refusal of an authenticated agent.
	if denied := orgB.auditOf("policy.decision", ""); len(denied) == 0 {
		t.Fatal("no denial recorded at org-b")
	}
	refused := orgB.auditOf("delegation.refused", "")
	reasons := ""
	for _, r := range refused {
		reasons += r["reason"].(string) + "\n"
	}
	for _, want := range []string{"not the token's holder", "issuer not trusted", "malformed token"} {
		if !strings.Contains(reasons, want) {
			t.Errorf("no refusal recorded for %q in:\n%s", want, reasons)
		}
	}

	// The accountability chain, as org-b's auditor (an admin here) reads it:
	// org-b's own hop with its log entry and proof, org-a's hop pointing at
	// org-a's log; each names where its issuer answers for it.
	var chainAns struct {
		Hops []struct {
			ID, Issuer, Delegator, Delegatee, Principal string
			Decision                                    *struct{ ID, Result, PolicyRevision string }
			Accountability                              map[string]map[string]any
			Index                                       *uint64
			LeafHash                                    string `json:"leaf_hash"`
			Checkpoint                                  string
			LogURL                                      string `json:"log_url"`
		}
	}
	if err := orgB.admin.Do(ctxT(t), http.MethodGet, "/v1/audit/chains/"+chain[1].ID, nil, &chainAns); err != nil {
		t.Fatal(err)
	}
	hops := chainAns.Hops
	if len(hops) != 2 || hops[0].ID != chain[0].ID || hops[0].LogURL != orgA.url+"/v1/audit/chains/"+chain[0].ID || hops[0].Index != nil ||
		hops[1].ID != chain[1].ID || hops[1].Index == nil || hops[1].LogURL != orgB.url+"/v1/audit/chains/"+chain[1].ID || hops[1].Decision == nil || hops[1].Decision.Result != "allow" ||
		hops[1].Accountability["delegatee"]["responsible_party"] != "payer@org-b.example" || hops[1].Principal != "alice@org-a.example" {
		t.Fatalf("org-b's chain: %+v", hops)
	}
	var rootAns struct {
		Hops []struct {
			ID, Delegator string
			Index         *uint64
			LeafHash      string `json:"leaf_hash"`
		}
	}
	if err := orgA.admin.Do(ctxT(t), http.MethodGet, "/v1/audit/chains/"+chain[0].ID, nil, &rootAns); err != nil || len(rootAns.Hops) != 1 ||
		rootAns.Hops[0].Delegator != planner.id.String() || rootAns.Hops[0].Index == nil {
		t.Fatalf("org-a's chain: %+v %v", rootAns, err)
	}
	// org-b's hop points at the entry of its parent in org-a's log, as
	// org-a's status endpoint told org-b: in the token and in org-b's log.
	root := rootAns.Hops[0]
	if l := chain[1].Hop.Parent; l.LogIndex != *root.Index || l.LeafHash != root.LeafHash {
		t.Fatalf("the cross-organisation hop links to %d/%s, org-a logged its parent at %d/%s", l.LogIndex, l.LeafHash, *root.Index, root.LeafHash)
	}
	var status map[string]any
	if err := orgB.admin.Do(ctxT(t), http.MethodGet, "/v1/delegations/"+chain[0].ID+"/status", nil, &status); err == nil {
		t.Fatalf("org-b answered the status of org-a's hop: %v", status)
	}
	if err := orgA.admin.Do(ctxT(t), http.MethodGet, "/v1/delegations/"+chain[0].ID+"/status", nil, &status); err != nil ||
		status["status"] != "active" || status["leaf_hash"] != root.LeafHash || status["log_index"] != float64(*root.Index) {
		t.Fatalf("org-a's status of its hop: %v %v", status, err)
	}
	if got := orgB.auditOf("delegation.issued", payer.id.String()); len(got) != 1 ||
		fmt.Sprint(got[0]["parent_link"]) != fmt.Sprint(map[string]any{"leaf_hash": root.LeafHash, "log_index": float64(*root.Index)}) {
		t.Fatalf("org-b's log entry links its parent as %v", got[0]["parent_link"])
	}

	// org-b's status of its hop follows the hop above it, at org-a.
	statusAt := func(e *env, id string) (map[string]any, error) {
		var st map[string]any
		return st, e.client(nil, nil).Do(ctxT(t), http.MethodGet, "/v1/delegations/"+id+"/status", nil, &st)
	}
	if st, err := statusAt(orgB, chain[1].ID); err != nil || st["status"] != "active" {
		t.Fatalf("org-b's hop before any revocation: %v %v", st, err)
	}
	// A second chain, for when org-a cannot be asked.
	t1b := orgA.mustDelegate(planner, delegateReq{delegatee: booker, scopes: []string{"calendar:read"}, principal: "bob@org-a.example"})
	t2b := orgB.mustDelegate(booker, delegateReq{delegatee: payer, scopes: []string{"calendar:read"}, parent: t1b})
	second, err := delegation.Verify(t2b, orgB.a, delegation.VerifyOptions{AnyHolder: true})
	if err != nil {
		t.Fatal(err)
	}

	// org-a revokes the root hop: org-b asks org-a before extending the
	// chain, and refuses; org-b's own hop below it is revoked there too,
	// durably, as soon as org-b learns it, recorded as org-b's revocation.
	if err := orgA.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"delegation_id": chain[0].ID, "reason": "user withdrew"}, nil); err != nil {
		t.Fatal(err)
	}
	_, p = orgB.delegate(booker, delegateReq{delegatee: payer, scopes: []string{"calendar:read"}, parent: t1})
	if p == nil || p.Name() != "delegation-revoked" || !strings.Contains(p.Detail, chain[0].ID) {
		t.Fatalf("below a hop revoked at another authority: %+v", p)
	}
	orgB.skew.Add(int64(10 * time.Second)) // past org-b's memory of org-a's earlier "active"
	// Many verifiers ask at once: every one hears "revoked", and org-b
	// revokes (and records) its hop once.
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if st, err := statusAt(orgB, chain[1].ID); err != nil || st["status"] != "revoked" || !strings.Contains(fmt.Sprint(st["reason"]), chain[0].ID) {
				t.Errorf("org-b's hop below org-a's revoked hop: %v %v", st, err)
			}
		})
	}
	wg.Wait()
	if got := orgB.auditOf("delegation.revoked", chain[1].ID); len(got) != 1 || fmt.Sprint(got[0]["revoked"]) != fmt.Sprint([]any{chain[1].ID}) {
		t.Fatalf("org-b's record of the revocation it learnt: %v", got)
	}
	// An authority that cannot be asked: the chain is not extended, and
	// the status of a hop below one of its hops is not vouched for; a hop
	// known revoked stays revoked (its issuer's answer is final).
	orgA.stop()
	_, p = orgB.delegate(booker, delegateReq{delegatee: payer, scopes: []string{"calendar:read"}, parent: t1b})
	if p == nil || p.Name() != "delegation-status-unavailable" {
		t.Fatalf("with the parent's issuer down: %+v", p)
	}
	_, p = orgB.delegate(booker, delegateReq{delegatee: payer, scopes: []string{"calendar:read"}, parent: t1})
	if p == nil || p.Name() != "delegation-revoked" {
		t.Fatalf("with the issuer of a parent it said was revoked down: %+v", p)
	}
	var pe *client.Problem
	orgB.skew.Add(int64(10 * time.Second)) // past what org-b remembers of org-a's answers
	if st, err := statusAt(orgB, second[1].ID); !errors.As(err, &pe) || pe.Name() != "delegation-status-unavailable" {
		t.Fatalf("status below a hop of an authority that is down: %v %v", st, err)
	}
	if st, err := statusAt(orgB, chain[1].ID); err != nil || st["status"] != "revoked" {
		t.Fatalf("a hop known revoked, its parent's issuer down: %v %v", st, err)
	}
}

func TestRevocationCascades(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	c := e.agentWithScopes("c")
	d := e.agentWithScopes("d")
	t1, p := e.delegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice"})
	if p != nil {
		t.Fatal(p)
	}
	t2, p := e.delegate(b, delegateReq{delegatee: c, scopes: []string{"calendar:read"}, parent: t1})
	if p != nil {
		t.Fatal(p)
	}
	chain, err := delegation.Verify(t2, e.a, delegation.VerifyOptions{AnyHolder: true})
	if err != nil {
		t.Fatal(err)
	}
	status := func(id string) string {
		var out struct{ Status string }
		if err := e.client(nil, nil).Do(ctxT(t), http.MethodGet, "/v1/delegations/"+id+"/status", nil, &out); err != nil {
			t.Fatal(err)
		}
		return out.Status
	}
	if status(chain[1].ID) != "active" {
		t.Fatal("not active")
	}
	var out struct{ Revoked []string }
	if err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"delegation_id": chain[0].ID, "reason": "task cancelled"}, &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Revoked) != 2 || status(chain[0].ID) != "revoked" || status(chain[1].ID) != "revoked" {
		t.Fatalf("revoked %v", out.Revoked)
	}
	// Below a revoked hop nothing more is issued.
	if _, p := e.delegate(c, delegateReq{delegatee: d, scopes: []string{"calendar:read"}, parent: t2}); p == nil || p.Name() != "delegation-revoked" {
		t.Fatalf("below a revoked hop: %+v", p)
	}
	if got := e.auditOf("delegation.revoked", chain[0].ID); len(got) != 1 || got[0]["reason"] != "task cancelled" {
		t.Fatalf("revocation record: %v", got)
	}

	// Depth: a → b → c → d is three hops; a fourth exceeds the shipped
	// maximum of 3.
	x1, _ := e.delegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "carol"})
	x2, _ := e.delegate(b, delegateReq{delegatee: c, scopes: []string{"calendar:read"}, parent: x1})
	x3, p := e.delegate(c, delegateReq{delegatee: d, scopes: []string{"calendar:read"}, parent: x2})
	if p != nil {
		t.Fatalf("third hop: %v", p)
	}
	_, p = e.delegate(d, delegateReq{delegatee: a, scopes: []string{"calendar:read"}, parent: x3})
	if p == nil || p.Name() != "policy-denied" || !strings.Contains(strings.Join(p.Reasons, ";"), "chain depth 4 exceeds the maximum of 3") {
		t.Fatalf("fourth hop: %+v", p)
	}

	// An expired parent (10 minutes by default) is refused, and the
	// refusal recorded.
	e.skew.Add(int64(11 * time.Minute))
	_, p = e.delegate(b, delegateReq{delegatee: c, scopes: []string{"calendar:read"}, parent: x1})
	e.skew.Add(-int64(11 * time.Minute))
	if p == nil || p.Name() != "delegation-expired" {
		t.Fatalf("below an expired parent: %+v", p)
	}
	if got := e.auditOf("delegation.refused", c.id.String()); len(got) == 0 || !strings.Contains(got[len(got)-1]["reason"].(string), "expired") {
		t.Fatalf("refusal record: %v", got)
	}

	// Revoking an agent revokes what it delegated and what was delegated to it.
	t3, p := e.delegate(a, delegateReq{delegatee: d, scopes: []string{"calendar:read"}, principal: "bob"})
	if p != nil {
		t.Fatal(p)
	}
	c3, _ := delegation.Verify(t3, e.a, delegation.VerifyOptions{AnyHolder: true})
	if err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"spiffe_id": d.id.String(), "reason": "compromised"}, &out); err != nil {
		t.Fatal(err)
	}
	if status(c3[0].ID) != "revoked" {
		t.Fatal("delegation to a revoked agent still active")
	}
	if err := e.client(nil, nil).Do(ctxT(t), http.MethodGet, "/v1/delegations/nope/status", nil, nil); err == nil {
		t.Fatal("unknown delegation has a status")
	}

	// Revoking a node revokes what its agents delegated while on it.
	y1, _ := e.delegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "dave"})
	yc, _ := delegation.Verify(y1, e.a, delegation.VerifyOptions{AnyHolder: true})
	host, err := authority.HostNode(a.chain[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"spiffe_id": host.String(), "reason": "stolen device"}, &out); err != nil {
		t.Fatal(err)
	}
	if status(yc[0].ID) != "revoked" {
		t.Fatal("a delegation made on a revoked node is still active")
	}
	// ...and no new one is issued to its agents.
	if _, p := e.delegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "erin"}); p == nil || p.Name() != "delegation-revoked" {
		t.Fatalf("delegation by an agent on a revoked node: %+v", p)
	}
}

// Revoking a node (a stolen device) revokes the hops held on it too: one
// bound to an X509-SVID of that node, and one unbound whose delegatee is
// registered on it; the status says so, the hops below go with them, and
// no new hop is issued to be held there. A hop held elsewhere stays.
func TestRevokingANodeRevokesHopsHeldOnIt(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b", "calendar:read")
	c := e.agentWithScopes("c", "calendar:read")
	d := e.agentWithScopes("d")
	status := func(tok string) string {
		t.Helper()
		ch, err := delegation.Verify(tok, e.a, delegation.VerifyOptions{AnyHolder: true})
		if err != nil {
			t.Fatal(err)
		}
		var st struct{ Status string }
		if err := e.client(nil, nil).Do(ctxT(t), http.MethodGet, "/v1/delegations/"+ch[len(ch)-1].ID+"/status", nil, &st); err != nil {
			t.Fatal(err)
		}
		return st.Status
	}
	bound := e.mustDelegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice", bind: true})
	below := e.mustDelegate(b, delegateReq{delegatee: d, scopes: []string{"calendar:read"}, parent: bound})
	unbound := e.mustDelegate(a, delegateReq{delegatee: c, scopes: []string{"calendar:read"}, principal: "bob"})
	elsewhere := e.mustDelegate(a, delegateReq{delegatee: d, scopes: []string{"calendar:read"}, principal: "carol"})
	for _, holder := range []identity{b, c} {
		host, err := authority.HostNode(holder.chain[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"spiffe_id": host.String(), "reason": "stolen device"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	for name, tok := range map[string]string{"bound to an SVID of the node": bound, "below it": below, "unbound, to an agent registered on the node": unbound} {
		if got := status(tok); got != "revoked" {
			t.Errorf("the hop %s: %s, want revoked", name, got)
		}
	}
	if got := status(elsewhere); got != "active" {
		t.Errorf("a hop held on another node: %s, want active", got)
	}
	if _, p := e.delegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "dave", bind: true}); p == nil || p.Name() != "delegation-revoked" ||
		!strings.Contains(p.Detail, "a node the delegatee may hold the hop on") {
		t.Fatalf("a hop to be held on a revoked node: %+v, want delegation-revoked naming the node as the delegatee's", p)
	}
}

// A refusal is recorded whatever the request held, and its entry stays
// small: an agent sending the largest refusable requests grows the
// append-only log no faster than by issued hops.
func TestRefusalRecordsAreBounded(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	long := func(c string) string { return strings.Repeat(c, 600) }
	scopes := make([]string, 64)
	for i := range scopes {
		scopes[i] = long("s")
	}
	body := map[string]any{"delegatee": "spiffe://org-a.example/agent/" + long("z"), "scopes": scopes, "principal": long("p"),
		"delegator_signature": "x"}
	if err := e.client(a.chain, a.key).Do(ctxT(t), http.MethodPost, "/v1/delegations", body, nil); err == nil {
		t.Fatal("the request was not refused")
	}
	got := e.auditOf("delegation.refused", "")
	if len(got) != 1 {
		t.Fatalf("%d delegation.refused entries, want 1", len(got))
	}
	b, _ := json.Marshal(got[0])
	// Each scope is too long to be one: kept by its digest.
	kept, _ := got[0]["scopes"].([]any)
	withheld, _ := got[0]["scopes_sha256"].([]any)
	if len(b) > 4096 || got[0]["scope_count"] != float64(64) || len(kept)+len(withheld) != 8 {
		t.Errorf("the refusal record: %d bytes, scope_count %v, %d+%d scopes kept; want at most 4096 bytes, 64, 8", len(b), got[0]["scope_count"], len(kept), len(withheld))
	}
}

// A credential an agent sends in the wrong field of a delegation request
// (its JWT-SVID as the principal, the delegatee or a scope) is not kept
// in the refusal's record, which is kept for ever and read by auditors:
// the record holds its digest and size, and its reason does not quote it.
func TestRefusalRecordsWithholdACredentialInTheWrongField(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	c := e.client(a.chain, a.key)
	var svid struct {
		Token string `json:"token"`
	}
	if err := c.Do(ctxT(t), http.MethodPost, "/v1/svid/jwt", map[string]any{"audience": []string{"spiffe://org-a.example/agent/b"}}, &svid); err != nil || len(svid.Token) < 100 {
		t.Fatalf("JWT-SVID: %v (%d bytes)", err, len(svid.Token))
	}
	sum := sha256.Sum256([]byte(svid.Token))
	digest := hex.EncodeToString(sum[:])
	for _, tc := range []struct {
		name, field string
		body        map[string]any
	}{
		{"as the principal", "principal_sha256", map[string]any{"delegatee": b.id.String(), "scopes": []string{"calendar:read"}, "principal": svid.Token}},
		{"as the delegatee", "delegatee_sha256", map[string]any{"delegatee": svid.Token, "scopes": []string{"calendar:read"}, "principal": "alice"}},
		{"as a scope", "scopes_sha256", map[string]any{"delegatee": b.id.String(), "scopes": []string{svid.Token + " x"}, "principal": "alice"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.body["delegator_signature"] = "x"
			before := len(e.auditOf("delegation.refused", ""))
			if err := c.Do(ctxT(t), http.MethodPost, "/v1/delegations", tc.body, nil); err == nil {
				t.Fatal("the request was not refused")
			}
			got := e.auditOf("delegation.refused", "")
			if len(got) != before+1 {
				t.Fatalf("%d delegation.refused entries, want 1", len(got)-before)
			}
			rec := got[len(got)-1]
			if raw, _ := json.Marshal(rec); strings.Contains(string(raw), svid.Token[:40]) {
				t.Errorf("the record holds the token: %s", raw)
			}
			want := any(digest)
			if tc.field == "scopes_sha256" {
				s := sha256.Sum256([]byte(svid.Token + " x"))
				want = []any{hex.EncodeToString(s[:])}
			}
			if !reflect.DeepEqual(rec[tc.field], want) {
				t.Errorf("%s: %v, want %v", tc.field, rec[tc.field], want)
			}
		})
	}
}

// An operator sees which SPIFFE IDs are revoked, with who and why, a
// page at a time (a revocation is for ever: the ID can be registered
// again, but no hop holds it); only an admin may ask.
func TestRevokedIDsAreListed(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	ids := []string{"spiffe://org-a.example/agent/x", "spiffe://org-a.example/agent/y", "spiffe://org-a.example/node/join/0123456789abcdef"}
	for _, id := range ids {
		if err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"spiffe_id": id, "reason": "lost " + id}, nil); err != nil {
			t.Fatal(err)
		}
	}
	all, err := e.admin.ListRevokedIDs(ctxT(t))
	if err != nil || len(all) != len(ids) {
		t.Fatalf("ListRevokedIDs = %v, %v; want the %d revoked", all, err, len(ids))
	}
	for i, r := range all {
		if r.SPIFFEID != ids[i] || r.Reason != "lost "+ids[i] || r.RevokedBy != authority.AdminID(e.td).String() || r.RevokedAt.IsZero() {
			t.Errorf("revocation %d: %+v, want %s revoked by %s with its reason", i, r, ids[i], authority.AdminID(e.td))
		}
	}
	var page struct {
		Revoked []client.Revocation `json:"revoked_spiffe_ids"`
		Next    string              `json:"next_page_token"`
	}
	if err := e.admin.Do(ctxT(t), http.MethodGet, "/v1/admin/revocations?limit=2", nil, &page); err != nil || len(page.Revoked) != 2 || page.Next == "" {
		t.Fatalf("a page of 2: %+v %v", page, err)
	}
	next := page.Next
	page.Revoked, page.Next = nil, ""
	if err := e.admin.Do(ctxT(t), http.MethodGet, "/v1/admin/revocations?limit=2&page_token="+next, nil, &page); err != nil || len(page.Revoked) != 1 || page.Revoked[0].SPIFFEID != ids[2] || page.Next != "" {
		t.Fatalf("the next page: %+v %v", page, err)
	}
	var pe *client.Problem
	if err := e.client(a.chain, a.key).Do(ctxT(t), http.MethodGet, "/v1/admin/revocations", nil, nil); !errors.As(err, &pe) || pe.Status != http.StatusForbidden {
		t.Fatalf("an agent asking: %v, want 403", err)
	}
}

// exchange posts an RFC 8693 token exchange as from.
func (e *env) exchange(from *identity, form url.Values) (int, map[string]any) {
	e.t.Helper()
	var c *client.Client
	if from != nil {
		c = e.client(from.chain, from.key)
	} else {
		c = e.client(nil, nil)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: c.TLSConfig()}}
	defer hc.CloseIdleConnections()
	resp, err := hc.PostForm(e.url+"/v1/token", form)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, out
}

func TestTokenExchange(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read", "mail:send")
	b := e.agentWithScopes("b")
	c := e.agentWithScopes("c")
	sign := func(from identity, st delegation.Statement) string {
		sig, err := delegation.SignStatement(st, from.key, from.chain)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	// Metadata (RFC 8414).
	var md map[string]any
	if err := e.client(nil, nil).Do(ctxT(t), http.MethodGet, "/.well-known/oauth-authorization-server", nil, &md); err != nil ||
		md["token_endpoint"] != e.url+"/v1/token" || md["issuer"] != e.url {
		t.Fatalf("metadata: %v %v", md, err)
	}
	// A root hop: the subject token is the principal.
	jwt, err := e.client(a.chain, a.key).JWTSVID(ctxT(t), "", []string{e.td.IDString()})
	if err != nil {
		t.Fatal(err)
	}
	root := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token": {"alice"}, "subject_token_type": {"urn:mandate:params:oauth:token-type:principal"},
		"actor_token": {jwt.Token}, "actor_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
		"audience": {b.id.String()}, "scope": {"calendar:read mail:send"},
		"delegator_signature": {sign(a, delegation.Statement{Delegator: a.id.String(), Delegatee: b.id.String(), Principal: "alice", Scopes: []string{"calendar:read", "mail:send"}})}}
	root.Set("delegatee_x509_svid", string(credfile.EncodeCertsPEM(b.chain)))
	status, ans := e.exchange(&a, root)
	if status != 200 || ans["issued_token_type"] != "urn:ietf:params:oauth:token-type:jwt" || ans["access_token"] == nil || ans["expires_in"] == nil {
		t.Fatalf("root exchange: %d %v", status, ans)
	}
	parent := ans["access_token"].(string)
	pc, err := delegation.Verify(parent, e.a, delegation.VerifyOptions{Presenter: b.id, PresenterCert: b.chain[0]})
	if err != nil || pc[0].Cnf == nil {
		t.Fatalf("the exchanged token is not bound: %v", err)
	}
	// A sub-delegation: the subject token is the parent.
	sub := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token": {parent}, "subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
		"audience": {c.id.String()}, "scope": {"calendar:read"},
		"delegator_signature": {sign(b, delegation.Statement{Delegator: b.id.String(), Delegatee: c.id.String(), Principal: "alice", Scopes: []string{"calendar:read"}, Parent: pc[0].ID, ParentIssuer: pc[0].Issuer})}}
	if status, ans := e.exchange(&b, sub); status != 200 {
		t.Fatalf("sub exchange: %d %v", status, ans)
	}
	// OAuth errors.
	escalate := url.Values{}
	for k, v := range sub {
		escalate[k] = v
	}
	escalate.Set("scope", "payments:write")
	escalate.Set("delegator_signature", sign(b, delegation.Statement{Delegator: b.id.String(), Delegatee: c.id.String(), Principal: "alice", Scopes: []string{"payments:write"}, Parent: pc[0].ID, ParentIssuer: pc[0].Issuer}))
	for _, tc := range []struct {
		name   string
		from   *identity
		form   url.Values
		status int
		code   string
	}{
		{"wrong grant", &a, url.Values{"grant_type": {"client_credentials"}}, 400, "unsupported_grant_type"},
		// RFC 6749 §5.2: a missing parameter is invalid_request, and
		// (§3.1) one sent without a value is missing.
		{"no grant", &a, with(root, url.Values{"grant_type": nil}), 400, "invalid_request"},
		{"an empty grant", &a, with(root, url.Values{"grant_type": {""}}), 400, "invalid_request"},
		// Without an Authorization header, a failed client authentication
		// is a 400 (a 401 must name a scheme the client used).
		{"no client certificate", nil, root, 400, "invalid_client"},
		{"scope escalation", &b, escalate, 400, "invalid_scope"},
		// RFC 6749 §3.3: scopes are separated by spaces (SP) only: one
		// holding a no-break space is one scope, refused as it is in JSON,
		// but as a malformed scope is at a token endpoint (§5.2).
		{"scopes separated by a no-break space", &a, with(root, url.Values{"scope": {"calendar:read\u00a0mail:send"}}), 400, "invalid_scope"},
		{"a scope named twice, signed", &a, with(root, url.Values{"scope": {"calendar:read calendar:read"}, "delegator_signature": {sign(a, delegation.Statement{
			Delegator: a.id.String(), Delegatee: b.id.String(), Principal: "alice", Scopes: []string{"calendar:read", "calendar:read"}})}}),
			400, "invalid_scope"},
		// RFC 6749 §3.3: no default scope, so none is invalid_scope.
		{"no scope", &a, with(root, url.Values{"scope": nil}), 400, "invalid_scope"},
		// RFC 8693 §2.2.2: a subject_token invalid for any reason is
		// invalid_request; no token for the audience, invalid_target.
		{"parent held by someone else", &c, sub, 400, "invalid_request"},
		{"a subject token that is no JWT", &b, with(sub, url.Values{"subject_token": {"not.a.jwt"}}), 400, "invalid_request"},
		{"an audience not registered", &a, with(root, url.Values{"audience": {"spiffe://org-a.example/agent/nobody"}, "delegatee_x509_svid": nil}), 400, "invalid_target"},
		{"actor token of someone else", &b, with(root, nil), 400, "invalid_request"},
		{"actor_token_type without an actor_token", &a, with(root, url.Values{"actor_token": nil}), 400, "invalid_request"},
		// RFC 8693 §2.1: subject_token is required, whatever its type.
		{"no subject_token", &a, with(root, url.Values{"subject_token": nil}), 400, "invalid_request"},
		{"no subject_token, of type jwt", &b, with(sub, url.Values{"subject_token": nil}), 400, "invalid_request"},
		{"two audiences", &a, with(root, url.Values{"audience": {b.id.String(), c.id.String()}}), 400, "invalid_target"},
		{"an audience that is not a SPIFFE ID", &a, with(root, url.Values{"audience": {"https://api.example"}}), 400, "invalid_target"},
		// The refusal's entry keeps text: the log takes no invalid UTF-8.
		{"an audience that is not UTF-8", &a, with(root, url.Values{"audience": {"\xff"}}), 400, "invalid_target"},
		{"an audience clipped in the middle of a character", &a, with(root, url.Values{"audience": {strings.Repeat("€", 200)}}), 400, "invalid_target"},
		{"a resource indicator", &a, with(root, url.Values{"resource": {"https://elsewhere.example/api"}}), 400, "invalid_target"},
		{"a token type not issued", &a, with(root, url.Values{"requested_token_type": {"urn:ietf:params:oauth:token-type:saml2"}}), 400, "invalid_request"},
		{"a purpose with a terminal escape", &a, with(root, url.Values{"purpose": {"\x1b[31mred"}}), 400, "invalid_request"},
		{"a purpose with a bidirectional override", &a, with(root, url.Values{"purpose": {"pay \u202egnp.exe"}}), 400, "invalid_request"},
		{"a purpose that is not UTF-8, signed", &a, with(root, url.Values{"purpose": {"\xff\xfe"}, "delegator_signature": {sign(a, delegation.Statement{
			Delegator: a.id.String(), Delegatee: b.id.String(), Principal: "alice", Scopes: []string{"calendar:read", "mail:send"}, Purpose: "\xff\xfe"})}}),
			400, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused := len(e.auditOf("delegation.refused", ""))
			status, ans := e.exchange(tc.from, tc.form)
			if status != tc.status || ans["error"] != tc.code || ans["error_description"] == "" {
				t.Fatalf("%d %v, want %d %s", status, ans, tc.status, tc.code)
			}
			if d, _ := ans["error_description"].(string); strings.HasPrefix(tc.name, "no subject_token") && !strings.Contains(d, "subject_token is required") {
				t.Errorf("error_description %q, want it to name the missing subject_token", d)
			}
			// Every refusal of an authenticated agent is recorded (a
			// policy deny, the scope escalation, with its decision instead).
			if got := len(e.auditOf("delegation.refused", "")); tc.from != nil && !strings.Contains(tc.name, "grant") && tc.name != "scope escalation" && got != refused+1 {
				t.Errorf("%d delegation.refused entries after the request, %d before; want one more", got, refused)
			}
		})
	}
	// Parameters sent empty are as if omitted (RFC 6749 §3.1): the root
	// hop with an empty resource and an empty extension still exchanges.
	if status, ans := e.exchange(&a, with(root, url.Values{"resource": {""}, "purpose": {""}})); status != 200 {
		t.Errorf("empty parameters: %d %v, want them ignored", status, ans)
	}
	// An Authorization header (OAuth libraries send the client_id in
	// one) must name the certificate's client; a 401 names its scheme.
	// Answers are not cached (Cache-Control and Pragma, RFC 6749 §5.1),
	// and an error_description holds only the characters §5.2 allows.
	tokenWith := func(authorization string, form url.Values) (*http.Response, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", authorization)
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: e.client(a.chain, a.key).TLSConfig()}}
		defer hc.CloseIdleConnections()
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp, out
	}
	tokenAs := func(user string, form url.Values) (*http.Response, map[string]any) {
		return tokenWith("Basic "+base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(user)+":")), form)
	}
	refused := len(e.auditOf("delegation.refused", ""))
	if resp, out := tokenWith("Bearer abc", root); resp.StatusCode != 401 || out["error"] != "invalid_client" || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer ") {
		t.Errorf("an Authorization header of another scheme: %d %v, WWW-Authenticate %q; want 401 invalid_client naming Bearer (RFC 6749 §5.2)", resp.StatusCode, out, resp.Header.Get("WWW-Authenticate"))
	}
	if got := len(e.auditOf("delegation.refused", "")); got != refused+1 {
		t.Errorf("%d delegation.refused entries after an authenticated agent's request with a Bearer header, %d before; want it recorded", got, refused)
	}
	if resp, _ := tokenWith("Ba(d x", root); resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("a scheme that is no token: %d, WWW-Authenticate %q; want 401 naming Basic", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if resp, out := tokenAs(b.id.String(), root); resp.StatusCode != 401 || out["error"] != "invalid_client" || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("an Authorization header naming another client: %d %v, WWW-Authenticate %q; want 401 invalid_client naming Basic", resp.StatusCode, out, resp.Header.Get("WWW-Authenticate"))
	}
	if resp, out := tokenAs(a.id.String(), root); resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("Pragma") != "no-cache" {
		t.Errorf("an Authorization header naming the client: %d %v, Cache-Control %q, Pragma %q; want 200, no-store, no-cache", resp.StatusCode, out, resp.Header.Get("Cache-Control"), resp.Header.Get("Pragma"))
	}
	if resp, out := tokenAs(a.id.String(), with(root, url.Values{"audience": {"spiffe://org-a.example/agent/\"é" + strings.Repeat("x", 2000)}})); resp.StatusCode != 400 {
		t.Errorf("an odd audience: %d %v", resp.StatusCode, out)
	} else if d, _ := out["error_description"].(string); len(d) > 512 || strings.ContainsFunc(d, func(r rune) bool { return r < 0x20 || r == '"' || r == '\\' || r > 0x7e }) {
		t.Errorf("error_description %q: longer than 512 bytes, or characters RFC 6749 §5.2 does not allow", d)
	}
	// A body over the limit is 413 body-too-large, as everywhere.
	big := with(root, url.Values{"purpose": {strings.Repeat("p", 70<<10)}})
	if resp, err := e.rawClient(a.chain, a.key).PostForm(e.url+"/v1/token", big); err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("a body over the limit: %v %v, want 413", resp, err)
	} else {
		resp.Body.Close()
	}
	// Media types are case-insensitive (RFC 9110 §8.3.1).
	req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/token", strings.NewReader(root.Encode()))
	req.Header.Set("Content-Type", "Application/X-WWW-Form-URLEncoded; charset=UTF-8")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: e.client(a.chain, a.key).TLSConfig()}}
	defer hc.CloseIdleConnections()
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("a form with its media type in capitals: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if rt, ok := md["response_types_supported"].([]any); !ok || len(rt) != 0 {
		t.Errorf("metadata response_types_supported = %v, want [] (RFC 8414 §2)", md["response_types_supported"])
	}
}

// with is a copy of form with the values of set (a nil value removes
// the parameter).
func with(form, set url.Values) url.Values {
	f := url.Values{}
	for k, v := range form {
		f[k] = v
	}
	for k, v := range set {
		if v == nil {
			delete(f, k)
		} else {
			f[k] = v
		}
	}
	return f
}

// TestDelegationTokensAreNotSVIDs: a delegation token names its principal
// in sub; no JWT-SVID validator may take it for an SVID of that name.
func TestDelegationTokensAreNotSVIDs(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	tok, p := e.delegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice"})
	if p != nil {
		t.Fatal(p)
	}
	if _, err := jwtsvid.ParseAndValidate(tok, e.a, []string{b.id.String()}); err == nil {
		t.Fatal("a delegation token validated as a JWT-SVID")
	}
	for name, r := range map[string]delegateReq{
		"a SPIFFE ID as principal":      {delegatee: b, scopes: []string{"calendar:read"}, principal: "spiffe://org-a.example/agent/admin-bot"},
		"the trust domain as delegatee": {delegateeID: "spiffe://org-a.example", scopes: []string{"calendar:read"}, principal: "alice"},
		"a node as delegatee":           {delegateeID: "spiffe://org-a.example/node/join/x", scopes: []string{"calendar:read"}, principal: "alice"},
		"an agent never registered":     {delegateeID: "spiffe://org-a.example/agent/never-registered", scopes: []string{"calendar:read"}, principal: "alice"},
		"a scope with a Unicode space":  {delegatee: b, scopes: []string{"calendar:read\u00a0mail:send"}, principal: "alice"},
	} {
		if _, p := e.delegate(a, r); p == nil || p.Name() != "invalid-request" {
			t.Errorf("%s: %+v", name, p)
		}
	}
}

// TestRevocationReachesHopsBelowAnotherAuthoritysHop: in a chain
// org-a → org-b → org-a, revoking org-a's root revokes org-a's own hop
// below org-b's, listed in the answer and the record, at once.
func TestRevocationReachesHopsBelowAnotherAuthoritysHop(t *testing.T) {
	orgA, orgB := federatedPair(t)
	helper, worker, t2 := backThroughOrgB(t, orgA, orgB)
	t3 := orgA.mustDelegate(helper, delegateReq{delegatee: worker, scopes: []string{"calendar:read"}, parent: t2})
	chain, err := delegation.Verify(t3, orgA.a, delegation.VerifyOptions{AnyHolder: true})
	if err != nil || len(chain) != 3 || chain[2].Issuer != "spiffe://org-a.example" {
		t.Fatalf("chain: %v %v", chain, err)
	}
	var out struct{ Revoked []string }
	if err := orgA.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"delegation_id": chain[0].ID, "reason": "withdrawn"}, &out); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(out.Revoked, chain[2].ID) {
		t.Fatalf("revoking %s revoked %v, not org-a's hop %s below org-b's", chain[0].ID, out.Revoked, chain[2].ID)
	}
	var st map[string]any
	if err := orgA.client(nil, nil).Do(ctxT(t), http.MethodGet, "/v1/delegations/"+chain[2].ID+"/status", nil, &st); err != nil ||
		st["status"] != "revoked" || st["reason"] != "withdrawn" {
		t.Fatalf("status of org-a's hop below the revoked root: %v %v", st, err)
	}
}

// backThroughOrgB issues the chain user → planner (org-a) → booker
// (org-b) → helper (org-a), for alice, and returns helper, worker (an
// agent of org-a to extend it to) and org-b's hop's token t2.
func backThroughOrgB(t *testing.T, orgA, orgB *env) (helper, worker identity, t2 string) {
	t.Helper()
	planner := orgA.agentWithScopes("planner", "calendar:read")
	booker := orgB.agentWithScopes("booker")
	helper, worker = orgA.agentWithScopes("helper"), orgA.agentWithScopes("worker")
	t1 := orgA.mustDelegate(planner, delegateReq{delegatee: booker, scopes: []string{"calendar:read"}, principal: "alice"})
	t2 = orgB.mustDelegate(booker, delegateReq{delegatee: helper, scopes: []string{"calendar:read"}, parent: t1})
	return helper, worker, t2
}

// crossHops are org-b's hop booker → helper, for alice (its token t1),
// and org-a's hop helper → worker below it (chain: its verified chain).
type crossHops struct {
	booker, helper, worker identity
	t1                     string
	chain                  []*delegation.Claims
}

// belowAnotherAuthority issues the crossHops.
func belowAnotherAuthority(t *testing.T, orgA, orgB *env) crossHops {
	t.Helper()
	h := crossHops{booker: orgB.agentWithScopes("booker", "calendar:read"), helper: orgA.agentWithScopes("helper"), worker: orgA.agentWithScopes("worker")}
	h.t1 = orgB.mustDelegate(h.booker, delegateReq{delegatee: h.helper, scopes: []string{"calendar:read"}, principal: "alice"})
	t2 := orgA.mustDelegate(h.helper, delegateReq{delegatee: h.worker, scopes: []string{"calendar:read"}, parent: h.t1})
	var err error
	if h.chain, err = delegation.Verify(t2, orgA.a, delegation.VerifyOptions{AnyHolder: true}); err != nil || len(h.chain) != 2 {
		t.Fatalf("chain: %v %v", h.chain, err)
	}
	return h
}

// TestRevokingAPartyAboveReachesHopsIssuedHere: org-b's hop booker →
// helper, then org-a's helper → worker below it; revoking booker at
// org-a revokes org-a's hop (booker is a party above it), in the answer
// and in its status, as extending it is already refused.
func TestRevokingAPartyAboveReachesHopsIssuedHere(t *testing.T) {
	orgA, orgB := federatedPair(t)
	hops := belowAnotherAuthority(t, orgA, orgB)
	booker, chain := hops.booker, hops.chain
	var out struct{ Revoked []string }
	if err := orgA.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"spiffe_id": booker.id.String(), "reason": "compromised"}, &out); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out.Revoked, []string{chain[1].ID}) {
		t.Fatalf("revoking %s revoked %v, want org-a's hop %s below its hop", booker.id, out.Revoked, chain[1].ID)
	}
	var st map[string]any
	if err := orgA.client(nil, nil).Do(ctxT(t), http.MethodGet, "/v1/delegations/"+chain[1].ID+"/status", nil, &st); err != nil ||
		st["status"] != "revoked" || st["reason"] != "compromised" {
		t.Fatalf("status of org-a's hop below the revoked party's: %v %v", st, err)
	}
}

// TestDelegateeMustBeAnAgent: an administrator or auditor of this trust
// domain is not a delegatee (nor ever an agent ID: see TestConfigValidate).
func TestDelegateeMustBeAnAgent(t *testing.T) {
	e := start(t, "org-a.example", func(c *authority.Config) {
		c.Admins = []string{"spiffe://org-a.example/team/ops"}
		c.Audit.Auditors = []string{"spiffe://org-a.example/auditor/aud"}
	})
	a := e.agentWithScopes("planner", "calendar:read")
	for _, id := range []string{"spiffe://org-a.example/team/ops", "spiffe://org-a.example/auditor/aud", "spiffe://org-a.example/mandate/admin"} {
		if _, p := e.delegate(a, delegateReq{delegateeID: id, scopes: []string{"calendar:read"}, principal: "alice"}); p == nil || p.Name() != "invalid-request" {
			t.Errorf("delegating to %s: %+v, want invalid-request", id, p)
		}
	}
}

// A delegatee's SPIFFE ID is at most 2048 bytes (the SPIFFE ID
// standard's bound), as an ID revoked by POST /v1/admin/revocations is:
// a hop to a federated workload of a longer ID would be one its
// delegatee's revocation could not reach. On both endpoints.
func TestDelegateeIDWithinTheStandardsBound(t *testing.T) {
	orgA, _ := federatedPair(t)
	a := orgA.agentWithScopes("a", "calendar:read")
	idOf := func(n int) string {
		prefix := "spiffe://org-b.example/agent/"
		return prefix + strings.Repeat("x", n-len(prefix))
	}
	for _, c := range []struct {
		n      int
		issued bool
	}{{2048, true}, {2049, false}, {4096, false}} {
		id := idOf(c.n)
		ans, p := orgA.delegateAnswer(a, delegateReq{delegateeID: id, scopes: []string{"calendar:read"}, principal: "alice"})
		if !c.issued {
			if p == nil || p.Name() != "invalid-request" || !strings.Contains(p.Detail, "at most 2048 bytes") {
				t.Errorf("a hop to a delegatee of %d bytes: %+v, want invalid-request", c.n, p)
			}
			sig, err := delegation.SignStatement(delegation.Statement{Delegator: a.id.String(), Delegatee: id, Principal: "alice",
				Scopes: []string{"calendar:read"}}, a.key, a.chain)
			if err != nil {
				t.Fatal(err)
			}
			status, out := orgA.exchange(&a, url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token": {"alice"}, "subject_token_type": {"urn:mandate:params:oauth:token-type:principal"},
				"audience": {id}, "scope": {"calendar:read"}, "delegator_signature": {sig}})
			if status != http.StatusBadRequest || out["error"] != "invalid_target" {
				t.Errorf("token exchange for a delegatee of %d bytes: %d %v, want 400 invalid_target", c.n, status, out["error"])
			}
			continue
		}
		if p != nil {
			t.Fatalf("a hop to a delegatee of %d bytes: %+v", c.n, p)
		}
		var out struct{ Revoked []string }
		if err := orgA.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"spiffe_id": id, "reason": "gone"}, &out); err != nil ||
			!slices.Equal(out.Revoked, []string{ans.ID}) {
			t.Errorf("revoking the delegatee of %d bytes: %v, %v; want [%s]", c.n, out.Revoked, err, ans.ID)
		}
	}
}

// slowProxy forwards TCP connections to target (https://host:port),
// holding each chunk of the request for delay (TLS passes through: the
// peer's SVID still authenticates it), and returns its https URL.
func slowProxy(t *testing.T, target string, delay time.Duration) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", strings.TrimPrefix(target, "https://"))
				if err != nil {
					return
				}
				defer u.Close()
				go func() {
					buf := make([]byte, 32<<10)
					for {
						n, err := c.Read(buf)
						if n > 0 {
							time.Sleep(delay)
							_, _ = u.Write(buf[:n])
						}
						if err != nil {
							return
						}
					}
				}()
				_, _ = io.Copy(c, u)
			}()
		}
	}()
	return "https://" + ln.Addr().String()
}

// TestStatusNotFailedByAnAbandonedRequest: the status endpoint asks a
// hop's issuer once for every caller asking meanwhile; a public caller
// that hangs up before the answer does not make it a failure (503) for
// the next.
func TestStatusNotFailedByAnAbandonedRequest(t *testing.T) {
	orgA, orgB := start(t, "org-a.example"), start(t, "org-b.example")
	orgB.federate(orgA)
	orgA.federateVia(orgB, slowProxy(t, orgB.url, 150*time.Millisecond))
	chain := belowAnotherAuthority(t, orgA, orgB).chain
	status := func(timeout time.Duration) int {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, orgA.url+"/v1/delegations/"+chain[1].ID+"/status", nil)
		resp, err := orgA.rawClient(nil, nil).Do(req)
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	status(100 * time.Millisecond) // asks, and hangs up before org-b answers
	if got := status(10 * time.Second); got != http.StatusOK {
		t.Fatalf("status right after an abandoned request: %d, want 200 (org-b answers)", got)
	}
}

// TestRevocationInput: a revocation's reason is text without control
// characters (a status answer shows it), and its SPIFFE ID within the
// SPIFFE specification's 2048 bytes.
func TestRevocationInput(t *testing.T) {
	e := start(t, "org-a.example")
	for name, body := range map[string]map[string]string{
		"a reason with a terminal escape": {"spiffe_id": "spiffe://org-a.example/agent/x", "reason": "\x1b]0;owned\x07"},
		"a SPIFFE ID over 2048 bytes":     {"spiffe_id": "spiffe://org-a.example/agent/" + strings.Repeat("x", 33<<10), "reason": "r"},
		// IDs no hop names as a party: revoked for ever, they would
		// revoke nothing.
		"this trust domain's ID":                 {"spiffe_id": "spiffe://org-a.example", "reason": "r"},
		"another trust domain's ID":              {"spiffe_id": "spiffe://org-b.example", "reason": "r"},
		"an ID here neither an agent nor a node": {"spiffe_id": "spiffe://org-a.example/agnet/x", "reason": "r"},
		"the authority's own ID":                 {"spiffe_id": "spiffe://org-a.example/mandate/server", "reason": "r"},
		// A node's ID spelt otherwise than attestation spells it names
		// no node: its hops would stand.
		"a join node's ID with its token id in upper case": {"spiffe_id": upperNode(t, e), "reason": "r"},
		"a TPM node's ID with its EK hash in upper case":   {"spiffe_id": "spiffe://org-a.example/node/tpm/" + strings.Repeat("0123456789ABCDEF", 4), "reason": "r"},
		"a node ID of no attestation method":               {"spiffe_id": "spiffe://org-a.example/node/n1", "reason": "r"},
		"a node ID with a segment more":                    {"spiffe_id": e.joinNode().id.String() + "/x", "reason": "r"},
	} {
		err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", body, nil)
		var p *client.Problem
		if !errors.As(err, &p) || p.Name() != "invalid-request" {
			t.Errorf("%s: %v, want invalid-request", name, err)
		}
	}
	if revoked, err := e.admin.ListRevokedIDs(ctxT(t)); err != nil || len(revoked) != 0 {
		t.Errorf("revoked IDs after refused revocations: %v, %v; want none", revoked, err)
	}
	// A workload of another trust domain may be a party (a delegatee, or
	// a hop above one issued here).
	if err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"spiffe_id": "spiffe://org-b.example/svc/x", "reason": "r"}, nil); err != nil {
		t.Errorf("revoking another trust domain's workload: %v", err)
	}
	// A node not attested yet may be revoked ahead of it.
	if err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"spiffe_id": "spiffe://org-a.example/node/tpm/" + strings.Repeat("0123456789abcdef", 4), "reason": "r"}, nil); err != nil {
		t.Errorf("revoking a TPM node not attested yet: %v", err)
	}
}

// upperNode is the ID of a node joined to e with its join token's id in
// upper case: another spelling of it (a token id of digits alone, which
// upper case leaves as it is, is passed over for another node's).
func upperNode(t *testing.T, e *env) string {
	t.Helper()
	for {
		dir, last := path.Split(e.joinNode().id.String())
		if up := strings.ToUpper(last); up != last {
			return dir + up
		}
	}
}

// TestDelegationBodyFloor: an authority whose http.max_body_bytes is set
// low still takes the requests for the deepest hops of a chain it issues
// (each carries its parent token), over JSON and the token endpoint;
// other endpoints keep the configured limit.
func TestDelegationBodyFloor(t *testing.T) {
	e := start(t, "org-a.example", func(c *authority.Config) { c.HTTP.MaxBodyBytes = 1024 })
	a, b, c, d := e.agentWithScopes("a", "calendar:read"), e.agentWithScopes("b"), e.agentWithScopes("c"), e.agentWithScopes("d")
	t1 := e.mustDelegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice@org-a.example", bind: true})
	t2 := e.mustDelegate(b, delegateReq{delegatee: c, scopes: []string{"calendar:read"}, parent: t1, bind: true})
	if len(t2) <= 1024 {
		t.Fatalf("a depth-2 token of %d bytes: the next request would fit the configured limit anyway", len(t2))
	}
	e.mustDelegate(c, delegateReq{delegatee: d, scopes: []string{"calendar:read"}, parent: t2, bind: true})

	// The same hop through the token endpoint.
	pc, err := delegation.Verify(t2, e.a, delegation.VerifyOptions{Presenter: c.id, PresenterCert: c.chain[0]})
	if err != nil {
		t.Fatal(err)
	}
	st := delegation.Statement{Delegator: c.id.String(), Delegatee: d.id.String(), Principal: "alice@org-a.example", Scopes: []string{"calendar:read"},
		Parent: pc[1].ID, ParentIssuer: pc[1].Issuer}
	sig, err := delegation.SignStatement(st, c.key, c.chain)
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {t2},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"}, "audience": {d.id.String()}, "scope": {"calendar:read"},
		"delegator_signature": {sig}, "delegatee_x509_svid": {string(credfile.EncodeCertsPEM(d.chain))}}
	if status, ans := e.exchange(&c, form); status != http.StatusOK {
		t.Fatalf("a token exchange of %d bytes: %d %v", len(form.Encode()), status, ans)
	}
	// Over the floor, and another endpoint over the configured limit: 413.
	big := map[string]any{"delegatee": d.id.String(), "scopes": []string{"calendar:read"}, "parent_token": t2, "purpose": strings.Repeat("p", 2*delegation.MaxTokenSize)}
	var p *client.Problem
	if err := e.client(c.chain, c.key).Do(ctxT(t), http.MethodPost, "/v1/delegations", big, nil); !errors.As(err, &p) || p.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("a delegation request over the floor: %v, want 413", err)
	}
	agent := map[string]any{"spiffe_id": "spiffe://org-a.example/agent/" + strings.Repeat("x", 2048)}
	if err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/agents", agent, nil); !errors.As(err, &p) || p.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("an admin request over the configured limit: %v, want 413", err)
	}
}

// The issuer caps a hop's expiry at the not_after its delegator signed
// (the default ten minutes would outlast it), and refuses a not_after
// that has passed.
func TestDelegationNotAfter(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	notAfter := time.Now().Add(2 * time.Minute).Unix()
	tok := e.mustDelegate(a, delegateReq{delegatee: b, principal: "alice", scopes: []string{"calendar:read"}, notAfter: notAfter})
	chain, err := delegation.Verify(tok, e.a, delegation.VerifyOptions{Presenter: b.id})
	if err != nil || chain[0].Expiry != notAfter {
		t.Fatalf("Verify = %v (exp %v), want the hop to expire at the signed not_after %d", err, chain, notAfter)
	}
	if _, p := e.delegate(a, delegateReq{delegatee: b, principal: "alice", scopes: []string{"calendar:read"}, notAfter: time.Now().Add(-time.Minute).Unix()}); p == nil || p.Name() != "invalid-request" {
		t.Fatalf("a not_after that has passed: %v, want invalid-request", p)
	}
	// A statement that names the delegatee's certificate (cnf): the hop is
	// bound to it, and without that certificate it is refused.
	tok = e.mustDelegate(a, delegateReq{delegatee: b, principal: "alice", scopes: []string{"calendar:read"}, signCnf: true, bind: true})
	if chain, err := delegation.Verify(tok, e.a, delegation.VerifyOptions{Presenter: b.id, PresenterCert: b.chain[0]}); err != nil ||
		chain[0].Cnf == nil || chain[0].Cnf.X5tS256 != delegation.Thumbprint(b.chain[0]) {
		t.Fatalf("Verify = %v, want a hop bound to the signed certificate", err)
	}
	if _, p := e.delegate(a, delegateReq{delegatee: b, principal: "alice", scopes: []string{"calendar:read"}, signCnf: true}); p == nil || p.Name() != "invalid-request" {
		t.Fatalf("a signed cnf without the certificate: %v, want invalid-request", p)
	}
}

// A hop that cannot be issued is refused as what it is, before any
// policy decides it: a parent expired within the verifiers' clock leeway
// is delegation-expired (not a malformed token after the policy allowed
// it), and no policy decision is logged for it.
func TestExpiredParentRefusedBeforePolicy(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	c := e.agentWithScopes("c")
	// A parent that ends a minute on: issued however long its request
	// takes (one ending within a second or two could have passed before
	// the authority read it).
	parent := e.mustDelegate(a, delegateReq{delegatee: b, principal: "alice", scopes: []string{"calendar:read"}, notAfter: time.Now().Add(time.Minute).Unix()})
	decisions := len(e.auditOf("policy.decision", ""))
	e.skew.Store(int64(68 * time.Second)) // the parent expired 8 s ago
	if _, p := e.delegate(b, delegateReq{delegatee: c, parent: parent, scopes: []string{"calendar:read"}}); p == nil || p.Name() != "delegation-expired" {
		t.Fatalf("a sub-delegation of a parent expired 8 s ago: %+v, want 403 delegation-expired", p)
	}
	if n := len(e.auditOf("policy.decision", "")); n != decisions {
		t.Errorf("policy decisions logged: %d, want %d (none for a hop that cannot be issued)", n, decisions)
	}
}

// A hop of many long scopes that escape in its audit entry (granted,
// asked, in the delegator's statement and in the policy's input: each
// written several times), up to what a request carries, is issued and
// recorded: never a server failure after the token was signed. (Beyond,
// the entry would leave out the policy's input: TestRecordOmittingInput.)
func TestHopOfManyLongScopesIsRecorded(t *testing.T) {
	e := start(t, "org-a.example")
	var granted []string
	for i := 0; i < 64; i++ {
		granted = append(granted, fmt.Sprintf("%s%03d", strings.Repeat(`"`, 250), i))
	}
	a := e.agentWithScopes("a", granted...)
	b := e.agentWithScopes("b")
	for _, n := range []int{1, 17} {
		ans, p := e.delegateAnswer(a, delegateReq{delegatee: b, scopes: granted[:n], principal: "alice"})
		if p != nil {
			t.Fatalf("%d long scopes: %+v", n, p)
		}
		if _, err := delegation.Verify(ans.Token, e.a, delegation.VerifyOptions{Presenter: b.id}); err != nil {
			t.Fatalf("%d long scopes: the token: %v", n, err)
		}
	}
	if issued := e.auditOf("delegation.issued", b.id.String()); len(issued) != 2 {
		t.Fatalf("%d delegation.issued entries, want 2", len(issued))
	}
	// More than a delegator's statement holds is refused as such.
	if _, p := e.delegate(a, delegateReq{delegatee: b, scopes: granted[:30], principal: "alice"}); p == nil || p.Status != 400 {
		t.Fatalf("30 long scopes: %+v, want 400", p)
	}
}

// policyDirDeciding is a policy directory of the shipped policies, but
// for a delegation policy whose decision is the Rego term decision.
func policyDirDeciding(t *testing.T, decision string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"issuance.rego", "authzen.rego", "data.json"} {
		b, err := policies.FS.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rego := "package mandate.delegation\n\nimport rego.v1\n\ndecision := " + decision + "\n"
	if err := os.WriteFile(filepath.Join(dir, "delegation.rego"), []byte(rego), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A hop the policy allows and Mandate then refuses (a scope beyond those
// granted, which no policy may allow) leaves its allow in the log, a
// policy.decision entry of its own, as every decision is recorded.
func TestAllowedHopRefusedAfterwardsIsRecorded(t *testing.T) {
	dir := policyDirDeciding(t, `{"allow": true}`)
	e := start(t, "org-a.example", func(c *authority.Config) { c.Policy.Dir = dir })
	planner := e.agentWithScopes("planner", "calendar:read")
	booker := e.agentWithScopes("booker", "calendar:read")
	_, p := e.delegate(planner, delegateReq{delegatee: booker, scopes: []string{"payments:write"}, principal: "alice@example.com"})
	if p == nil || p.Status != http.StatusForbidden || !strings.HasSuffix(p.Type, "scope-not-granted") {
		t.Fatalf("a scope not granted, allowed by the policy: %+v", p)
	}
	got := e.auditOf("policy.decision", booker.id.String())
	if len(got) != 1 || got[0]["allow"] != true || got[0]["point"] != "delegation" {
		t.Fatalf("policy.decision entries of the refused hop: %v, want its allow", got)
	}
}

// A hop the policy denies is answered with the policy's reasons as an
// array, even when the policy gave none: clients read `reasons` from
// every policy-denied problem.
func TestDenyWithoutReasonsAnswersAnEmptyArray(t *testing.T) {
	for _, tc := range []struct{ name, decision string }{
		{"no reasons key", `{"allow": false}`},
		{"empty reasons", `{"allow": false, "reasons": []}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := policyDirDeciding(t, tc.decision)
			e := start(t, "org-a.example", func(c *authority.Config) { c.Policy.Dir = dir })
			a := e.agentWithScopes("a", "calendar:read")
			b := e.agentWithScopes("b")
			_, p := e.delegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice"})
			if p == nil || p.Status != http.StatusForbidden || p.Name() != "policy-denied" {
				t.Fatalf("a hop the policy denies: %+v, want 403 policy-denied", p)
			}
			if p.Reasons == nil || len(p.Reasons) != 0 || p.DecisionID == "" {
				t.Errorf("reasons %#v, decision %q: want an empty array and the decision's id", p.Reasons, p.DecisionID)
			}
		})
	}
}

// A delegator whose host node is banned is refused whatever the policy
// says, as its SVIDs are: node-banned at POST /v1/delegations,
// unauthorized_client at POST /v1/token.
func TestDelegatorOnABannedNodeIsRefused(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	req := delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice"}
	e.mustDelegate(a, req)
	host, err := authority.HostNode(a.chain[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.BanNode(ctxT(t), host.String(), "compromised"); err != nil {
		t.Fatal(err)
	}
	if _, p := e.delegate(a, req); p == nil || problemName(p) != "node-banned" {
		t.Errorf("POST /v1/delegations by an agent on a banned node = %+v, want node-banned", p)
	}
	if status, ans := e.exchangeRoot(a, b, nil); status != http.StatusBadRequest || ans["error"] != "unauthorized_client" {
		t.Errorf("POST /v1/token by an agent on a banned node = %d %v, want 400 unauthorized_client", status, ans)
	}
}

// registrationOf is id's registration, as the admin API lists it.
func (e *env) registrationOf(id spiffeid.ID) client.Agent {
	e.t.Helper()
	regs, err := e.admin.ListAgents(ctxT(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	i := slices.IndexFunc(regs, func(r client.Agent) bool { return r.SPIFFEID == id.String() })
	if i < 0 {
		e.t.Fatalf("%s is not among the registrations", id)
	}
	return regs[i]
}

// exchangeRoot asks the token endpoint, as from, for a root hop to to
// for alice with calendar:read, signed by from, with the extra form
// values given.
func (e *env) exchangeRoot(from, to identity, extra url.Values) (int, map[string]any) {
	e.t.Helper()
	sig, err := delegation.SignStatement(delegation.Statement{Delegator: from.id.String(), Delegatee: to.id.String(), Principal: "alice",
		Scopes: []string{"calendar:read"}}, from.key, from.chain)
	if err != nil {
		e.t.Fatal(err)
	}
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token": {"alice"}, "subject_token_type": {"urn:mandate:params:oauth:token-type:principal"},
		"audience": {to.id.String()}, "scope": {"calendar:read"}, "delegator_signature": {sig}}
	for k, v := range extra {
		form[k] = v
	}
	return e.exchange(&from, form)
}

// A hop is made only as the hosting rule of the parties' SVIDs allows
// now: a delegator delegates only from a node its registration lets it
// run on, and a hop is bound only to an X509-SVID of a node the
// delegatee's registration lets it run on. An agent moved to another
// node, or made to require a hardware-attested node, neither delegates
// with the SVID it got before nor gets a hop bound to it (on the API or
// the token endpoint), for that key would get no credentials there;
// moved back, it does again.
func TestHostingRuleHoldsForBothParties(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	other := e.joinNode()
	ctx := ctxT(t)
	for _, party := range []struct {
		name        string
		moved       identity
		bind        bool
		problem     string // and, when set, words of its detail
		detail      string
		oauthError  string
		oauthFields url.Values
	}{
		{name: "delegator", moved: a, problem: "agent-not-allowed-on-node", oauthError: "unauthorized_client"},
		{name: "bound delegatee", moved: b, bind: true, problem: "invalid-request", detail: "no longer lets it run on", oauthError: "invalid_target",
			oauthFields: url.Values{"delegatee_x509_svid": {string(credfile.EncodeCertsPEM(b.chain))}}},
	} {
		req := delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice", bind: party.bind}
		e.mustDelegate(a, req)
		reg := e.registrationOf(party.moved.id)
		for _, tc := range []struct {
			name   string
			change func(*client.Agent)
		}{
			{"moved to another node", func(r *client.Agent) { r.NodeIDs = []string{other.id.String()} }},
			{"requires a hardware-attested node", func(r *client.Agent) { r.RequireHardwareAttestation = true }},
		} {
			t.Run(party.name+"/"+tc.name, func(t *testing.T) {
				changed := reg
				changed.NodeIDs = slices.Clone(reg.NodeIDs)
				tc.change(&changed)
				if _, err := e.admin.UpdateAgent(ctx, reg.ID, &changed); err != nil {
					t.Fatal(err)
				}
				if _, p := e.delegate(a, req); p == nil || problemName(p) != party.problem || !strings.Contains(p.Detail, party.detail) {
					t.Errorf("POST /v1/delegations = %+v, want %s (%q)", p, party.problem, party.detail)
				}
				if status, ans := e.exchangeRoot(a, b, party.oauthFields); status != http.StatusBadRequest || ans["error"] != party.oauthError {
					t.Errorf("POST /v1/token = %d %v, want 400 %s", status, ans, party.oauthError)
				}
				if _, err := e.admin.UpdateAgent(ctx, reg.ID, &reg); err != nil {
					t.Fatal(err)
				}
				e.mustDelegate(a, req)
			})
		}
	}
}

// A hop bound to an SVID of a node its delegatee's registration no
// longer allows is refused before the policy is asked, the node banned
// or not: the ban is the policy's to judge, not the registration.
func TestHopNotBoundToAnSVIDOfABannedNodeTheDelegateeMayNotRunOn(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	req := delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice", bind: true}
	e.mustDelegate(a, req)
	ctx := ctxT(t)
	host, err := authority.HostNode(b.chain[0])
	if err != nil {
		t.Fatal(err)
	}
	moved := e.registrationOf(b.id)
	moved.NodeIDs = []string{e.joinNode().id.String()}
	if _, err := e.admin.UpdateAgent(ctx, moved.ID, &moved); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.BanNode(ctx, host.String(), "compromised"); err != nil {
		t.Fatal(err)
	}
	if _, p := e.delegate(a, req); p == nil || problemName(p) != "invalid-request" || !strings.Contains(p.Detail, "no longer lets it run on") {
		t.Errorf("POST /v1/delegations bound to an SVID of a banned node the delegatee may no longer run on = %+v, want invalid-request", p)
	}
}

// A hop is bound to an X509-SVID of its delegatee (of this trust domain)
// only when that SVID names the node it was issued on, as every agent
// SVID this authority issues does: one that names none (made by another
// CA the bundle's root vouches for, here the upstream CA itself) is
// refused, on the API and the token endpoint, rather than bound with no
// node checked against the delegatee's registration.
func TestHopNotBoundToAnSVIDNamingNoNode(t *testing.T) {
	up := newTestCA(t, "Org A Root CA")
	certFile, keyFile := up.files(t)
	e := start(t, "org-a.example", func(c *authority.Config) {
		c.CA.UpstreamCertFile, c.CA.UpstreamKeyFile = certFile, keyFile
	})
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	e.mustDelegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice", bind: true})
	chain, key := up.leaf(t, b.id.String(), time.Now().Add(time.Hour))
	elsewhere := identity{id: b.id, chain: chain, key: key}
	req := delegateReq{delegatee: elsewhere, scopes: []string{"calendar:read"}, principal: "alice", bind: true}
	if _, p := e.delegate(a, req); p == nil || problemName(p) != "invalid-request" || !strings.Contains(p.Detail, "names no host node") {
		t.Errorf("POST /v1/delegations bound to an SVID of the delegatee that names no node = %+v, want invalid-request", p)
	}
	form := url.Values{"delegatee_x509_svid": {string(credfile.EncodeCertsPEM(chain))}}
	if status, ans := e.exchangeRoot(a, b, form); status != http.StatusBadRequest || ans["error"] != "invalid_target" {
		t.Errorf("POST /v1/token bound to an SVID of the delegatee that names no node = %d %v, want 400 invalid_target", status, ans)
	}
}

// A delegator signs its hop with an SVID of the node it delegates from:
// one signed with its SVID on another of its nodes is refused (the hop
// records the node it was delegated from, and revoking that node must
// reach it), as one signed with its SVID on the same node is not.
func TestStatementSignedOnAnotherNodeIsRefused(t *testing.T) {
	e := start(t, "org-a.example")
	b := e.agentWithScopes("b")
	n1, n2 := e.joinNode(), e.joinNode()
	id := spiffeid.RequireFromSegments(e.td, "agent", "a").String()
	if _, err := e.admin.CreateAgent(ctxT(t), &client.Agent{SPIFFEID: id, NodeIDs: []string{n1.id.String(), n2.id.String()}, Scopes: []string{"calendar:read"}}); err != nil {
		t.Fatal(err)
	}
	on1, again1, on2 := e.agentSVID(n1, id), e.agentSVID(n1, id), e.agentSVID(n2, id)
	req := delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice"}
	req.signer = &again1
	e.mustDelegate(on1, req)
	req.signer = &on2
	if _, p := e.delegate(on1, req); p == nil || problemName(p) != "delegator-signature-invalid" {
		t.Errorf("a hop from %s signed with the delegator's SVID on %s = %+v, want delegator-signature-invalid", n1.id, n2.id, p)
	}
}

// A revocation committed in the very commit that makes a hop durable
// revokes it, whichever of the two entries comes first in that commit
// (the revocation first: the hop's record is born revoked; the hop
// first: the revocation's cascade finds its record): either way the
// token is not handed out. The commit is held open (a long group commit
// wait and an expected append that never comes) until both entries are
// queued, in the order of the case.
func TestRevocationInTheHopsOwnCommit(t *testing.T) {
	cfg := authority.Config{TrustDomain: "org-a.example", DataDir: t.TempDir(), Listen: "127.0.0.1:0"}
	cfg.Policy.EvalTimeout = authority.Duration(10 * time.Second)
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// Beyond what a configuration may say: the commit waits for the test.
	wait := authority.Duration(time.Hour)
	cfg.Audit.GroupCommitWait = &wait
	e := run(t, cfg)
	for i, tc := range []struct {
		name       string
		hopFirst   bool
		revokeWhat string // "parent" (its delegation id) or "delegator" (a SPIFFE ID)
	}{
		{"the revocation of the parent first", false, "parent"},
		{"the hop first, then the revocation of its parent", true, "parent"},
		{"the revocation of the delegator first", false, "delegator"},
		{"the hop first, then the revocation of its delegator", true, "delegator"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := e.agentWithScopes(fmt.Sprintf("a%d", i), "calendar:read")
			b := e.agentWithScopes(fmt.Sprintf("b%d", i))
			c := e.agentWithScopes(fmt.Sprintf("c%d", i))
			parent := e.mustDelegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice"})
			chain, err := delegation.Verify(parent, e.a, delegation.VerifyOptions{AnyHolder: true})
			if err != nil {
				t.Fatal(err)
			}
			revocation := map[string]string{"delegation_id": chain[0].ID, "reason": "task cancelled"}
			if tc.revokeWhat == "delegator" {
				revocation = map[string]string{"spiffe_id": b.id.String(), "reason": "compromised"}
			}
			// Held: no commit until both entries are queued.
			_, release := e.a.ExpectAudit(context.Background())
			defer release()
			var ans *delegateAnswer
			var p *client.Problem
			hopDone := make(chan struct{})
			issue := func() {
				go func() {
					defer close(hopDone)
					ans, p = e.delegateAnswer(b, delegateReq{delegatee: c, scopes: []string{"calendar:read"}, parent: parent})
				}()
				waitAppending(t, "authority.(*Authority).delegate(")
			}
			revoked := make(chan error, 1)
			revoke := func() {
				go func() {
					revoked <- e.admin.Do(context.Background(), http.MethodPost, "/v1/admin/revocations", revocation, nil)
				}()
				waitAppending(t, "authority.(*Authority).revoke(")
			}
			if tc.hopFirst {
				issue()
				revoke()
			} else {
				revoke()
				issue()
			}
			release()
			if err := <-revoked; err != nil {
				t.Fatal(err)
			}
			<-hopDone
			switch {
			case p == nil:
				t.Fatalf("a hop revoked in its own commit was handed out (%s); want delegation-revoked", ans.ID)
			case p.Name() != "delegation-revoked":
				t.Fatalf("a hop revoked in its own commit: %+v; want delegation-revoked", p)
			}
		})
	}
}

// waitAppending waits until a goroutine whose stack holds fn waits in
// the audit log's AppendWith: its entry is queued for the next commit.
func waitAppending(t *testing.T, fn string) {
	t.Helper()
	ctx := ctxT(t)
	buf := make([]byte, 1<<20)
	for {
		for len(buf) == runtime.Stack(buf, true) {
			buf = make([]byte, 2*len(buf))
		}
		n := runtime.Stack(buf, true)
		for g := range strings.SplitSeq(string(buf[:n]), "\n\n") {
			if strings.Contains(g, " [select") && strings.Contains(g, "audit.(*Log).AppendWith(") && strings.Contains(g, fn) {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no append from %s is queued", fn)
		case <-time.After(time.Millisecond):
		}
	}
}

// reSigned is token with its claims changed by mutate and signed again
// with its issuer e's own JWT key (read from e's key directory, found
// by the token's kid): what a hostile authority can hand out for its own
// hops.
func reSigned(t *testing.T, e *env, token string, mutate func(*delegation.Claims)) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", token)
	}
	var header struct{ Kid string }
	if raw, err := base64.RawURLEncoding.DecodeString(parts[0]); err != nil || json.Unmarshal(raw, &header) != nil || header.Kid == "" {
		t.Fatalf("header %q: %v", parts[0], err)
	}
	files, err := filepath.Glob(filepath.Join(e.dataDir, "keys", "*.pem"))
	if err != nil {
		t.Fatal(err)
	}
	var key *ecdsa.PrivateKey
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(b)
		if block == nil {
			t.Fatalf("%s: no PEM", f)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if ek, ok := k.(*ecdsa.PrivateKey); ok {
			if kid, err := ca.JWKThumbprint(ek.Public()); err == nil && kid == header.Kid {
				key = ek
			}
		}
	}
	if key == nil {
		t.Fatalf("no key of %s has kid %s", e.dataDir, header.Kid)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c delegation.Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	mutate(&c)
	if payload, err = json.Marshal(&c); err != nil {
		t.Fatal(err)
	}
	input := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload)
	h := crypto.SHA256
	if key.Curve == elliptic.P384() {
		h = crypto.SHA384
	}
	hh := h.New()
	hh.Write([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, hh.Sum(nil))
	if err != nil {
		t.Fatal(err)
	}
	size := (key.Curve.Params().BitSize + 7) / 8
	sig := make([]byte, 2*size)
	r.FillBytes(sig[:size])
	s.FillBytes(sig[size:])
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// wrongHash is a hex hash other than h.
func wrongHash(h string) string {
	if h[0] == '0' {
		return "1" + h[1:]
	}
	return "0" + h[1:]
}

// parentLinkCases are forgeries of a hop's link to its parent (its
// issuer's own word, signed with its own key), and whether the chain
// below is still extended: a link that names no leaf hash (an issuer
// that did not say) is not checked.
var parentLinkCases = []struct {
	name  string
	forge func(*delegation.Parent)
	want  string // the problem type; "" for a hop issued
}{
	{"re-signed as it was", func(*delegation.Parent) {}, ""},
	{"wrong leaf hash", func(l *delegation.Parent) { l.LeafHash = wrongHash(l.LeafHash) }, "delegation-chain-invalid"},
	{"wrong log index", func(l *delegation.Parent) { l.LogIndex++ }, "delegation-chain-invalid"},
	{"wrong leaf hash and log index", func(l *delegation.Parent) { l.LeafHash, l.LogIndex = wrongHash(l.LeafHash), l.LogIndex+1 }, "delegation-chain-invalid"},
	{"no leaf hash", func(l *delegation.Parent) { l.LeafHash, l.LogIndex = "", l.LogIndex+1 }, ""},
}

// checkParentLinks has helper (an agent of orgA) extend t, a hop to it
// issued by issuer, and each forgery of t's parent link, to worker.
func checkParentLinks(t *testing.T, orgA, issuer *env, helper, worker identity, tok string) {
	t.Helper()
	if _, p := orgA.delegate(helper, delegateReq{delegatee: worker, scopes: []string{"calendar:read"}, parent: tok}); p != nil {
		t.Fatalf("the honest chain: %+v", p)
	}
	for _, tc := range parentLinkCases {
		t.Run(tc.name, func(t *testing.T) {
			forged := reSigned(t, issuer, tok, func(c *delegation.Claims) { tc.forge(c.Hop.Parent) })
			// Offline, the forgery is as good as the hop: only its
			// issuer's word says where its parent is logged.
			chain, err := delegation.Verify(forged, orgA.a, delegation.VerifyOptions{Presenter: helper.id, PresenterCert: helper.chain[0]})
			if err != nil {
				t.Fatalf("the re-signed hop does not verify: %v", err)
			}
			refusals := func() int {
				n := 0
				for _, r := range orgA.auditOf("delegation.refused", worker.id.String()) {
					if reason := fmt.Sprint(r["reason"]); strings.Contains(reason, chain[len(chain)-1].ID) && strings.Contains(reason, "another log entry") {
						n++
					}
				}
				return n
			}
			before := refusals()
			_, p := orgA.delegate(helper, delegateReq{delegatee: worker, scopes: []string{"calendar:read"}, parent: forged})
			switch {
			case tc.want == "" && p != nil:
				t.Fatalf("refused: %+v", p)
			case tc.want == "":
				return
			case p == nil || p.Name() != tc.want || !strings.Contains(p.Detail, chain[len(chain)-1].ID):
				t.Fatalf("extending a hop whose link names another log entry of its parent: %+v, want %s naming the hop", p, tc.want)
			}
			if n := refusals(); n != before+1 {
				t.Fatalf("%d refusals recorded, want 1", n-before)
			}
		})
	}
}

// TestExtendingChecksTheLinkToAHopIssuedHere: org-b's hop below org-a's
// names where org-a logged its parent; org-a extends the chain only
// when that is where its record says it logged it (by
// POST /v1/delegations and by the token endpoint).
func TestExtendingChecksTheLinkToAHopIssuedHere(t *testing.T) {
	orgA, orgB := federatedPair(t)
	helper, worker, t2 := backThroughOrgB(t, orgA, orgB)
	checkParentLinks(t, orgA, orgB, helper, worker, t2)

	forged := reSigned(t, orgB, t2, func(c *delegation.Claims) { c.Hop.Parent.LogIndex++ })
	chain, err := delegation.Verify(forged, orgA.a, delegation.VerifyOptions{AnyHolder: true})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := delegation.SignStatement(delegation.Statement{Delegator: helper.id.String(), Delegatee: worker.id.String(), Principal: "alice",
		Scopes: []string{"calendar:read"}, Parent: chain[1].ID, ParentIssuer: chain[1].Issuer}, helper.key, helper.chain)
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token": {forged}, "subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
		"audience": {worker.id.String()}, "scope": {"calendar:read"}, "delegator_signature": {sig}}
	if status, ans := orgA.exchange(&helper, form); status != 400 || ans["error"] != "invalid_request" ||
		!strings.Contains(fmt.Sprint(ans["error_description"]), "another log entry") {
		t.Fatalf("token exchange below a forged link: %d %v: %v", status, ans["error"], ans["error_description"])
	}
	form.Set("subject_token", t2)
	if status, ans := orgA.exchange(&helper, form); status != 200 {
		t.Fatalf("token exchange below the honest hop: %d %v", status, ans)
	}
}

// TestExtendingChecksTheLinkBetweenOtherAuthoritiesHops: org-c's hop
// below org-b's names where org-b logged its parent; org-a extends the
// chain only when that is where org-b's status answer says it is.
func TestExtendingChecksTheLinkBetweenOtherAuthoritiesHops(t *testing.T) {
	orgA, orgB, orgC := start(t, "org-a.example"), start(t, "org-b.example"), start(t, "org-c.example")
	for _, e := range []*env{orgA, orgB, orgC} {
		for _, peer := range []*env{orgA, orgB, orgC} {
			if e != peer {
				e.federate(peer)
			}
		}
	}
	booker := orgB.agentWithScopes("booker", "calendar:read")
	relay := orgC.agentWithScopes("relay")
	helper := orgA.agentWithScopes("helper")
	worker := orgA.agentWithScopes("worker")
	// user → booker (org-b) → relay (org-c) → helper (org-a) → worker
	t1 := orgB.mustDelegate(booker, delegateReq{delegatee: relay, scopes: []string{"calendar:read"}, principal: "alice"})
	t2 := orgC.mustDelegate(relay, delegateReq{delegatee: helper, scopes: []string{"calendar:read"}, parent: t1})
	checkParentLinks(t, orgA, orgC, helper, worker, t2)
}

// A delegation token given where its id is asked for (to revoke it, for
// its status or its chain) is a bearer credential: the 404 that finds
// no such delegation does not repeat it.
func TestTokenGivenForItsIDIsNotRepeated(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	tok := e.mustDelegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice"})
	sig := tok[strings.LastIndexByte(tok, '.')+1:]
	ctx := ctxT(t)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"revoke", func() error {
			return e.admin.Do(ctx, http.MethodPost, "/v1/admin/revocations", map[string]any{"delegation_id": tok, "reason": "leaked"}, nil)
		}},
		{"status", func() error {
			return e.client(nil, nil).Do(ctx, http.MethodGet, "/v1/delegations/"+tok+"/status", nil, nil)
		}},
		{"chain", func() error { return e.admin.Do(ctx, http.MethodGet, "/v1/audit/chains/"+tok, nil, nil) }},
	} {
		var p *client.Problem
		if err := tc.call(); !errors.As(err, &p) || p.Name() != "not-found" || strings.Contains(p.Detail, sig) || strings.Contains(p.Detail, tok[:64]) {
			t.Errorf("%s with the token for its id = %v, want not-found without the token", tc.name, err)
		}
	}
}

// chainUnderRSAKey is an X509-SVID of id issued by an intermediate whose
// RSA key has bits bits (a modulus only: no one holds its private key,
// and the leaf's signature is not its).
func chainUnderRSAKey(t *testing.T, id spiffeid.ID, bits int) []*x509.Certificate {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), uint(bits)))
	if err != nil {
		t.Fatal(err)
	}
	n.SetBit(n, bits-1, 1).SetBit(n, 0, 1)
	pub := &rsa.PublicKey{N: n, E: 1<<31 - 1}
	signer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	inter := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "costly"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	issuer := *inter
	issuer.PublicKey = &signer.PublicKey
	leaf := &x509.Certificate{SerialNumber: big.NewInt(3), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		URIs: []*url.URL{id.URL()}, KeyUsage: x509.KeyUsageDigitalSignature}
	var chain []*x509.Certificate
	for _, c := range []struct {
		tpl *x509.Certificate
		pub any
	}{{leaf, &signer.PublicKey}, {inter, pub}} {
		der, err := x509.CreateCertificate(rand.Reader, c.tpl, &issuer, c.pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, cert)
	}
	return chain
}

// A delegatee chain is refused unverified when one of its certificates
// holds an RSA key larger than any X509-SVID's: a signature check costs
// about the square of the key's size (a 150,000-bit key in a 52 KB body
// cost 1.5 s of CPU per request). A key of the largest size accepted is
// verified, and refused as an SVID of no authority here.
func TestDelegateeChainWithAHugeRSAKeyIsRefused(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b", "calendar:read")
	for _, c := range []struct {
		bits int
		want string
	}{
		{8192, "is not a valid X509-SVID"},
		{8193, "certificate 1 has an RSA key of 8193 bits (at most 8192)"},
		{65536, "certificate 1 has an RSA key of 65536 bits (at most 8192)"},
	} {
		d := b
		d.chain = chainUnderRSAKey(t, b.id, c.bits)
		_, p := e.delegate(a, delegateReq{delegatee: d, scopes: []string{"calendar:read"}, principal: "alice", bind: true})
		if p == nil || p.Status != http.StatusBadRequest || p.Type != api.ProblemBase+"invalid-request" || !strings.Contains(p.Detail, c.want) {
			t.Errorf("a delegatee chain under a %d-bit RSA key: %+v, want 400 invalid-request saying %q", c.bits, p, c.want)
		}
	}
}

// A SPIFFE ID revoked at one authority ends the hops that authority
// issued by, to or below it, and so the hops below those wherever they
// were issued; a hop another authority issued to it is that authority's
// to revoke. Here org-b revokes its agent booker, to whom org-a issued
// the root: org-b's hop by booker is revoked; org-a's root holds until
// org-a revokes booker too.
func TestRevokedIDReachesTheHopsOfItsRevoker(t *testing.T) {
	orgA, orgB := federatedPair(t)
	planner, booker, payer := orgA.agentWithScopes("planner", "calendar:read"), orgB.agentWithScopes("booker"), orgB.agentWithScopes("payer")
	t1 := orgA.mustDelegate(planner, delegateReq{delegatee: booker, scopes: []string{"calendar:read"}, principal: "alice"})
	t2 := orgB.mustDelegate(booker, delegateReq{delegatee: payer, scopes: []string{"calendar:read"}, parent: t1})
	chain, err := delegation.Verify(t2, orgB.a, delegation.VerifyOptions{AnyHolder: true})
	if err != nil || len(chain) != 2 {
		t.Fatalf("chain: %v %v", chain, err)
	}
	status := func(e *env, id string) string {
		t.Helper()
		var st struct{ Status string }
		if err := e.client(nil, nil).Do(ctxT(t), http.MethodGet, "/v1/delegations/"+id+"/status", nil, &st); err != nil {
			t.Fatal(err)
		}
		return st.Status
	}
	revoke := func(e *env) {
		t.Helper()
		if err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"spiffe_id": booker.id.String(), "reason": "compromised"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	revoke(orgB)
	if got := status(orgB, chain[1].ID); got != "revoked" {
		t.Errorf("org-b's hop by its revoked agent: %s, want revoked", got)
	}
	if got := status(orgA, chain[0].ID); got != "active" {
		t.Errorf("org-a's hop to org-b's revoked agent, before org-a revokes it: %s, want active", got)
	}
	revoke(orgA)
	if got := status(orgA, chain[0].ID); got != "revoked" {
		t.Errorf("org-a's hop to the agent org-a revoked: %s, want revoked", got)
	}
}

// Revoking again what is revoked is answered 201 with nothing newly
// revoked, and logged, while the first revocation's who and why stand:
// in the hop's status and in the list of revoked SPIFFE IDs.
func TestRevokingAgain(t *testing.T) {
	e := start(t, "org-a.example")
	b, hop := e.rootHop()
	for _, tc := range []struct{ field, value string }{{"delegation_id", hop}, {"spiffe_id", b.id.String()}} {
		for i, reason := range []string{"first", "second"} {
			var out struct{ Revoked []string }
			if err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{tc.field: tc.value, "reason": reason}, &out); err != nil {
				t.Fatalf("revoking %s %s, %s time: %v", tc.field, tc.value, reason, err)
			}
			if i == 1 && len(out.Revoked) != 0 {
				t.Errorf("revoking %s %s again revoked %v, want []", tc.field, tc.value, out.Revoked)
			}
		}
	}
	var st map[string]any
	if err := e.client(nil, nil).Do(ctxT(t), http.MethodGet, "/v1/delegations/"+hop+"/status", nil, &st); err != nil || st["status"] != "revoked" || st["reason"] != "first" {
		t.Errorf("status after revoking again: %v %v, want revoked for the first reason", st, err)
	}
	var list struct {
		Revoked []delegation.Revocation `json:"revoked_spiffe_ids"`
	}
	if err := e.admin.Do(ctxT(t), http.MethodGet, "/v1/admin/revocations", nil, &list); err != nil || len(list.Revoked) != 1 || list.Revoked[0].Reason != "first" {
		t.Errorf("revoked IDs after revoking again: %+v %v, want the first revocation", list.Revoked, err)
	}
	var reasons []string
	for _, d := range e.auditOf("delegation.revoked", "") {
		reasons = append(reasons, fmt.Sprint(d["reason"]))
	}
	if !slices.Equal(reasons, []string{"first", "second", "first", "second"}) {
		t.Errorf("delegation.revoked entries' reasons: %v, want every revocation asked", reasons)
	}
}

// The audit log, which every auditor reads, holds no credential: not a
// join token's secret, nor a JWT-SVID or a delegation token (nor their
// signatures), only their ids, digests and claims.
func TestAuditLogHoldsNoCredential(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	tok, err := e.admin.CreateJoinToken(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, csr, err := client.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client(nil, nil).Join(ctx, tok.Token, csr); err != nil {
		t.Fatal(err)
	}
	a, b := e.agentWithScopes("a", "calendar:read"), e.agentWithScopes("b", "calendar:read")
	jwt, err := e.client(a.chain, a.key).JWTSVID(ctx, "", []string{"api.example"})
	if err != nil {
		t.Fatal(err)
	}
	hop := e.mustDelegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice"})
	secrets := map[string]string{"the join token": tok.Token}
	for name, token := range map[string]string{"the JWT-SVID": jwt.Token, "the delegation token": hop} {
		secrets[name] = token
		secrets[name+"'s signature"] = token[strings.LastIndexByte(token, '.')+1:]
	}
	size := e.auditCheckpoint(e.adminRaw()).Size
	if size < 5 {
		t.Fatalf("the log holds %d entries, want the join, the SVIDs and the hop", size)
	}
	for i := range size {
		var entry struct {
			EntryB64 []byte `json:"entry_b64"`
		}
		if err := e.admin.Do(ctx, http.MethodGet, fmt.Sprintf("/v1/audit/entries/%d", i), nil, &entry); err != nil {
			t.Fatal(err)
		}
		for name, secret := range secrets {
			if strings.Contains(string(entry.EntryB64), secret) {
				t.Errorf("entry %d holds %s: %s", i, name, entry.EntryB64)
			}
		}
	}
}
