package api_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
)

// TestIssuanceValidatesWithGoSPIFFE runs the quickstart through the real
// API and validates everything issued with go-spiffe against the bundle
// fetched from the bundle endpoint.
func TestIssuanceValidatesWithGoSPIFFE(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	node := e.joinNode()
	agentID := e.registerAgent("hello", node.id)
	agent := e.agentSVID(node, agentID)
	bundle := e.fetchBundle()

	for name, id := range map[string]identity{"node": node, "agent": agent} {
		got, _, err := x509svid.Verify(id.chain, bundle)
		if err != nil {
			t.Fatalf("x509svid.Verify(%s SVID) = %v", name, err)
		}
		if got != id.id {
			t.Errorf("x509svid.Verify(%s SVID) ID = %s, want %s", name, got, id.id)
		}
	}
	if agent.id.String() != agentID {
		t.Errorf("agent SVID ID = %s, want %s", agent.id, agentID)
	}
	if _, ok := agent.ans.Bundles[e.td.String()]; !ok {
		t.Errorf("SVID answer bundles = %v, want one for %s", agent.ans.Bundles, e.td)
	}

	// The agent renews by itself, then asks for JWT-SVIDs.
	agentClient := e.client(agent.chain, agent.key)
	renewed := e.agentSVIDWith(agentClient, agentID)
	if _, _, err := x509svid.Verify(renewed.chain, bundle); err != nil {
		t.Errorf("x509svid.Verify(renewed) = %v", err)
	}
	jwtAns, err := agentClient.JWTSVID(ctx, "", []string{"api.example", "other"})
	if err != nil {
		t.Fatalf("JWTSVID() = %v", err)
	}
	svid, err := jwtsvid.ParseAndValidate(jwtAns.Token, bundle, []string{"api.example"})
	if err != nil {
		t.Fatalf("jwtsvid.ParseAndValidate() = %v", err)
	}
	if svid.ID.String() != agentID {
		t.Errorf("JWT-SVID sub = %s, want %s", svid.ID, agentID)
	}
	if _, err := jwtsvid.ParseAndValidate(jwtAns.Token, bundle, []string{"elsewhere"}); err == nil {
		t.Error("jwtsvid.ParseAndValidate(wrong audience) = nil, want error")
	}

	// The node asks for a JWT-SVID on behalf of the agent it hosts.
	nodeJWT, err := e.client(node.chain, node.key).JWTSVID(ctx, agentID, []string{"api.example"})
	if err != nil {
		t.Fatalf("node JWTSVID() = %v", err)
	}
	if _, err := jwtsvid.ParseAndValidate(nodeJWT.Token, bundle, []string{"api.example"}); err != nil {
		t.Errorf("jwtsvid.ParseAndValidate(node-fetched token) = %v", err)
	}
}

// agentSVIDWith has c (the agent itself) renew its X509-SVID.
func (e *env) agentSVIDWith(c *client.Client, agentID string) identity {
	e.t.Helper()
	key, _, err := client.NewKeyAndCSR()
	if err != nil {
		e.t.Fatal(err)
	}
	csr, err := client.CSRFor(key, spiffeid.RequireFromString(agentID))
	if err != nil {
		e.t.Fatal(err)
	}
	ans, err := c.X509SVID(ctxT(e.t), agentID, csr)
	if err != nil {
		e.t.Fatalf("X509SVID(renewal) = %v", err)
	}
	return e.identity(ans, key)
}

// problemName returns the problem type name of err, or "" if err is not a
// problem answer.
func problemName(err error) string {
	var p *client.Problem
	if errors.As(err, &p) {
		return p.Name()
	}
	return ""
}

func TestJoinTokenRefusals(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	public := e.client(nil, nil)
	_, csr, err := client.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	used, err := e.admin.CreateJoinToken(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := public.Join(ctx, used.Token, csr); err != nil {
		t.Fatalf("first Join() = %v", err)
	}
	expiring, err := e.admin.CreateJoinToken(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	withdrawn, err := e.admin.CreateJoinToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.admin.WithdrawJoinToken(ctx, withdrawn.ID); err != nil {
		t.Fatalf("WithdrawJoinToken(unused) = %v", err)
	}
	e.skew.Store(int64(2 * time.Minute))
	defer e.skew.Store(0)
	tests := []struct {
		name, token, want string
	}{
		{"replayed", used.Token, "join-token-used"},
		{"expired", expiring.Token, "join-token-expired"},
		{"unknown", "not-a-token", "join-token-unknown"},
		{"empty", "", "join-token-unknown"},
		{"withdrawn", withdrawn.Token, "join-token-withdrawn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := public.Join(ctx, tt.token, csr)
			if got := problemName(err); got != tt.want {
				t.Errorf("Join(%s token) = %v, want problem %s", tt.name, err, tt.want)
			}
		})
	}
	nodes, err := e.admin.ListNodes(ctx)
	if err != nil || len(nodes) != 1 {
		t.Errorf("ListNodes() = %d nodes, %v; want 1 (refused joins record nothing)", len(nodes), err)
	}
	// Guesses at tokens (anyone may send them) are not recorded, however
	// many: the audit log is not a disk anyone can fill. A refusal of a
	// token that exists is, once per token.
	for _, guess := range []string{"guess-1", "guess-2", strings.Repeat("a", 43)} {
		if _, err := public.Join(ctx, guess, csr); problemName(err) != "join-token-unknown" {
			t.Errorf("Join(a guess) = %v, want join-token-unknown", err)
		}
	}
	refused := e.auditOf("node.attestation_refused", "")
	ids := map[string]bool{}
	for _, d := range refused {
		ids[fmt.Sprint(d["token_id"])] = true
	}
	if len(refused) != 3 || !ids[used.ID] || !ids[expiring.ID] || !ids[withdrawn.ID] {
		t.Errorf("node.attestation_refused entries %v; want one for each of the used, expired and withdrawn tokens, none for guesses", refused)
	}
}

// An administrator withdraws a join token that leaked before it is used:
// the withdrawal is logged, and what cannot be withdrawn says why.
func TestWithdrawJoinToken(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	tok, err := e.admin.CreateJoinToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	node := e.joinNode()
	if got := problemName(e.client(node.chain, node.key).WithdrawJoinToken(ctx, tok.ID)); got != "forbidden" {
		t.Errorf("a node withdrawing a join token: problem %q, want forbidden", got)
	}
	if err := e.admin.WithdrawJoinToken(ctx, tok.ID); err != nil {
		t.Fatalf("WithdrawJoinToken() = %v", err)
	}
	used := strings.TrimPrefix(node.id.String(), "spiffe://org-a.example/node/join/")
	for _, tc := range []struct{ name, id, want string }{
		{"again", tok.ID, "join-token-withdrawn"},
		{"used", used, "join-token-used"},
		{"unknown", "0123456789abcdef", "not-found"},
		{"not an id", "../agents", "not-found"},
	} {
		// Asked with Do: the client refuses a value that is not an id
		// before asking, and the authority must refuse it too.
		withdraw := e.admin.Do(ctx, http.MethodDelete, "/v1/admin/join-tokens/"+url.PathEscape(tc.id), nil, nil)
		if got := problemName(withdraw); got != tc.want {
			t.Errorf("withdrawing a token %s: problem %q, want %s", tc.name, got, tc.want)
		}
	}
	// The token given in place of its id (create answers both) is a
	// secret: refused, and not repeated in the answer.
	secret, err := e.admin.CreateJoinToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var p *client.Problem
	if err := e.admin.Do(ctx, http.MethodDelete, "/v1/admin/join-tokens/"+secret.Token, nil, nil); !errors.As(err, &p) || p.Name() != "not-found" || strings.Contains(p.Detail, secret.Token) {
		t.Errorf("withdrawing a token by its secret = %v, want not-found without the secret", err)
	}
	if err := e.admin.WithdrawJoinToken(ctx, secret.Token); err == nil || strings.Contains(err.Error(), secret.Token) {
		t.Errorf("WithdrawJoinToken of the token itself = %v, want refused without the secret", err)
	}
	var page struct {
		Entries []struct {
			Entry struct{ Actor, Subject string } `json:"entry"`
		} `json:"entries"`
	}
	if err := e.admin.Do(ctx, http.MethodGet, "/v1/audit/search?type=join_token.withdrawn", nil, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != 1 || page.Entries[0].Entry.Subject != tok.ID || page.Entries[0].Entry.Actor != authority.AdminID(e.a.TrustDomain()).String() {
		t.Errorf("join_token.withdrawn entries: %+v, want one, of %s by the admin", page.Entries, tok.ID)
	}
}

func TestIssuanceRefusals(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	node, other := e.joinNode(), e.joinNode()
	hello := e.registerAgent("hello", node.id)
	elsewhere := e.registerAgent("elsewhere", other.id)
	agent := e.agentSVID(node, hello)
	nodeC, agentC := e.client(node.chain, node.key), e.client(agent.chain, agent.key)
	unregistered := spiffeid.RequireFromSegments(e.td, "agent", "ghost").String()

	x509 := func(c *client.Client, id string) error {
		key, _, err := client.NewKeyAndCSR()
		if err != nil {
			t.Fatal(err)
		}
		csr, err := client.CSRFor(key, spiffeid.ID{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.X509SVID(ctx, id, csr)
		return err
	}
	jwt := func(c *client.Client, id string) error {
		_, err := c.JWTSVID(ctx, id, []string{"aud"})
		return err
	}
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"x509 unregistered agent", func() error { return x509(nodeC, unregistered) }, "agent-not-registered"},
		{"x509 agent of another node", func() error { return x509(nodeC, elsewhere) }, "agent-not-allowed-on-node"},
		{"x509 agent asks for another agent", func() error { return x509(agentC, elsewhere) }, "forbidden"},
		{"x509 without client certificate", func() error { return x509(e.client(nil, nil), hello) }, "unauthenticated"},
		{"x509 admin is not a node", func() error { return x509(e.admin, hello) }, "forbidden"},
		{"x509 other trust domain", func() error { return x509(nodeC, "spiffe://org-b.example/agent/hello") }, "agent-not-registered"},
		{"x509 not an agent id", func() error { return x509(nodeC, spiffeid.RequireFromSegments(e.td, "mandate", "admin").String()) }, "agent-not-registered"},
		{"x509 malformed id", func() error { return x509(nodeC, "not a spiffe id") }, "invalid-request"},
		{"jwt unregistered agent", func() error { return jwt(nodeC, unregistered) }, "agent-not-registered"},
		{"jwt agent of another node", func() error { return jwt(nodeC, elsewhere) }, "agent-not-allowed-on-node"},
		{"jwt agent asks for another", func() error { return jwt(agentC, elsewhere) }, "forbidden"},
		{"jwt without audience", func() error { _, err := agentC.JWTSVID(ctx, "", nil); return err }, "invalid-request"},
		{"jwt empty audience", func() error { _, err := agentC.JWTSVID(ctx, "", []string{""}); return err }, "invalid-request"},
		{"jwt too many audiences", func() error { _, err := agentC.JWTSVID(ctx, "", make([]string, 17)); return err }, "invalid-request"},
		{"admin call by a node", func() error { _, err := nodeC.ListAgents(ctx); return err }, "forbidden"},
		{"admin call by an agent", func() error { _, err := agentC.CreateJoinToken(ctx, time.Minute); return err }, "forbidden"},
		{"admin call without certificate", func() error { _, err := e.client(nil, nil).ListNodes(ctx); return err }, "unauthenticated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := problemName(tt.call()); got != tt.want {
				t.Errorf("got problem %q, want %q", got, tt.want)
			}
		})
	}

	// Banning the node stops credentials for the node and its agents,
	// including the agent renewing by itself.
	if _, err := e.admin.BanNode(ctx, node.id.String(), "compromised"); err != nil {
		t.Fatalf("BanNode() = %v", err)
	}
	for name, call := range map[string]func() error{
		"node x509 for agent": func() error { return x509(nodeC, hello) },
		"node jwt for agent":  func() error { return jwt(nodeC, hello) },
		"agent renews x509":   func() error { return x509(agentC, hello) },
		"agent jwt":           func() error { return jwt(agentC, "") },
		"node renews itself":  func() error { return x509(nodeC, node.id.String()) },
	} {
		if got := problemName(call()); got != "node-banned" {
			t.Errorf("after ban, %s: problem %q, want node-banned", name, got)
		}
	}
	if err := x509(e.client(other.chain, other.key), elsewhere); err != nil {
		t.Errorf("unbanned node's agent: %v, want success", err)
	}
}

// TestMetricsByRoute checks that /metrics labels requests with their route
// pattern.
func TestMetricsByRoute(t *testing.T) {
	e := start(t, "org-a.example")
	if _, err := e.admin.ListNodes(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	resp, err := e.rawClient(nil, nil).Get(e.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	want := `mandate_http_requests_total{code="200",route="GET /v1/admin/nodes"} 1`
	if !strings.Contains(string(text), want) {
		t.Errorf("/metrics lacks %s", want)
	}
}

// A request refused before its handler runs, for a client certificate
// that has expired on a kept-alive connection, is counted under the
// route it asked for, not as unmatched.
func TestMetricsRouteOfRefusedAuthentication(t *testing.T) {
	e := start(t, "org-a.example")
	node := e.joinNode()
	hc := e.rawClient(node.chain, node.key)
	post := func() int {
		t.Helper()
		resp, err := hc.Post(e.url+"/v1/svid/jwt", "application/json", strings.NewReader(`{"audience": ["x"]}`))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body) // the connection is kept for the next request
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(); code != http.StatusForbidden { // a node has no JWT-SVID: its connection is kept alive
		t.Fatalf("POST /v1/svid/jwt as the node: %d, want 403", code)
	}
	e.skew.Store(int64(time.Until(node.chain[0].NotAfter) + time.Minute))
	code := post()
	e.skew.Store(0)
	if code != http.StatusUnauthorized {
		t.Fatalf("POST /v1/svid/jwt with an expired certificate: %d, want 401", code)
	}
	resp, err := e.rawClient(nil, nil).Get(e.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`mandate_http_requests_total{code="401",route="POST /v1/svid/jwt"} 1`,
		`mandate_http_request_duration_seconds_count{route="POST /v1/svid/jwt"} 2`,
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for line := range strings.Lines(string(text)) {
		if strings.Contains(line, `route="unmatched"`) {
			t.Errorf("/metrics counts a request as unmatched: %s", line)
		}
	}
}

// With http.metrics_readers, /metrics is theirs and admins' only: a
// scraper without a certificate is 401, an agent not listed 403.
func TestMetricsReaders(t *testing.T) {
	e := start(t, "org-a.example", func(c *authority.Config) {
		c.HTTP.MetricsReaders = []string{"spiffe://org-a.example/agent/prometheus"}
	})
	scraper, other := e.agentWithScopes("prometheus"), e.agentWithScopes("nosy")
	for _, tc := range []struct {
		name string
		c    *http.Client
		want int
	}{
		{"anonymous", e.rawClient(nil, nil), http.StatusUnauthorized},
		{"an agent not listed", e.rawClient(other.chain, other.key), http.StatusForbidden},
		{"the listed reader", e.rawClient(scraper.chain, scraper.key), http.StatusOK},
		{"an admin", e.adminRaw(), http.StatusOK},
	} {
		resp, err := tc.c.Get(e.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || tc.want == http.StatusOK && !strings.Contains(string(body), "mandate_audit_tree_size") {
			t.Errorf("%s: GET /metrics = %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
}

// auditMetrics scrapes e's mandate_audit_* counters.
func (e *env) auditMetrics() map[string]float64 { return e.metricsOf("mandate_audit_") }

// metricsOf scrapes e's metrics whose names start with prefix, keyed by
// name and labels as /metrics writes them.
func (e *env) metricsOf(prefix string) map[string]float64 {
	t := e.t
	resp, err := e.rawClient(nil, nil).Get(e.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	got := map[string]float64{}
	for line := range strings.Lines(string(text)) {
		name, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if f, err := strconv.ParseFloat(v, 64); ok && err == nil && strings.HasPrefix(name, prefix) {
			got[name] = f
		}
	}
	return got
}

// The outcomes an operator watches are counted: node joins (admitted
// and refused), delegations (issued, denied by policy, refused), and the
// audit log's size and failed commits.
func TestMetricsCountOutcomes(t *testing.T) {
	e := start(t, "org-a.example")
	e.startedAudit()
	a := e.agentWithScopes("a", "calendar:read") // one join
	b := e.agentWithScopes("b")                  // and another
	var p *client.Problem
	resp, err := e.rawClient(nil, nil).Post(e.url+"/v1/nodes/join", "application/json", strings.NewReader(`{"token":"`+strings.Repeat("ab", 16)+`","csr":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	e.mustDelegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice"})
	if _, p = e.delegate(a, delegateReq{delegatee: b, scopes: []string{"payments:write"}, principal: "alice"}); p == nil || p.Name() != "policy-denied" {
		t.Fatalf("an escalation: %+v, want policy-denied", p)
	}
	if _, p = e.delegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice", noSig: true}); p == nil {
		t.Fatal("a hop without the delegator's signature was issued")
	}
	got := e.metricsOf("mandate_")
	for name, want := range map[string]float64{
		`mandate_node_attestations_total{method="join_token",outcome="admitted"}`: 2,
		`mandate_node_attestations_total{method="join_token",outcome="refused"}`:  1,
		`mandate_delegations_total{outcome="issued"}`:                             1,
		`mandate_delegations_total{outcome="denied"}`:                             1,
		`mandate_delegations_total{outcome="refused"}`:                            1,
		`mandate_audit_commit_failures_total`:                                     0,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	text, err := e.admin.GetRaw(ctxT(t), "/v1/audit/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(text), "\n", 3)
	size, err := strconv.ParseUint(lines[min(1, len(lines)-1)], 10, 64)
	if err != nil {
		t.Fatalf("checkpoint %q: %v", text, err)
	}
	if got["mandate_audit_tree_size"] < float64(size) || size == 0 {
		t.Errorf("mandate_audit_tree_size = %v, want at least the checkpoint's %d", got["mandate_audit_tree_size"], size)
	}
}

// startedAudit waits until e has recorded its start (it does so on its
// own, beside the requests) and returns its audit counters then.
func (e *env) startedAudit() map[string]float64 {
	for deadline := time.Now().Add(10 * time.Second); len(e.auditOf("authority.started", "")) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			e.t.Fatal("the authority did not record its start")
		}
	}
	return e.auditMetrics()
}

// /metrics says when the active X.509 CA and JWT key expire, as the CA
// lists them: what an operator alerts on before a failing rotation
// stops issuance.
func TestMetricsSigningKeyExpiry(t *testing.T) {
	e := start(t, "org-a.example")
	var st struct {
		Authorities []struct {
			Kind     string    `json:"kind"`
			State    string    `json:"state"`
			NotAfter time.Time `json:"not_after"`
		} `json:"authorities"`
	}
	if err := e.admin.Do(ctxT(t), "GET", "/v1/admin/ca", nil, &st); err != nil {
		t.Fatal(err)
	}
	got := e.metricsOf("mandate_ca_active_expiration_timestamp_seconds")
	active := 0
	for _, a := range st.Authorities {
		if a.State != "active" {
			continue
		}
		active++
		name := `mandate_ca_active_expiration_timestamp_seconds{kind="` + a.Kind + `"}`
		if v, ok := got[name]; !ok || int64(v) != a.NotAfter.Unix() {
			t.Errorf("%s = %v (present %v), want %d (the active authority's not_after)", name, int64(v), ok, a.NotAfter.Unix())
		}
	}
	if active != 2 || len(got) != 2 {
		t.Errorf("%d active authorities, %d expiry series: %v", active, len(got), got)
	}
}

// TestMetricsAuditCommits checks the audit log's counters: an audited
// request adds one entry in one commit.
func TestMetricsAuditCommits(t *testing.T) {
	e := start(t, "org-a.example")
	scrape := e.auditMetrics
	before := e.startedAudit()
	if _, err := e.admin.CreateJoinToken(ctxT(t), time.Minute); err != nil {
		t.Fatal(err)
	}
	after := scrape()
	if d := after["mandate_audit_entries_total"] - before["mandate_audit_entries_total"]; d != 1 {
		t.Errorf("mandate_audit_entries_total grew by %v, want 1 (before %v, after %v)", d, before, after)
	}
	if d := after["mandate_audit_commits_total"] - before["mandate_audit_commits_total"]; d != 1 {
		t.Errorf("mandate_audit_commits_total grew by %v, want 1", d)
	}
	if after["mandate_audit_commit_seconds_total"] <= before["mandate_audit_commit_seconds_total"] {
		t.Errorf("mandate_audit_commit_seconds_total did not grow: %v, then %v", before, after)
	}
}

// TestGroupCommitWait: a commit waits for an authenticated request
// whose work is under way (here one asking a peer for the status of the
// hop it extends), and not for a request whose body has not all
// arrived, whoever sends it: its work has not started, and a client
// sending slowly cannot hold every commit.
func TestGroupCommitWait(t *testing.T) {
	wait := func(c *authority.Config) {
		d := authority.Duration(50 * time.Millisecond)
		c.Audit.GroupCommitWait = &d
	}
	e, orgB := start(t, "org-a.example", wait), start(t, "org-b.example")
	// One request at a time: each ends its own expectation, and no
	// commit ever waits (nothing is left expected).
	before := e.startedAudit()
	agent := e.agentWithScopes("slow", "calendar:read")
	b := e.agentWithScopes("b")
	e.mustDelegate(agent, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice@org-a.example"})
	if after := e.auditMetrics(); after["mandate_audit_group_waits_total"] != before["mandate_audit_group_waits_total"] ||
		after["mandate_audit_commits_total"] < before["mandate_audit_commits_total"]+3 {
		t.Fatalf("requests one at a time: audit counters %v, then %v; want commits that never waited", before, after)
	}
	// waited reports whether a commit made while held holds its request
	// under way waited for it.
	waited := func(t *testing.T, held <-chan struct{}) bool {
		t.Helper()
		select {
		case <-held:
		case <-ctxT(t).Done():
			t.Fatal("the request was never held")
		}
		before := e.auditMetrics()
		if _, err := e.admin.CreateJoinToken(ctxT(t), time.Minute); err != nil {
			t.Fatal(err)
		}
		after := e.auditMetrics()
		return after["mandate_audit_group_waits_total"] > before["mandate_audit_group_waits_total"]
	}
	for _, tc := range []struct {
		name string
		c    *http.Client
		path string
	}{
		{"anonymous", e.rawClient(nil, nil), "/v1/nodes/join"},
		{"an agent", e.rawClient(agent.chain, agent.key), "/v1/delegations"},
	} {
		t.Run(tc.name+" sending its body slowly", func(t *testing.T) {
			// A body that does not come: the server has asked for it
			// (100 Continue).
			body, w := io.Pipe()
			defer w.CloseWithError(errors.New("gave up"))
			reading := make(chan struct{})
			ctx := httptrace.WithClientTrace(ctxT(t), &httptrace.ClientTrace{Got100Continue: func() { close(reading) }})
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url+tc.path, body)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Expect", "100-continue")
			tc.c.Transport.(*http.Transport).ExpectContinueTimeout = time.Minute
			go func() {
				if resp, err := tc.c.Do(req); err == nil {
					resp.Body.Close()
				}
			}()
			if waited(t, reading) {
				t.Fatal("a commit waited for a request whose body had not arrived")
			}
		})
	}
	t.Run("an agent asking a peer for a hop's status", func(t *testing.T) {
		orgB.federate(e)
		front := newStatusFront(t, orgB)
		e.federateVia(orgB, front.url)
		hops := belowAnotherAuthority(t, e, orgB)
		asked, release := make(chan struct{}), make(chan struct{})
		var once sync.Once
		front.editAnswers(func(map[string]any) {
			once.Do(func() { close(asked) })
			<-release
		})
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.delegate(hops.helper, delegateReq{delegatee: hops.worker, scopes: []string{"calendar:read"}, parent: hops.t1})
		}()
		w := waited(t, asked)
		close(release)
		<-done
		if !w {
			t.Fatal("a commit did not wait for an agent's request under way")
		}
	})
}

// TestRestartKeepsState restarts an authority on its data directory: the
// CA, registrations, nodes and used join tokens are all as they were.
func TestRestartKeepsState(t *testing.T) {
	dataDir := t.TempDir()
	cfg := func(c *authority.Config) { c.DataDir = dataDir }
	e := start(t, "org-a.example", cfg)
	ctx := ctxT(t)
	node := e.joinNode()
	agentID := e.registerAgent("hello", node.id)
	used, err := e.admin.CreateJoinToken(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, csr, _ := client.NewKeyAndCSR()
	joined, err := e.client(nil, nil).Join(ctx, used.Token, csr)
	if err != nil {
		t.Fatal(err)
	}
	before := e.fetchBundle()
	e.stop()

	e = start(t, "org-a.example", cfg)
	after := e.fetchBundle()
	if !before.Equal(after) {
		t.Error("bundle changed across a restart; want the same CA and JWT keys")
	}
	agent := e.agentSVID(node, agentID) // the node's SVID from before the restart still works
	if _, _, err := x509svid.Verify(agent.chain, after); err != nil {
		t.Errorf("x509svid.Verify(after restart) = %v", err)
	}
	_, other, err := client.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.client(nil, nil).Join(ctx, used.Token, other); problemName(err) != "join-token-used" {
		t.Errorf("Join(used token, another key) after restart = %v, want join-token-used", err)
	}
	// The host whose answer was lost in the stop asks again, with its key.
	if ans, err := e.client(nil, nil).Join(ctx, used.Token, csr); err != nil || ans.SPIFFEID != joined.SPIFFEID {
		t.Errorf("Join(used token, the same key) after restart = %v, %v; want a new SVID for %s", ans, err, joined.SPIFFEID)
	}
}

// TestJoinAskedAgain: a join whose answer was lost may be asked again,
// with the same token and key, until the token expires; with another key,
// after a ban, or after the expiry, it may not.
func TestJoinAskedAgain(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	public := e.client(nil, nil)
	// The answer creating a token carries a bearer secret: never cached.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: e.admin.TLSConfig()}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Post(e.url+"/v1/admin/join-tokens", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("join token created: %d, Cache-Control %q; want 201 and no-store", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
	tok, err := e.admin.CreateJoinToken(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	key, csr, err := client.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	first, err := public.Join(ctx, tok.Token, csr)
	if err != nil {
		t.Fatal(err)
	}
	again, err := public.Join(ctx, tok.Token, csr)
	if err != nil {
		t.Fatalf("Join asked again with the same key = %v", err)
	}
	n1, n2 := e.identity(first, key), e.identity(again, key)
	if n1.id != n2.id || n1.chain[0].SerialNumber.Cmp(n2.chain[0].SerialNumber) == 0 {
		t.Fatalf("asked again: %s serial %s, first %s serial %s; want a new SVID for the same node", n2.id, n2.chain[0].SerialNumber, n1.id, n1.chain[0].SerialNumber)
	}
	if _, _, err := x509svid.Verify(n2.chain, e.fetchBundle()); err != nil {
		t.Fatal(err)
	}
	retried := 0
	for _, d := range e.auditOf("svid.issued", n1.id.String()) {
		if d["join_retry"] == true && d["serial"] == n2.chain[0].SerialNumber.Text(16) {
			retried++
		}
	}
	if retried != 1 || len(e.auditOf("node.attested", n1.id.String())) != 1 {
		t.Errorf("audit: %d svid.issued with join_retry for the new serial, %d node.attested; want 1 and 1", retried, len(e.auditOf("node.attested", n1.id.String())))
	}
	nodes, err := e.admin.ListNodes(ctx)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("nodes after a join asked again: %v, %v; want one", nodes, err)
	}
	// The client shows what the admin API answers: the newest SVID's
	// issue time among it.
	if n := nodes[0]; n.SVIDIssuedAt.IsZero() || !n.NewestSVIDAt.Equal(n.SVIDIssuedAt) {
		t.Errorf("the node after a join asked again: svid_issued_at %v, newest_svid_at %v; want both, equal", n.SVIDIssuedAt, n.NewestSVIDAt)
	}
	_, otherCSR, err := client.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := public.Join(ctx, tok.Token, otherCSR); problemName(err) != "join-token-used" {
		t.Errorf("the token with another key = %v, want join-token-used", err)
	}
	e.skew.Store(int64(2 * time.Minute))
	if _, err := public.Join(ctx, tok.Token, csr); problemName(err) != "join-token-used" {
		t.Errorf("the same key after the token expired = %v, want join-token-used", err)
	}
	e.skew.Store(0)
	if _, err := e.admin.BanNode(ctx, n1.id.String(), "lost"); err != nil {
		t.Fatal(err)
	}
	if _, err := public.Join(ctx, tok.Token, csr); problemName(err) != "node-banned" {
		t.Errorf("the same key after a ban = %v, want node-banned", err)
	}
}

// TestNodeRenewsOnlyWithItsLatestSVID: a copy of a node's credential
// renewed since renews no more, and the refusal is audited once.
func TestNodeRenewsOnlyWithItsLatestSVID(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	s1 := e.joinNode()
	renew := e.renewNode
	s2, err := renew(s1)
	if err != nil {
		t.Fatal(err)
	}
	// The answer lost: the node renews again with the SVID it holds.
	s2b, err := renew(s1)
	if err != nil {
		t.Fatalf("renewal with the SVID renewed from (its answer lost) = %v", err)
	}
	s3, err := renew(s2b)
	if err != nil {
		t.Fatal(err)
	}
	for name, stale := range map[string]identity{"the first SVID": s1, "an SVID never used": s2} {
		for range 2 {
			if _, err := renew(stale); problemName(err) != "svid-superseded" {
				t.Errorf("renewal with %s = %v, want svid-superseded", name, err)
			}
		}
	}
	if _, err := renew(s3); err != nil {
		t.Errorf("renewal with the latest SVID = %v", err)
	}
	refused := e.auditOf("node.renewal_refused", s1.id.String())
	if len(refused) != 2 {
		t.Errorf("%d node.renewal_refused entries, want 2 (one per stale SVID, however often it tries)", len(refused))
	}

	// Renewals racing from one SVID: each is issued or refused as
	// renewed-meanwhile, and the SVID the node record names renews.
	latest, err := renew(s3)
	if err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		id  identity
		err error
	}
	outs := make([]outcome, 6)
	var wg sync.WaitGroup
	for i := range outs {
		wg.Go(func() { outs[i].id, outs[i].err = renew(latest) })
	}
	wg.Wait()
	nodes, err := e.admin.ListNodes(ctx)
	if err != nil || len(nodes) != 1 {
		t.Fatal(nodes, err)
	}
	var recorded *identity
	for i, o := range outs {
		switch {
		case o.err == nil && o.id.chain[0].SerialNumber.Text(16) == nodes[0].SVIDSerial:
			recorded = &outs[i].id
		case o.err != nil && problemName(o.err) != "renewed-meanwhile":
			t.Errorf("a racing renewal: %v, want an SVID or renewed-meanwhile", o.err)
		}
	}
	if recorded == nil {
		t.Fatalf("no racing renewal got the SVID the node record names (%s)", nodes[0].SVIDSerial)
	}
	if _, err := renew(*recorded); err != nil {
		t.Errorf("renewal with the SVID the record names, after the race: %v", err)
	}
}

// TestNodeAsksForAgentsOnlyWithItsLatestSVID: a copy of a node's
// credential renewed since gets no agent SVID (X.509 or JWT), the refusal
// is audited once per SVID, and the node's latest SVID gets them. The
// SVID a renewal replaced still gets them for 30 seconds (requests made
// with it as the node renewed are under way); one replaced twice, no
// longer.
func TestNodeAsksForAgentsOnlyWithItsLatestSVID(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	s1 := e.joinNode()
	agentID := e.registerAgent("hello", s1.id)
	e.agentSVID(s1, agentID)
	s2, err := e.renewNode(s1)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := e.admin.ListNodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].SVIDSerial != s2.chain[0].SerialNumber.Text(16) ||
		nodes[0].PrevSVIDSerial != s1.chain[0].SerialNumber.Text(16) || time.Since(nodes[0].SVIDIssuedAt).Abs() > time.Minute {
		t.Fatalf("the node record after a renewal: %+v, %v; want the new serial, the one it replaced, and when it was issued", nodes, err)
	}
	agentKey, _, err := client.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	agentCSR, err := client.CSRFor(agentKey, spiffeid.RequireFromString(agentID))
	if err != nil {
		t.Fatal(err)
	}
	asks := func(from identity) (x509, jwt error) {
		c := e.client(from.chain, from.key)
		_, x509 = c.X509SVID(ctx, agentID, agentCSR)
		_, jwt = c.JWTSVID(ctx, agentID, []string{"api.example"})
		return x509, jwt
	}
	if x, j := asks(s1); x != nil || j != nil {
		t.Fatalf("asked with the SVID just renewed from: %v, %v; want SVIDs (the renewal is seconds old)", x, j)
	}
	refusedAfter := func(stale identity, what string) {
		t.Helper()
		for range 2 {
			x, j := asks(stale)
			if problemName(x) != "svid-superseded" || problemName(j) != "svid-superseded" {
				t.Errorf("an agent's SVIDs asked with %s = %v, %v; want svid-superseded", what, x, j)
			}
		}
	}
	e.skew.Store(int64(31 * time.Second))
	refusedAfter(s1, "the node's SVID renewed from 31 s ago")
	e.skew.Store(0)
	s3, err := e.renewNode(s2)
	if err != nil {
		t.Fatal(err)
	}
	s4, err := e.renewNode(s3)
	if err != nil {
		t.Fatal(err)
	}
	refusedAfter(s2, "the node's SVID replaced twice since")
	for _, stale := range []identity{s1, s2} {
		refused := e.auditOf("node.superseded_svid", s1.id.String())
		var found bool
		for _, d := range refused {
			found = found || d["serial"] == stale.chain[0].SerialNumber.Text(16) && d["asked_for"] == agentID
		}
		if !found || len(refused) != 2 {
			t.Errorf("node.superseded_svid entries %v: want one for each stale SVID (%s), however often it asks", refused, stale.chain[0].SerialNumber.Text(16))
		}
	}
	if x, j := asks(s4); x != nil || j != nil {
		t.Errorf("asked with the node's latest SVID: %v, %v", x, j)
	}
}

// TestPublicEndpoints checks the JWKS (a plain JWT verifier validates a
// JWT-SVID with it), the health check and the admin CA status.
func TestPublicEndpoints(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	node := e.joinNode()
	agentID := e.registerAgent("hello", node.id)
	ans, err := e.client(node.chain, node.key).JWTSVID(ctx, agentID, []string{"api.example"})
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := e.client(nil, nil).Do(ctx, "GET", "/.well-known/jwks.json", nil, &set); err != nil {
		t.Fatalf("GET jwks = %v", err)
	}
	tok, err := jwt.ParseSigned(ans.Token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 || keys[0].Use != "sig" || keys[0].Algorithm != "ES256" {
		t.Fatalf("JWKS keys for kid %q = %+v, want one ES256 signing key", tok.Headers[0].KeyID, keys)
	}
	var claims jwt.Claims
	if err := tok.Claims(keys[0].Key, &claims); err != nil {
		t.Fatalf("verify JWT-SVID with the JWKS key: %v", err)
	}
	if err := claims.Validate(jwt.Expected{Subject: agentID, AnyAudience: jwt.Audience{"api.example"}, Time: time.Now()}); err != nil {
		t.Errorf("JWT-SVID claims: %v", err)
	}

	var health map[string]string
	if err := e.client(nil, nil).Do(ctx, "GET", "/healthz", nil, &health); err != nil || health["status"] != "ok" {
		t.Errorf("GET /healthz = %v, %v; want status ok", health, err)
	}
	var st struct {
		TrustDomain string            `json:"trust_domain"`
		Authorities []json.RawMessage `json:"authorities"`
	}
	if err := e.admin.Do(ctx, "GET", "/v1/admin/ca", nil, &st); err != nil || st.TrustDomain != "org-a.example" || len(st.Authorities) != 2 {
		t.Errorf("GET /v1/admin/ca = %+v, %v; want an X.509 CA and a JWT key", st, err)
	}
	if err := e.client(node.chain, node.key).Do(ctx, "GET", "/v1/admin/ca", nil, nil); problemName(err) != "forbidden" {
		t.Errorf("GET /v1/admin/ca as a node = %v, want forbidden", err)
	}
}

// TestNodeRenewsItself: a join-token node renews its own X509-SVID over
// mTLS with its current one, and the node record follows.
func TestNodeRenewsItself(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	node := e.joinNode()
	key, _, err := client.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := client.CSRFor(key, node.id)
	if err != nil {
		t.Fatal(err)
	}
	ans, err := e.client(node.chain, node.key).X509SVID(ctx, node.id.String(), csr)
	if err != nil {
		t.Fatalf("node renewal = %v", err)
	}
	renewed := e.identity(ans, key)
	if renewed.id != node.id || renewed.chain[0].SerialNumber.Cmp(node.chain[0].SerialNumber) == 0 {
		t.Fatalf("renewed SVID %s serial %s, want a new certificate for %s", renewed.id, renewed.chain[0].SerialNumber, node.id)
	}
	if _, _, err := x509svid.Verify(renewed.chain, e.fetchBundle()); err != nil {
		t.Errorf("x509svid.Verify(renewed node SVID) = %v", err)
	}
	nodes, err := e.admin.ListNodes(ctx)
	if err != nil || len(nodes) != 1 || !nodes[0].SVIDExpiresAt.Equal(renewed.chain[0].NotAfter) {
		t.Errorf("node record after renewal = %+v, %v; want svid_expires_at %s", nodes, err, renewed.chain[0].NotAfter)
	}
	// Another node cannot renew this one.
	other := e.joinNode()
	if _, err := e.client(other.chain, other.key).X509SVID(ctx, node.id.String(), csr); problemName(err) != "forbidden" {
		t.Errorf("a node renewing another node = %v, want forbidden", err)
	}
	if _, err := e.admin.X509SVID(ctx, node.id.String(), csr); problemName(err) != "forbidden" {
		t.Errorf("the admin minting a node SVID = %v, want forbidden", err)
	}
}

// TestAdminListsInPages: ?limit asks a page of agents or nodes, and its
// next_page_token the next, until every one was listed once, in order.
func TestAdminListsInPages(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	node := e.joinNode()
	var want []string
	for i := range 7 {
		want = append(want, e.registerAgent(fmt.Sprintf("a%d", i), node.id))
	}
	var got []string
	token, pages := "", 0
	for {
		var page struct {
			Agents        []client.Agent `json:"agents"`
			NextPageToken string         `json:"next_page_token"`
		}
		q := "/v1/admin/agents?limit=3"
		if token != "" {
			q += "&page_token=" + token
		}
		if err := e.admin.Do(ctx, http.MethodGet, q, nil, &page); err != nil {
			t.Fatal(err)
		}
		pages++
		if len(page.Agents) > 3 {
			t.Fatalf("a page of %d agents with limit=3", len(page.Agents))
		}
		for _, a := range page.Agents {
			got = append(got, a.SPIFFEID)
		}
		if page.NextPageToken == "" {
			break
		}
		token = page.NextPageToken
	}
	if pages != 3 || strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("%d pages listed %v, want 3 pages listing %v", pages, got, want)
	}
	all, err := e.admin.ListAgents(ctx)
	if err != nil || len(all) != len(want) {
		t.Fatalf("ListAgents = %d agents, %v; want %d", len(all), err, len(want))
	}
	var nodes struct {
		Nodes         []client.Node `json:"nodes"`
		NextPageToken string        `json:"next_page_token"`
	}
	if err := e.admin.Do(ctx, http.MethodGet, "/v1/admin/nodes?limit=1", nil, &nodes); err != nil || len(nodes.Nodes) != 1 || nodes.NextPageToken != "" {
		t.Fatalf("nodes?limit=1 with one node: %+v, %v; want it and no next page", nodes, err)
	}
	for _, q := range []string{"limit=", "limit=2&page_token=", "limit=0", "limit=501", "limit=x", "page_token=YQ", "limit=3&page_token=%%%", "limit=3&page_token=@@", "limit=3&page_token=" + base64.RawURLEncoding.EncodeToString([]byte("not a spiffe id")), "limit=3&limit=4", "offset=3"} {
		if err := e.admin.Do(ctx, http.MethodGet, "/v1/admin/agents?"+q, nil, nil); problemName(err) != "invalid-request" {
			t.Errorf("agents?%s = %v, want invalid-request", q, err)
		}
	}
}

// A page of an admin list ends at 2 MiB of entries, whatever its limit:
// the client and CLI list a registry of large registrations (each up to
// a request body's size) within their 4 MiB answers.
func TestAdminListOfLargeRegistrations(t *testing.T) {
	e := start(t, "org-a.example")
	ctx := ctxT(t)
	long := strings.Repeat("x", 1900)
	var nodes []string
	for i := range 30 {
		nodes = append(nodes, spiffeid.RequireFromSegments(e.td, "node", "join", fmt.Sprintf("%s%d", long, i)).String())
	}
	const n = 45 // about 58 KiB each: 2.6 MiB in all
	for i := range n {
		id := spiffeid.RequireFromSegments(e.td, "agent", fmt.Sprintf("big%02d", i)).String()
		if _, err := e.admin.CreateAgent(ctx, &client.Agent{SPIFFEID: id, NodeIDs: nodes}); err != nil {
			t.Fatal(err)
		}
	}
	var page struct {
		Agents        []client.Agent `json:"agents"`
		NextPageToken string         `json:"next_page_token"`
	}
	if err := e.admin.Do(ctx, http.MethodGet, "/v1/admin/agents?limit=500", nil, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Agents) == 0 || len(page.Agents) >= n || page.NextPageToken == "" {
		t.Fatalf("a page of %d agents of %d, next %q; want it cut at 2 MiB with a next page", len(page.Agents), n, page.NextPageToken)
	}
	all, err := e.admin.ListAgents(ctx)
	if err != nil || len(all) != n {
		t.Fatalf("ListAgents = %d agents, %v; want %d", len(all), err, n)
	}
}

// TestJWKSCachedNoLongerThanTheRefreshHint: a new JWT key is published
// for a third of jwt_key_ttl before it signs, and the bundle's refresh
// hint is shorter than that; the JWKS answer may be cached no longer
// than the hint, or a verifier could hold a JWKS without the key that
// signs the tokens it is shown.
func TestJWKSCachedNoLongerThanTheRefreshHint(t *testing.T) {
	for _, tc := range []struct {
		hint, want time.Duration
	}{{20 * time.Second, 20 * time.Second}, {5 * time.Minute, time.Minute}} {
		e := start(t, "org-a.example", func(c *authority.Config) {
			if tc.hint < time.Minute {
				c.CA.CATTL, c.CA.JWTKeyTTL = authority.Duration(2*time.Minute), authority.Duration(2*time.Minute)
				c.CA.X509SVIDTTL, c.CA.JWTSVIDTTL = authority.Duration(time.Minute), authority.Duration(time.Minute)
			}
			c.Federation.BundleRefreshHint = authority.Duration(tc.hint)
		})
		resp, err := e.rawClient(nil, nil).Get(e.url + "/.well-known/jwks.json")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got, want := resp.Header.Get("Cache-Control"), fmt.Sprintf("max-age=%d", int(tc.want/time.Second)); resp.StatusCode != 200 || got != want {
			t.Errorf("refresh hint %s: GET jwks = %d, Cache-Control %q; want 200, %q", tc.hint, resp.StatusCode, got, want)
		}
	}
}
