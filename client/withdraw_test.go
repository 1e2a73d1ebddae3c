package client_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// WithdrawJoinToken sends only a join token's id: the token itself, given
// in its place, would go in the URL and in the error of a failed call.
func TestWithdrawJoinTokenSendsOnlyAnID(t *testing.T) {
	var paths []string
	c := hostileAuthority(t, 5*time.Second, func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path)
		w.WriteHeader(http.StatusNoContent)
	})
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"eb95ca0392b80606", true},
		{"DWtxrIMKN2lWBQZ79o1PjFuTDNhpwCGZwoGqxprngDo", false}, // a token
		{"EB95CA0392B80606", false},
		{"eb95ca0392b8060", false},
		{"", false},
		{"../agents/x", false},
	} {
		paths = nil
		err := c.WithdrawJoinToken(context.Background(), tc.id)
		if tc.ok {
			if err != nil || len(paths) != 1 || paths[0] != "/v1/admin/join-tokens/"+tc.id {
				t.Errorf("WithdrawJoinToken(%q) = %v, asked %q; want one DELETE of its path", tc.id, err, paths)
			}
			continue
		}
		if err == nil || len(paths) != 0 {
			t.Errorf("WithdrawJoinToken(%q) = %v, asked %q; want refused before asking", tc.id, err, paths)
		}
		if err != nil && tc.id != "" && strings.Contains(err.Error(), tc.id) {
			t.Errorf("WithdrawJoinToken(%q) = %v: the error repeats what was given", tc.id, err)
		}
	}
}
