package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// What an operator watching the log relies on: a banned node still
// knocking is a WARN naming the caller; a fault of the server is an ERROR
// with its text, which the answer never carries; other refusals are not
// logged at all.
func TestWriteErrorLogs(t *testing.T) {
	caller := &authority.Caller{ID: spiffeid.RequireFromString("spiffe://org-a.example/node/n1")}
	for _, tc := range []struct {
		name      string
		err       error
		status    int
		level     string // "": nothing logged
		logHolds  []string
		answerNot string
		answerHas string
	}{
		{"banned node", fmt.Errorf("renew: %w: spiffe://org-a.example/node/n1", registry.ErrBanned), 403, "WARN",
			[]string{`msg="refused: banned node"`, "caller=spiffe://org-a.example/node/n1", "path=/v1/node/renew"}, "", ""},
		{"server fault", errors.New("disk on fire at /secret/place"), 500, "ERROR",
			[]string{`msg="internal error"`, "disk on fire"}, "disk on fire", ""},
		{"an ordinary refusal", fmt.Errorf("renew: %w", authority.ErrNodeUnknown), 0, "", nil, "", ""},
		// A full disk: a temporary refusal, its cause logged once where
		// it is met (the audit log's commit), not for every request; the
		// answer names no file of the server's.
		{"data file unwritable", fmt.Errorf("authority: audit svid.issued: audit: append: store/bolt: update: %w: write /secret/mandate.db: no space left on device", store.ErrUnwritable),
			503, "", nil, "/secret/mandate.db", "try again later"},
		// A commit whose sync failed: the authority does nothing more
		// with its data file until restarted, and says so rather than
		// "try again later".
		{"data file not durable", fmt.Errorf("authority: audit svid.issued: audit: append: store/bolt: update: %w: %w (sync /secret/mandate.db: input/output error)", store.ErrUnwritable, store.ErrNotDurable),
			503, "", nil, "/secret/mandate.db", "until it is restarted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logged bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logged, nil))
			r := httptest.NewRequest("POST", "/v1/node/renew", nil)
			r = r.WithContext(context.WithValue(r.Context(), callerKey{}, caller))
			w := httptest.NewRecorder()
			writeError(w, r, log, tc.err)
			var p Problem
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Type == "" {
				t.Fatalf("answer %q is no problem document: %v", w.Body, err)
			}
			if tc.status != 0 && w.Code != tc.status {
				t.Errorf("status %d, want %d", w.Code, tc.status)
			}
			if tc.answerNot != "" && strings.Contains(w.Body.String(), tc.answerNot) {
				t.Errorf("answer %q carries the server's error text", w.Body)
			}
			if !strings.Contains(w.Body.String(), tc.answerHas) {
				t.Errorf("answer %q lacks %q", w.Body, tc.answerHas)
			}
			if tc.level == "" {
				if logged.Len() != 0 {
					t.Errorf("logged %q, want nothing", logged.String())
				}
				return
			}
			if !strings.Contains(logged.String(), "level="+tc.level) {
				t.Errorf("log %q, want level %s", logged.String(), tc.level)
			}
			for _, want := range tc.logHolds {
				if !strings.Contains(logged.String(), want) {
					t.Errorf("log %q lacks %q", logged.String(), want)
				}
			}
		})
	}
}

// A delegation request is counted by what its answer says: a deny of the
// policy, a refusal (4xx), or an error (5xx: the server's fault, or a
// peer's status it could not ask).
func TestDelegationOutcomesCounted(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "issued"},
		{fmt.Errorf("wrapped: %w", &authority.PolicyDenial{}), "denied"},
		{fmt.Errorf("wrapped: %w", authority.ErrInvalidRequest), "refused"},
		{fmt.Errorf("wrapped: %w", authority.ErrStatusUnavailable), "error"},
		{errors.New("disk on fire"), "error"},
		{fmt.Errorf("wrapped: %w", store.ErrUnwritable), "error"},
	} {
		m := newMetrics()
		m.delegated(tc.err)
		for _, outcome := range []string{"issued", "denied", "refused", "error"} {
			want := 0.0
			if outcome == tc.want {
				want = 1
			}
			if got := testutil.ToFloat64(m.delegations.WithLabelValues(outcome)); got != want {
				t.Errorf("%v: %s = %v, want %v", tc.err, outcome, got, want)
			}
		}
	}
}

// A Data API decision that could not be recorded because the data file
// cannot be written (a full disk) is OPA's 500, saying so without the
// server's file, and is not logged as an error for every request: the
// audit log says the cause once for a run of failed commits.
func TestDataDecisionNotRecordedOnAFullDisk(t *testing.T) {
	for _, tc := range []struct {
		err  error
		says string
	}{
		{fmt.Errorf("authority: audit policy.decision: audit: append: store/bolt: update: %w: write /secret/mandate.db: no space left on device", store.ErrUnwritable), "try again later"},
		// A commit whose sync failed: nothing more until a restart.
		{fmt.Errorf("authority: audit policy.decision: audit: append: store/bolt: update: %w: %w (sync /secret/mandate.db: input/output error)", store.ErrUnwritable, store.ErrNotDurable), "until it is restarted"},
	} {
		var logged bytes.Buffer
		s := &Server{log: slog.New(slog.NewTextHandler(&logged, nil)), metrics: newMetrics()}
		r := httptest.NewRequest("POST", "/v1/data/authz/allow", nil)
		w := httptest.NewRecorder()
		s.writeDataError(w, r, tc.err)
		var ans struct{ Code, Message string }
		if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil || w.Code != 500 || ans.Code != "internal_error" || !strings.Contains(ans.Message, "could not be recorded") || !strings.Contains(ans.Message, tc.says) {
			t.Fatalf("answer %d %s (%v), want OPA's 500 internal_error saying the decision could not be recorded, and %q", w.Code, w.Body, err, tc.says)
		}
		if strings.Contains(w.Body.String(), "/secret") || logged.Len() != 0 {
			t.Fatalf("answer %s, log %q: want neither the server's file in the answer nor a line logged", w.Body, logged.String())
		}
	}
}
