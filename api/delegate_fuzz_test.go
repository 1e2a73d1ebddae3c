package api_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/delegation"
)

// FuzzDelegationRequests sends arbitrary requests to the delegation
// endpoints as a registered agent: token exchange forms, delegation
// bodies and status ids. Never a 5xx, never a panic; token exchange
// errors are RFC 6749 errors, the others problem documents. With sign
// set, the target signs the hop the fuzzed fields name with the agent's
// key of its own process, so that the flow past the signature check
// (policy, token, audit, answer) is fuzzed in every worker too.
//
// A hop below a parent, and the status of a hop that exists, need a hop
// of the target's own process: an input names it with parentIDMark and
// parentTokenMark, which the target replaces with the id and the token
// of a hop a → b it makes (parentHop). An odd kind / 3 sends (and signs)
// the request as b, the parent's delegatee, instead of a.
func FuzzDelegationRequests(f *testing.F) {
	z := newDelegationFuzz(f)
	for _, s := range z.seeds(f) {
		f.Add(s.kind, s.sign, s.in)
	}
	f.Fuzz(func(t *testing.T, kind uint8, sign bool, in string) {
		z.serve(t, kind, sign, in)
	})
}

// delegationFuzz is FuzzDelegationRequests's setup: an authority, an
// agent a (the delegator) with the scope calendar:read and an agent b.
type delegationFuzz struct {
	e      *env
	a, b   identity
	h      http.Handler
	parent *delegationHop // made by parentHop, when first asked for
}

// delegationHop is a hop issued by delegationFuzz's authority.
type delegationHop struct {
	id, token string
	expires   time.Time
}

// What an input of FuzzDelegationRequests writes for the id and the
// token of the parent hop (see parentHop). Their characters are written
// as they are in a form, a path and a JSON string alike.
const (
	parentIDMark    = "__parent_id__"
	parentTokenMark = "__parent_token__"
)

// parentHop is a hop a → b for alice with calendar:read, made with the
// keys of this process, and kept while it has more than
// DefaultDelegationTTL to live: a hop below it is issued for that long.
func (z *delegationFuzz) parentHop(t testing.TB) *delegationHop {
	t.Helper()
	if z.parent != nil && time.Until(z.parent.expires) > authority.DefaultDelegationTTL {
		return z.parent
	}
	req := authority.DelegateRequest{Delegatee: z.b.id.String(), Principal: "alice", Scopes: []string{"calendar:read"}, Purpose: "a parent", TTL: authority.MaxDelegationTTL}
	req.DelegatorSignature = z.e.hopSignature(t, z.a, req.Delegatee, req.Principal, "", req.Purpose, req.Scopes)
	ans, err := z.e.a.Delegate(context.Background(), &authority.Caller{ID: z.a.id, Cert: z.a.chain[0]}, req)
	if err != nil {
		t.Fatalf("the parent hop a → b: %v", err)
	}
	z.parent = &delegationHop{id: ans.ID, token: ans.Token, expires: ans.ExpiresAt}
	return z.parent
}

func newDelegationFuzz(t testing.TB) *delegationFuzz {
	e := start(t, "org-a.example", noRateLimit)
	return &delegationFuzz{e: e, a: e.agentWithScopes("a", "calendar:read"), b: e.agentWithScopes("b"), h: e.srv.Handler()}
}

// delegationSeed is an input of FuzzDelegationRequests.
type delegationSeed struct {
	kind uint8 // 0 a token exchange, 1 a delegation, 2 a status; plus 3: as b
	sign bool  // the target signs the hop (an honest request)
	in   string
	want int // if not 0, the status it is answered with (an honest request)
}

// seeds are FuzzDelegationRequests's seeds. Those with a signature made
// here are refused in any other process (a fuzzing worker): their
// honest copies, with sign set, are signed where they are sent.
func (z *delegationFuzz) seeds(t testing.TB) []delegationSeed {
	sig, err := delegation.SignStatement(delegation.Statement{Delegator: z.a.id.String(), Delegatee: z.b.id.String(), Principal: "alice", Scopes: []string{"calendar:read"}}, z.a.key, z.a.chain)
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {"alice"},
		"subject_token_type": {"urn:mandate:params:oauth:token-type:principal"}, "audience": {z.b.id.String()}, "scope": {"calendar:read"}}
	unsigned := form.Encode()
	form.Set("delegator_signature", sig)
	good := form.Encode()
	var seeds []delegationSeed
	for _, s := range []string{good, "", "grant_type=x", "a=%zz", strings.Repeat("scope=a&", 300), "subject_token_type=urn:ietf:params:oauth:token-type:jwt&subject_token=a.b.c",
		"client_id=" + url.QueryEscape(z.b.id.String()) + "&" + good} {
		seeds = append(seeds, delegationSeed{kind: 0, in: s})
	}
	withPurpose := unsigned + "&purpose=" + url.QueryEscape("book the offsite")
	for _, s := range []string{unsigned, "client_id=" + url.QueryEscape(z.a.id.String()) + "&" + unsigned, withPurpose} {
		seeds = append(seeds, delegationSeed{kind: 0, sign: true, in: s, want: http.StatusOK})
	}
	// The actor token (a JWT-SVID of a's) and the delegatee's SVID that
	// binds the token, as this process made them: another process
	// refuses them, and parses them first.
	jwt, err := z.e.client(z.a.chain, z.a.key).JWTSVID(ctxT(t), "", []string{z.e.td.IDString()})
	if err != nil {
		t.Fatal(err)
	}
	const jwtType = "&actor_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt"
	for _, s := range []string{unsigned + "&actor_token=" + jwt.Token + jwtType, unsigned + jwtType, unsigned + "&actor_token=a.b.c",
		unsigned + "&delegatee_x509_svid=" + url.QueryEscape(string(credfile.EncodeCertsPEM(z.b.chain))),
		unsigned + "&delegatee_x509_svid=" + url.QueryEscape("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")} {
		seeds = append(seeds, delegationSeed{kind: 0, sign: true, in: s})
	}
	// Signed, and refused by the policy: a scope a does not hold.
	seeds = append(seeds, delegationSeed{kind: 0, sign: true, in: strings.Replace(unsigned, "calendar%3Aread", "calendar%3Awrite", 1)})
	req := map[string]any{"delegatee": z.b.id.String(), "scopes": []string{"calendar:read"}, "principal": "alice", "delegator_signature": sig}
	body, _ := json.Marshal(req)
	for _, s := range []string{string(body), `{"delegatee": "spiffe://org-a.example/agent/b", "scopes": ["calendar:read"], "principal": " spiffe://x", "delegator_signature": "a.b.c"}`,
		`{"parent_token": "` + strings.Repeat("A", 40000) + `"}`, `{`} {
		seeds = append(seeds, delegationSeed{kind: 1, in: s})
	}
	delete(req, "delegator_signature")
	unsignedBody, _ := json.Marshal(req)
	req["purpose"], req["ttl_seconds"] = "book the offsite", 60
	withPurposeBody, _ := json.Marshal(req)
	for _, s := range []string{string(body), string(unsignedBody), string(withPurposeBody)} {
		seeds = append(seeds, delegationSeed{kind: 1, sign: true, in: s, want: http.StatusCreated})
	}
	seeds = append(seeds, delegationSeed{kind: 1, sign: true, in: strings.Replace(string(unsignedBody), "calendar:read", "calendar:write", 1)})
	for _, s := range []string{"d1", "", "..", strings.Repeat("f", 200), "%00", "a/b"} {
		seeds = append(seeds, delegationSeed{kind: 2, in: s})
	}
	// Below the parent hop a → b, as b, to a: by token exchange and by
	// a delegation; and the parent's status.
	sub := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"}, "subject_token": {parentTokenMark},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"}, "audience": {z.a.id.String()}, "scope": {"calendar:read"}}
	subBody := mustJSON(t, map[string]any{"delegatee": z.a.id.String(), "scopes": []string{"calendar:read"}, "parent_token": parentTokenMark})
	seeds = append(seeds,
		delegationSeed{kind: 3, sign: true, in: sub.Encode(), want: http.StatusOK},
		delegationSeed{kind: 4, sign: true, in: subBody, want: http.StatusCreated},
		delegationSeed{kind: 2, in: parentIDMark, want: http.StatusOK},
		// Refused: the parent presented by a, which does not hold it.
		delegationSeed{kind: 1, sign: true, in: subBody})
	return seeds
}

// serve sends one request of FuzzDelegationRequests as a (as b with an
// odd kind / 3), with the parent hop's id and token put in for their
// marks, and the hop signed by the caller first if sign is set, and
// checks the answer: never a 5xx; a refused token exchange answers an
// RFC 6749 error, the others a problem document.
func (z *delegationFuzz) serve(t testing.TB, kind uint8, sign bool, in string) *httptest.ResponseRecorder {
	t.Helper()
	from := z.a
	if kind/3%2 == 1 {
		from = z.b
	}
	if strings.Contains(in, parentIDMark) || strings.Contains(in, parentTokenMark) {
		p := z.parentHop(t)
		in = strings.NewReplacer(parentIDMark, p.id, parentTokenMark, p.token).Replace(in)
	}
	var req *http.Request
	switch kind % 3 {
	case 0:
		if sign {
			in = z.e.signedExchange(t, from, in)
		}
		req = httptest.NewRequest(http.MethodPost, "/v1/token", strings.NewReader(in))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	case 1:
		if sign {
			in = z.e.signedDelegation(t, from, in)
		}
		req = httptest.NewRequest(http.MethodPost, "/v1/delegations", strings.NewReader(in))
		req.Header.Set("Content-Type", "application/json")
	default:
		req = httptest.NewRequest(http.MethodGet, "/v1/delegations/"+url.PathEscape(in)+"/status", nil)
	}
	req.TLS = &tls.ConnectionState{PeerCertificates: from.chain}
	rec := httptest.NewRecorder()
	z.h.ServeHTTP(rec, req)
	if rec.Code >= 500 {
		t.Fatalf("%s %s = %d: %s", req.Method, req.URL.Path, rec.Code, rec.Body)
	}
	if rec.Code < 400 {
		return rec
	}
	if kind%3 == 0 {
		var oe struct{ Error string }
		if json.Unmarshal(rec.Body.Bytes(), &oe) != nil || oe.Error == "" {
			t.Fatalf("token exchange = %d: %s, want an RFC 6749 error", rec.Code, rec.Body)
		}
		return rec
	}
	var p struct{ Type string }
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" || json.Unmarshal(rec.Body.Bytes(), &p) != nil || p.Type == "" {
		t.Fatalf("%s %s = %d with %q: %s, want a problem document", req.Method, req.URL.Path, rec.Code, ct, rec.Body)
	}
	return rec
}
