package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"mandate.dev/mandate/client"
)

// BenchmarkIssueOverHTTPS measures X509-SVID and JWT-SVID issuance through
// the whole API path (TLS 1.3 mTLS, keep-alive, JSON), client and server in
// one process: `go test -bench IssueOverHTTPS -cpu 2 ./api/`.
func BenchmarkIssueOverHTTPS(b *testing.B) {
	e := start(b, "org-a.example")
	node := e.joinNode()
	agentID := e.registerAgent("bench", node.id)
	c, err := client.New(client.Config{Server: e.url, TrustDomain: e.td, Bundle: e.bundle, SVID: node.chain, Key: node.key, MaxConns: 64})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("x509", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			_, csr, err := client.NewKeyAndCSR()
			if err != nil {
				b.Error(err)
				return
			}
			for pb.Next() {
				if _, err := c.X509SVID(context.Background(), agentID, csr); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("jwt", func(b *testing.B) {
		b.SetParallelism(8)
		aud := []string{"bench"}
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.JWTSVID(context.Background(), agentID, aud); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkDataAPIOverHTTPS measures decisions through the whole API
// path (TLS 1.3 mTLS, keep-alive, durable audit record), client and
// server in one process: `go test -bench DataAPI -cpu 2 ./api/`.
func BenchmarkDataAPIOverHTTPS(b *testing.B) {
	pe := startPolicyB(b)
	c, err := client.New(client.Config{Server: pe.url, TrustDomain: pe.td, Bundle: pe.bundle, SVID: pe.gateway.chain, Key: pe.gateway.key, MaxConns: 64})
	if err != nil {
		b.Fatal(err)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(delegationInput), &body); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			var out map[string]any
			if err := c.Do(context.Background(), http.MethodPost, "/v1/data/authz/allow", body, &out); err != nil || out["result"] != true {
				b.Errorf("%v %v", out, err)
				return
			}
		}
	})
}
