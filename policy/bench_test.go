package policy_test

import (
	"context"
	"fmt"
	"testing"

	"mandate.dev/mandate/policy"
)

// benchEngine is an engine of the shipped policies with the documents
// the authority sets (a trust domain, one federated, and a registration).
func benchEngine(b *testing.B) *policy.Engine {
	b.Helper()
	ctx := context.Background()
	e, err := policy.New(ctx, policy.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.SetDocuments(ctx, map[string]any{
		"trust_domain":            "org-a.example",
		"federated_trust_domains": []string{"org-b.example"},
		"agents": map[string]any{"spiffe://org-a.example/agent/a": map[string]any{
			"scopes": []string{"calendar:read"}, "node_ids": []string{"spiffe://org-a.example/node/n1"}}},
	}); err != nil {
		b.Fatal(err)
	}
	return e
}

// rootHop is the input of a root hop as the authority builds it (see
// authority/delegate.go): registered agents on an attested node.
func rootHop() map[string]any {
	return map[string]any{
		"delegator": map[string]any{"spiffe_id": "spiffe://org-a.example/agent/a", "trust_domain": "org-a.example",
			"scopes": []string{"calendar:read"},
			"host": map[string]any{"spiffe_id": "spiffe://org-a.example/node/n1", "level": "token",
				"banned": false, "drifted": false, "lapsed": false},
			"revoked": false, "banned": false},
		"delegatee": map[string]any{"spiffe_id": "spiffe://org-a.example/agent/b", "trust_domain": "org-a.example",
			"revoked": false, "host": map[string]any{"level": "token"}},
		"principal": "alice@example.com", "scopes": []string{"calendar:read"}, "depth": 1, "exp": int64(1_800_000_000),
		"purpose": "book a meeting", "chain": []any{},
	}
}

// thirdHop is a hop of depth 3: below two hops of this authority.
func thirdHop() map[string]any {
	h := rootHop()
	h["depth"] = 3
	h["delegator"].(map[string]any)["spiffe_id"] = "spiffe://org-a.example/agent/c"
	h["delegatee"].(map[string]any)["spiffe_id"] = "spiffe://org-a.example/agent/d"
	h["parent"] = map[string]any{"id": "d2", "iss": "spiffe://org-a.example", "scopes": []string{"calendar:read"},
		"exp": int64(1_800_000_100), "revoked": false}
	var chain []any
	for _, p := range []string{"spiffe://org-a.example/agent/a", "spiffe://org-a.example/agent/b", "delegation d1 of spiffe://org-a.example",
		"spiffe://org-a.example/agent/b", "spiffe://org-a.example/agent/c", "delegation d2 of spiffe://org-a.example"} {
		chain = append(chain, map[string]any{"spiffe_id": p, "revoked": false})
	}
	h["chain"] = chain
	return h
}

func BenchmarkDecideDelegation(b *testing.B) {
	for _, bc := range []struct {
		name string
		hop  func() map[string]any
	}{{"root", rootHop}, {"depth3", thirdHop}} {
		b.Run(bc.name, func(b *testing.B) {
			e := benchEngine(b)
			ctx := context.Background()
			in := bc.hop()
			if d := e.Decide(ctx, policy.PointDelegation, in); !d.Allow {
				b.Fatalf("not allowed: %+v", d)
			}
			b.ReportAllocs()
			for b.Loop() {
				if d := e.Decide(ctx, policy.PointDelegation, in); !d.Allow {
					b.Fatalf("not allowed: %+v", d)
				}
			}
		})
	}
}

// BenchmarkPatchDocuments is one registration change (one agent's entry
// of data.mandate.agents replaced) among many agents: its cost must not
// grow with the number of agents.
func BenchmarkPatchDocuments(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("registrations=%d", n), func(b *testing.B) {
			e := benchEngine(b)
			ctx := context.Background()
			if err := e.SetDocuments(ctx, map[string]any{"agents": benchAgents(n)}); err != nil {
				b.Fatal(err)
			}
			id := fmt.Sprintf("spiffe://org-a.example/agent/%d", n/2)
			docs := []map[string]policy.Patch{
				{"agents": {Set: map[string]any{id: map[string]any{"scopes": []string{"calendar:write"}}}}},
				{"agents": {Set: map[string]any{id: map[string]any{"scopes": []string{"calendar:read"}}}}},
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := e.PatchDocuments(ctx, docs[i%2]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkSetDocuments sets data.mandate.agents whole, as a rebuild of
// the policy data does (at the first decision after a start, and after a
// reload): registrations shaped as the authority writes them.
func BenchmarkSetDocuments(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("registrations=%d", n), func(b *testing.B) {
			e := benchEngine(b)
			ctx := context.Background()
			agents := benchAgents(n)
			b.ReportAllocs()
			for b.Loop() {
				if err := e.SetDocuments(ctx, map[string]any{"agents": agents}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchAgents is data.mandate.agents with n registrations, each shaped
// as the authority writes one.
func benchAgents(n int) map[string]any {
	agents := make(map[string]any, n)
	for i := range n {
		id := fmt.Sprintf("spiffe://org-a.example/agent/%d", i)
		agents[id] = map[string]any{"spiffe_id": id, "scopes": []string{"calendar:read", "calendar:write"},
			"selectors": []string{}, "node_ids": []string{"spiffe://org-a.example/node/n1"}, "require_hardware_attestation": false,
			"accountability": map[string]any{"operator": "org-a", "model_provider": "provider", "model": "model-1", "responsible_party": "alice@org-a.example"},
			"revoked":        false}
	}
	return agents
}
