package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"syscall"
	"testing"
	"time"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/delegation"
)

// BenchmarkIssueOverHTTPS measures X509-SVID and JWT-SVID issuance through
// the whole API path (TLS 1.3 mTLS, keep-alive, JSON), client and server in
// one process: `go test -bench IssueOverHTTPS -cpu 2 ./api/`.
func BenchmarkIssueOverHTTPS(b *testing.B) {
	e := start(b, "org-a.example", noRateLimit)
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
	pe := startPolicyB(b, noRateLimit)
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

// BenchmarkDelegationFlow measures the delegation flow in process, without
// TLS or HTTP: delegator signature, policy, signing, durable audit
// record, each hop with a statement of its own. cpu-µs/op is the
// process's CPU per delegation (the figure the flow's optimizations
// move; ns/op also waits for the audit commits):
// `go test -run '^$' -bench DelegationFlow -cpu 2 ./api/`.
func BenchmarkDelegationFlow(b *testing.B) {
	e := start(b, "org-a.example", noRateLimit)
	from := e.agentWithScopes("delegator", "calendar:read")
	to := e.agentWithScopes("delegatee")
	caller := &authority.Caller{ID: from.id, Cert: from.chain[0]}
	req := func() authority.DelegateRequest {
		st := delegation.Statement{Delegator: from.id.String(), Delegatee: to.id.String(), Principal: "alice", Scopes: []string{"calendar:read"}}
		sig, err := delegation.SignStatement(st, from.key, from.chain)
		if err != nil {
			b.Fatal(err)
		}
		return authority.DelegateRequest{Delegatee: to.id.String(), Principal: "alice", Scopes: []string{"calendar:read"}, DelegatorSignature: sig}
	}
	reqs := make(chan authority.DelegateRequest, b.N)
	for range b.N {
		reqs <- req()
	}
	close(reqs)
	runInFlight(b, func() error {
		_, err := e.a.Delegate(context.Background(), caller, <-reqs)
		return err
	})
}

// runInFlight runs do b.N times, 16 at a time on 2 cores (as bench
// delegate), timed, and reports the process's CPU per call (user and
// system) as cpu-µs/op.
func runInFlight(b *testing.B, do func() error) {
	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ResetTimer()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := do(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	var ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) / time.Duration(b.N)
	b.ReportMetric(float64(cpu.Microseconds()), "cpu-µs/op")
}

// BenchmarkNewConnection measures a client's new mTLS connection and its
// first request (GET /healthz, authenticated as every request with a
// client certificate is), client and server in one process: cpu-µs/op
// is the process's CPU time, both sides.
// `go test -run '^$' -bench NewConnection -cpu 2 ./api/`.
func BenchmarkNewConnection(b *testing.B) {
	e := start(b, "org-a.example", noRateLimit)
	node := e.joinNode()
	c := e.client(node.chain, node.key)
	var ru0 syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru0); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var out map[string]any
		if err := c.Do(context.Background(), http.MethodGet, "/healthz", nil, &out); err != nil {
			b.Fatal(err)
		}
		c.CloseIdle() // the next request opens a connection of its own
	}
	b.StopTimer()
	var ru1 syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru1); err != nil {
		b.Fatal(err)
	}
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) / time.Duration(b.N)
	b.ReportMetric(float64(cpu.Microseconds()), "cpu-µs/op")
}

// BenchmarkDelegateOverHTTPS measures POST /v1/delegations through the
// whole API path (TLS 1.3 mTLS, keep-alive, JSON, durable audit record),
// client and server in one process, each hop with a statement of its own:
// `go test -run '^$' -bench DelegateOverHTTPS -cpu 2 -benchmem ./api/`.
// cpu-µs/op is the process's CPU per delegation, both sides.
func BenchmarkDelegateOverHTTPS(b *testing.B) {
	e := start(b, "org-a.example", noRateLimit)
	from := e.agentWithScopes("delegator", "calendar:read")
	to := e.agentWithScopes("delegatee")
	c, err := client.New(client.Config{Server: e.url, TrustDomain: e.td, Bundle: e.bundle, SVID: from.chain, Key: from.key, MaxConns: 64})
	if err != nil {
		b.Fatal(err)
	}
	reqs := make(chan *client.DelegationRequest, b.N)
	for range b.N {
		st := delegation.Statement{Delegator: from.id.String(), Delegatee: to.id.String(), Principal: "alice", Scopes: []string{"calendar:read"}, Purpose: "plan"}
		sig, err := delegation.SignStatement(st, from.key, from.chain)
		if err != nil {
			b.Fatal(err)
		}
		reqs <- &client.DelegationRequest{Delegatee: to.id.String(), Scopes: []string{"calendar:read"}, Principal: "alice", Purpose: "plan", DelegatorSignature: sig}
	}
	close(reqs)
	runInFlight(b, func() error {
		_, err := c.Delegate(context.Background(), <-reqs)
		return err
	})
}
