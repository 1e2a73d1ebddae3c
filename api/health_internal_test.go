package api

import (
	"net/http"
	"testing"
	"time"

	"mandate.dev/mandate/audit"
)

// /healthz answers 503 while the audit log's latest commit failed (a
// full disk: nothing that records can succeed), for a minute at most
// without a commit since, and while the active X.509 CA or JWT key has
// expired (rotation failed: nothing of its kind can be issued); 200
// otherwise.
func TestHealthFollowsTheAuditLogAndTheSigningKeys(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name string
		st   audit.Stats
		keys signingKeys
		want int
	}{
		{"no commit failed", audit.Stats{Commits: 3}, signingKeys{}, http.StatusOK},
		{"the latest commit failed just now", audit.Stats{Failures: 1, FailedAt: now.Add(-time.Second)}, signingKeys{}, http.StatusServiceUnavailable},
		{"it failed long ago, and nothing was asked since", audit.Stats{Failures: 1, FailedAt: now.Add(-2 * healthFailureWindow)}, signingKeys{}, http.StatusOK},
		{"one failed, and a commit succeeded since", audit.Stats{Failures: 5, Commits: 9}, signingKeys{}, http.StatusOK},
		{"both keys expire later", audit.Stats{}, signingKeys{x509CA: now.Add(time.Hour), jwtKey: now.Add(time.Minute)}, http.StatusOK},
		{"the X.509 CA expired", audit.Stats{}, signingKeys{x509CA: now, jwtKey: now.Add(time.Hour)}, http.StatusServiceUnavailable},
		{"the JWT key expired", audit.Stats{}, signingKeys{x509CA: now.Add(time.Hour), jwtKey: now.Add(-time.Second)}, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := health("org-a.example", tc.st, tc.keys, now)
			if code != tc.want || body["trust_domain"] != "org-a.example" || (code == http.StatusOK) != (body["status"] == "ok") {
				t.Errorf("health = %d %v, want %d", code, body, tc.want)
			}
			if code != http.StatusOK && body["reason"] == "" {
				t.Errorf("a failing health says no reason: %v", body)
			}
		})
	}
}
