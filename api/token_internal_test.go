package api

import (
	"context"
	"fmt"
	"testing"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/policy"
	"mandate.dev/mandate/registry"
)

// A refused token exchange is an RFC 6749 error whatever refused it;
// only the server's own faults, an unavailable status and a hop whose
// grounds changed while it was decided (to be asked again) are problem
// documents.
func TestOAuthErrorOf(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string // "": a problem document
	}{
		{&authority.PolicyDenial{Decision: policy.Decision{ID: "d1", Reasons: []string{"no"}}}, 400, "invalid_scope"},
		{authority.ErrScopeNotGranted, 400, "invalid_scope"},
		{authority.ErrScopeInvalid, 400, "invalid_scope"},
		{authority.ErrAgentNotRegistered, 401, "invalid_client"},
		{delegation.ErrExpired, 400, "invalid_request"},
		{delegation.ErrDelegatorSignature, 400, "invalid_request"},
		{registry.ErrBanned, 400, "unauthorized_client"},
		{authority.ErrNodeUnknown, 400, "unauthorized_client"},
		{authority.ErrNotFound, 400, "invalid_request"},
		{authority.ErrStatusUnavailable, 0, ""},
		{authority.ErrChangedMeanwhile, 0, ""},
		{context.DeadlineExceeded, 0, ""},
		{fmt.Errorf("disk on fire"), 0, ""},
	} {
		status, code, desc, ok := oauthErrorOf(fmt.Errorf("wrapped: %w", tc.err))
		if tc.code == "" {
			if ok {
				t.Errorf("%v: %d %s, want a problem document", tc.err, status, code)
			}
			continue
		}
		if !ok || status != tc.status || code != tc.code || desc == "" {
			t.Errorf("%v: %d %s %q (%v), want %d %s", tc.err, status, code, desc, ok, tc.status, tc.code)
		}
	}
}
