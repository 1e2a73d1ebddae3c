package authority

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"mandate.dev/mandate/policy"
	"mandate.dev/mandate/store"
)

// DataQuery is one request of the OPA Data API.
type DataQuery struct {
	// Path is the document asked, slash-separated, relative to data.
	Path string
	// Input is the request's input as received (nil: none).
	Input json.RawMessage
	// Metrics asks for evaluation metrics in the answer; Instrument for
	// the evaluator's finer ones too (OPA's instrument).
	Metrics, Instrument bool
	// StrictBuiltinErrors makes a builtin's error an evaluation error
	// (policy.ErrEval), as OPA's strict-builtin-errors.
	StrictBuiltinErrors bool
	// API names the API asked, for the record ("data" if empty).
	API string
	// InputByDigest records the input by its digest and size only (an
	// AuthZEN batch past its budget, in EvaluateAccess).
	InputByDigest bool
}

// DataAnswer is the outcome of a DataQuery, once its record is durable.
type DataAnswer struct {
	DecisionID string
	*policy.Result
}

// mayDecide checks that c may ask the decision API about the document at
// segs. Admins may ask anything. A decision caller listed in
// policy.caller_paths may ask what its prefixes cover; one not listed may
// ask anything but the registry's raw documents (data.mandate.agents and
// .nodes, and the documents holding them: data and data.mandate), which
// only an explicit prefix opens.
func (a *Authority) mayDecide(ctx context.Context, c *Caller, segs []string) error {
	if err := a.mayAsk(ctx, c); err != nil {
		return err
	}
	return a.mayAskFor(c, segs)
}

// mayAskFor is mayDecide once c is known to be one that may ask
// (mayAsk): whether it may ask about segs.
func (a *Authority) mayAskFor(c *Caller, segs []string) error {
	id := c.ID.String()
	if a.RoleOf(c.ID) == RoleAdmin {
		return nil
	}
	prefixes, limited := a.cfg.Policy.CallerPaths[id]
	if !limited {
		if registryDocument(segs) {
			return fmt.Errorf("%w: data/%s holds the registry; list it in policy.caller_paths for %s", ErrForbidden, policy.CanonicalPath(segs), id)
		}
		return nil
	}
	for _, pre := range prefixes {
		ps, err := policy.PathSegments(pre)
		if err == nil && len(ps) <= len(segs) && slices.Equal(ps, segs[:len(ps)]) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s may not ask data/%s (policy.caller_paths)", ErrForbidden, id, policy.CanonicalPath(segs))
}

// mayAsk checks that c may ask the decision API at all (an admin or a
// decision caller whose ID is not revoked), whatever it asks: checked
// before anything of the request is read, so that others learn nothing
// of its validation.
func (a *Authority) mayAsk(ctx context.Context, c *Caller) error {
	if c == nil || c.ID.IsZero() {
		return ErrUnauthenticated
	}
	if id := c.ID.String(); a.RoleOf(c.ID) != RoleAdmin && !a.decisionCallers[id] {
		return fmt.Errorf("%w: %s is not a decision caller (policy.decision_callers)", ErrForbidden, id)
	}
	return a.callerNotRevoked(ctx, c)
}

// callerNotRevoked refuses, with ErrIDRevoked, a caller whose ID (an
// agent's or a node's of this trust domain, the IDs a revocation takes)
// is revoked: its SVIDs, issued before, last until they expire, but it
// is given nothing more here, decisions and metrics included.
func (a *Authority) callerNotRevoked(ctx context.Context, c *Caller) error {
	if r := a.RoleOf(c.ID); r != RoleAgent && r != RoleNode {
		return nil
	}
	return a.store.View(ctx, func(tx store.Tx) error { return notRevoked(tx, c.ID.String()) })
}

// MayEvaluateAccess says whether c may ask the AuthZEN API: checked
// before a request's body is read.
func (a *Authority) MayEvaluateAccess(ctx context.Context, c *Caller) error {
	segs, err := policy.PathSegments(a.cfg.Policy.AuthZENPath)
	if err != nil {
		return err
	}
	return a.mayDecide(ctx, c, segs)
}

// registryDocument reports whether segs is, or holds, data.mandate.agents
// or data.mandate.nodes.
func registryDocument(segs []string) bool {
	switch {
	case len(segs) == 0:
		return true
	case segs[0] != "mandate":
		return false
	case len(segs) == 1:
		return true
	default:
		return segs[1] == "agents" || segs[1] == "nodes"
	}
}

// MayQueryData says whether c may ask the Data API for the document at
// path: checked before a request's body is read, so that only callers
// allowed to ask make the server decode anything.
func (a *Authority) MayQueryData(ctx context.Context, c *Caller, path string) error {
	if err := a.mayAsk(ctx, c); err != nil {
		return err
	}
	segs, err := policy.PathSegments(path)
	if err != nil {
		return err
	}
	return a.mayAskFor(c, segs)
}

// QueryData evaluates a Data API request for caller c and records the
// decision (caller, path, input and result with the configured masks,
// revision, latency) in the audit log before returning: the answer is
// given only once its record is durable. An evaluation error is recorded
// too, and returned (policy.ErrEval).
func (a *Authority) QueryData(ctx context.Context, c *Caller, q DataQuery) (*DataAnswer, error) {
	segs, err := policy.PathSegments(q.Path)
	if err != nil {
		return nil, err
	}
	path := policy.CanonicalPath(segs)
	if err := a.mayDecide(ctx, c, segs); err != nil {
		return nil, err
	}
	var input ast.Value
	if q.Input != nil {
		if input, err = policy.ParseInput(q.Input); err != nil {
			return nil, fmt.Errorf("%w: input: %v", ErrInvalidRequest, err)
		}
	}
	if err := a.syncPolicyData(ctx); err != nil {
		return nil, err // the documents could be stale: no answer rather than a wrong one
	}
	start := time.Now()
	res, evalErr := a.policy.Eval(ctx, path, input, policy.EvalOptions{Metrics: q.Metrics, Instrument: q.Instrument, StrictBuiltinErrors: q.StrictBuiltinErrors})
	ans := &DataAnswer{DecisionID: policy.NewDecisionID(), Result: res}
	if res == nil { // the query could not be prepared
		ans.Result = &policy.Result{Revision: a.policy.Revision(), EvalTime: a.now()}
	}
	api := q.API
	if api == "" {
		api = "data"
	}
	details := map[string]any{"api": api, "path": path, "latency_us": time.Since(start).Microseconds(),
		"eval_time": ans.EvalTime.UTC().Format(time.RFC3339Nano)}
	a.maskInto(details, q.Input, ans.Result, evalErr, q.InputByDigest)
	if _, err := a.record(ctx, event{typ: "policy.decision", actor: actorOf(c), subject: "data/" + path,
		details: details, decisionID: ans.DecisionID, policyRevision: ans.Revision}); err != nil {
		return nil, err
	}
	if evalErr != nil {
		return ans, evalErr
	}
	return ans, nil
}

// maskInto puts the input and the result of a decision into its record,
// erasing what policy.decision_log_mask names and replacing an input too
// large for an audit entry (or any input, with inputByDigest) by its
// digest and size.
func (a *Authority) maskInto(details map[string]any, input json.RawMessage, res *policy.Result, evalErr error, inputByDigest bool) {
	var erased []string
	if input == nil {
		details["input_absent"] = true
	} else {
		erased = a.maskedInto(details, "input", input, erased)
	}
	switch {
	case evalErr != nil:
		a.errorInto(details, evalErr)
	case !res.Defined:
		details["undefined"] = true
	default:
		b, err := json.Marshal(res.Value)
		if err != nil {
			details["result_unencodable"] = err.Error()
			break
		}
		erased = a.maskedInto(details, "result", b, erased) // a copy: the answer keeps what the record erases
	}
	if len(erased) > 0 {
		details["erased"] = erased
	}
	if inputByDigest {
		digestInto(details, "input")
	}
	fitRecord(details)
}

// maxRecordedError bounds the text of an evaluation error kept in a
// decision's record; beyond it, the text is cut and the whole one
// recorded by its digest and size.
const maxRecordedError = 2 << 10

// errorInto puts an evaluation error into a decision's record: its code
// (error_code: OPA's, eval_builtin_error, eval_conflict_error..., or
// evaluation_timeout) and, when it has one, the policy location it arose
// at (error_location, file:row:col). Its text (error) may quote the
// input, or values computed from it, so it is kept only when no
// policy.decision_log_mask is configured, and then cut at
// maxRecordedError bytes (error_truncated, with error_sha256 and
// error_bytes of the whole). With a mask, error says the text was
// withheld (error_withheld): no digest either, which a guessed masked
// value could be checked against.
func (a *Authority) errorInto(details map[string]any, evalErr error) {
	code, loc := policy.ErrorCode(evalErr)
	details["error_code"] = code
	if loc != "" {
		details["error_location"] = loc
	}
	if len(a.cfg.Policy.DecisionLogMask) > 0 {
		where := ""
		if loc != "" {
			where = " at " + loc
		}
		details["error"] = code + where + " (the message is withheld: policy.decision_log_mask is set, and a message may quote masked values)"
		details["error_withheld"] = true
		return
	}
	msg := evalErr.Error()
	if len(msg) > maxRecordedError {
		sum := sha256.Sum256([]byte(msg))
		details["error_sha256"], details["error_bytes"], details["error_truncated"] = hex.EncodeToString(sum[:]), len(msg), true
		msg = policy.CutUTF8(msg, maxRecordedError)
	}
	details["error"] = msg
}

// maskedInto puts raw (the decision's input or result) into details under
// key, with what the masks under /key name erased. Numbers are kept as
// written (1e400 and 2^70 are JSON a float64 cannot hold). A value the
// masks cannot be applied to is recorded by its digest and size only
// (key_sha256, key_bytes, key_unmaskable): never whole, masked parts and
// all.
func (a *Authority) maskedInto(details map[string]any, key string, raw []byte, erased []string) []string {
	masks := a.masks("/" + key)
	if len(masks) == 0 {
		details[key] = json.RawMessage(raw)
		return erased
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err == nil {
		v, erased = erase(v, masks, "/"+key, erased)
		if b, err := json.Marshal(v); err == nil {
			details[key] = json.RawMessage(b)
			return erased
		}
	}
	sum := sha256.Sum256(raw)
	details[key+"_sha256"], details[key+"_bytes"], details[key+"_unmaskable"] = hex.EncodeToString(sum[:]), len(raw), true
	return erased
}

// maxRecordedDetails bounds a decision's details, leaving room in an
// audit entry (audit.MaxEntrySize) for its other fields.
const maxRecordedDetails = 56 << 10

// fitRecord replaces the largest of input and result by its digest and
// size until the details fit an audit entry.
func fitRecord(details map[string]any) {
	for {
		b, err := json.Marshal(details)
		if err != nil || len(b) <= maxRecordedDetails {
			return
		}
		in, _ := details["input"].(json.RawMessage)
		out, _ := details["result"].(json.RawMessage)
		key := "input"
		if len(out) > len(in) {
			key = "result"
		}
		if !digestInto(details, key) {
			return
		}
	}
}

// digestInto replaces details[key], an input or a result recorded whole
// (masks applied), by its digest and size (key_sha256, key_bytes); false
// if it is not there.
func digestInto(details map[string]any, key string) bool {
	raw, _ := details[key].(json.RawMessage)
	if raw == nil {
		return false
	}
	sum := sha256.Sum256(raw)
	delete(details, key)
	details[key+"_sha256"], details[key+"_bytes"] = hex.EncodeToString(sum[:]), len(raw)
	return true
}

// masks returns the configured masks under root (/input or /result).
func (a *Authority) masks(root string) []string {
	var out []string
	for _, m := range a.cfg.Policy.DecisionLogMask {
		if m == root || strings.HasPrefix(m, root+"/") {
			out = append(out, m)
		}
	}
	return out
}

// erase removes the JSON pointers in masks (each starting with root) from
// v, a decoded JSON value, and appends those it erased to erased. The
// whole value is erased (nil) if a mask is root itself.
func erase(v any, masks []string, root string, erased []string) (any, []string) {
	for _, m := range masks {
		if m == root {
			return nil, append(erased, m)
		}
		segs := strings.Split(strings.TrimPrefix(m, root+"/"), "/")
		for i, s := range segs {
			segs[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
		}
		if eraseAt(v, segs) {
			erased = append(erased, m)
		}
	}
	return v, erased
}

func eraseAt(v any, segs []string) bool {
	for len(segs) > 1 {
		switch x := v.(type) {
		case map[string]any:
			v = x[segs[0]]
		case []any:
			i, err := strconv.Atoi(segs[0])
			if err != nil || i < 0 || i >= len(x) {
				return false
			}
			v = x[i]
		default:
			return false
		}
		segs = segs[1:]
	}
	if m, ok := v.(map[string]any); ok {
		if _, ok := m[segs[0]]; ok {
			delete(m, segs[0])
			return true
		}
	}
	return false
}

// AccessRequest is one OpenID AuthZEN evaluation: the subject, action,
// resource and context objects, as received.
type AccessRequest struct {
	Subject  json.RawMessage `json:"subject"`
	Action   json.RawMessage `json:"action"`
	Resource json.RawMessage `json:"resource"`
	Context  json.RawMessage `json:"context,omitempty"`
}

// AccessDecision is an AuthZEN answer.
type AccessDecision struct {
	Decision bool           `json:"decision"`
	Context  map[string]any `json:"context,omitempty"`
	// Undecided: the policy could not decide (an evaluation error, a
	// timeout, an undefined document or one that is not a decision), so
	// Decision is false.
	Undecided bool `json:"-"`
}

// EvaluationsSemantic is how an AuthZEN batch is evaluated
// (options.evaluations_semantic).
type EvaluationsSemantic string

// AuthZEN's evaluations semantics: every evaluation; or in order, up to
// and including the first deny, or the first permit.
const (
	ExecuteAll          EvaluationsSemantic = "execute_all"
	DenyOnFirstDeny     EvaluationsSemantic = "deny_on_first_deny"
	PermitOnFirstPermit EvaluationsSemantic = "permit_on_first_permit"
)

// EvaluateAccess answers AuthZEN evaluations with the document named by
// policy.authzen_path, in order, each recorded before the answer; with
// DenyOnFirstDeny or PermitOnFirstPermit it stops after the evaluation
// that decides, and answers those evaluated. The policy's answer is a
// boolean or {"decision": bool, "context": {...}}; anything else (an
// error, undefined, another shape) is decision false, with the reason in
// the context.
func (a *Authority) EvaluateAccess(ctx context.Context, c *Caller, reqs []AccessRequest, semantic EvaluationsSemantic) ([]AccessDecision, error) {
	path := a.cfg.Policy.AuthZENPath
	segs, err := policy.PathSegments(path)
	if err != nil {
		return nil, err
	}
	if err := a.mayDecide(ctx, c, segs); err != nil {
		return nil, err
	}
	out := make([]AccessDecision, len(reqs))
	// The bytes of the batch's inputs recorded whole, at most twice the
	// largest request body (http.max_body_bytes); the inputs past it are
	// recorded by their digest and size.
	recorded, budget := 0, 2*int(a.cfg.HTTP.MaxBodyBytes)
	for i, r := range reqs {
		raw, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("%w: evaluation %d: %v", ErrInvalidRequest, i, err)
		}
		// Each evaluation holds the batch's defaults: recorded whole, a
		// batch of small items under large defaults would cost the log
		// up to maxEvaluations times the request's size, for ever.
		byDigest := recorded+len(raw) > budget
		if !byDigest {
			recorded += len(raw)
		}
		// Strict: a builtin's error in a rule that denies would otherwise
		// make it undefined, and the answer a permit.
		ans, err := a.QueryData(ctx, c, DataQuery{Path: path, Input: raw, API: "authzen", StrictBuiltinErrors: true, InputByDigest: byDigest})
		switch {
		case errors.Is(err, policy.ErrEval):
			out[i] = AccessDecision{Context: map[string]any{"reason": "the policy could not decide: " + policy.CutUTF8(err.Error(), maxRecordedError)}, Undecided: true}
		case err != nil:
			return nil, err
		default:
			out[i] = accessDecision(ans.Result)
		}
		if out[i].Context == nil {
			out[i].Context = map[string]any{}
		}
		out[i].Context["decision_id"] = ans.DecisionID
		if (semantic == DenyOnFirstDeny && !out[i].Decision) || (semantic == PermitOnFirstPermit && out[i].Decision) {
			return out[:i+1], nil
		}
	}
	return out, nil
}

func accessDecision(res *policy.Result) AccessDecision {
	if !res.Defined {
		return AccessDecision{Context: map[string]any{"reason": "the policy has no decision for this request"}, Undecided: true}
	}
	switch v := res.Value.(type) {
	case bool:
		return AccessDecision{Decision: v}
	case map[string]any:
		d, ok := v["decision"].(bool)
		if !ok {
			break
		}
		ctx, isObject := v["context"].(map[string]any)
		if c, present := v["context"]; present && c != nil && !isObject {
			break // a context that is not an object: not a decision
		}
		// A copy: the answer's decision_id is added to it.
		return AccessDecision{Decision: d, Context: maps.Clone(ctx)}
	}
	return AccessDecision{Context: map[string]any{"reason": "the policy's answer is not a decision"}, Undecided: true}
}
