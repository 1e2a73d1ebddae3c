package client_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"mandate.dev/mandate/client"
)

// EvaluateBatch returns decisions that answer the batch asked, the i-th
// the i-th evaluation's: an answer with one missing, or one after the
// decision that ended the batch, is an error, not decisions a caller
// would pair with the wrong evaluations.
func TestEvaluateBatchHoldsTheAnswerToTheSemantic(t *testing.T) {
	for _, tc := range []struct {
		name     string
		semantic string
		asked    int
		answered []bool
		ok       bool
	}{
		{"all, answered", "", 3, []bool{true, false, true}, true},
		{"all, answered (named)", client.ExecuteAll, 2, []bool{false, false}, true},
		{"all, one missing", "", 3, []bool{true, true}, false},
		{"all, one more", client.ExecuteAll, 2, []bool{true, true, true}, false},
		{"none", "", 2, nil, false},
		{"deny first, no deny", client.DenyOnFirstDeny, 3, []bool{true, true, true}, true},
		{"deny first, stopped at a deny", client.DenyOnFirstDeny, 3, []bool{true, false}, true},
		{"deny first, stopped at a permit", client.DenyOnFirstDeny, 3, []bool{true, true}, false},
		{"deny first, a decision after the deny", client.DenyOnFirstDeny, 3, []bool{false, true}, false},
		{"permit first, stopped at a permit", client.PermitOnFirstPermit, 3, []bool{true}, true},
		{"permit first, no permit", client.PermitOnFirstPermit, 2, []bool{false, false}, true},
		{"permit first, stopped at a deny", client.PermitOnFirstPermit, 3, []bool{false, false}, false},
		{"permit first, a decision after the permit", client.PermitOnFirstPermit, 3, []bool{false, true, false}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := hostileAuthority(t, 5*time.Second, func(w http.ResponseWriter, r *http.Request) {
				var out struct {
					Evaluations []client.EvaluationAnswer `json:"evaluations"`
				}
				for _, d := range tc.answered {
					out.Evaluations = append(out.Evaluations, client.EvaluationAnswer{Decision: d})
				}
				json.NewEncoder(w).Encode(out)
			})
			b := &client.Evaluations{Evaluation: client.Evaluation{Subject: &client.AuthZENEntity{Type: "agent", ID: "a"}}}
			for range tc.asked {
				b.Evaluations = append(b.Evaluations, client.Evaluation{Action: &client.AuthZENAction{Name: "read"}})
			}
			if tc.semantic != "" {
				b.Options = &client.EvaluationsOptions{EvaluationsSemantic: tc.semantic}
			}
			got, err := c.EvaluateBatch(context.Background(), b)
			if (err == nil) != tc.ok {
				t.Fatalf("EvaluateBatch of %d (%s) answered %v = %d decisions, %v; want ok=%v", tc.asked, tc.semantic, tc.answered, len(got), err, tc.ok)
			}
			if tc.ok && len(got) != len(tc.answered) {
				t.Fatalf("EvaluateBatch = %d decisions, want %d", len(got), len(tc.answered))
			}
		})
	}
}
