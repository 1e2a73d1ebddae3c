package api_test

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/policies"
)

// crossOrgPolicy is a ~40-line cross-organisation delegation policy, the
// kind platforms ask about.
const crossOrgPolicy = `package authz

import rego.v1

default allow := false

trusted_orgs := {"org-a.example", "org-b.example"}

allow if {
	count(deny) == 0
}

deny contains "caller organisation is not trusted" if {
	not input.caller.org in trusted_orgs
}

deny contains msg if {
	some s in input.request.scopes
	not s in input.delegation.scopes
	msg := sprintf("scope %s not delegated", [s])
}

deny contains "delegation expired" if {
	input.delegation.exp < input.now
}

deny contains "too deep" if {
	count(input.delegation.chain) > 3
}

reasons := sort(deny)

conflict := 1 if input.conflict

conflict := 2 if input.conflict

slow := count([x | some x in numbers.range(1, 100000000)]) if input.slow

echo := input.blob

grant := {"allow": true, "token": "s3cret"}

tonum := to_number(input.s)

tonum_twice := to_number(concat("", [input.s, input.s]))

authzen_num := {"decision": to_number(input.subject.id) > 0}

arr := [x | some x in numbers.range(1, 3)]

not_a_decision := {"decision": true, "context": "not an object"}
`

// policyEnv is an authority with crossOrgPolicy loaded and an agent
// "gateway" allowed to call the decision API.
type policyEnv struct {
	*env
	gateway identity
	dir     string
}

func startPolicy(t *testing.T, mutate ...func(*authority.Config)) *policyEnv {
	t.Helper()
	return startPolicyB(t, mutate...)
}

func startPolicyB(t testing.TB, mutate ...func(*authority.Config)) *policyEnv {
	t.Helper()
	dir := t.TempDir()
	// A policy directory replaces the embedded policies: start from them.
	if err := os.CopyFS(dir, policies.FS); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(crossOrgPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	gw := "spiffe://org-a.example/agent/gateway"
	e := start(t, "org-a.example", append([]func(*authority.Config){func(c *authority.Config) {
		c.Policy.Dir = dir
		c.Policy.DecisionCallers = []string{gw}
		c.Policy.DecisionLogMask = []string{"/input/secret", "/result/token"}
		// The runaway rule (slow) runs into it; every other evaluation
		// here ends far below it, however loaded the machine.
		c.Policy.EvalTimeout = authority.Duration(time.Second)
	}}, mutate...)...)
	node := e.joinNode()
	e.registerAgent("gateway", node.id)
	return &policyEnv{env: e, gateway: e.agentSVID(node, gw), dir: dir}
}

var delegationInput = `{"input": {"caller": {"org": "org-b.example"}, "request": {"scopes": ["calendar:read"]},
	"delegation": {"scopes": ["calendar:read", "mail:send"], "exp": 2000, "chain": ["a", "b"]}, "now": 1000, "secret": "hunter2"}}`

// do sends a raw request as c and returns status and decoded body.
func do(t *testing.T, c *client.Client, method, path, contentType string, body []byte) (int, map[string]any) {
	t.Helper()
	return doWith(t, c, method, path, map[string]string{"Content-Type": contentType}, body)
}

// doWith is do with these request headers (empty values are not sent).
func doWith(t *testing.T, c *client.Client, method, path string, headers map[string]string, body []byte) (int, map[string]any) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: c.TLSConfig(), DisableCompression: true}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctxT(t), method, c.Server()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: %d, body %q is not a JSON object", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

func TestDataAPIAnswersAsOPA(t *testing.T) {
	pe := startPolicy(t)
	gw := pe.client(pe.gateway.chain, pe.gateway.key)

	status, ans := do(t, gw, http.MethodPost, "/v1/data/authz/allow", "application/json", []byte(delegationInput))
	if status != 200 || ans["result"] != true || ans["decision_id"] == "" || ans["warning"] != nil {
		t.Fatalf("allow: %d %v", status, ans)
	}
	decisionID := ans["decision_id"].(string)
	status, ans = do(t, gw, http.MethodPost, "/v1/data/authz", "application/json", []byte(delegationInput))
	if doc, _ := ans["result"].(map[string]any); status != 200 || doc["allow"] != true || doc["reasons"] == nil {
		t.Fatalf("the package document: %d %v", status, ans)
	}

	// An undefined document: 200 and no result key.
	status, ans = do(t, gw, http.MethodPost, "/v1/data/authz/nothing/here", "application/json", []byte(delegationInput))
	if _, has := ans["result"]; status != 200 || has || ans["decision_id"] == nil {
		t.Fatalf("undefined: %d %v", status, ans)
	}
	// No input: evaluated, with OPA's warning.
	status, ans = do(t, gw, http.MethodPost, "/v1/data/authz/allow", "application/json", nil)
	if w, _ := ans["warning"].(map[string]any); status != 200 || ans["result"] == nil || w["code"] != "api_usage_warning" {
		t.Fatalf("no input: %d %v", status, ans)
	}
	// GET with ?input=, ?metrics and ?provenance.
	in := `{"caller":{"org":"org-c.example"},"request":{"scopes":[]},"delegation":{"scopes":[],"exp":1,"chain":[]},"now":5}`
	status, ans = do(t, gw, http.MethodGet, "/v1/data/authz/reasons?metrics&provenance=true&input="+url.QueryEscape(in), "", nil)
	prov, _ := ans["provenance"].(map[string]any)
	if status != 200 || ans["metrics"] == nil || prov["revision"] != pe.a.PolicyRevision() {
		t.Fatalf("GET: %d %v", status, ans)
	}
	if r, _ := ans["result"].([]any); len(r) != 2 {
		t.Fatalf("GET reasons: %v", ans["result"])
	}
	// OPA's provenance members are all there (an OPA client reads them),
	// the build_* ones empty where the build did not set them.
	for _, k := range []string{"version", "build_commit", "build_timestamp", "build_hostname", "bundles"} {
		if _, ok := prov[k]; !ok {
			t.Errorf("provenance %v has no %q, as OPA's has", prov, k)
		}
	}

	// As OPA, the request is the body's first JSON value: what follows
	// it (a stray brace, a second object) is not read.
	for _, trailing := range []string{" trailing", "}", `{"input": {}}`, "\n\n"} {
		status, ans := do(t, gw, http.MethodPost, "/v1/data/authz/allow", "application/json", []byte(delegationInput+trailing))
		if status != 200 || ans["result"] != true {
			t.Fatalf("a body followed by %q: %d %v, want OPA's answer to the body", trailing, status, ans)
		}
	}

	// As OPA: a gzip-compressed body, a YAML body.
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(b)
		_ = zw.Close()
		return buf.Bytes()
	}
	yamlInput := "input:\n  caller: {org: org-b.example}\n  request: {scopes: [calendar:read]}\n  delegation: {scopes: [calendar:read, mail:send], exp: 2000, chain: [a, b]}\n  now: 1000\n"
	for _, tc := range []struct {
		name    string
		headers map[string]string
		body    []byte
	}{
		{"gzip", map[string]string{"Content-Type": "application/json", "Content-Encoding": "gzip"}, gz([]byte(delegationInput))},
		{"YAML", map[string]string{"Content-Type": "application/x-yaml"}, []byte(yamlInput)},
		{"gzip YAML", map[string]string{"Content-Type": "application/yaml", "Content-Encoding": "gzip"}, gz([]byte(yamlInput))},
		// As OPA reads them (RFC 9110: x-gzip is gzip; identity changes nothing).
		{"x-gzip", map[string]string{"Content-Encoding": "x-gzip"}, gz([]byte(delegationInput))},
		{"gzip, identity", map[string]string{"Content-Encoding": "gzip, identity"}, gz([]byte(delegationInput))},
		{"GZIP", map[string]string{"Content-Encoding": "GZIP"}, gz([]byte(delegationInput))},
	} {
		if status, ans := doWith(t, gw, http.MethodPost, "/v1/data/authz/allow", tc.headers, tc.body); status != 200 || ans["result"] != true {
			t.Fatalf("%s: %d %v", tc.name, status, ans)
		}
	}
	// As OPA reads YAML: a date or a time written plain is the string
	// written, not a time re-written (2001-12-14T00:00:00Z); one tagged a
	// timestamp is a time.
	yamlDates := "input:\n  blob:\n    date: 2001-12-14\n    time: 2001-12-14t21:59:43.10-05:00\n    2001-12-14: as a key\n    tagged: !!timestamp 2001-12-14\n"
	if status, ans := doWith(t, gw, http.MethodPost, "/v1/data/authz/echo", map[string]string{"Content-Type": "application/yaml"}, []byte(yamlDates)); status != 200 ||
		fmt.Sprint(ans["result"]) != "map[2001-12-14:as a key date:2001-12-14 tagged:2001-12-14T00:00:00Z time:2001-12-14t21:59:43.10-05:00]" {
		t.Fatalf("YAML dates: %d %v", status, ans)
	}
	for _, tc := range []struct {
		name    string
		headers map[string]string
		body    []byte
		status  int
	}{
		{"not gzip", map[string]string{"Content-Encoding": "gzip"}, []byte(delegationInput), 400},
		{"a gzip bomb", map[string]string{"Content-Encoding": "gzip"}, gz([]byte(`{"input": "` + strings.Repeat("a", 8<<20) + `"}`)), 413},
		{"another encoding", map[string]string{"Content-Encoding": "br"}, []byte(delegationInput), 400},
		{"gzip twice", map[string]string{"Content-Encoding": "gzip, gzip"}, gz(gz([]byte(delegationInput))), 400},
		{"gzip and another", map[string]string{"Content-Encoding": "deflate, gzip"}, gz([]byte(delegationInput)), 400},
		{"malformed YAML", map[string]string{"Content-Type": "application/x-yaml"}, []byte("input: [\n"), 400},
		{"YAML mapping keys that are not scalars", map[string]string{"Content-Type": "application/x-yaml"}, []byte("input:\n  1: a\n  [x]: b\n"), 400},
		{"YAML aliases expanding past the limit", map[string]string{"Content-Type": "application/x-yaml"},
			[]byte("a: &a [" + strings.Repeat(`"0123456789abcdef0123456789abcdef",`, 300) + "x]\ninput: [*a, *a, *a, *a, *a, *a, *a, *a]\n"), 413},
		{"YAML aliases to a long string", map[string]string{"Content-Type": "application/x-yaml"},
			[]byte("a: &a " + strings.Repeat("x", 20<<10) + "\ninput: [" + strings.Repeat("*a, ", 1000) + "*a]\n"), 413},
		{"YAML keys read as the same string", map[string]string{"Content-Type": "application/x-yaml"}, []byte("input: {1: int, 1.0: float}\n"), 400},
		{"a YAML null key", map[string]string{"Content-Type": "application/x-yaml"}, []byte("input:\n  ~: a\n"), 400},
		{"YAML nested too deep", map[string]string{"Content-Type": "application/x-yaml"}, []byte("input: " + strings.Repeat("[", 100) + strings.Repeat("]", 100)), 400},
	} {
		if status, ans := doWith(t, gw, http.MethodPost, "/v1/data/authz/allow", tc.headers, tc.body); status != tc.status || ans["code"] != "invalid_parameter" {
			t.Fatalf("%s: %d %v, want %d invalid_parameter", tc.name, status, ans, tc.status)
		}
	}

	// Errors in OPA's shape.
	for _, tc := range []struct {
		name, method, path, ct string
		body                   []byte
		status                 int
		code                   string
	}{
		{"malformed JSON", "POST", "/v1/data/authz/allow", "application/json", []byte(`{"input": {`), 400, "invalid_parameter"},
		{"invalid UTF-8", "POST", "/v1/data/authz/allow", "application/json", []byte("{\"input\": \"\xff\xfe\"}"), 400, "invalid_parameter"},
		{"deeply nested", "POST", "/v1/data/authz/allow", "application/json", []byte(`{"input": ` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`), 400, "invalid_parameter"},
		{"oversized", "POST", "/v1/data/authz/allow", "application/json", []byte(`{"input": "` + strings.Repeat("a", 70<<10) + `"}`), 413, "invalid_parameter"},
		{"bad GET input", "GET", "/v1/data/authz/allow?input=%7B", "", nil, 400, "invalid_parameter"},
		{"path too deep", "POST", "/v1/data/" + strings.Repeat("a/", 40) + "b", "application/json", nil, 400, "invalid_parameter"},
		{"path not in clean form", "POST", "/v1/data/authz//allow", "application/json", []byte(`{"input": {}}`), 404, "resource_not_found"},
		{"conflict in the policy", "POST", "/v1/data/authz/conflict", "application/json", []byte(`{"input": {"conflict": true}}`), 500, "internal_error"},
		{"policy runs too long", "POST", "/v1/data/authz/slow", "application/json", []byte(`{"input": {"slow": true}}`), 500, "internal_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, ans := do(t, gw, tc.method, tc.path, tc.ct, tc.body)
			if status != tc.status || ans["code"] != tc.code || ans["message"] == "" {
				t.Fatalf("%d %v, want %d %s", status, ans, tc.status, tc.code)
			}
		})
	}
	// A body that is not an object is refused in OPA's words.
	for _, tc := range []struct{ body, kind string }{{`[1]`, "array"}, {`"s"`, "string"}, {`true`, "bool"}, {`1`, "number"}} {
		status, ans := do(t, gw, http.MethodPost, "/v1/data/authz/allow", "application/json", []byte(tc.body))
		if want := "body contains malformed input document: json: cannot unmarshal " + tc.kind + " into Go value of type types.alias"; status != 400 || ans["code"] != "invalid_parameter" || ans["message"] != want {
			t.Fatalf("POST %s: %d %v, want OPA's 400 invalid_parameter, %q", tc.body, status, ans, want)
		}
	}
	// A malformed ?input= is refused in OPA's words, and, as OPA, so is
	// one followed by anything: a parameter is one whole JSON value.
	for _, tc := range []struct{ in, why string }{
		{``, "EOF"}, {`{`, "unexpected EOF"}, {`{"a": 1} x`, "invalid character 'x' looking for beginning of value"},
		{`1 2`, "error: invalid character '2' after top-level value"}, {`{"a" 1}`, "invalid character '1' after object key"},
	} {
		status, ans := do(t, gw, http.MethodGet, "/v1/data/authz/allow?input="+url.QueryEscape(tc.in), "", nil)
		if want := "parameter contains malformed input document: " + tc.why; status != 400 || ans["code"] != "invalid_parameter" || ans["message"] != want {
			t.Fatalf("GET ?input=%s: %d %v, want OPA's 400 invalid_parameter, %q", tc.in, status, ans, want)
		}
	}
	// A number whose exponent is past what the engine takes: refused
	// with the body as OPA refuses it, in a string or outside the input
	// it is no number of the input's.
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		status             int
	}{
		{"POST", "POST", "/v1/data/authz/allow", []byte(`{"input": {"n": [1, -2.5E+70000]}}`), 400},
		{"GET", "GET", "/v1/data/authz/allow?input=" + url.QueryEscape(`{"n":1e70000}`), nil, 400},
		{"in a string", "POST", "/v1/data/authz/allow", []byte(`{"input": {"n": "\"1e70000"}}`), 200},
		{"beside the input", "POST", "/v1/data/authz/allow", []byte(`{"input": {"n": 1e400}, "other": 1e70000}`), 200},
	} {
		status, ans := do(t, gw, tc.method, tc.path, "application/json", tc.body)
		if status != tc.status || tc.status == 400 && (ans["code"] != "invalid_parameter" || ans["message"] != "invalid number: number too big") {
			t.Fatalf("a number too big, %s: %d %v, want %d (and OPA's invalid_parameter, \"invalid number: number too big\")", tc.name, status, ans, tc.status)
		}
	}
	if _, ans := do(t, gw, "POST", "/v1/data/authz/conflict", "application/json", []byte(`{"input": {"conflict": true}}`)); ans["errors"] == nil {
		t.Fatalf("an evaluation error lists its errors: %v", ans)
	}
	// A path the compiler refuses against the policy: as OPA, 500
	// internal_error with the compiler's message, no errors list.
	for _, path := range []string{"/v1/data/authz/arr/-1", "/v1/data/authz/grant/nope"} {
		status, ans := do(t, gw, http.MethodGet, path, "", nil)
		// OPA's words: the error is at the query's 1:1.
		if msg, _ := ans["message"].(string); status != 500 || ans["code"] != "internal_error" || !strings.HasPrefix(msg, "1 error occurred: 1:1: rego_type_error: ") || ans["errors"] != nil {
			t.Fatalf("GET %s: %d %v, want OPA's 500 internal_error with the compiler's message", path, status, ans)
		}
	}
	// A timeout is the server's (a busy one, maybe): OPA's 500, a client
	// may retry; its error's code names it.
	_, ans = do(t, gw, "POST", "/v1/data/authz/slow", "application/json", []byte(`{"input": {"slow": true}}`))
	if errs, _ := ans["errors"].([]any); len(errs) != 1 || errs[0].(map[string]any)["code"] != "evaluation_timeout" {
		t.Fatalf("a timeout's errors: %v", ans)
	}

	// Every decision is in the audit log, with the caller, the masked
	// input, the result and the revision.
	var found struct {
		Entries []struct {
			Entry struct {
				Type           string         `json:"type"`
				Actor          string         `json:"actor"`
				DecisionID     string         `json:"decision_id"`
				PolicyRevision string         `json:"policy_revision"`
				Details        map[string]any `json:"details"`
			} `json:"entry"`
		} `json:"entries"`
	}
	if err := pe.admin.Do(ctxT(t), http.MethodGet, "/v1/audit/search?decision_id="+decisionID, nil, &found); err != nil || len(found.Entries) != 1 {
		t.Fatalf("audit search by decision id: %v, %d entries", err, len(found.Entries))
	}
	rec := found.Entries[0].Entry
	input, _ := rec.Details["input"].(map[string]any)
	if rec.Type != "policy.decision" || rec.Actor != pe.gateway.id.String() || rec.PolicyRevision != pe.a.PolicyRevision() ||
		rec.Details["result"] != true || rec.Details["path"] != "authz/allow" || input == nil || input["secret"] != nil ||
		rec.Details["erased"] == nil {
		t.Fatalf("decision record: %+v", rec)
	}
	if _, err := os.Stat(pe.dir); err != nil {
		t.Fatal(err)
	}
}

// OPA's Data API semantics the reviewers of a policy rely on: integer
// segments index arrays, boolean parameters in any case, builtin errors
// undefined unless strict-builtin-errors, an input as deep in a POST body
// as in a GET.
func TestDataAPISemanticsAsOPA(t *testing.T) {
	pe := startPolicy(t)
	gw := pe.client(pe.gateway.chain, pe.gateway.key)
	if status, ans := do(t, gw, "GET", "/v1/data/authz/arr/1", "", nil); status != 200 || ans["result"] != 2.0 {
		t.Errorf("an array index: %d %v", status, ans)
	}
	// As OPA reads an integer segment: a fraction of zeros is allowed.
	for _, p := range []string{"/v1/data/authz/arr/1.0", "/v1/data/authz/arr/1.", "/v1/data/authz/arr/+1"} {
		if status, ans := do(t, gw, "GET", p, "", nil); status != 200 || ans["result"] != 2.0 {
			t.Errorf("%s: %d %v, want OPA's 200 {\"result\": 2}", p, status, ans)
		}
	}
	if status, ans := do(t, gw, "GET", "/v1/data/authz/arr/0?metrics=True", "", nil); status != 200 || ans["result"] != 1.0 || ans["metrics"] == nil {
		t.Errorf("metrics=True: %d %v", status, ans)
	}
	// As OPA reads a boolean parameter: an empty value is true only
	// when it is the parameter's one value.
	for _, tc := range []struct {
		query string
		want  bool
	}{
		{"metrics", true}, {"metrics=", true}, {"metrics=TRUE", true}, {"metrics=1", false},
		{"metrics&metrics=false", false}, {"metrics=&metrics=", false}, {"metrics=no&metrics=true", true},
	} {
		if status, ans := do(t, gw, "GET", "/v1/data/authz/arr/0?"+tc.query, "", nil); status != 200 || (ans["metrics"] != nil) != tc.want {
			t.Errorf("?%s: %d %v, want metrics %v, as OPA", tc.query, status, ans, tc.want)
		}
	}
	if status, ans := do(t, gw, "POST", "/v1/data/authz/tonum", "application/json", []byte(`{"input": {"s": "9x"}}`)); status != 200 || ans["result"] != nil {
		t.Errorf("a builtin error: %d %v, want 200 and no result", status, ans)
	}
	if status, ans := do(t, gw, "POST", "/v1/data/authz/tonum?strict-builtin-errors", "application/json", []byte(`{"input": {"s": "9x-quoted"}}`)); status != 500 || ans["code"] != "internal_error" || ans["errors"] == nil {
		t.Errorf("a builtin error, strict: %d %v, want 500 internal_error", status, ans)
	}
	// The operator's policy failed: said in the server log, with its code
	// and the request's id, never with the message (which quotes input).
	if logs := pe.logs.String(); !strings.Contains(logs, `msg="policy evaluation failed"`) || !strings.Contains(logs, "code=eval_builtin_error") ||
		!strings.Contains(logs, "request_id=") || strings.Contains(logs, "9x-quoted") {
		t.Errorf("the server log of a policy that failed to evaluate:\n%s", logs)
	}
	deep := strings.Repeat("[", 64) + strings.Repeat("]", 64)
	if status, ans := do(t, gw, "GET", "/v1/data/authz/arr?input="+url.QueryEscape(deep), "", nil); status != 200 {
		t.Errorf("GET input 64 deep: %d %v", status, ans)
	}
	if status, ans := do(t, gw, "POST", "/v1/data/authz/arr", "application/json", []byte(`{"input": `+deep+`}`)); status != 200 {
		t.Errorf("POST input 64 deep: %d %v", status, ans)
	}
	if status, ans := do(t, gw, "POST", "/v1/data/authz/arr", "application/json", []byte(`{"input": [`+deep+`]}`)); status != 400 {
		t.Errorf("POST input 65 deep: %d %v", status, ans)
	}
	// An unauthenticated caller learns nothing of the path rules.
	for _, p := range []string{"/v1/data/authz/%FF", "/v1/data/" + strings.Repeat("a/", 40) + "b"} {
		if status, ans := do(t, pe.client(nil, nil), "GET", p, "", nil); status != 401 || ans["code"] != "unauthorized" {
			t.Errorf("no client certificate, %s: %d %v, want 401", p, status, ans)
		}
	}
}

// AuthZEN: a caller that may not ask is refused before its body is read,
// and a policy answer of the wrong shape is no permit.
func TestAuthZENRefusesBeforeTheBodyAndFailsClosed(t *testing.T) {
	pe := startPolicy(t, func(c *authority.Config) { c.Policy.AuthZENPath = "authz/not_a_decision" })
	node := pe.joinNode()
	other := pe.client(node.chain, node.key)
	for _, tc := range []struct{ path, body string }{
		{"/access/v1/evaluation", `{not json`},
		{"/access/v1/evaluation", `{"subject": 1}`},
		{"/access/v1/evaluations", `{"evaluations": [` + strings.Repeat(`{},`, 64) + `{}]}`},
	} {
		if status, ans := do(t, other, "POST", tc.path, "application/json", []byte(tc.body)); status != 403 {
			t.Errorf("a node, not a decision caller, POST %s %s: %d %v, want 403", tc.path, tc.body, status, ans)
		}
	}
	gw := pe.client(pe.gateway.chain, pe.gateway.key)
	status, ans := do(t, gw, "POST", "/access/v1/evaluation", "application/json",
		[]byte(`{"subject": {"type": "agent", "id": "x"}, "action": {"name": "a"}, "resource": {"type": "r", "id": "1"}}`))
	if status != 200 || ans["decision"] != false {
		t.Errorf("a decision with a context that is not an object: %d %v, want decision false", status, ans)
	}
}

func TestDataAPIRecords(t *testing.T) {
	pe := startPolicy(t)
	gw := pe.client(pe.gateway.chain, pe.gateway.key)
	// A mask erases from the record, not from the answer.
	status, ans := do(t, gw, "POST", "/v1/data/authz/grant", "application/json", []byte(`{"input": {}}`))
	if r, _ := ans["result"].(map[string]any); status != 200 || r["token"] != "s3cret" {
		t.Fatalf("masked result in the answer: %d %v", status, ans)
	}
	rec := pe.decisionRecord(ans["decision_id"].(string))
	if r, _ := rec["result"].(map[string]any); r == nil || r["token"] != nil || r["allow"] != true {
		t.Fatalf("masked result in the record: %v", rec)
	}
	// An input and a result too large to keep whole: digests instead,
	// and the decision is answered.
	blob := strings.Repeat("x", 40<<10)
	status, ans = do(t, gw, "POST", "/v1/data/authz/echo", "application/json", []byte(`{"input": {"blob": "`+blob+`"}}`))
	if status != 200 || ans["result"] != blob {
		t.Fatalf("large decision: %d", status)
	}
	rec = pe.decisionRecord(ans["decision_id"].(string))
	if rec["input_sha256"] == nil && rec["result_sha256"] == nil {
		t.Fatalf("large decision record: %v", rec)
	}
	// A path that is not UTF-8 is refused, not evaluated.
	if status, ans := do(t, gw, "POST", "/v1/data/authz/%ff", "application/json", nil); status != 400 || ans["code"] != "invalid_parameter" {
		t.Fatalf("non-UTF-8 path: %d %v", status, ans)
	}
	// Agent SVIDs carry their issuance decision, input included.
	for _, r := range pe.auditOf("svid.issued", pe.gateway.id.String()) {
		if d, _ := r["decision"].(map[string]any); d == nil || d["allow"] != true || d["input"] == nil {
			t.Fatalf("svid.issued without its decision: %v", r)
		}
	}
}

// An evaluation error whose message quotes a long input (120 KB here, a
// 60 KB string twice) is recorded, cut, and answered as OPA does: 500
// internal_error with its errors; AuthZEN answers decision false for
// that evaluation alone.
func TestEvaluationErrorOfAnySize(t *testing.T) {
	pe := startPolicy(t, func(c *authority.Config) {
		c.Policy.DecisionLogMask = nil // the message is recorded: cut
		c.Policy.AuthZENPath = "authz/authzen_num"
	})
	gw := pe.client(pe.gateway.chain, pe.gateway.key)
	long := strings.Repeat("x", 60<<10)
	status, ans := do(t, gw, "POST", "/v1/data/authz/tonum_twice?strict-builtin-errors", "application/json", []byte(`{"input": {"s": "`+long+`"}}`))
	errs, _ := ans["errors"].([]any)
	if status != 500 || ans["code"] != "internal_error" || len(errs) != 1 || errs[0].(map[string]any)["code"] != "eval_builtin_error" {
		t.Fatalf("a long builtin error: %d %.300v, want 500 internal_error with its errors", status, ans)
	}
	recs := pe.auditOf("policy.decision", "data/authz/tonum_twice")
	if len(recs) != 1 || recs[0]["error_code"] != "eval_builtin_error" || recs[0]["error_truncated"] != true || recs[0]["error_sha256"] == nil {
		t.Fatalf("the record of a long builtin error: %.500v", recs)
	}
	batch := `{"resource": {"type": "r", "id": "1"}, "action": {"name": "read"}, "evaluations": [
		{"subject": {"type": "agent", "id": "1"}}, {"subject": {"type": "agent", "id": "` + long + `"}}]}`
	status, ans = do(t, gw, "POST", "/access/v1/evaluations", "application/json", []byte(batch))
	evs, _ := ans["evaluations"].([]any)
	if status != 200 || len(evs) != 2 || evs[0].(map[string]any)["decision"] != true || evs[1].(map[string]any)["decision"] != false {
		t.Fatalf("AuthZEN, a long builtin error in one evaluation: %d %.300v", status, ans)
	}
	if reason := evs[1].(map[string]any)["context"].(map[string]any)["reason"].(string); len(reason) > 4<<10 {
		t.Errorf("AuthZEN's reason for a long error is %d bytes", len(reason))
	}
}

// decisionRecord returns the details of the decision's audit entry.
func (pe *policyEnv) decisionRecord(id string) map[string]any {
	pe.t.Helper()
	var found struct {
		Entries []struct {
			Entry struct {
				Details map[string]any `json:"details"`
			} `json:"entry"`
		} `json:"entries"`
	}
	if err := pe.admin.Do(ctxT(pe.t), http.MethodGet, "/v1/audit/search?decision_id="+id, nil, &found); err != nil || len(found.Entries) != 1 {
		pe.t.Fatalf("audit search by decision id: %v, %d entries", err, len(found.Entries))
	}
	return found.Entries[0].Entry.Details
}

func TestDataAPICallers(t *testing.T) {
	pe := startPolicy(t, func(c *authority.Config) {
		c.Policy.CallerPaths = map[string][]string{"spiffe://org-a.example/agent/gateway": {"authz/allow"}}
	})
	gw := pe.client(pe.gateway.chain, pe.gateway.key)
	if status, ans := do(t, gw, "POST", "/v1/data/authz/allow", "application/json", []byte(delegationInput)); status != 200 || ans["result"] != true {
		t.Fatalf("allowed path: %d %v", status, ans)
	}
	if status, ans := do(t, gw, "POST", "/v1/data/authz/reasons", "application/json", []byte(delegationInput)); status != 403 || ans["code"] != "unauthorized" {
		t.Fatalf("path outside caller_paths: %d %v", status, ans)
	}
	// The route's own segments percent-encoded name the same document:
	// the one the caller may ask.
	for _, p := range []string{"/v1/dat%61/authz/allow", "/v%31/data/authz/allow"} {
		if status, ans := do(t, gw, "POST", p, "application/json", []byte(delegationInput)); status != 200 || ans["result"] != true {
			t.Errorf("allowed path as %s: %d %v", p, status, ans)
		}
	}
	if status, ans := do(t, pe.client(nil, nil), "POST", "/v1/data/authz/allow", "application/json", nil); status != 401 || ans["code"] != "unauthorized" {
		t.Fatalf("no client certificate: %d %v", status, ans)
	}
	// Refused before the body is read: whatever it holds.
	if status, ans := doWith(t, pe.client(nil, nil), "POST", "/v1/data/authz/allow", map[string]string{"Content-Type": "application/yaml"}, []byte("input: [")); status != 401 || ans["code"] != "unauthorized" {
		t.Fatalf("no client certificate, a malformed YAML body: %d %v", status, ans)
	}
	if status, ans := do(t, gw, "POST", "/v1/data/authz/reasons", "application/json", []byte(`{"input": {`)); status != 403 || ans["code"] != "unauthorized" {
		t.Fatalf("path outside caller_paths, a malformed body: %d %v", status, ans)
	}
	// A client certificate that ran out after the handshake: refused
	// before any handler, still in OPA's shape.
	req := httptest.NewRequest(http.MethodPost, "/v1/data/authz/allow", strings.NewReader(delegationInput))
	req.TLS = &tls.ConnectionState{PeerCertificates: pe.gateway.chain}
	pe.skew.Add(int64(30 * 24 * time.Hour))
	rec := httptest.NewRecorder()
	pe.srv.Handler().ServeHTTP(rec, req)
	pe.skew.Add(-int64(30 * 24 * time.Hour))
	var oe struct{ Code, Message string }
	if rec.Code != 401 || json.Unmarshal(rec.Body.Bytes(), &oe) != nil || oe.Code != "unauthorized" || !strings.Contains(oe.Message, "not valid now") {
		t.Fatalf("an expired client certificate: %d %s", rec.Code, rec.Body)
	}
	node := pe.joinNode()
	// Refused in OPA's shape, in words without the code's package names.
	if status, ans := do(t, pe.client(node.chain, node.key), "POST", "/v1/data/authz/allow", "application/json", nil); status != 403 ||
		ans["code"] != "unauthorized" || !strings.Contains(fmt.Sprint(ans["message"]), "is not a decision caller") || strings.Contains(fmt.Sprint(ans["message"]), "authority:") {
		t.Fatalf("a node that is not a decision caller: %d %v", status, ans)
	}
	if status, ans := do(t, pe.admin, "POST", "/v1/data/authz/reasons", "application/json", []byte(delegationInput)); status != 200 || ans["result"] == nil {
		t.Fatalf("admin: %d %v", status, ans)
	}
	// The registry's raw documents: an admin may read them (a key with
	// slashes is one %2F-encoded segment); a caller needs an explicit
	// caller_paths prefix.
	gwPath := "/v1/data/mandate/agents/" + url.PathEscape(pe.gateway.id.String())
	if status, ans := do(t, pe.admin, "GET", gwPath, "", nil); status != 200 || ans["result"] == nil {
		t.Fatalf("admin reads an agent document: %d %v", status, ans)
	}
	open := startPolicy(t)
	gw2 := open.client(open.gateway.chain, open.gateway.key)
	for _, p := range []string{"/v1/data", "/v1/data/mandate", "/v1/data/mandate/agents", gwPath, "/v1/data/mandate/nodes",
		"/v1/%64ata/mandate/agents", "/v1/dat%61", "/%761/data/mandate/nodes"} {
		if status, _ := do(t, gw2, "GET", p, "", nil); status != 403 {
			t.Errorf("a caller without caller_paths reads %s: %d", p, status)
		}
	}
	if status, _ := do(t, gw2, "POST", "/v1/data/mandate/issuance/decision", "application/json", []byte(`{"input": {}}`)); status != 200 {
		t.Errorf("a caller asks a decision document: %d", status)
	}
}

// reader registers spiffe://<td>/agent/reader, with the scope
// calendar:read, for the default AuthZEN policy, and returns its ID.
func (pe *policyEnv) reader() string {
	pe.t.Helper()
	node := pe.joinNode()
	reader := spiffeid.RequireFromSegments(pe.td, "agent", "reader").String()
	if _, err := pe.admin.CreateAgent(ctxT(pe.t), &client.Agent{SPIFFEID: reader, NodeIDs: []string{node.id.String()}, Scopes: []string{"calendar:read"}}); err != nil {
		pe.t.Fatal(err)
	}
	return reader
}

func TestAuthZEN(t *testing.T) {
	pe := startPolicy(t)
	gw := pe.client(pe.gateway.chain, pe.gateway.key)
	reader := pe.reader()
	eval := func(action string) string {
		return `{"subject": {"type": "agent", "id": "` + reader + `"}, "action": {"name": "` + action + `"}, "resource": {"type": "calendar", "id": "alice"}}`
	}
	status, ans := do(t, gw, "POST", "/access/v1/evaluation", "application/json", []byte(eval("calendar:read")))
	if status != 200 || ans["decision"] != true {
		t.Fatalf("evaluation: %d %v", status, ans)
	}
	status, ans = do(t, gw, "POST", "/access/v1/evaluation", "application/json", []byte(eval("calendar:write")))
	if ctx, _ := ans["context"].(map[string]any); status != 200 || ans["decision"] != false || ctx["reason"] == nil || ctx["decision_id"] == nil {
		t.Fatalf("evaluation denied: %d %v", status, ans)
	}
	batch := `{"subject": {"type": "agent", "id": "` + reader + `"}, "resource": {"type": "calendar", "id": "alice"},
		"evaluations": [{"action": {"name": "calendar:read"}}, {"action": {"name": "calendar:write"}},
		{"action": {"name": "calendar:read"}, "subject": {"type": "agent", "id": "spiffe://org-a.example/agent/nobody"}}]}`
	status, ans = do(t, gw, "POST", "/access/v1/evaluations", "application/json", []byte(batch))
	evs, _ := ans["evaluations"].([]any)
	if status != 200 || len(evs) != 3 || evs[0].(map[string]any)["decision"] != true || evs[1].(map[string]any)["decision"] != false ||
		evs[2].(map[string]any)["decision"] != false {
		t.Fatalf("evaluations: %d %v", status, ans)
	}
	if status, ans := do(t, gw, "POST", "/access/v1/evaluation", "application/json", []byte(`{"subject": "x"}`)); status != 400 || ans["type"] == nil {
		t.Fatalf("bad request: %d %v", status, ans)
	}
	// An agent whose SPIFFE ID is revoked (for ever) may do nothing,
	// whatever scopes its registration still holds.
	if err := pe.admin.Do(ctxT(t), "POST", "/v1/admin/revocations", map[string]string{"spiffe_id": reader, "reason": "compromised"}, nil); err != nil {
		t.Fatal(err)
	}
	status, ans = do(t, gw, "POST", "/access/v1/evaluation", "application/json", []byte(eval("calendar:read")))
	if ctx, _ := ans["context"].(map[string]any); status != 200 || ans["decision"] != false || !strings.Contains(fmt.Sprint(ctx["reason"]), "revoked") {
		t.Fatalf("evaluation for a revoked agent: %d %v", status, ans)
	}
	// The Data API's wrapping, by mistake: the error says so.
	if status, ans := do(t, gw, "POST", "/access/v1/evaluation", "application/json", []byte(`{"input": `+eval("calendar:read")+`}`)); status != 400 || !strings.Contains(fmt.Sprint(ans["detail"]), `not wrapped in "input"`) {
		t.Fatalf("a request wrapped in input: %d %v", status, ans)
	}
}

// AuthZEN 1.0 as specified: evaluations semantics, required fields,
// exact member names, X-Request-ID, a batch without evaluations, and a
// malformed evaluation refusing the batch before any is decided.
func TestAuthZENConformance(t *testing.T) {
	pe := startPolicy(t)
	gw := pe.client(pe.gateway.chain, pe.gateway.key)
	reader := pe.reader()
	subject := `{"type": "agent", "id": "` + reader + `"}`
	resource := `{"type": "calendar", "id": "alice"}`
	eval := `{"subject": ` + subject + `, "action": {"name": "calendar:read"}, "resource": ` + resource + `}`
	recorded := func() int { return len(pe.auditOf("policy.decision", "data/mandate/authzen/decision")) }
	post := func(path, body string, headers map[string]string) (int, map[string]any, http.Header) {
		t.Helper()
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: gw.TLSConfig()}}
		defer hc.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(ctxT(t), "POST", gw.Server()+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatalf("POST %s: %d, not a JSON object: %v", path, resp.StatusCode, err)
		}
		return resp.StatusCode, m, resp.Header
	}
	decisions := func(ans map[string]any) []bool {
		var out []bool
		evs, _ := ans["evaluations"].([]any)
		for _, e := range evs {
			out = append(out, e.(map[string]any)["decision"] == true)
		}
		return out
	}

	// options.evaluations_semantic: a permit, a deny, a permit.
	batch := func(options string) string {
		return `{"subject": ` + subject + `, "resource": ` + resource + options + `, "evaluations": [
			{"action": {"name": "calendar:read"}}, {"action": {"name": "calendar:write"}}, {"action": {"name": "calendar:read"}}]}`
	}
	for _, tc := range []struct {
		name, options string
		want          []bool
	}{
		{"no options", ``, []bool{true, false, true}},
		{"execute_all", `, "options": {"evaluations_semantic": "execute_all"}`, []bool{true, false, true}},
		{"deny_on_first_deny", `, "options": {"evaluations_semantic": "deny_on_first_deny"}`, []bool{true, false}},
		{"permit_on_first_permit", `, "options": {"evaluations_semantic": "permit_on_first_permit"}`, []bool{true}},
	} {
		before := recorded()
		status, ans, _ := post("/access/v1/evaluations", batch(tc.options), nil)
		if got := decisions(ans); status != 200 || fmt.Sprint(got) != fmt.Sprint(tc.want) || recorded()-before != len(tc.want) {
			t.Errorf("%s: %d %v (%d recorded), want %v", tc.name, status, ans, recorded()-before, tc.want)
		}
	}

	// Refused, 400, with nothing decided nor recorded.
	before := recorded()
	for _, tc := range []struct{ name, path, body string }{
		{"an unknown semantic", "/access/v1/evaluations", batch(`, "options": {"evaluations_semantic": "first_wins"}`)},
		{"a semantic that is not a string", "/access/v1/evaluations", batch(`, "options": {"evaluations_semantic": 1}`)},
		{"options that are not an object", "/access/v1/evaluations", batch(`, "options": []`)},
		{"no subject type", "/access/v1/evaluation", strings.Replace(eval, `"type": "agent", `, ``, 1)},
		{"a subject id that is a number", "/access/v1/evaluation", strings.Replace(eval, `"id": "`+reader+`"`, `"id": 7`, 1)},
		{"an empty subject id", "/access/v1/evaluation", strings.Replace(eval, `"id": "`+reader+`"`, `"id": ""`, 1)},
		{"no resource id", "/access/v1/evaluation", strings.Replace(eval, `, "id": "alice"`, ``, 1)},
		{"no action name", "/access/v1/evaluation", strings.Replace(eval, `"name": "calendar:read"`, `"verb": "calendar:read"`, 1)},
		{"an action name that is not a string", "/access/v1/evaluation", strings.Replace(eval, `"calendar:read"`, `["calendar:read"]`, 1)},
		{"properties that are not an object", "/access/v1/evaluation", strings.Replace(eval, `"type": "calendar"`, `"type": "calendar", "properties": "x"`, 1)},
		{"a member named in another case", "/access/v1/evaluation", strings.Replace(eval, `"subject"`, `"SUBJECT"`, 1)},
		{"a member named twice", "/access/v1/evaluation", strings.Replace(eval, `{"subject": `, `{"subject": `+subject+`, "subject": `, 1)},
		{"a malformed evaluation after a good one", "/access/v1/evaluations", `{"subject": ` + subject + `, "resource": ` + resource + `, "evaluations": [
			{"action": {"name": "calendar:read"}}, {"action": {"name": "calendar:read"}, "subject": {"type": "agent"}}]}`},
	} {
		if status, ans, _ := post(tc.path, tc.body, nil); status != 400 || ans["type"] == nil {
			t.Errorf("%s: %d %v, want 400", tc.name, status, ans)
		}
	}
	if n := recorded() - before; n != 0 {
		t.Errorf("refused requests recorded %d decisions", n)
	}

	// Properties objects, and null ones, are accepted.
	withProps := strings.Replace(eval, `"type": "calendar"`, `"type": "calendar", "properties": {"owner": "alice"}`, 1)
	withProps = strings.Replace(withProps, `"type": "agent"`, `"type": "agent", "properties": null`, 1)
	if status, ans, _ := post("/access/v1/evaluation", withProps, nil); status != 200 || ans["decision"] != true {
		t.Errorf("properties: %d %v", status, ans)
	}

	// Without evaluations, or with none, the batch is the one evaluation,
	// answered as one.
	for _, body := range []string{eval, strings.TrimSuffix(eval, "}") + `, "evaluations": []}`} {
		if status, ans, _ := post("/access/v1/evaluations", body, nil); status != 200 || ans["decision"] != true || ans["evaluations"] != nil {
			t.Errorf("evaluations without any, %s: %d %v, want one decision", body, status, ans)
		}
	}

	// X-Request-ID is echoed, on an answer and on a refusal; one too long
	// is not (the answer carries one made for the request instead).
	for _, tc := range []struct{ id, body, want string }{
		{"req-1f3a", eval, "req-1f3a"},
		{"req-400", `{"subject": {}}`, "req-400"},
		{strings.Repeat("r", 300), eval, ""},
	} {
		_, _, h := post("/access/v1/evaluation", tc.body, map[string]string{"X-Request-ID": tc.id})
		if got := h.Get("X-Request-ID"); tc.want != "" && got != tc.want || tc.want == "" && (got == tc.id || got == "") {
			t.Errorf("X-Request-ID %.20q: answered %q, want %q", tc.id, got, tc.want)
		}
	}
	if _, _, h := post("/access/v1/evaluations", batch(""), map[string]string{"X-Request-ID": "batch-7"}); h.Get("X-Request-ID") != "batch-7" {
		t.Errorf("X-Request-ID of a batch: %q", h.Get("X-Request-ID"))
	}
}

func TestPolicyReload(t *testing.T) {
	pe := startPolicy(t)
	rev1 := pe.a.PolicyRevision()
	reload := func() (int, map[string]any) {
		return do(t, pe.admin, "POST", "/v1/admin/policy/reload", "application/json", []byte(`{}`))
	}
	// A broken policy is refused with the compiler's message; the old
	// revision stays and keeps answering.
	if err := os.WriteFile(filepath.Join(pe.dir, "broken.rego"), []byte("package broken\nallow if {"), 0o644); err != nil {
		t.Fatal(err)
	}
	status, ans := reload()
	if status != 422 || !strings.Contains(ans["detail"].(string), "rego_parse_error") || pe.a.PolicyRevision() != rev1 {
		t.Fatalf("broken reload: %d %v", status, ans)
	}
	os.Remove(filepath.Join(pe.dir, "broken.rego"))
	// So is one that leaves out a decision point's document (every
	// delegation would be denied), naming it.
	for _, f := range []string{"delegation.rego", "delegation_test.rego"} {
		if err := os.Rename(filepath.Join(pe.dir, f), filepath.Join(pe.dir, f+".off")); err != nil {
			t.Fatal(err)
		}
	}
	status, ans = reload()
	if status != 422 || !strings.Contains(ans["detail"].(string), "data.mandate.delegation.decision") || pe.a.PolicyRevision() != rev1 {
		t.Fatalf("reload without the delegation decision: %d %v", status, ans)
	}
	for _, f := range []string{"delegation.rego", "delegation_test.rego"} {
		if err := os.Rename(filepath.Join(pe.dir, f+".off"), filepath.Join(pe.dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(pe.dir, "extra.rego"), []byte("package extra\nimport rego.v1\nhello := \"world\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	status, ans = reload()
	if status != 200 || ans["revision"] == rev1 || ans["revision"] != pe.a.PolicyRevision() {
		t.Fatalf("reload: %d %v", status, ans)
	}
	changes := pe.auditOf("policy.changed", "")
	if len(changes) != 1 || changes[0]["old_revision"] != rev1 || changes[0]["new_revision"] != ans["revision"] {
		t.Fatalf("policy.changed records: %v", changes)
	}
	if status, _ := do(t, pe.client(pe.gateway.chain, pe.gateway.key), "POST", "/v1/admin/policy/reload", "application/json", []byte(`{}`)); status != 403 {
		t.Fatalf("reload by a decision caller: %d", status)
	}
}

// TestPolicyTestEndpoint: POST /v1/admin/policy/test reads its body as
// every JSON endpoint does (`{}`, as the reload takes): unknown fields,
// other documents and other content types are refused.
func TestPolicyTestEndpoint(t *testing.T) {
	pe := startPolicy(t)
	tests := []struct {
		name        string
		c           *client.Client
		ctype, body string
		status      int
		problem     string
	}{
		{"empty object", pe.admin, "application/json", `{}`, 200, ""},
		{"unknown field", pe.admin, "application/json", `{"filter":"x"}`, 400, "unknown-field"},
		{"json array", pe.admin, "application/json", `[]`, 400, "malformed-json"},
		{"no body", pe.admin, "application/json", ``, 400, "malformed-json"},
		{"wrong content type", pe.admin, "text/plain", `{}`, 415, "unsupported-media-type"},
		{"body too large", pe.admin, "application/json", `{"x":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "body-too-large"},
		{"decision caller", pe.client(pe.gateway.chain, pe.gateway.key), "application/json", `{}`, 403, "forbidden"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, ans := do(t, tc.c, "POST", "/v1/admin/policy/test", tc.ctype, []byte(tc.body))
			if status != tc.status {
				t.Fatalf("status %d, want %d: %v", status, tc.status, ans)
			}
			if tc.problem != "" && ans["type"] != "https://mandate.dev/problems/"+tc.problem {
				t.Fatalf("problem %v, want %s", ans["type"], tc.problem)
			}
			if tc.problem == "" {
				if tests, _ := ans["tests"].([]any); len(tests) == 0 || ans["revision"] != pe.a.PolicyRevision() {
					t.Fatalf("answer %v, want the active revision's tests", ans)
				}
			}
		})
	}
}

// TestDataAPIFederatedCaller: a platform agent of a federated
// organisation asks org-a's decision API with its own org's SVID.
func TestDataAPIFederatedCaller(t *testing.T) {
	orgB := start(t, "org-b.example")
	platform := "spiffe://org-b.example/agent/platform"
	pe := startPolicy(t, func(c *authority.Config) {
		c.Policy.DecisionCallers = append(c.Policy.DecisionCallers, platform)
	})
	node := orgB.joinNode()
	orgB.registerAgent("platform", node.id)
	caller := orgB.agentSVID(node, platform)
	other := orgB.agentSVID(node, orgB.registerAgent("other", node.id))

	asOrgB := func(id identity) *client.Client {
		c, err := client.New(client.Config{Server: pe.url, TrustDomain: pe.td, Bundle: pe.bundle, SVID: id.chain, Key: id.key})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.CloseIdle)
		return c
	}
	// Before federation org-a does not trust org-b's SVIDs at all.
	req, _ := http.NewRequest(http.MethodPost, pe.url+"/v1/data/authz/allow", strings.NewReader(delegationInput))
	if resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: asOrgB(caller).TLSConfig()}}).Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("an unfederated caller was answered")
		}
	}
	pe.federate(orgB)
	if status, ans := do(t, asOrgB(caller), "POST", "/v1/data/authz/allow", "application/json", []byte(delegationInput)); status != 200 || ans["result"] != true {
		t.Fatalf("federated decision caller: %d %v", status, ans)
	}
	if status, _ := do(t, asOrgB(other), "POST", "/v1/data/authz/allow", "application/json", []byte(delegationInput)); status != 403 {
		t.Fatalf("a federated agent that is not a decision caller: %d", status)
	}
}

// A null context is absent, as docs/policy.md says: the policy's input
// has none, and an evaluation of a batch whose context is null takes the
// request's default, as one without a context does.
func TestAuthZENNullContextIsAbsent(t *testing.T) {
	pe := startPolicy(t)
	gw := pe.client(pe.gateway.chain, pe.gateway.key)
	reader := pe.reader()
	tuple := `"subject": {"type": "agent", "id": "` + reader + `"}, "action": {"name": "calendar:read"}, "resource": {"type": "calendar", "id": "alice"}`
	for _, tc := range []struct {
		name, path, body string
		want             any // the input's context; nil: none
	}{
		{"one evaluation", "/access/v1/evaluation", `{` + tuple + `, "context": null}`, nil},
		{"a batch of none", "/access/v1/evaluations", `{` + tuple + `, "context": null, "evaluations": []}`, nil},
		{"an evaluation's null context takes the default", "/access/v1/evaluations",
			`{` + tuple + `, "context": {"ip": "10.0.0.1"}, "evaluations": [{"context": null}]}`, map[string]any{"ip": "10.0.0.1"}},
		{"a null default", "/access/v1/evaluations", `{` + tuple + `, "context": null, "evaluations": [{}]}`, nil},
		{"an evaluation's own context", "/access/v1/evaluations",
			`{` + tuple + `, "context": {"ip": "10.0.0.1"}, "evaluations": [{"context": {"ip": "10.0.0.2"}}]}`, map[string]any{"ip": "10.0.0.2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, ans := do(t, gw, http.MethodPost, tc.path, "application/json", []byte(tc.body))
			if evs, ok := ans["evaluations"].([]any); ok && len(evs) == 1 {
				ans, _ = evs[0].(map[string]any)
			}
			ctx, _ := ans["context"].(map[string]any)
			id, _ := ctx["decision_id"].(string)
			if status != http.StatusOK || ans["decision"] != true || id == "" {
				t.Fatalf("%d %v", status, ans)
			}
			input, _ := pe.decisionRecord(id)["input"].(map[string]any)
			got, present := input["context"]
			if tc.want == nil && present || tc.want != nil && fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("the policy's input: %v, want context %v", input, tc.want)
			}
		})
	}
}

// An AuthZEN answer's context holds the policy's numbers as numbers, as
// the Data API's result does: 3, not "3".
func TestAuthZENContextNumbersAreNumbers(t *testing.T) {
	pe := startPolicy(t, func(c *authority.Config) { c.Policy.AuthZENPath = "numbers/decision" })
	module := "package numbers\n\nimport rego.v1\n\ndecision := {\"decision\": true, \"context\": {\"n\": 3, \"big\": 12345678901234567890123, \"echo\": input.context}}\n"
	if err := os.WriteFile(filepath.Join(pe.dir, "numbers.rego"), []byte(module), 0o644); err != nil {
		t.Fatal(err)
	}
	if status, ans := do(t, pe.admin, http.MethodPost, "/v1/admin/policy/reload", "application/json", []byte("{}")); status != http.StatusOK {
		t.Fatalf("reload: %d %v", status, ans)
	}
	gw := pe.client(pe.gateway.chain, pe.gateway.key)
	tuple := `"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"}, "resource": {"type": "doc", "id": "1"}, "context": {"ttl": 60}`
	for _, tc := range []struct{ path, body string }{
		{"/access/v1/evaluation", `{` + tuple + `}`},
		{"/access/v1/evaluations", `{` + tuple + `, "evaluations": [{}]}`},
	} {
		status, ans := do(t, gw, http.MethodPost, tc.path, "application/json", []byte(tc.body))
		if evs, ok := ans["evaluations"].([]any); ok && len(evs) == 1 {
			ans, _ = evs[0].(map[string]any)
		}
		ctx, _ := ans["context"].(map[string]any)
		echo, _ := ctx["echo"].(map[string]any)
		if status != http.StatusOK || ctx["n"] != float64(3) || ctx["big"] != 12345678901234567890123.0 || echo["ttl"] != float64(60) {
			t.Errorf("%s: %d %v, want the context's numbers as numbers", tc.path, status, ans)
		}
	}
}

// An AuthZEN answer whose context is a data document (here the shipped
// data.json's data.mandate.config.delegation) carries its decision_id
// without writing it into that document: the document reads as loaded
// after any number of evaluations.
func TestAuthZENContextFromDataLeavesTheDataAlone(t *testing.T) {
	pe := startPolicy(t, func(c *authority.Config) { c.Policy.AuthZENPath = "fromdata/decision" })
	module := "package fromdata\n\nimport rego.v1\n\ndecision := {\"decision\": false, \"context\": data.mandate.config.delegation}\n"
	if err := os.WriteFile(filepath.Join(pe.dir, "fromdata.rego"), []byte(module), 0o644); err != nil {
		t.Fatal(err)
	}
	if status, ans := do(t, pe.admin, http.MethodPost, "/v1/admin/policy/reload", "application/json", []byte("{}")); status != http.StatusOK {
		t.Fatalf("reload: %d %v", status, ans)
	}
	gw := pe.client(pe.gateway.chain, pe.gateway.key)
	tuple := `"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"}, "resource": {"type": "doc", "id": "1"}`
	var ids []string
	for _, tc := range []struct{ path, body string }{
		{"/access/v1/evaluation", `{` + tuple + `}`},
		{"/access/v1/evaluations", `{` + tuple + `, "evaluations": [{}, {}]}`},
	} {
		status, ans := do(t, gw, http.MethodPost, tc.path, "application/json", []byte(tc.body))
		evs, ok := ans["evaluations"].([]any)
		if !ok {
			evs = []any{ans}
		}
		for _, ev := range evs {
			ctx, _ := ev.(map[string]any)["context"].(map[string]any)
			id, _ := ctx["decision_id"].(string)
			if status != http.StatusOK || id == "" || ctx["max_depth"] != float64(3) {
				t.Fatalf("%s: %d %v, want the data document and a decision_id", tc.path, status, ans)
			}
			if slices.Contains(ids, id) {
				t.Fatalf("%s: decision_id %s answered twice", tc.path, id)
			}
			ids = append(ids, id)
		}
	}
	status, ans := do(t, pe.admin, http.MethodGet, "/v1/data/mandate/config/delegation", "", nil)
	if doc, _ := ans["result"].(map[string]any); status != http.StatusOK || doc == nil || doc["decision_id"] != nil {
		t.Fatalf("data.mandate.config.delegation after the evaluations: %d %v, want it as loaded", status, ans)
	}
}

// A number the policy engine cannot take (its exponent out of range) is
// a malformed evaluation like any other: the batch is refused whole,
// naming the evaluation, before any evaluation is decided or recorded.
func TestAuthZENNumberTooBigRefusesTheBatchWhole(t *testing.T) {
	pe := startPolicy(t)
	gw := pe.client(pe.gateway.chain, pe.gateway.key)
	reader := pe.reader()
	recorded := func() int { return len(pe.auditOf("policy.decision", "data/mandate/authzen/decision")) }
	subject := `{"type": "agent", "id": "` + reader + `"}`
	resource := `{"type": "calendar", "id": "alice"}`
	read := `{"action": {"name": "calendar:read"}}`
	for _, tc := range []struct{ name, path, body, detail string }{
		{"one evaluation, in its context", "/access/v1/evaluation",
			`{"subject": ` + subject + `, "resource": ` + resource + `, "action": {"name": "calendar:read"}, "context": {"n": 1e70000}}`, "context"},
		{"a second evaluation's context", "/access/v1/evaluations",
			`{"subject": ` + subject + `, "resource": ` + resource + `, "evaluations": [` + read + `, {"action": {"name": "calendar:read"}, "context": {"n": 1e70000}}]}`,
			"evaluation 1: context"},
		{"a second evaluation's resource properties", "/access/v1/evaluations",
			`{"subject": ` + subject + `, "evaluations": [{"action": {"name": "calendar:read"}, "resource": ` + resource + `},
			{"action": {"name": "calendar:read"}, "resource": {"type": "calendar", "id": "bob", "properties": {"n": -2E+99999}}}]}`,
			"evaluation 1: resource"},
		{"a second evaluation's action", "/access/v1/evaluations",
			`{"subject": ` + subject + `, "resource": ` + resource + `, "evaluations": [` + read + `, {"action": {"name": "calendar:read", "n": 1e-70000}}]}`,
			"evaluation 1: action"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := recorded()
			status, ans := do(t, gw, http.MethodPost, tc.path, "application/json", []byte(tc.body))
			detail, _ := ans["detail"].(string)
			if status != http.StatusBadRequest || ans["type"] != "https://mandate.dev/problems/invalid-request" ||
				!strings.HasPrefix(detail, tc.detail+": ") || !strings.Contains(detail, "number too big") {
				t.Errorf("%d %v, want 400 invalid-request naming %q", status, ans, tc.detail)
			}
			if n := recorded() - before; n != 0 {
				t.Errorf("a refused request recorded %d decisions", n)
			}
		})
	}
}

// TestAuthZENBatchRecordsItsInputsWholeUpToTwiceTheBodyLimit: every
// evaluation of a batch holds the batch's defaults, so 64 empty items
// under a large default context would record the context 64 times. The
// inputs recorded whole stop at twice http.max_body_bytes (64 KiB here);
// the rest are recorded by their digest and size.
func TestAuthZENBatchRecordsItsInputsWholeUpToTwiceTheBodyLimit(t *testing.T) {
	pe := startPolicy(t)
	gw := pe.client(pe.gateway.chain, pe.gateway.key)
	reader := pe.reader()
	const n = 64 // the most a batch may hold
	body := `{"subject": {"type": "agent", "id": "` + reader + `"}, "action": {"name": "calendar:read"},
		"resource": {"type": "calendar", "id": "alice"}, "context": {"pad": "` + strings.Repeat("x", 40<<10) + `"},
		"evaluations": [` + strings.Repeat(`{}, `, n-1) + `{}]}`
	status, ans := do(t, gw, http.MethodPost, "/access/v1/evaluations", "application/json", []byte(body))
	evals, _ := ans["evaluations"].([]any)
	if status != http.StatusOK || len(evals) != n {
		t.Fatalf("%d, %d evaluations, want 200 with %d", status, len(evals), n)
	}
	for i, e := range evals {
		if d, _ := e.(map[string]any)["decision"].(bool); !d {
			t.Errorf("evaluation %d: %v, want decision true (an input recorded by digest is still decided whole)", i, e)
		}
	}
	recs := pe.auditOf("policy.decision", "data/mandate/authzen/decision")
	if len(recs) != n {
		t.Fatalf("%d decisions on the first page of audit search, want all %d (a page holds about 1 MiB of entries)", len(recs), n)
	}
	var whole, wholeBytes int
	for i, d := range recs {
		if in, ok := d["input"]; ok {
			b, _ := json.Marshal(in)
			whole, wholeBytes = whole+1, wholeBytes+len(b)
			continue
		}
		sum, _ := d["input_sha256"].(string)
		size, _ := d["input_bytes"].(float64)
		if len(sum) != 64 || size < 40<<10 {
			t.Errorf("decision %d: neither its input nor its digest and size: %v", i, d)
		}
	}
	// Each input is about 41 KiB: three fit in 128 KiB.
	if whole != 3 || wholeBytes > 128<<10 {
		t.Errorf("%d inputs recorded whole (%d bytes), want 3 (at most 128 KiB)", whole, wholeBytes)
	}
}

// TestAuthZENNullPropertiesAreAbsent: docs/policy.md says a null
// "properties" is taken as absent. A rule testing for none
// (not input.subject.properties) holds for an absent member, not for a
// null one: the policy's input (as its record shows it) has none.
func TestAuthZENNullPropertiesAreAbsent(t *testing.T) {
	pe := startPolicy(t)
	gw := pe.client(pe.gateway.chain, pe.gateway.key)
	reader := pe.reader()
	for _, tc := range []struct {
		name, path, body string
		want             map[string]bool // entity: has properties
	}{
		{"one evaluation", "/access/v1/evaluation",
			`{"subject": {"type": "agent", "id": "` + reader + `", "properties": null}, "action": {"name": "calendar:read", "properties": {}},
			"resource": {"properties": null, "type": "calendar", "id": "alice"}}`,
			map[string]bool{"subject": false, "action": true, "resource": false}},
		{"a batch item and a default", "/access/v1/evaluations",
			`{"subject": {"type": "agent", "id": "` + reader + `", "properties": null}, "resource": {"type": "calendar", "id": "alice", "properties": {"owner": "alice"}},
			"evaluations": [{"action": {"name": "calendar:read", "properties": null}}]}`,
			map[string]bool{"subject": false, "action": false, "resource": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(pe.auditOf("policy.decision", "data/mandate/authzen/decision"))
			if status, ans := do(t, gw, http.MethodPost, tc.path, "application/json", []byte(tc.body)); status != http.StatusOK {
				t.Fatalf("%d %v, want 200", status, ans)
			}
			recs := pe.auditOf("policy.decision", "data/mandate/authzen/decision")
			if len(recs) != before+1 {
				t.Fatalf("%d decisions recorded, want 1", len(recs)-before)
			}
			in, _ := recs[len(recs)-1]["input"].(map[string]any)
			for entity, want := range tc.want {
				e, _ := in[entity].(map[string]any)
				if e["type"] == nil && e["name"] == nil {
					t.Fatalf("input.%s: %v", entity, in[entity])
				}
				if _, has := e["properties"]; has != want {
					t.Errorf("input.%s: %v: properties present %v, want %v", entity, e, has, want)
				}
			}
		})
	}
}

// Every policy reload is counted on /metrics by its outcome, the API's
// and the operator's signal's alike: a refused SIGHUP reload, told only
// in the server log otherwise, can be alerted on.
func TestPolicyReloadsAreCounted(t *testing.T) {
	pe := startPolicy(t)
	apiReload := func() {
		t.Helper()
		do(t, pe.admin, "POST", "/v1/admin/policy/reload", "application/json", []byte(`{}`))
	}
	signal := func() {
		t.Helper()
		pe.a.ReloadPolicyOnSignal(ctxT(t)) //nolint:errcheck // counted either way
	}
	extra := filepath.Join(pe.dir, "extra.rego")
	steps := []struct {
		name    string
		prepare func()
		reload  func()
		outcome string
	}{
		{"the same revision, by the API", func() {}, apiReload, "unchanged"},
		{"the same revision, by SIGHUP", func() {}, signal, "unchanged"},
		{"a new module, by SIGHUP", func() { writeFile(t, extra, "package extra\nimport rego.v1\nx := 1\n") }, signal, "changed"},
		{"a module that does not parse, by SIGHUP", func() { writeFile(t, extra, "package extra\nx if {") }, signal, "refused"},
		{"a module that does not parse, by the API", func() {}, apiReload, "refused"},
		{"fixed, by the API", func() { writeFile(t, extra, "package extra\nimport rego.v1\nx := 2\n") }, apiReload, "changed"},
	}
	for _, s := range steps {
		before := pe.metricsOf("mandate_policy_reloads_total")
		s.prepare()
		s.reload()
		after := pe.metricsOf("mandate_policy_reloads_total")
		for _, o := range []string{"changed", "unchanged", "refused"} {
			name := `mandate_policy_reloads_total{outcome="` + o + `"}`
			want := 0.0
			if o == s.outcome {
				want = 1
			}
			if _, ok := after[name]; !ok {
				t.Fatalf("%s: /metrics lacks %s", s.name, name)
			}
			if got := after[name] - before[name]; got != want {
				t.Errorf("%s: %s went up by %v, want %v", s.name, name, got, want)
			}
		}
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
