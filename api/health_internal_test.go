package api

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/store"
)

// /healthz answers 503 while the audit log's latest commit failed (a
// full disk: nothing that records can succeed), for a minute at most
// without a commit since, and while the active X.509 CA or JWT key has
// expired (rotation failed: nothing of its kind can be issued); 200
// otherwise; and for good once the data file is no longer used (a
// damaged page, a write whose sync failed), whatever the audit log did
// since.
func TestHealthFollowsTheAuditLogAndTheSigningKeys(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name    string
		stopped error
		st      audit.Stats
		keys    signingKeys
		want    int
	}{
		{"no commit failed", nil, audit.Stats{Commits: 3}, signingKeys{}, http.StatusOK},
		{"the latest commit failed just now", nil, audit.Stats{Failures: 1, FailedAt: now.Add(-time.Second)}, signingKeys{}, http.StatusServiceUnavailable},
		{"it failed long ago, and nothing was asked since", nil, audit.Stats{Failures: 1, FailedAt: now.Add(-2 * healthFailureWindow)}, signingKeys{}, http.StatusOK},
		{"one failed, and a commit succeeded since", nil, audit.Stats{Failures: 5, Commits: 9}, signingKeys{}, http.StatusOK},
		{"both keys expire later", nil, audit.Stats{}, signingKeys{x509CA: now.Add(time.Hour), jwtKey: now.Add(time.Minute)}, http.StatusOK},
		{"the X.509 CA expired", nil, audit.Stats{}, signingKeys{x509CA: now, jwtKey: now.Add(time.Hour)}, http.StatusServiceUnavailable},
		{"the JWT key expired", nil, audit.Stats{}, signingKeys{x509CA: now.Add(time.Hour), jwtKey: now.Add(-time.Second)}, http.StatusServiceUnavailable},
		{"the data file stopped, and a commit succeeded before", fmt.Errorf("store/bolt: %w: %w", store.ErrUnwritable, store.ErrNotDurable), audit.Stats{Commits: 9}, signingKeys{}, http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := health("org-a.example", tc.stopped, tc.st, tc.keys, now)
			if code != tc.want || body["trust_domain"] != "org-a.example" || (code == http.StatusOK) != (body["status"] == "ok") {
				t.Errorf("health = %d %v, want %d", code, body, tc.want)
			}
			if code != http.StatusOK && body["reason"] == "" {
				t.Errorf("a failing health says no reason: %v", body)
			}
		})
	}
}
