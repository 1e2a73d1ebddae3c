package api_test

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"mandate.dev/mandate/api"
	"mandate.dev/mandate/delegation"
)

// A fuzzing run is a coordinator and several worker processes. Each runs
// the target's setup, so each has its own authority with its own keys,
// and every worker is given the seeds the coordinator made. A delegator
// signature or a join token written into a seed belongs to the
// coordinator's authority: every worker refuses it, and every mutation
// of it, so the paths that follow an accepted one would never be fuzzed.
// FuzzDelegationRequests and FuzzAPIRequests take a flag instead: with
// it set, the target makes that part of the request itself, in its own
// process, from the fuzzed fields (signedDelegation, signedExchange,
// withJoinToken). A hop that must exist first, a parent to delegate
// below or a hop whose status is asked, is made by the target in its
// own process too, and put in for the marks the input writes in its
// place (delegationFuzz.parentHop). These take the target's t: the
// env's own is the target's F, which may not be used inside the fuzz
// function.

// hopSignature is from's delegator signature of a hop to delegatee:
// the statement the authority checks the signature against, read from
// the request's fields as the authority reads them (the principal and
// the parent from a parent token, when one verifies for from).
func (e *env) hopSignature(t testing.TB, from identity, delegatee, principal, parentToken, purpose string, scopes []string) string {
	t.Helper()
	st := delegation.Statement{Delegator: from.id.String(), Delegatee: delegatee, Principal: principal, Scopes: scopes, Purpose: purpose}
	if parentToken != "" {
		if chain, err := delegation.Verify(parentToken, e.a, delegation.VerifyOptions{Presenter: from.id, PresenterCert: from.chain[0]}); err == nil {
			last := chain[len(chain)-1]
			st.Principal, st.Parent, st.ParentIssuer = last.Subject, last.ID, last.Issuer
		}
	}
	sig, err := delegation.SignStatement(st, from.key, from.chain)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// signedDelegation is body, a POST /v1/delegations body, with its
// delegator_signature made by from over the hop its fields name. A body
// the server would not read as a request is returned as it is.
func (e *env) signedDelegation(t testing.TB, from identity, body string) string {
	t.Helper()
	var req api.DelegationRequest
	var fields map[string]json.RawMessage
	if api.DecodeStrict([]byte(body), &req) != nil || json.Unmarshal([]byte(body), &fields) != nil {
		return body
	}
	for k := range fields {
		// encoding/json matches names case-insensitively.
		if strings.EqualFold(k, "delegator_signature") {
			delete(fields, k)
		}
	}
	sig, _ := json.Marshal(e.hopSignature(t, from, req.Delegatee, req.Principal, req.ParentToken, req.Purpose, req.Scopes))
	fields["delegator_signature"] = sig
	out, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// signedExchange is form, a POST /v1/token body, with its
// delegator_signature made by from over the hop its parameters name.
// A body that is not a form is returned as it is.
func (e *env) signedExchange(t testing.TB, from identity, form string) string {
	t.Helper()
	f, err := url.ParseQuery(form)
	if err != nil {
		return form
	}
	// As the server reads it: a parameter without a value is omitted.
	get := func(k string) string {
		for _, v := range f[k] {
			if v != "" {
				return v
			}
		}
		return ""
	}
	var principal, parent string
	switch get("subject_token_type") {
	case "urn:mandate:params:oauth:token-type:principal":
		principal = get("subject_token")
	case "urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:access_token":
		parent = get("subject_token")
	}
	scopes := strings.FieldsFunc(get("scope"), func(r rune) bool { return r == ' ' })
	f.Set("delegator_signature", e.hopSignature(t, from, get("audience"), principal, parent, get("purpose"), scopes))
	return f.Encode()
}

// withJoinToken is body, a POST /v1/nodes/join body, with its token
// the one token returns. A body the server would not read as a request
// is returned as it is (and token is not called).
func withJoinToken(t testing.TB, body string, token func() string) string {
	t.Helper()
	var req struct {
		Token string `json:"token"`
		CSR   string `json:"csr"`
	}
	var fields map[string]json.RawMessage
	if api.DecodeStrict([]byte(body), &req) != nil || json.Unmarshal([]byte(body), &fields) != nil {
		return body
	}
	for k := range fields {
		if strings.EqualFold(k, "token") {
			delete(fields, k)
		}
	}
	fields["token"], _ = json.Marshal(token())
	out, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestFuzzSeedsAcceptedInAnyProcess sends the seeds of
// FuzzDelegationRequests and FuzzAPIRequests, made with one setup, to
// another: the authority of a fuzzing worker, which is given the seeds
// its coordinator made. Every honest seed is accepted there, so the
// paths past the signature and join token checks are fuzzed in every
// worker; the seeds signed by the first setup's agent are not. Among
// those accepted are a hop below a parent hop the worker made, by
// token exchange and by POST /v1/delegations, and that parent's status.
func TestFuzzSeedsAcceptedInAnyProcess(t *testing.T) {
	t.Run("FuzzDelegationRequests", func(t *testing.T) {
		seeds := newDelegationFuzz(t).seeds(t)
		worker := newDelegationFuzz(t)
		honest := 0
		reached := map[string]bool{}
		for _, s := range seeds {
			rec := worker.serve(t, s.kind, s.sign, s.in)
			switch {
			case s.want != 0 && rec.Code != s.want:
				t.Errorf("honest seed (kind %d) = %d, want %d: %s\n%.300s", s.kind, rec.Code, s.want, rec.Body, s.in)
			case s.want != 0:
				honest++
				if what := worker.belowParent(t, s, rec.Body.Bytes()); what != "" {
					reached[what] = true
				}
			case !s.sign && strings.Contains(s.in, "eyJ") && rec.Code < 400:
				t.Errorf("a seed signed by another authority's agent (kind %d) = %d: %s", s.kind, rec.Code, rec.Body)
			case strings.Contains(s.in, parentTokenMark) && rec.Code < 400:
				t.Errorf("a parent token presented by an agent that does not hold it (kind %d) = %d: %s", s.kind, rec.Code, rec.Body)
			}
		}
		if honest < 4 {
			t.Errorf("%d honest seeds accepted, want 4 or more", honest)
		}
		for _, what := range []string{"a token exchange below the parent", "a delegation below the parent", "the parent's status"} {
			if !reached[what] {
				t.Errorf("no seed reaches %s", what)
			}
		}
	})
	t.Run("FuzzAPIRequests", func(t *testing.T) {
		seeds := newAPIFuzz(t).seeds(t)
		worker := newAPIFuzz(t)
		accepted := map[string]bool{}
		for _, s := range seeds {
			rec := worker.serve(t, s.route, s.who, s.fill, s.body)
			path := apiFuzzRoutes[s.route]
			if s.want != 0 && rec.Code != s.want {
				t.Errorf("POST %s as %d = %d, want %d: %s", path, s.who, rec.Code, s.want, rec.Body)
			}
			if s.want != 0 {
				accepted[path] = true
			}
		}
		for _, path := range []string{"/v1/nodes/join", "/v1/svid/x509", "/v1/delegations"} {
			if !accepted[path] {
				t.Errorf("no seed for %s is accepted", path)
			}
		}
	})
}

// belowParent says which of the paths that need the parent hop an
// accepted seed of FuzzDelegationRequests reached, from its answer:
// a hop issued below the parent, or the parent's status; "" for a
// seed that does not name the parent. It fails t if a seed that names
// the parent was answered with something else.
func (z *delegationFuzz) belowParent(t testing.TB, s delegationSeed, answer []byte) string {
	t.Helper()
	if z.parent == nil || !strings.Contains(s.in, parentIDMark) && !strings.Contains(s.in, parentTokenMark) {
		return ""
	}
	var ans struct {
		ID, Status, Token string
		AccessToken       string `json:"access_token"`
	}
	if err := json.Unmarshal(answer, &ans); err != nil {
		t.Fatalf("%v: %s", err, answer)
	}
	if s.kind%3 == 2 {
		if ans.ID != z.parent.id || ans.Status != "active" {
			t.Errorf("the status of the parent %s: %s", z.parent.id, answer)
			return ""
		}
		return "the parent's status"
	}
	what, token := "a delegation below the parent", ans.Token
	if s.kind%3 == 0 {
		what, token = "a token exchange below the parent", ans.AccessToken
	}
	chain, err := delegation.Verify(token, z.e.a, delegation.VerifyOptions{AnyHolder: true})
	if err != nil || len(chain) != 2 || chain[0].ID != z.parent.id {
		t.Errorf("%s: the token issued is not a hop below the parent %s (%v): %s", what, z.parent.id, err, answer)
		return ""
	}
	return what
}
