package api_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/api"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/logtest"
)

// env is one running authority on 127.0.0.1 with an admin client.
type env struct {
	t       testing.TB
	td      spiffeid.TrustDomain
	a       *authority.Authority
	url     string
	admin   *client.Client
	bundle  []*x509.Certificate
	dataDir string
	skew    *atomic.Int64 // nanoseconds added to the authority's clock
	frozen  *atomic.Int64 // when not 0, the authority's clock stands at this Unix time (ns), skew aside
	stop    func()        // stops the authority (idempotent; also at cleanup)
	srv     *api.Server
	logs    *logBuffer // the authority's log (text, with request ids)
}

// logBuffer is a log's output, safe for concurrent writes.
type logBuffer = logtest.Buffer

// start runs an authority for td until the test ends.
func start(t testing.TB, td string, mutate ...func(*authority.Config)) *env {
	t.Helper()
	cfg := authority.Config{TrustDomain: td, DataDir: t.TempDir(), Listen: "127.0.0.1:0"}
	// A policy evaluation is bounded at 100 ms by default: under the race
	// detector on a busy machine an ordinary one can take longer, and a
	// test that is not about the bound would fail closed. (A test of the
	// bound sets its own.)
	cfg.Policy.EvalTimeout = authority.Duration(10 * time.Second)
	for _, m := range mutate {
		m(&cfg)
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	return run(t, cfg)
}

// noRateLimit turns http.rate_limit off, for a benchmark or a fuzz
// target: their load is one caller's, far over any rate.
func noRateLimit(c *authority.Config) {
	zero := 0
	c.HTTP.RateLimit.RequestsPerSecond = &zero
}

// run runs an authority with cfg (defaults set) until the test ends.
func run(t testing.TB, cfg authority.Config) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	skew, frozen := new(atomic.Int64), new(atomic.Int64)
	now := func() time.Time {
		if at := frozen.Load(); at != 0 {
			return time.Unix(0, at)
		}
		return time.Now().Add(time.Duration(skew.Load()))
	}
	logs := &logBuffer{}
	a, err := authority.New(ctx, cfg, authority.Options{Now: now, Logger: slog.New(api.LogHandler(slog.NewTextHandler(logs, nil)))})
	if err != nil {
		t.Fatalf("authority.New() = %v", err)
	}
	done := make(chan error, 2)
	go func() { done <- a.Run(ctx) }()
	if err := a.WriteAdminCredential(ctx, true); err != nil {
		t.Fatalf("WriteAdminCredential() = %v", err)
	}
	srv, err := api.New(a)
	if err != nil {
		t.Fatalf("api.New() = %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			for range 2 {
				if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("authority stopped with %v", err)
				}
			}
			a.Close()
		})
	}
	t.Cleanup(stop)
	e := &env{stop: stop, srv: srv, t: t, td: a.TrustDomain(), a: a, url: "https://" + ln.Addr().String(), dataDir: cfg.DataDir, skew: skew, frozen: frozen, logs: logs}
	chain, key, bundle, err := credfile.Load(authority.AdminPaths(cfg.DataDir))
	if err != nil {
		t.Fatalf("load admin credential: %v", err)
	}
	e.bundle = bundle
	e.admin = e.client(chain, key)
	return e
}

// client returns a client authenticated with chain/key (none if nil).
func (e *env) client(chain []*x509.Certificate, key crypto.Signer) *client.Client {
	e.t.Helper()
	c, err := client.New(client.Config{Server: e.url, TrustDomain: e.td, Bundle: e.bundle, SVID: chain, Key: key})
	if err != nil {
		e.t.Fatalf("client.New() = %v", err)
	}
	e.t.Cleanup(c.CloseIdle)
	return c
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// identity is a credential obtained from the authority.
type identity struct {
	id    spiffeid.ID
	chain []*x509.Certificate
	key   crypto.Signer
	ans   *client.SVIDAnswer
}

// joinNode creates a join token and joins a node with it.
func (e *env) joinNode() identity {
	e.t.Helper()
	ctx := ctxT(e.t)
	tok, err := e.admin.CreateJoinToken(ctx, time.Minute)
	if err != nil {
		e.t.Fatalf("CreateJoinToken() = %v", err)
	}
	key, csr, err := client.NewKeyAndCSR()
	if err != nil {
		e.t.Fatal(err)
	}
	ans, err := e.client(nil, nil).Join(ctx, tok.Token, csr)
	if err != nil {
		e.t.Fatalf("Join() = %v", err)
	}
	return e.identity(ans, key)
}

func (e *env) identity(ans *client.SVIDAnswer, key crypto.Signer) identity {
	e.t.Helper()
	chain, err := ans.Certificates()
	if err != nil {
		e.t.Fatal(err)
	}
	return identity{id: spiffeid.RequireFromString(ans.SPIFFEID), chain: chain, key: key, ans: ans}
}

// renewNode has a node renew its SVID with the credential from.
func (e *env) renewNode(from identity) (identity, error) {
	e.t.Helper()
	key, _, err := client.NewKeyAndCSR()
	if err != nil {
		e.t.Fatal(err)
	}
	csr, err := client.CSRFor(key, from.id)
	if err != nil {
		e.t.Fatal(err)
	}
	ans, err := e.client(from.chain, from.key).X509SVID(ctxT(e.t), from.id.String(), csr)
	if err != nil {
		return identity{}, err
	}
	return e.identity(ans, key), nil
}

// registerAgent registers name as an agent hosted by node.
func (e *env) registerAgent(name string, node spiffeid.ID) string {
	e.t.Helper()
	id := spiffeid.RequireFromSegments(e.td, "agent", name).String()
	_, err := e.admin.CreateAgent(ctxT(e.t), &client.Agent{SPIFFEID: id, NodeIDs: []string{node.String()},
		Accountability: client.Accountability{Operator: "team-a", ModelProvider: "acme", Model: "m1", ResponsibleParty: "ops@example.com"}})
	if err != nil {
		e.t.Fatalf("CreateAgent(%s) = %v", id, err)
	}
	return id
}

// agentSVID has node obtain an X509-SVID for agent.
func (e *env) agentSVID(node identity, agent string) identity {
	e.t.Helper()
	key, _, err := client.NewKeyAndCSR()
	if err != nil {
		e.t.Fatal(err)
	}
	csr, err := client.CSRFor(key, spiffeid.RequireFromString(agent))
	if err != nil {
		e.t.Fatal(err)
	}
	ans, err := e.client(node.chain, node.key).X509SVID(ctxT(e.t), agent, csr)
	if err != nil {
		e.t.Fatalf("X509SVID(%s) = %v", agent, err)
	}
	return e.identity(ans, key)
}

// fetchBundle fetches the authority's bundle the way a federated peer
// does: go-spiffe's federation.FetchBundle, https_spiffe profile.
func (e *env) fetchBundle() *spiffebundle.Bundle {
	e.t.Helper()
	own := spiffebundle.FromX509Authorities(e.td, e.bundle)
	b, err := federation.FetchBundle(ctxT(e.t), e.td, e.url+"/v1/bundle",
		federation.WithSPIFFEAuth(own, authority.ServerID(e.td)))
	if err != nil {
		e.t.Fatalf("federation.FetchBundle() = %v", err)
	}
	return b
}

// serveWithWorkTime serves e's authority with a second API server, whose
// requests' work may take work, on a listener of its own, until the test
// ends.
func (e *env) serveWithWorkTime(work time.Duration) (*api.Server, net.Listener) {
	e.t.Helper()
	srv, err := api.New(e.a)
	if err != nil {
		e.t.Fatal(err)
	}
	api.SetWorkTime(srv, work)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	e.t.Cleanup(func() { cancel(); <-served })
	return srv, ln
}
