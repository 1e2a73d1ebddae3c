package api_test

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"mandate.dev/mandate/authority"
)

// rawRequest sends req as it is on a connection of its own, and reads
// the answer, whatever it is.
func (e *env) rawRequest(t *testing.T, req string) {
	t.Helper()
	c, err := e.dialRaw(t)
	if err != nil {
		t.Fatal(err)
	}
	defer c.c.Close()
	_ = c.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c.c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// scrape returns the text of e's /metrics.
func (e *env) scrape() []byte {
	e.t.Helper()
	resp, err := e.rawClient(nil, nil).Get(e.url + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		e.t.Fatalf("GET /metrics: %d, %v", resp.StatusCode, err)
	}
	return text
}

// checkExposition parses a scrape with Prometheus' own text parser and
// lints it with promlint (Prometheus' naming conventions: base units,
// counters ending in _total, HELP on every family, ...). It returns the
// families found.
func checkExposition(t *testing.T, text []byte) map[string]bool {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("Prometheus' text parser refuses /metrics: %v", err)
	}
	problems, err := promlint.New(bytes.NewReader(text)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	got := map[string]bool{}
	for name, mf := range mfs {
		if len(mf.GetMetric()) == 0 {
			t.Errorf("%s: a family without a series", name)
		}
		got[name] = true
	}
	return got
}

// documentedMetrics are the metrics docs/api.md lists for GET /metrics.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(mandate_[a-z0-9_]+)`").FindAllSubmatch(doc, -1) {
		names = append(names, string(m[1]))
	}
	if len(names) == 0 {
		t.Fatal("docs/api.md lists no metric")
	}
	return names
}

// Every metric family the server exposes follows Prometheus' conventions
// as promlint checks them, and parses with Prometheus' own text parser:
// each is exposed here with series (its labelled vectors used: an SVID
// issued, a delegation, a policy decision and reload, an audit append,
// a federation, a connection shed), so a new metric that breaks them
// fails this test. The families exposed are those docs/api.md lists.
func TestMetricsFollowPrometheusConventions(t *testing.T) {
	pe := startPolicy(t)
	peer := start(t, "org-b.example")
	pe.federate(peer)
	pe.startedAudit()
	a := pe.agentWithScopes("a", "calendar:read")
	b := pe.agentWithScopes("b")
	pe.mustDelegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice"})
	if _, p := pe.delegate(a, delegateReq{delegatee: b, scopes: []string{"payments:write"}, principal: "alice"}); p == nil {
		t.Fatal("an escalation was issued")
	}
	if _, err := pe.client(a.chain, a.key).JWTSVID(ctxT(t), "", []string{"svc"}); err != nil {
		t.Fatalf("JWTSVID() = %v", err)
	}
	gw := pe.client(pe.gateway.chain, pe.gateway.key)
	if status, ans := do(t, gw, "POST", "/v1/data/authz", "application/json", []byte(delegationInput)); status != 200 {
		t.Fatalf("a Data API decision: %d %v", status, ans)
	}
	if status, ans := do(t, gw, "POST", "/access/v1/evaluation", "application/json",
		[]byte(`{"subject": {"type": "agent", "id": "x"}, "action": {"name": "a"}, "resource": {"type": "r", "id": "1"}}`)); status != 200 {
		t.Fatalf("an AuthZEN decision: %d %v", status, ans)
	}
	if _, err := pe.admin.ReloadPolicy(ctxT(t)); err != nil {
		t.Fatalf("ReloadPolicy() = %v", err)
	}
	if status, _ := do(t, gw, "GET", "/no/such/path", "", nil); status != 404 {
		t.Fatalf("an unknown path: %d, want 404", status)
	}
	// Requests no route serves, and ones refused before their handler,
	// with what a caller chooses in their path, method and Host: no
	// label may take it up (each label's values are bounded).
	const marker = "x7hostile"
	for _, req := range []string{
		"GET /" + marker + " HTTP/1.1", "GET /v1/data/" + marker + " HTTP/1.1", marker + " /v1/data/a HTTP/1.1",
		"POST /v1/admin/nodes/" + marker + "/evict HTTP/1.1", "GET /v1/admin/nodes/" + marker + "/evict HTTP/1.1",
		"GET /tile/" + marker + " HTTP/1.1", "GET /v1/" + marker + "/../bundle HTTP/1.1", "CONNECT " + marker + ":443 HTTP/1.1",
		"GET http://" + marker + "/v1/bundle HTTP/1.1",
	} {
		pe.rawRequest(t, req+"\r\nHost: "+marker+"\r\nContent-Length: 0\r\n\r\n")
	}
	text := pe.scrape()
	if i := bytes.Index(text, []byte(marker)); i >= 0 {
		t.Errorf("/metrics took up what a request chose: %q", text[max(0, i-200):i+len(marker)])
	}
	got := checkExposition(t, text)

	// A connection shed at http.max_connections: whether the first one is already idle (closed for the second) or
	// not (the second refused), one is shed; the scrape is then asked
	// for until a connection is served.
	small := start(t, "org-c.example", func(c *authority.Config) { c.HTTP.MaxConnections = 1 })
	first := small.mustDialRaw(t)
	first.get("/healthz")
	if second, err := small.dialRaw(t); err == nil {
		second.c.Close()
	}
	first.c.Close()
	var shed []byte
	for deadline := time.Now().Add(10 * time.Second); shed == nil; time.Sleep(10 * time.Millisecond) {
		if resp, err := small.rawClient(nil, nil).Get(small.url + "/metrics"); err == nil {
			shed, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		} else if time.Now().After(deadline) {
			t.Fatalf("GET /metrics at http.max_connections 1: %v", err)
		}
	}
	if !bytes.Contains(shed, []byte("mandate_http_connections_shed_total{")) {
		t.Errorf("no connection shed at http.max_connections 1:\n%s", grepLines(string(shed), "mandate_http_connections"))
	}
	for name := range checkExposition(t, shed) {
		got[name] = true
	}

	// A request over http.rate_limit (1 a second, 1 at once): the
	// second of two joins from one address.
	limited := start(t, "org-d.example", func(c *authority.Config) {
		one := 1
		c.HTTP.RateLimit = authority.RateLimitConfig{RequestsPerSecond: &one, Burst: 1}
	})
	limited.frozen.Store(time.Now().UnixNano())
	for range 2 {
		resp, err := limited.rawClient(nil, nil).Post(limited.url+"/v1/nodes/join", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	for name := range checkExposition(t, limited.scrape()) {
		got[name] = true
	}

	// A witness refusing a request that is not one (C2SP tlog-witness).
	witness := start(t, "org-e.example", func(c *authority.Config) { c.Audit.Witness.Logs = []string{limited.a.AuditVerifierKey()} })
	resp, err := witness.rawClient(nil, nil).Post(witness.url+"/v1/witness/add-checkpoint", "text/plain", strings.NewReader("old 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for name := range checkExposition(t, witness.scrape()) {
		got[name] = true
	}
	// A log given a witness (audit.witnesses): the size it cosigned.
	witnessed := start(t, "org-f.example", func(c *authority.Config) {
		c.Audit.Witnesses = []authority.WitnessEndpoint{{URL: witness.url + "/v1/witness", VKey: witness.a.Witness().VerifierKey(), TrustDomain: "org-e.example"}}
	})
	for name := range checkExposition(t, witnessed.scrape()) {
		got[name] = true
	}

	var missing []string
	for _, name := range documentedMetrics(t) {
		if !got[name] {
			missing = append(missing, name)
		}
		delete(got, name)
	}
	var undocumented []string
	for name := range got {
		if !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			undocumented = append(undocumented, name)
		}
	}
	sort.Strings(undocumented)
	if len(missing) > 0 {
		t.Errorf("documented in docs/api.md, not exposed with a series here: %v", missing)
	}
	if len(undocumented) > 0 {
		t.Errorf("exposed, not documented in docs/api.md: %v", undocumented)
	}
}
