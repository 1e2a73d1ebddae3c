package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/policy"
	"mandate.dev/mandate/registry"
)

// A problem's detail says what the title does not, without the Go error
// it was matched by (its package's name and its words again): a client
// shows "404 Not found: agent "x"", not "404 Not found: registry: not
// found: agent "x"".
func TestProblemDetailWithoutMatchedError(t *testing.T) {
	quoted := `a"b: json: c` // quoted with an escaped quote inside
	for _, tc := range []struct {
		err              error
		name, wantDetail string
	}{
		{fmt.Errorf("%w: agent %q", registry.ErrNotFound, "x"), "not-found", `agent "x"`},
		{fmt.Errorf("%w: spiffe://a.example/agent/a has role agent; this needs admin", authority.ErrForbidden), "forbidden", "spiffe://a.example/agent/a has role agent; this needs admin"},
		{fmt.Errorf("%w: federation: bundle has no authorities", authority.ErrFederation), "invalid-federation", "bundle has no authorities"},
		{fmt.Errorf("%w (token 0123456789abcdef)", attest.ErrTokenUsed), "join-token-used", "join token already used (token 0123456789abcdef)"},
		{attest.ErrTokenUnknown, "join-token-unknown", "join token unknown"},
		// Wrapped after other words: said whole, but for the package's name.
		{fmt.Errorf("reading the body: %w", errBadJSON), "malformed-json", "reading the body: malformed JSON"},
		// A Go package's name is left out wherever a clause begins.
		{fmt.Errorf("%w: csr: x509: malformed; asn1: truncated", ca.ErrInvalidCSR), "invalid-csr", "csr: malformed; truncated"},
		// What the request said, quoted, is quoted as it was.
		{fmt.Errorf("%w: agent %q", registry.ErrNotFound, "x: json: y; api: z"), "not-found", `agent "x: json: y; api: z"`},
		{fmt.Errorf("%w: agent %q: policy: gone", registry.ErrNotFound, quoted), "not-found", fmt.Sprintf("agent %q: gone", quoted)},
		// A policy's reasons are its author's words, said as they are.
		{&authority.PolicyDenial{Decision: policy.Decision{ID: "d1", Reasons: []string{"audit: not allowed"}}}, "policy-denied", "audit: not allowed (decision d1)"},
		// An error of no package is said as it is.
		{fmt.Errorf("%w: after 10s", context.DeadlineExceeded), "timeout", "after 10s"},
		{context.Canceled, "canceled", "context canceled"},
	} {
		rec := httptest.NewRecorder()
		writeError(rec, httptest.NewRequest("GET", "/", nil), slog.New(slog.NewTextHandler(io.Discard, nil)), tc.err)
		var p Problem
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
			t.Fatalf("%v: %v", tc.err, err)
		}
		if p.Type != ProblemBase+tc.name || p.Detail != tc.wantDetail {
			t.Errorf("problem of %q: type %s, detail %q; want %s, %q", tc.err, p.Type, p.Detail, tc.name, tc.wantDetail)
		}
	}
}
