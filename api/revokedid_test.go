package api_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
)

// A SPIFFE ID revoked (POST /v1/admin/revocations) gets no SVID again,
// for ever, by any path, and nothing is served through a node revoked:
// an agent's X509-SVID and JWT-SVID through its node, its own renewal,
// its node's sync (which lists it refused); a node's own renewal, its
// agents' SVIDs and its sync as a whole; a join with a token whose node
// ID is revoked. Each refusal is 403 spiffe-id-revoked.
func TestRevokedIDGetsNoSVID(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	node := e.joinNode()
	nc := e.client(node.chain, node.key)
	revoked, kept := e.registerAgent("revoked", node.id), e.registerAgent("kept", node.id)
	held := e.agentSVID(node, revoked)
	e.agentSVID(node, kept)
	if _, err := e.admin.RevokeSPIFFEID(ctx, revoked, "compromised"); err != nil {
		t.Fatal(err)
	}
	isRevoked := func(what string, err error) {
		t.Helper()
		var p *client.Problem
		if !errors.As(err, &p) || p.Name() != "spiffe-id-revoked" {
			t.Errorf("%s = %v; want 403 spiffe-id-revoked", what, err)
		}
	}
	key, _, _ := client.NewKeyAndCSR()
	csr, _ := client.CSRFor(key, spiffeid.RequireFromString(revoked))
	_, err := nc.X509SVID(ctx, revoked, csr)
	isRevoked("an X509-SVID of the revoked agent through its node", err)
	_, err = nc.JWTSVID(ctx, revoked, []string{"x"})
	isRevoked("a JWT-SVID of the revoked agent through its node", err)
	_, err = e.client(held.chain, held.key).X509SVID(ctx, revoked, csr)
	isRevoked("the revoked agent's own renewal", err)
	s, err := nc.SyncNode(ctx, []spiffeid.ID{spiffeid.RequireFromString(revoked), spiffeid.RequireFromString(kept)})
	if err != nil || len(s.Hosted) != 1 || s.Hosted[0] != kept || len(s.Refused) != 1 || s.Refused[0].Name() != "spiffe-id-revoked" {
		t.Errorf("SyncNode() after the agent's revocation = %+v, %v; want %s hosted, %s refused as spiffe-id-revoked", s, err, kept, revoked)
	}
	e.agentSVID(node, kept) // the others are served as before

	// The node revoked: nothing through it, and it renews no more.
	if _, err := e.admin.RevokeSPIFFEID(ctx, node.id.String(), "stolen"); err != nil {
		t.Fatal(err)
	}
	_, err = e.renewNode(node)
	isRevoked("the revoked node's renewal", err)
	kcsr, _ := client.CSRFor(key, spiffeid.RequireFromString(kept))
	_, err = nc.X509SVID(ctx, kept, kcsr)
	isRevoked("an agent's X509-SVID through the revoked node", err)
	_, err = nc.SyncNode(ctx, []spiffeid.ID{spiffeid.RequireFromString(kept)})
	isRevoked("the revoked node's sync", err)

	// A node ID revoked before its token is used never joins; the token
	// stays unused.
	tok, err := e.admin.CreateJoinToken(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.RevokeSPIFFEID(ctx, tok.NodeID, "not to join"); err != nil {
		t.Fatal(err)
	}
	_, jcsr, _ := client.NewKeyAndCSR()
	_, err = e.client(nil, nil).Join(ctx, tok.Token, jcsr)
	isRevoked("a join with a token whose node ID is revoked", err)

	// An ID revoked is not registered: the registration would be
	// refused every SVID.
	const never = "spiffe://org-a.example/agent/never"
	if _, err := e.admin.RevokeSPIFFEID(ctx, never, "leaked before it was registered"); err != nil {
		t.Fatal(err)
	}
	_, err = e.admin.CreateAgent(ctx, &client.Agent{SPIFFEID: never, Selectors: []string{"level:token"}})
	isRevoked("a registration of a revoked ID", err)
}

// A spiffe_id to revoke that is no SPIFFE ID (a join token pasted in
// place of the node ID its token names, say) is refused without being
// repeated: it may be a secret. One that is a SPIFFE ID, but not one
// that can be revoked, is named.
func TestRevokeNoSPIFFEIDIsNotRepeated(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	tok, err := e.admin.CreateJoinToken(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ id, shown string }{
		{tok.Token, ""},
		{" " + tok.Token, ""},
		{"spiffe://org-a.example/node/join/FFFF", "spiffe://org-a.example/node/join/FFFF"},
		{"spiffe://org-a.example/agent/%41", "spiffe://org-a.example/agent/%41"},
	} {
		_, err := e.admin.RevokeSPIFFEID(ctx, tc.id, "leaked")
		var p *client.Problem
		if !errors.As(err, &p) || p.Name() != "invalid-request" || strings.Contains(err.Error(), tok.Token) || !strings.Contains(err.Error(), tc.shown) {
			t.Errorf("RevokeSPIFFEID(%.12q…) = %v; want 400 invalid-request naming %q, never the token", tc.id, err, tc.shown)
		}
	}
	if got, err := e.admin.ListRevokedIDs(ctx); err != nil || len(got) != 0 {
		t.Errorf("ListRevokedIDs() = %v, %v; want none", got, err)
	}
}

// A caller whose SPIFFE ID is revoked is given nothing more, though its
// SVID lasts until it expires: a decision caller decides no more (the
// Data API in OPA's shape, AuthZEN as problem+json), a metrics reader
// reads no more.
func TestRevokedCallerIsGivenNothingMore(t *testing.T) {
	const platform = "spiffe://org-a.example/agent/platform"
	e := start(t, "org-a.example", func(c *authority.Config) {
		c.Policy.DecisionCallers = []string{platform}
		c.HTTP.MetricsReaders = []string{platform}
	})
	ctx := ctxT(t)
	p := e.agentWithScopes("platform")
	pc := e.client(p.chain, p.key)
	metrics := func() int {
		resp, err := e.rawClient(p.chain, p.key).Get(e.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	eval := &client.Evaluation{Subject: &client.AuthZENEntity{Type: "agent", ID: platform}, Action: &client.AuthZENAction{Name: "read"}, Resource: &client.AuthZENEntity{Type: "doc", ID: "1"}}
	if _, err := pc.QueryData(ctx, "mandate/trust_domain", nil); err != nil {
		t.Fatalf("QueryData before the revocation = %v", err)
	}
	if _, err := pc.Evaluate(ctx, eval); err != nil {
		t.Fatalf("Evaluate before the revocation = %v", err)
	}
	if code := metrics(); code != http.StatusOK {
		t.Fatalf("GET /metrics before the revocation = %d", code)
	}
	if _, err := e.admin.RevokeSPIFFEID(ctx, platform, "compromised"); err != nil {
		t.Fatal(err)
	}
	var oe *client.Problem
	if _, err := pc.QueryData(ctx, "mandate/trust_domain", nil); !errors.As(err, &oe) || oe.Status != http.StatusForbidden || oe.Code != "unauthorized" || !strings.Contains(oe.Detail, "revoked") {
		t.Errorf("QueryData of the revoked caller = %v; want OPA's 403 unauthorized saying it is revoked", err)
	}
	var pr *client.Problem
	if _, err := pc.Evaluate(ctx, eval); !errors.As(err, &pr) || pr.Name() != "spiffe-id-revoked" {
		t.Errorf("Evaluate of the revoked caller = %v; want 403 spiffe-id-revoked", err)
	}
	if code := metrics(); code != http.StatusForbidden {
		t.Errorf("GET /metrics of the revoked caller = %d, want 403", code)
	}
}
