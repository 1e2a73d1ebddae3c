package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Decision points inside Mandate, and the document each asks.
const (
	PointIssuance   = "issuance"
	PointDelegation = "delegation"
)

// DecisionPaths maps each decision point to its document: an object
// {"allow": bool, "reasons": [string]}.
var DecisionPaths = map[string]string{
	PointIssuance:   "mandate/issuance/decision",
	PointDelegation: "mandate/delegation/decision",
}

// DecisionDocuments are the documents of Mandate's own decision points,
// sorted: a revision must define each of them (Options.Required).
func DecisionDocuments() []string {
	return slices.Sorted(maps.Values(DecisionPaths))
}

// Decision is the outcome of one of Mandate's own decision points.
type Decision struct {
	ID       string
	Point    string
	Path     string
	Allow    bool
	Reasons  []string
	Revision string
	EvalTime time.Time
	Latency  time.Duration
	// Err is set when the policy could not decide (an error, a timeout,
	// an undefined or malformed decision): Allow is then false.
	Err error

	start time.Time
}

// Decide asks the decision point with input (any JSON-encodable value)
// and fails closed: anything but a well-formed {"allow": true} is a deny.
func (e *Engine) Decide(ctx context.Context, point string, input any) Decision {
	start := time.Now()
	d := Decision{ID: NewDecisionID(), Point: point, Path: DecisionPaths[point], Revision: e.Revision(), start: start}
	if d.Path == "" {
		d.Err = fmt.Errorf("%w: unknown decision point %q", ErrEval, point)
		return d.denied()
	}
	in, err := inputValue(input, 0)
	if err != nil {
		d.Err = fmt.Errorf("%w: input: %v", ErrEval, err)
		return d.denied()
	}
	// A builtin's error is an error here: it would otherwise make a rule
	// that denies undefined, and the decision an allow.
	res, err := e.Eval(ctx, d.Path, in, EvalOptions{StrictBuiltinErrors: true})
	if res != nil {
		d.Revision, d.EvalTime = res.Revision, res.EvalTime
	}
	if err != nil {
		d.Err = err
		return d.denied()
	}
	if !res.Defined {
		d.Err = fmt.Errorf("%w: data.%s is undefined", ErrEval, dotted(d.Path))
		return d.denied()
	}
	obj, ok := res.Value.(map[string]any)
	allow, isBool := obj["allow"].(bool)
	if !ok || !isBool {
		d.Err = fmt.Errorf("%w: data.%s is not {\"allow\": bool, \"reasons\": [...]}", ErrEval, dotted(d.Path))
		return d.denied()
	}
	if raw, present := obj["reasons"]; present {
		rs, ok := raw.([]any)
		for _, r := range rs {
			s, isString := r.(string)
			ok = ok && isString
			if isString {
				d.Reasons = append(d.Reasons, s)
			}
		}
		if !ok {
			d.Err = fmt.Errorf("%w: data.%s.reasons is not a list of strings", ErrEval, dotted(d.Path))
			return d.denied()
		}
	}
	d.Allow = allow && len(d.Reasons) == 0
	if allow && len(d.Reasons) > 0 {
		d.Reasons = append(d.Reasons, "the policy allowed with reasons to deny: denied")
	}
	d.Latency = time.Since(start)
	return d
}

func (d Decision) denied() Decision {
	d.Allow = false
	if d.Latency == 0 && !d.start.IsZero() {
		d.Latency = time.Since(d.start)
	}
	// Cut: the reason is in the deny's answer and its audit entry, and
	// an error's message can quote the input at any length.
	d.Reasons = append(d.Reasons, "policy could not decide: "+CutUTF8(d.Err.Error(), maxReasonError))
	return d
}

func dotted(path string) string {
	out := []byte(path)
	for i, c := range out {
		if c == '/' {
			out[i] = '.'
		}
	}
	return string(out)
}

// inputValue is what evaluation takes of input: the value ParseInput
// gives of input's JSON encoding, built without encoding the maps,
// slices, strings and integers Mandate's decision points are asked with
// (anything else, and any string that is not valid UTF-8, goes through
// JSON).
func inputValue(x any, depth int) (ast.Value, error) {
	t, err := inputTerm(x, depth)
	if err != nil {
		return nil, err
	}
	return t.Value, nil
}

// inputTerm is inputValue as a term. Terms OPA interns (booleans, null,
// small integers) and the names of the facts Mandate's decision points
// are told (inputKeys) are shared, not built again: evaluation never
// changes a term of its input, as it never changes one OPA interns.
func inputTerm(x any, depth int) (*ast.Term, error) {
	if depth > maxInputDepth {
		return termViaJSON(x) // which refuses a cycle
	}
	switch x := x.(type) {
	case map[string]any:
		if x == nil {
			return ast.InternedNullTerm, nil
		}
		// Small objects (every one Mandate builds) are put together on
		// the stack: ast.NewObject copies the pairs.
		var buf [16][2]*ast.Term
		kvs := buf[:0]
		if len(x) > len(buf) {
			kvs = make([][2]*ast.Term, 0, len(x))
		}
		for k, v := range x {
			key, ok := inputKeys[k]
			if !ok {
				if !utf8.ValidString(k) {
					return termViaJSON(x)
				}
				key = ast.StringTerm(k)
			}
			val, err := inputTerm(v, depth+1)
			if err != nil {
				return nil, err
			}
			kvs = append(kvs, [2]*ast.Term{key, val})
		}
		return ast.NewTerm(ast.NewObject(kvs...)), nil
	case []any:
		return arrayTerm(x, depth)
	case []string:
		return arrayTerm(x, depth)
	case string:
		if !utf8.ValidString(x) {
			return termViaJSON(x)
		}
		return ast.StringTerm(x), nil
	case bool:
		return ast.InternedTerm(x), nil
	case int:
		return ast.InternedTerm(x), nil
	case int64:
		return ast.InternedTerm(x), nil
	case nil:
		return ast.InternedNullTerm, nil
	}
	return termViaJSON(x)
}

// inputKeys are the names of the facts Mandate's decision points are
// told (see policies/*.rego), as terms built once.
var inputKeys = func() map[string]*ast.Term {
	m := map[string]*ast.Term{}
	for _, k := range []string{
		// delegation
		"delegator", "delegatee", "principal", "scopes", "depth", "exp", "parent", "chain", "purpose",
		"spiffe_id", "trust_domain", "host", "revoked", "banned", "level", "drifted", "lapsed", "id", "iss",
		// issuance
		"kind", "caller", "agent", "node", "selectors", "node_ids", "require_hardware_attestation",
		"attestation_method", "attested_at", "quoted_at", "ek_trust", "tpm", "profile", "model",
		"model_provider", "operator", "responsible_party", "accountability",
	} {
		m[k] = ast.StringTerm(k)
	}
	return m
}()

// maxInputDepth is how deep inputValue builds values itself; deeper, it
// goes through JSON, which refuses a cycle instead of recursing forever.
const maxInputDepth = 64

// arrayTerm is inputTerm of a slice.
func arrayTerm[T any](xs []T, depth int) (*ast.Term, error) {
	if xs == nil {
		return ast.InternedNullTerm, nil
	}
	elems := make([]*ast.Term, len(xs))
	for i, v := range xs {
		t, err := inputTerm(v, depth+1)
		if err != nil {
			return nil, err
		}
		elems[i] = t
	}
	return ast.NewTerm(ast.NewArray(elems...)), nil
}

// termViaJSON is viaJSON as a term.
func termViaJSON(x any) (*ast.Term, error) {
	v, err := viaJSON(x)
	if err != nil {
		return nil, err
	}
	return ast.NewTerm(v), nil
}

// viaJSON is ParseInput of x's JSON encoding.
func viaJSON(x any) (ast.Value, error) {
	b, err := json.Marshal(x)
	if err != nil {
		return nil, err
	}
	return ParseInput(b)
}

// ErrorCode is the code of an evaluation error (OPA's: eval_builtin_error,
// eval_conflict_error, eval_type_error, rego_type_error...;
// evaluation_timeout for a timeout; eval_cancel_error for an evaluation
// its caller gave up; eval_error for any other) and the
// policy location it arose at (file:row:col; empty if none). Neither
// holds a value of the input.
func ErrorCode(err error) (code, location string) {
	var loc *ast.Location
	var te *topdown.Error
	var ae *ast.Error
	var aes ast.Errors
	switch {
	case errors.Is(err, ErrTimeout):
		code = CodeTimeout
	case errors.Is(err, ErrCanceled):
		code = CodeCanceled
	case errors.As(err, &te):
		code, loc = te.Code, te.Location
	case errors.As(err, &ae):
		code, loc = ae.Code, ae.Location
	case errors.As(err, &aes) && len(aes) > 0:
		code, loc = aes[0].Code, aes[0].Location
	default:
		code = "eval_error"
	}
	if loc != nil && loc.File != "" {
		location = fmt.Sprintf("%s:%d:%d", loc.File, loc.Row, loc.Col)
	}
	return code, location
}

// CodeTimeout is the error code of an evaluation that ran out of time.
const CodeTimeout = "evaluation_timeout"

// CodeCanceled is the error code of an evaluation its caller gave up
// (OPA's code for a canceled evaluation).
const CodeCanceled = "eval_cancel_error"

// maxReasonError bounds the error's message in the reason of a decision
// that could not be made.
const maxReasonError = 2 << 10

// CutUTF8 is s cut to at most n bytes, on a character boundary, with
// "…" appended when cut.
func CutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n -= len("…")
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:max(n, 0)] + "…"
}
