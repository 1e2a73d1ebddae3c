package policy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/policy"
)

func newEngine(t *testing.T, opts policy.Options) *policy.Engine {
	t.Helper()
	e, err := policy.New(context.Background(), opts)
	if err != nil {
		t.Fatalf("policy.New: %v", err)
	}
	return e
}

// TestShippedPolicies runs the embedded policies' Rego tests through
// OPA's tester, as `mandate policy test` does.
func TestShippedPolicies(t *testing.T) {
	e := newEngine(t, policy.Options{})
	results, err := e.Test(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(results) < 15 {
		t.Fatalf("%d Rego tests found, want the shipped ones", len(results))
	}
	for _, r := range results {
		if r.Fail || r.Error != "" {
			t.Errorf("%s.%s failed: %s", r.Package, r.Name, r.Error)
		}
	}
}

func writePolicy(t *testing.T, dir, name, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReloadKeepsTheOldRevisionOnErrors(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, "authz.rego", "package authz\nimport rego.v1\ndefault allow := false\nallow if input.user == \"alice\"\n")
	e := newEngine(t, policy.Options{Dir: dir})
	rev1 := e.Revision()
	ctx := context.Background()

	for _, tc := range []struct{ name, file, text, want string }{
		{"does not parse", "authz.rego", "package authz\nallow if {", "rego_parse_error"},
		{"does not compile", "authz.rego", "package authz\nimport rego.v1\nallow if undefined_fn(1)\n", "does not compile"},
		{"its test fails", "authz_test.rego", "package authz_test\nimport rego.v1\ntest_bob if data.authz.allow with input as {\"user\": \"bob\"}\n", "Rego tests fail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, _ := os.ReadFile(filepath.Join(dir, tc.file))
			writePolicy(t, dir, tc.file, tc.text)
			defer func() {
				if old == nil {
					os.Remove(filepath.Join(dir, tc.file))
				} else {
					writePolicy(t, dir, tc.file, string(old))
				}
			}()
			o, n, err := e.Reload(ctx, nil)
			if !errors.Is(err, policy.ErrRejected) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Reload = %v, want ErrRejected saying %q", err, tc.want)
			}
			if o != rev1 || n != rev1 || e.Revision() != rev1 {
				t.Fatalf("revision moved: %s → %s (active %s)", o, n, e.Revision())
			}
		})
	}
	writePolicy(t, dir, "authz.rego", "package authz\nimport rego.v1\ndefault allow := false\nallow if input.user in {\"alice\", \"bob\"}\n")
	o, n, err := e.Reload(ctx, nil)
	if err != nil || o != rev1 || n == rev1 || e.Revision() != n {
		t.Fatalf("Reload = %s → %s, %v", o, n, err)
	}
	in, _ := policy.ParseInput([]byte(`{"user":"bob"}`))
	res, err := e.Eval(ctx, "authz/allow", in, policy.EvalOptions{})
	if err != nil || res.Value != true || res.Revision != n {
		t.Fatalf("Eval = %+v, %v", res, err)
	}
}

func TestDecideFailsClosed(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, "mandate.rego", `package mandate.issuance
import rego.v1
decision := {"allow": true, "reasons": []} if input.ok
decision := {"allow": "yes"} if input.weird
decision := x if { input.conflict; x := {"allow": true, "reasons": []} }
decision := x if { input.conflict; x := {"allow": false, "reasons": []} }
decision := {"allow": count([x | some x in numbers.range(1, 100000000)]) > 0, "reasons": []} if input.slow
`)
	e := newEngine(t, policy.Options{Dir: dir, Timeout: 50 * time.Millisecond})
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		input any
		allow bool
	}{
		{"allowed", map[string]any{"ok": true}, true},
		{"undefined", map[string]any{}, false},
		{"malformed", map[string]any{"weird": true}, false},
		{"conflict", map[string]any{"conflict": true}, false},
		{"timeout", map[string]any{"slow": true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := e.Decide(ctx, policy.PointIssuance, tc.input)
			if d.Allow != tc.allow || (!tc.allow && (d.Err == nil || len(d.Reasons) == 0)) || d.ID == "" || d.Revision != e.Revision() {
				t.Fatalf("Decide = %+v", d)
			}
		})
	}
}

// A decision whose reasons are not a list of strings, or whose rules
// meet a builtin's error, is a deny: never an allow for want of a reason.
func TestDecideFailsClosedOnMalformedReasonsAndBuiltinErrors(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, "mandate.rego", `package mandate.issuance
import rego.v1
decision := {"allow": true, "reasons": "node is banned"} if input.case == "string"
decision := {"allow": true, "reasons": [{"msg": "node is banned"}]} if input.case == "objects"
decision := {"allow": true, "reasons": null} if input.case == "null"
decision := {"allow": true} if input.case == "none"
deny contains "too many hops" if to_number(input.hops) > 3
decision := {"allow": count(deny) == 0, "reasons": deny} if input.case == "builtin"
`)
	e := newEngine(t, policy.Options{Dir: dir})
	ctx := context.Background()
	for _, tc := range []struct {
		input map[string]any
		allow bool
	}{
		{map[string]any{"case": "string"}, false},
		{map[string]any{"case": "objects"}, false},
		{map[string]any{"case": "null"}, false},
		{map[string]any{"case": "none"}, true},
		{map[string]any{"case": "builtin", "hops": "9x"}, false},
		{map[string]any{"case": "builtin", "hops": "2"}, true},
	} {
		d := e.Decide(ctx, policy.PointIssuance, tc.input)
		if d.Allow != tc.allow || (!tc.allow && d.Err == nil) {
			t.Errorf("%v: allow %v (err %v, reasons %q), want %v", tc.input, d.Allow, d.Err, d.Reasons, tc.allow)
		}
	}
	// A builtin's error quoting a long input: a deny whose reason is cut,
	// so that it fits the deny's answer and audit entry.
	long := strings.Repeat("9x", 40<<10)
	if d := e.Decide(ctx, policy.PointIssuance, map[string]any{"case": "builtin", "hops": long}); d.Allow || d.Err == nil ||
		len(d.Reasons) != 1 || len(d.Reasons[0]) > 4<<10 || !strings.HasPrefix(d.Reasons[0], "policy could not decide: ") {
		t.Errorf("a long builtin error: allow %v, %d reasons, the first %d bytes", d.Allow, len(d.Reasons), len(fmt.Sprint(d.Reasons)))
	}
	// Asked without StrictBuiltinErrors (the Data API's default, as
	// OPA's), the same rule is undefined.
	in, err := policy.ParseInput([]byte(`{"hops": "9x"}`))
	if err != nil {
		t.Fatal(err)
	}
	if res, err := e.Eval(ctx, "mandate/issuance/deny", in, policy.EvalOptions{}); err != nil || !res.Defined {
		t.Fatalf("deny without strict builtin errors: %+v, %v", res, err)
	}
	if _, err := e.Eval(ctx, "mandate/issuance/deny", in, policy.EvalOptions{StrictBuiltinErrors: true}); !errors.Is(err, policy.ErrEval) {
		t.Fatalf("deny with strict builtin errors: %v, want ErrEval", err)
	}
}

// As OPA's Data API: an integer segment indexes an array, of a rule or
// of data.
func TestNumericPathSegmentsIndexArrays(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, "t.rego", "package t\nimport rego.v1\narr := [\"a\", \"b\"]\nobj := {\"1\": \"one\"}\n")
	writePolicy(t, dir, "data.json", `{"d": {"list": ["x", "y"]}}`)
	e := newEngine(t, policy.Options{Dir: dir})
	for path, want := range map[string]any{"t/arr/1": "b", "t/arr/0": "a", "d/list/1": "y"} {
		res, err := e.Eval(context.Background(), path, nil, policy.EvalOptions{})
		if err != nil || !res.Defined || res.Value != want {
			t.Errorf("%s = %+v, %v; want %q", path, res, err, want)
		}
	}
	// A string key that reads as a number is not reached by it, as in OPA
	// (whose type checker refuses the query).
	if res, err := e.Eval(context.Background(), "t/obj/1", nil, policy.EvalOptions{}); err == nil && res.Defined {
		t.Errorf("t/obj/1 = %v; want no value", res.Value)
	}
}

func TestPathRef(t *testing.T) {
	for _, tc := range []struct {
		path, want string
		ok         bool
	}{
		{"", "data", true},
		{"a/b/c", `data.a.b.c`, true},
		{"/a/b/", `data.a.b`, true},
		{"a//b", "data.a.b", true},
		{"a/%2Fb/c%20d", `data.a["/b"]["c d"]`, true},
		{"a/%ff", "", false},
		{"a/%zz", "", false},
		{"with space/x-y", `data["with space"]["x-y"]`, true},
		{"a/1/-2/01/1x", `data.a[1][-2][1]["1x"]`, true},
		// As OPA reads a segment as an integer: a fraction of zeros is
		// allowed, any other is not, nor more than 19 digits.
		{"a/1.0/+1/-2./1.00/%2E", `data.a[1][1][-2][1][0]`, true},
		{"a/1.5/1e0/.1/0x1/1_0", `data.a["1.5"]["1e0"][".1"]["0x1"]["1_0"]`, true},
		{"a/9223372036854775807/99999999999999999999", `data.a[9223372036854775807]["99999999999999999999"]`, true},
		{strings.Repeat("a/", 40), "", false},
	} {
		ref, err := policy.PathRef(tc.path)
		if (err == nil) != tc.ok || (tc.ok && ref.String() != tc.want) {
			t.Errorf("PathRef(%q) = %v, %v; want %s", tc.path, ref, err, tc.want)
		}
	}
}

// shippedEngine is an engine of the shipped policies with the documents
// the authority sets: org-a.example, federated with org-b.example.
func shippedEngine(t *testing.T) *policy.Engine {
	t.Helper()
	e := newEngine(t, policy.Options{})
	ctx := context.Background()
	if err := e.SetData(ctx, "trust_domain", "org-a.example"); err != nil {
		t.Fatal(err)
	}
	if err := e.SetData(ctx, "federated_trust_domains", []string{"org-b.example"}); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestShippedDelegationDecision asks the shipped delegation policy
// through Decide, with Mandate's documents set as the authority sets them.
func TestShippedDelegationDecision(t *testing.T) {
	e := shippedEngine(t)
	ctx := context.Background()
	hop := map[string]any{
		"delegator": map[string]any{"spiffe_id": "spiffe://org-a.example/agent/p", "trust_domain": "org-a.example",
			"scopes": []string{"calendar:read"}, "host": map[string]any{"level": "token"}},
		"delegatee": map[string]any{"spiffe_id": "spiffe://org-b.example/agent/b", "trust_domain": "org-b.example"},
		"principal": "alice", "scopes": []string{"calendar:read"}, "depth": 1, "exp": 100, "chain": []any{},
	}
	if d := e.Decide(ctx, policy.PointDelegation, hop); !d.Allow || d.Err != nil {
		t.Fatalf("allowed hop: %+v", d)
	}
	hop["delegatee"] = map[string]any{"spiffe_id": "spiffe://org-c.example/agent/c", "trust_domain": "org-c.example"}
	hop["depth"] = 5
	d := e.Decide(ctx, policy.PointDelegation, hop)
	if d.Allow || d.Err != nil || len(d.Reasons) != 3 {
		t.Fatalf("denied hop: %+v", d)
	}
	// The documents survive a reload.
	if _, _, err := e.Reload(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(ctx, policy.PointDelegation, hop); len(d.Reasons) != 3 {
		t.Fatalf("after reload: %+v", d)
	}
}

// TestShippedDelegationReasonsForMalformedFacts: a hop whose facts are
// missing or of the wrong type is denied by the shipped policy with its
// own reasons, not with a builtin's type error (Decide evaluates with
// strict builtin errors), and a party's revocation is said whatever else
// is missing.
func TestShippedDelegationReasonsForMalformedFacts(t *testing.T) {
	e := shippedEngine(t)
	ctx := context.Background()
	hop := func(change map[string]any) map[string]any {
		h := map[string]any{
			"delegator": map[string]any{"spiffe_id": "spiffe://org-a.example/agent/p", "trust_domain": "org-a.example",
				"scopes": []string{"calendar:read"}, "host": map[string]any{"level": "hardware"}},
			"delegatee": map[string]any{"spiffe_id": "spiffe://org-b.example/agent/b", "trust_domain": "org-b.example"},
			"principal": "alice", "scopes": []string{"calendar:read"}, "depth": 1, "exp": 100, "chain": []any{},
		}
		for k, v := range change {
			if v == nil {
				delete(h, k)
			} else {
				h[k] = v
			}
		}
		return h
	}
	for _, tc := range []struct {
		name   string
		input  map[string]any
		reason string
	}{
		{"scopes null", hop(map[string]any{"scopes": []string(nil)}), "scopes must be a non-empty list"},
		{"parent a string", hop(map[string]any{"depth": 2, "parent": "d1", "chain": []any{map[string]any{"spiffe_id": "x", "revoked": false}}}),
			"the parent hop is not an object"},
		{"no delegator, the delegatee revoked", hop(map[string]any{"delegator": nil,
			"delegatee": map[string]any{"spiffe_id": "spiffe://org-b.example/agent/b", "trust_domain": "org-b.example", "revoked": true}}),
			"spiffe://org-b.example/agent/b is revoked"},
		{"a sensitive scope, the delegator a string", hop(map[string]any{"delegator": "spiffe://org-a.example/agent/p",
			"scopes": []string{"payments:write"}}),
			`sensitive scopes ["payments:write"] need a hardware-attested host (the delegator's is unknown)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := e.Decide(ctx, policy.PointDelegation, tc.input)
			if d.Allow || d.Err != nil {
				t.Fatalf("Decide = allow %v, err %v (reasons %q); want a deny with the policy's reasons", d.Allow, d.Err, d.Reasons)
			}
			found := false
			for _, r := range d.Reasons {
				found = found || r == tc.reason
			}
			if !found {
				t.Fatalf("reasons %q; want among them %q", d.Reasons, tc.reason)
			}
		})
	}
}

// TestShippedDelegationJudgesLongScopeLists: the shipped delegation
// policy judges a hop whose asked and granted scopes are long lists (as
// a Data API caller may send them, up to the body limit) by looking each
// asked scope up once: it answers well within the evaluation timeout,
// where comparing every asked scope with every granted one would run
// into it.
func TestShippedDelegationJudgesLongScopeLists(t *testing.T) {
	e := newEngine(t, policy.Options{Timeout: 10 * time.Second})
	ctx := context.Background()
	if err := e.SetData(ctx, "trust_domain", "org-a.example"); err != nil {
		t.Fatal(err)
	}
	const n = 100_000
	list := func(s string, last ...string) []string {
		l := make([]string, n, n+len(last))
		for i := range l {
			l[i] = s
		}
		return append(l, last...)
	}
	for _, tc := range []struct {
		name           string
		asked, granted []string
		allow          bool
		reasons        []string
	}{
		{"every scope granted", list("calendar:read"), list("calendar:write", "calendar:read"), true, nil},
		{"a scope not granted", list("mail:send", "calendar:read"), list("calendar:write", "calendar:read"), false,
			[]string{"scope mail:send is not granted to the delegator"}},
		{"a sensitive scope", list("payments:write"), list("calendar:write", "payments:write"), false,
			[]string{`sensitive scopes ["payments:write"] need a hardware-attested host (the delegator's is token)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hop := map[string]any{
				"delegator": map[string]any{"spiffe_id": "spiffe://org-a.example/agent/p", "trust_domain": "org-a.example",
					"scopes": tc.granted, "host": map[string]any{"level": "token"}},
				"delegatee": map[string]any{"spiffe_id": "spiffe://org-a.example/agent/b"},
				"principal": "alice", "scopes": tc.asked, "depth": 1, "exp": 100, "chain": []any{},
			}
			d := e.Decide(ctx, policy.PointDelegation, hop)
			if d.Err != nil || d.Allow != tc.allow || !slices.Equal(d.Reasons, tc.reasons) {
				t.Fatalf("Decide = allow %v, reasons %q, err %v; want allow %v, reasons %q", d.Allow, d.Reasons, d.Err, tc.allow, tc.reasons)
			}
		})
	}
}

// TestReplayWithRecordedTime: a decision that reads the clock gives the
// same answer when evaluated again with its recorded evaluation time.
func TestReplayWithRecordedTime(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, "t.rego", "package t\nimport rego.v1\nfresh if time.now_ns() < input.exp_ns\n")
	clock := time.Unix(1000, 0)
	e := newEngine(t, policy.Options{Dir: dir, Now: func() time.Time { return clock }})
	ctx := context.Background()
	in, _ := policy.ParseInput([]byte(`{"exp_ns": 1500000000000}`))
	first, err := e.Eval(ctx, "t/fresh", in, policy.EvalOptions{})
	if err != nil || first.Value != true {
		t.Fatalf("first: %+v %v", first, err)
	}
	clock = time.Unix(2000, 0) // later: the decision would change...
	if now, _ := e.Eval(ctx, "t/fresh", in, policy.EvalOptions{}); now.Defined {
		t.Fatalf("now: %+v", now)
	}
	// ...but replayed at its recorded time, it does not.
	again, err := e.Eval(ctx, "t/fresh", in, policy.EvalOptions{Time: first.EvalTime})
	if err != nil || again.Value != true || !again.EvalTime.Equal(first.EvalTime) {
		t.Fatalf("replay: %+v %v", again, err)
	}
}

// An evaluation whose caller gives up (a client that hung up) is no
// timeout: it is ErrCanceled, code eval_cancel_error. One that runs out
// of the engine's time, or of its caller's deadline, is ErrTimeout.
func TestCallerGivingUpIsNoTimeout(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, "slow.rego", "package slow\nimport rego.v1\nslow := count([x | some x in numbers.range(1, 100000000)])\n")
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	past, cancelPast := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancelPast()
	for _, tc := range []struct {
		name     string
		ctx      context.Context
		timeout  time.Duration
		timedOut bool
		code     string
	}{
		{"the caller gave up", canceled, time.Minute, false, policy.CodeCanceled},
		{"the caller's deadline passed", past, time.Minute, true, policy.CodeTimeout},
		{"the engine's timeout passed", context.Background(), 10 * time.Millisecond, true, policy.CodeTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, policy.Options{Dir: dir, Timeout: tc.timeout})
			_, err := e.Eval(tc.ctx, "slow/slow", nil, policy.EvalOptions{})
			code, _ := policy.ErrorCode(err)
			if !errors.Is(err, policy.ErrEval) || errors.Is(err, policy.ErrTimeout) != tc.timedOut ||
				errors.Is(err, policy.ErrCanceled) == tc.timedOut || code != tc.code {
				t.Fatalf("Eval = %v (code %s), want code %s", err, code, tc.code)
			}
		})
	}
}

// A result is the caller's own: changing it changes no data document,
// and a data write made while a caller reads it (encodes it, say) does
// not change it under the reader (the race detector shows the latter).
func TestResultsAreTheCallersOwn(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, "a.rego", "package a\nimport rego.v1\nalias := data.d.k\nwrapped := {\"decision\": false, \"context\": data.d.k}\n")
	writePolicy(t, dir, "data.json", `{"d": {"k": {"v": 1}}}`)
	e := newEngine(t, policy.Options{Dir: dir})
	ctx := context.Background()
	if err := e.SetData(ctx, "agents", map[string]any{"a": map[string]any{"scopes": []any{"x"}}}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"d", "d/k", "a/alias", "a/wrapped", "mandate", "mandate/agents", ""} {
		res, err := e.Eval(ctx, path, nil, policy.EvalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		spoil(res.Value)
	}
	for path, want := range map[string]string{"d": `{"k":{"v":1}}`, "mandate/agents": `{"a":{"scopes":["x"]}}`} {
		res, err := e.Eval(ctx, path, nil, policy.EvalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := json.Marshal(res.Value); string(b) != want {
			t.Errorf("data/%s after its readers changed their results: %s, want %s", path, b, want)
		}
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			if err := e.SetData(ctx, "agents", map[string]any{"a": i}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 200 {
		res, err := e.Eval(ctx, "mandate", nil, policy.EvalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := json.Marshal(res.Value); err != nil {
			t.Fatal(err)
		}
	}
	<-done
}

// spoil changes every object and array in v.
func spoil(v any) {
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			spoil(e)
		}
		x["spoiled"] = true
	case []any:
		for _, e := range x {
			spoil(e)
		}
		if len(x) > 0 {
			x[0] = "spoiled"
		}
	}
}

// A revision that defines no rule (nor data document) at a document
// Mandate requires is refused, at start and on reload, and the active
// revision stays: every evaluation there would be undefined, a deny.
func TestRevisionWithoutARequiredDocumentIsRefused(t *testing.T) {
	required := []string{"mandate/issuance/decision", "mandate/delegation/decision"}
	const delegation = "package mandate.delegation\nimport rego.v1\ndecision := {\"allow\": true}\n"
	for _, tc := range []struct {
		name    string
		files   map[string]string
		missing string // "": accepted
	}{
		{"both rules", map[string]string{"i.rego": "package mandate.issuance\nimport rego.v1\ndecision := {\"allow\": true}\n", "d.rego": delegation}, ""},
		{"a rule by its ref head", map[string]string{"i.rego": "package mandate\nimport rego.v1\nissuance.decision.allow := true\n", "d.rego": delegation}, ""},
		{"a rule above it", map[string]string{"i.rego": "package mandate\nimport rego.v1\nissuance := {\"decision\": {\"allow\": true}}\n", "d.rego": delegation}, ""},
		{"a data document", map[string]string{"d.rego": delegation, "mandate/issuance/data.json": `{"decision": {"allow": false}}`}, ""},
		{"the package without the rule", map[string]string{"i.rego": "package mandate.issuance\nimport rego.v1\nallow := true\n", "d.rego": delegation}, "data.mandate.issuance.decision"},
		{"no issuance module", map[string]string{"d.rego": delegation}, "data.mandate.issuance.decision"},
		{"neither", map[string]string{"x.rego": "package x\nimport rego.v1\ny := 1\n"}, "data.mandate.delegation.decision"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			write := func(dir string) {
				for name, text := range tc.files {
					if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
						t.Fatal(err)
					}
					writePolicy(t, dir, name, text)
				}
			}
			dir := t.TempDir()
			write(dir)
			_, err := policy.New(context.Background(), policy.Options{Dir: dir, Required: required})
			if tc.missing == "" {
				if err != nil {
					t.Fatalf("New = %v, want it loaded", err)
				}
				return
			}
			if !errors.Is(err, policy.ErrRejected) || !strings.Contains(err.Error(), tc.missing) {
				t.Fatalf("New = %v, want it refused, naming %s", err, tc.missing)
			}
			// Reloaded into a running engine: refused, the old revision stays.
			dir = t.TempDir()
			writePolicy(t, dir, "i.rego", "package mandate.issuance\nimport rego.v1\ndecision := {\"allow\": true}\n")
			writePolicy(t, dir, "d.rego", delegation)
			e := newEngine(t, policy.Options{Dir: dir, Required: required})
			rev := e.Revision()
			for _, f := range []string{"i.rego", "d.rego"} {
				if err := os.Remove(filepath.Join(dir, f)); err != nil {
					t.Fatal(err)
				}
			}
			write(dir)
			if _, _, err := e.Reload(context.Background(), nil); !errors.Is(err, policy.ErrRejected) || !strings.Contains(err.Error(), tc.missing) {
				t.Fatalf("Reload = %v, want it refused, naming %s", err, tc.missing)
			}
			if e.Revision() != rev {
				t.Fatal("the refused revision became active")
			}
			d := e.Decide(context.Background(), policy.PointIssuance, map[string]any{})
			if !d.Allow {
				t.Fatalf("the active revision no longer decides: %+v", d)
			}
		})
	}
}
