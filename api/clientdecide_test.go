package api_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"mandate.dev/mandate/client"
	"mandate.dev/mandate/delegation"
)

// The Go client's decision calls: the OPA Data API and AuthZEN's
// evaluations, as a decision caller makes them, and their refusals as
// *Problem errors with OPA's code.
func TestClientDecisionCalls(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	agent := e.agentWithScopes("reader", "calendar:read")

	td, err := e.admin.QueryData(ctx, "/mandate/trust_domain", nil)
	if err != nil || !td.Defined() || string(td.Result) != `"org-a.example"` || td.Warning == nil || td.Warning.Code != "api_usage_warning" {
		t.Fatalf("QueryData(mandate/trust_domain) = %+v, %v; want the trust domain, with the no-input warning", td, err)
	}
	in := map[string]any{"subject": map[string]any{"type": "agent", "id": agent.id.String()}, "action": map[string]any{"name": "calendar:read"},
		"resource": map[string]any{"type": "calendar", "id": "alice"}}
	dec, err := e.admin.QueryData(ctx, "mandate/authzen/decision", in)
	if err != nil || dec.DecisionID == "" || dec.Warning != nil {
		t.Fatalf("QueryData(mandate/authzen/decision) = %+v, %v", dec, err)
	}
	var d struct{ Decision bool }
	if err := json.Unmarshal(dec.Result, &d); err != nil || !d.Decision {
		t.Fatalf("QueryData(mandate/authzen/decision) result %s, %v; want decision true", dec.Result, err)
	}
	if none, err := e.admin.QueryData(ctx, client.DataPath("mandate", "no such document"), in); err != nil || none.Defined() {
		t.Fatalf("QueryData of an undefined document = %+v, %v; want it undefined", none, err)
	}
	// A key holding slashes: the agent's registration.
	reg, err := e.admin.QueryData(ctx, client.DataPath("mandate", "agents", agent.id.String()), nil)
	if err != nil || !strings.Contains(string(reg.Result), `"calendar:read"`) {
		t.Fatalf("QueryData of the agent's document = %+v, %v; want its registration", reg, err)
	}
	if _, err := e.admin.QueryData(ctx, "mandate/trust_domain?pretty", nil); err == nil {
		t.Fatal("QueryData of a path holding a query succeeded")
	}
	// A caller not among the decision callers: OPA's 403 unauthorized.
	_, err = e.client(agent.chain, agent.key).QueryData(ctx, "mandate/trust_domain", nil)
	var p *client.Problem
	if !errors.As(err, &p) || p.Status != http.StatusForbidden || p.Code != "unauthorized" {
		t.Fatalf("QueryData as an agent = %v; want 403 unauthorized", err)
	}

	allow := client.Evaluation{Subject: &client.AuthZENEntity{Type: "agent", ID: agent.id.String()}, Action: &client.AuthZENAction{Name: "calendar:read"},
		Resource: &client.AuthZENEntity{Type: "calendar", ID: "alice"}}
	ans, err := e.admin.Evaluate(ctx, &allow)
	if err != nil || !ans.Decision || ans.DecisionID() == "" {
		t.Fatalf("Evaluate(an agent's scope) = %+v, %v; want true, with its decision id", ans, err)
	}
	deny := allow
	deny.Action = &client.AuthZENAction{Name: "mail:send"}
	if ans, err := e.admin.Evaluate(ctx, &deny); err != nil || ans.Decision {
		t.Fatalf("Evaluate(no scope of the agent's) = %+v, %v; want false", ans, err)
	}
	if _, err := e.admin.Evaluate(ctx, &client.Evaluation{Action: allow.Action}); problemName(err) == "" {
		t.Fatalf("Evaluate without subject and resource = %v; want a problem", err)
	}
	batch := &client.Evaluations{Evaluation: allow, Evaluations: []client.Evaluation{{}, {Action: deny.Action}, {}},
		Options: &client.EvaluationsOptions{EvaluationsSemantic: client.DenyOnFirstDeny}}
	got, err := e.admin.EvaluateBatch(ctx, batch)
	if err != nil || len(got) != 2 || !got[0].Decision || got[1].Decision {
		t.Fatalf("EvaluateBatch(deny on first deny) = %+v, %v; want allow, then deny, and no more", got, err)
	}
	one, err := e.admin.EvaluateBatch(ctx, &client.Evaluations{Evaluation: allow})
	if err != nil || len(one) != 1 || !one[0].Decision {
		t.Fatalf("EvaluateBatch of no evaluation = %+v, %v; want the defaults' decision", one, err)
	}
}

// A delegation asked by RFC 8693 token exchange through the Go client:
// a root hop, a hop below it, and a refusal in OAuth's words.
func TestClientExchangeToken(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	c := e.agentWithScopes("c")
	scopes := []string{"calendar:read"}
	root, err := e.client(a.chain, a.key).ExchangeToken(ctx, &client.TokenExchange{SubjectToken: "alice", SubjectTokenType: client.TokenTypePrincipal,
		Audience: b.id.String(), Scopes: scopes, Purpose: "plan",
		DelegatorSignature: e.hopSignature(t, a, b.id.String(), "alice", "", "plan", scopes)})
	if err != nil || root.IssuedTokenType != client.TokenTypeJWT || root.TokenType != "Bearer" || root.ExpiresIn < 1 || root.Scope != "calendar:read" {
		t.Fatalf("ExchangeToken(root) = %+v, %v", root, err)
	}
	if _, err := delegation.Verify(root.AccessToken, e.a, delegation.VerifyOptions{Presenter: b.id}); err != nil {
		t.Fatalf("the root hop's token does not verify: %v", err)
	}
	sub, err := e.client(b.chain, b.key).ExchangeToken(ctx, &client.TokenExchange{SubjectToken: root.AccessToken, SubjectTokenType: client.TokenTypeJWT,
		Audience: c.id.String(), Scopes: scopes,
		DelegatorSignature: e.hopSignature(t, b, c.id.String(), "", root.AccessToken, "", scopes)})
	if err != nil {
		t.Fatalf("ExchangeToken(below the root) = %v", err)
	}
	if chain, err := delegation.Verify(sub.AccessToken, e.a, delegation.VerifyOptions{Presenter: c.id}); err != nil || len(chain) != 2 {
		t.Fatalf("the second hop's token verifies %d hops, %v; want 2", len(chain), err)
	}
	// A scope the delegator does not hold: refused, invalid_scope.
	more := []string{"calendar:read", "mail:send"}
	_, err = e.client(a.chain, a.key).ExchangeToken(ctx, &client.TokenExchange{SubjectToken: "alice", SubjectTokenType: client.TokenTypePrincipal,
		Audience: b.id.String(), Scopes: more,
		DelegatorSignature: e.hopSignature(t, a, b.id.String(), "alice", "", "", more)})
	var p *client.Problem
	if !errors.As(err, &p) || p.Code != "invalid_scope" || p.Status != http.StatusBadRequest || !strings.Contains(p.Detail, "mail:send") {
		t.Fatalf("ExchangeToken of a scope not held = %v; want 400 invalid_scope naming it", err)
	}
}
