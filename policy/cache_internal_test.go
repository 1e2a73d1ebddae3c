package policy

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// The prepared-query cache keeps the paths of the rule tree (a rule, a
// package) and nothing below a rule: a caller asking for endless paths
// inside a rule's value (data.mandate.delegation.deny.x1, .x2, ...)
// cannot take every slot, and the decision points asked afterwards are
// still prepared once and kept. (The whole data document, "", is asked
// too: with the race detector on a busy machine it takes more than the
// default second, and this test is about the cache, not the time.)
func TestPreparedCacheKeepsRulesNotPathsInsideThem(t *testing.T) {
	e, err := New(context.Background(), Options{Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range maxPrepared + 10 {
		if _, err := e.Eval(ctx, fmt.Sprintf("mandate/delegation/deny/x%d", i), nil, EvalOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if d := e.Decide(ctx, PointIssuance, map[string]any{}); d.Err != nil {
		t.Fatalf("issuance: %v", d.Err)
	}
	for _, tc := range []struct {
		path string
		kept bool
	}{
		{"mandate/issuance/decision", true},
		{"mandate/delegation/deny", true},
		{"mandate/delegation", true},
		{"mandate", true},
		{"", true},
		{"mandate/delegation/deny/x1", false},
		{"mandate/config/delegation", false}, // a data document, not a rule
		{"no/such/document", false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			if _, err := e.Eval(ctx, tc.path, nil, EvalOptions{}); err != nil {
				t.Fatal(err)
			}
			rev := e.cur.Load()
			rev.preparedMu.RLock()
			_, kept := rev.prepared[tc.path]
			n := len(rev.prepared)
			rev.preparedMu.RUnlock()
			if kept != tc.kept {
				t.Errorf("%q kept in the cache: %v, want %v (%d kept)", tc.path, kept, tc.kept, n)
			}
		})
	}
}
