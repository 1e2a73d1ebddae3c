package api

import (
	"net/http"
	"testing"
	"time"

	"mandate.dev/mandate/audit"
)

// /healthz answers 503 while the audit log's latest commit failed (a
// full disk: nothing that records can succeed), for a minute at most
// without a commit since, and 200 otherwise.
func TestHealthFollowsTheAuditLog(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name string
		st   audit.Stats
		want int
	}{
		{"no commit failed", audit.Stats{Commits: 3}, http.StatusOK},
		{"the latest commit failed just now", audit.Stats{Failures: 1, FailedAt: now.Add(-time.Second)}, http.StatusServiceUnavailable},
		{"it failed long ago, and nothing was asked since", audit.Stats{Failures: 1, FailedAt: now.Add(-2 * healthFailureWindow)}, http.StatusOK},
		{"one failed, and a commit succeeded since", audit.Stats{Failures: 5, Commits: 9}, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := health("org-a.example", tc.st, now)
			if code != tc.want || body["trust_domain"] != "org-a.example" || (code == http.StatusOK) != (body["status"] == "ok") {
				t.Errorf("health = %d %v, want %d", code, body, tc.want)
			}
			if code != http.StatusOK && body["reason"] == "" {
				t.Errorf("a failing health says no reason: %v", body)
			}
		})
	}
}
