package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// DataAnswer is the OPA v1 Data API's answer to a query of a document.
type DataAnswer struct {
	// Result is the document's value; nil when it is undefined.
	Result     json.RawMessage `json:"result,omitempty"`
	DecisionID string          `json:"decision_id"`
	// Warning is OPA's, as for a query without input.
	Warning *DataWarning `json:"warning,omitempty"`
}

// DataWarning is a warning of the Data API.
type DataWarning struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Defined tells whether the document queried is defined.
func (a *DataAnswer) Defined() bool { return a.Result != nil }

// DataPath is the Data API path of the document whose keys are
// segments, each escaped ("/" inside a key as %2F): DataPath("mandate",
// "agents", "spiffe://org-a.example/agent/x") names that agent's
// document.
func DataPath(segments ...string) string {
	esc := make([]string, len(segments))
	for i, s := range segments {
		esc[i] = url.PathEscape(s)
	}
	return strings.Join(esc, "/")
}

// QueryData evaluates the policy document at path (its keys separated by
// "/", as in the URL: "mandate/issuance/decision", or as DataPath writes
// it; "": all of data) with input (nil: none), by the OPA v1 Data API
// (POST /v1/data/{path}; admin or a configured decision caller). Each
// query is a decision recorded in the audit log, under the answer's
// DecisionID. An error answer (OPA's shape) is a *Problem whose Code is
// OPA's ("invalid_parameter", "unauthorized", "internal_error", ...).
func (c *Client) QueryData(ctx context.Context, path string, input any) (*DataAnswer, error) {
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("client: data path %q holds ? or #: escape its keys (DataPath)", path)
	}
	p := "/v1/data"
	if path = strings.Trim(path, "/"); path != "" {
		p += "/" + path
	}
	var req struct {
		Input any `json:"input,omitempty"`
	}
	req.Input = input
	return call[DataAnswer](ctx, c, http.MethodPost, p, req)
}

// AuthZENEntity is an AuthZEN subject or resource.
type AuthZENEntity struct {
	Type       string         `json:"type"`
	ID         string         `json:"id"`
	Properties map[string]any `json:"properties,omitempty"`
}

// AuthZENAction is an AuthZEN action.
type AuthZENAction struct {
	Name       string         `json:"name"`
	Properties map[string]any `json:"properties,omitempty"`
}

// Evaluation is an OpenID AuthZEN 1.0 access evaluation request.
type Evaluation struct {
	Subject  *AuthZENEntity `json:"subject,omitempty"`
	Action   *AuthZENAction `json:"action,omitempty"`
	Resource *AuthZENEntity `json:"resource,omitempty"`
	Context  map[string]any `json:"context,omitempty"`
}

// EvaluationAnswer is an AuthZEN decision.
type EvaluationAnswer struct {
	Decision bool           `json:"decision"`
	Context  map[string]any `json:"context,omitempty"`
}

// DecisionID is the id under which the authority recorded the decision
// (its context's decision_id), or "".
func (a *EvaluationAnswer) DecisionID() string {
	id, _ := a.Context["decision_id"].(string)
	return id
}

// Evaluate asks for one AuthZEN access decision (POST
// /access/v1/evaluation; admin or a configured decision caller). A
// request the authority cannot read is a *Problem (400).
func (c *Client) Evaluate(ctx context.Context, e *Evaluation) (*EvaluationAnswer, error) {
	return call[EvaluationAnswer](ctx, c, http.MethodPost, "/access/v1/evaluation", e)
}

// Evaluation semantics of a batch (EvaluationsOptions).
const (
	ExecuteAll          = "execute_all"
	DenyOnFirstDeny     = "deny_on_first_deny"
	PermitOnFirstPermit = "permit_on_first_permit"
)

// Evaluations is an AuthZEN batch: each of Evaluations takes the
// defaults (Evaluation's members) for the members it leaves out.
type Evaluations struct {
	Evaluation
	Evaluations []Evaluation        `json:"evaluations,omitempty"`
	Options     *EvaluationsOptions `json:"options,omitempty"`
}

// EvaluationsOptions are a batch's options.
type EvaluationsOptions struct {
	// EvaluationsSemantic is ExecuteAll (the default), DenyOnFirstDeny
	// or PermitOnFirstPermit.
	EvaluationsSemantic string `json:"evaluations_semantic,omitempty"`
}

// EvaluateBatch asks for a batch of AuthZEN access decisions (POST
// /access/v1/evaluations), answered in order, the i-th decision that of
// the i-th evaluation: with ExecuteAll, one for each; with
// DenyOnFirstDeny or PermitOnFirstPermit, up to and including the one
// that stopped it. An answer that is not so (a decision missing, or
// one after the batch stopped) is an error. A batch of no evaluation is
// one evaluation of the defaults.
func (c *Client) EvaluateBatch(ctx context.Context, b *Evaluations) ([]EvaluationAnswer, error) {
	var out struct {
		Evaluations []EvaluationAnswer `json:"evaluations"`
		EvaluationAnswer
	}
	if err := c.Do(ctx, http.MethodPost, "/access/v1/evaluations", b, &out); err != nil {
		return nil, err
	}
	if len(b.Evaluations) == 0 {
		return []EvaluationAnswer{out.EvaluationAnswer}, nil
	}
	semantic := ExecuteAll
	if b.Options != nil && b.Options.EvaluationsSemantic != "" {
		semantic = b.Options.EvaluationsSemantic
	}
	if err := checkBatch(semantic, len(b.Evaluations), out.Evaluations); err != nil {
		return nil, fmt.Errorf("client: POST /access/v1/evaluations: %w", err)
	}
	return out.Evaluations, nil
}

// checkBatch tells whether got answers n evaluations asked with
// semantic: each of them (ExecuteAll), or up to and including the first
// deny (DenyOnFirstDeny) or permit (PermitOnFirstPermit).
func checkBatch(semantic string, n int, got []EvaluationAnswer) error {
	if len(got) == 0 || len(got) > n {
		return fmt.Errorf("%d decisions answer %d evaluations", len(got), n)
	}
	var stop bool // the decision that ends the batch
	switch semantic {
	case DenyOnFirstDeny:
		stop = false
	case PermitOnFirstPermit:
		stop = true
	default:
		if len(got) != n {
			return fmt.Errorf("%d decisions answer %d evaluations, all asked (%s)", len(got), n, semantic)
		}
		return nil
	}
	for i, d := range got[:len(got)-1] {
		if d.Decision == stop {
			return fmt.Errorf("decision %d of %d ends the batch (%s), and more follow it", i, len(got), semantic)
		}
	}
	if len(got) < n && got[len(got)-1].Decision != stop {
		return fmt.Errorf("%d decisions answer %d evaluations, and the last does not end the batch (%s)", len(got), n, semantic)
	}
	return nil
}
