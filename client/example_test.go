package client_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	tlog "github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/client"
)

// A client with the admin credential an authority writes on its first
// start; a conditional update that lost a race is read again.
func Example() {
	ctx := context.Background()
	svid, err := x509svid.Load("mandate-data/admin/svid.pem", "mandate-data/admin/svid.key")
	if err != nil {
		log.Fatal(err)
	}
	bundle, err := x509bundle.Load(svid.ID.TrustDomain(), "mandate-data/admin/bundle.pem")
	if err != nil {
		log.Fatal(err)
	}
	admin, err := client.New(client.Config{Server: "https://127.0.0.1:8443",
		Bundle: bundle.X509Authorities(), SVID: svid.Certificates, Key: svid.PrivateKey})
	if err != nil {
		log.Fatal(err)
	}
	a, err := admin.GetAgent(ctx, "9e1d52afead97cb57a31be2b9638b181")
	if err != nil {
		log.Fatal(err)
	}
	a.Scopes = append(a.Scopes, "calendar:read")
	_, err = admin.UpdateAgentIfMatch(ctx, a.ID, a.ETag, a)
	var p *client.Problem
	if errors.As(err, &p) && p.Name() == "precondition-failed" {
		fmt.Println("changed meanwhile: read it again, and change that")
	} else if err != nil {
		log.Fatal(err)
	}
}

// Proving an audit entry: the checkpoint with the log's verifier key
// (obtained out of band), the entry's leaf hash from its bytes, and its
// inclusion proof against the checkpoint's root.
func ExampleClient_AuditEntry() {
	var auditor *client.Client // an auditor's or an admin's
	ctx := context.Background()
	vkey, err := os.ReadFile("mandate-data/audit/log.vkey")
	if err != nil {
		log.Fatal(err)
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		log.Fatal(err)
	}
	e, err := auditor.AuditEntry(ctx, 5, 0)
	if err != nil {
		log.Fatal(err)
	}
	// The origin is "<trust domain>/audit" unless the authority sets
	// audit.origin; the key is named after it (conventionally).
	cp, _, _, err := tlog.ParseCheckpoint([]byte(e.Checkpoint), verifier.Name(), verifier)
	if err != nil {
		log.Fatal(err)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(e.EntryB64)
	if hex.EncodeToString(leaf) != e.LeafHash || cp.Size != e.TreeSize {
		log.Fatal("the answer does not hold together")
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, e.Index, cp.Size, leaf, e.InclusionProof, cp.Hash); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("entry %d is in the log of %d entries: %s\n", e.Index, cp.Size, e.Entry)
}

// A checkpoint remembered earlier is proven a prefix of the latest one.
func ExampleClient_AuditConsistency() {
	var auditor *client.Client
	var verifier note.Verifier // of the log's key
	var old *tlog.Checkpoint   // verified earlier
	ctx := context.Background()
	raw, err := auditor.AuditCheckpoint(ctx)
	if err != nil {
		log.Fatal(err)
	}
	latest, _, _, err := tlog.ParseCheckpoint(raw, verifier.Name(), verifier)
	if err != nil {
		log.Fatal(err)
	}
	c, err := auditor.AuditConsistency(ctx, old.Size, latest.Size)
	if err != nil {
		log.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, latest.Size, c.Proof, old.Hash, latest.Hash); err != nil {
		log.Fatal("the log forked: ", err)
	}
}

// Branching on the refusals of a token exchange, which are OAuth's
// errors (Problem.Code) rather than problem types.
func ExampleClient_ExchangeToken() {
	var delegator *client.Client // made with the delegator agent's X509-SVID
	var signature string         // delegation.SignStatement over the same hop
	tok, err := delegator.ExchangeToken(context.Background(), &client.TokenExchange{
		SubjectToken: "alice", SubjectTokenType: client.TokenTypePrincipal,
		Audience: "spiffe://org-a.example/agent/b", Scopes: []string{"calendar:read"},
		DelegatorSignature: signature})
	var p *client.Problem
	switch {
	case errors.As(err, &p) && p.Code == "invalid_scope":
		fmt.Println("refused (a policy deny among them):", p.Detail)
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println(tok.IssuedTokenType, tok.ExpiresIn)
	}
}
