package authority

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/policies"
	"mandate.dev/mandate/policy"
)

// errPolicy's rules fail on their input, each error quoting the value
// that made it fail: a builtin's error and a conflict.
const errPolicy = `package errs

import rego.v1

num := to_number(input.password)

conflict := input.password
conflict := "other" if true
`

// startWithPolicy is an authority whose policies are the shipped ones and
// module (errs.rego), its config changed by mutate.
func startWithPolicy(t *testing.T, module string, mutate ...func(*Config)) *Authority {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, policies.FS); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "errs.rego"), []byte(module), 0o644); err != nil {
		t.Fatal(err)
	}
	a, _ := runAuthorityWith(t, Options{}, append([]func(*Config){func(c *Config) { c.Policy.Dir = dir }}, mutate...)...)
	return a
}

// decisionEntry is the audit entry of a decision, as stored, and its
// details.
func decisionEntry(t *testing.T, a *Authority, id string) (string, map[string]any) {
	t.Helper()
	got, _, err := a.SearchAudit(t.Context(), adminOf(t, a), audit.Query{DecisionID: id, Limit: 10})
	if err != nil || len(got) != 1 {
		t.Fatalf("the entry of decision %s: %d entries, %v", id, len(got), err)
	}
	var e struct {
		Details map[string]any `json:"details"`
	}
	if err := json.Unmarshal(got[0].Entry, &e); err != nil {
		t.Fatal(err)
	}
	return string(got[0].Entry), e.Details
}

// An evaluation error's message may quote the input: with
// policy.decision_log_mask set, the record keeps the error's code and
// location, never its text, so that no masked value reaches the log.
func TestEvaluationErrorRecordsNoMaskedValue(t *testing.T) {
	a := startWithPolicy(t, errPolicy, func(c *Config) { c.Policy.DecisionLogMask = []string{"/input/password"} })
	ctx, admin := t.Context(), adminOf(t, a)
	for _, tc := range []struct{ name, path, code string }{
		{"a builtin's error", "errs/num", "eval_builtin_error"},
		{"a conflict", "errs/conflict", "eval_conflict_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ans, err := a.QueryData(ctx, admin, DataQuery{Path: tc.path, Input: json.RawMessage(`{"password": "hunter2"}`), StrictBuiltinErrors: true})
			if !errors.Is(err, policy.ErrEval) || !strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("QueryData = %v, want the evaluation error (quoting the input, for the caller)", err)
			}
			raw, details := decisionEntry(t, a, ans.DecisionID)
			if strings.Contains(raw, "hunter2") {
				t.Errorf("the masked value is in the record: %s", raw)
			}
			if details["error_code"] != tc.code || !strings.HasPrefix(details["error_location"].(string), "errs.rego:") ||
				details["error_withheld"] != true || details["error"] == nil {
				t.Errorf("the record of the error: %v", details)
			}
		})
	}
}

// An evaluation error is recorded however long its message (a caller's
// 70 KB string quoted in it): cut, with the digest and size of the whole,
// so that the decision is recorded and the error answered, never a
// failure to record it.
func TestEvaluationErrorOfAnySizeIsRecorded(t *testing.T) {
	huge := strings.Repeat("x", 70<<10)
	for _, tc := range []struct {
		name  string
		masks []string
	}{
		{"no mask", nil},
		{"masks", []string{"/input/password"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startWithPolicy(t, errPolicy, func(c *Config) { c.Policy.DecisionLogMask = tc.masks })
			ans, err := a.QueryData(t.Context(), adminOf(t, a), DataQuery{Path: "errs/num", Input: json.RawMessage(`{"password": "` + huge + `"}`), StrictBuiltinErrors: true})
			if !errors.Is(err, policy.ErrEval) || ans == nil {
				t.Fatalf("QueryData = %v, want the evaluation error", err)
			}
			raw, details := decisionEntry(t, a, ans.DecisionID)
			if strings.Contains(raw, huge) {
				t.Errorf("the record holds the whole message (%d bytes)", len(raw))
			}
			if details["error_code"] != "eval_builtin_error" {
				t.Errorf("the record of the error: %v", details)
			}
			if tc.masks == nil {
				sum := sha256.Sum256([]byte(err.Error()))
				if msg, _ := details["error"].(string); details["error_sha256"] != hex.EncodeToString(sum[:]) ||
					details["error_bytes"] != float64(len(err.Error())) || details["error_truncated"] != true || !strings.HasPrefix(err.Error(), strings.TrimSuffix(msg, "…")) || len(msg) > maxRecordedError {
					t.Errorf("the record of a long error: %v", details)
				}
			}
		})
	}
}

// A decision whose caller gave up (a client that hung up) is recorded as
// canceled (eval_cancel_error), not as a timeout: the policy did not run
// out of time, and an operator counting timeouts is not misled.
func TestCanceledEvaluationIsNoTimeout(t *testing.T) {
	a := startWithPolicy(t, "package errs\n\nimport rego.v1\n\nslow := count([x | some x in numbers.range(1, 100000000)])\n",
		func(c *Config) { c.Policy.EvalTimeout = Duration(time.Minute) })
	admin := adminOf(t, a)
	// The policy's documents are brought up to date first, as they are
	// for any decision once the server runs.
	if _, err := a.QueryData(t.Context(), admin, DataQuery{Path: "mandate/config"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ans, err := a.QueryData(ctx, admin, DataQuery{Path: "errs/slow"})
	if !errors.Is(err, policy.ErrCanceled) || errors.Is(err, policy.ErrTimeout) || ans == nil {
		t.Fatalf("QueryData = %v, want the evaluation canceled", err)
	}
	if _, details := decisionEntry(t, a, ans.DecisionID); details["error_code"] != policy.CodeCanceled {
		t.Fatalf("the record of a canceled evaluation: %v", details)
	}
}

// A denial says its reasons, or that the policy gave none (not an empty
// text where they would be).
func TestPolicyDenialSaysWhy(t *testing.T) {
	for _, tc := range []struct {
		reasons []string
		want    string
	}{
		{nil, "denied by policy: the policy gave no reason (decision d1)"},
		{[]string{"a", "b"}, "denied by policy: a; b (decision d1)"},
	} {
		got := (&PolicyDenial{Decision: policy.Decision{ID: "d1", Reasons: tc.reasons}}).Error()
		if !strings.HasSuffix(got, tc.want) {
			t.Errorf("PolicyDenial(%q).Error() = %q, want it to end %q", tc.reasons, got, tc.want)
		}
	}
}
