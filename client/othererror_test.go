package client_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"mandate.dev/mandate/client"
)

// An error answer in OPA's shape (the Data API) or RFC 6749's (POST
// /v1/token) is a *Problem too, its code in Code and its message as the
// detail; any other body that is no problem document stays the detail.
func TestProblemOfOtherErrorShapes(t *testing.T) {
	for _, tc := range []struct {
		name, body      string
		status          int
		code, detail    string
		wantErrorString string
	}{
		{"OPA", `{"code": "invalid_parameter", "message": "error(s) occurred while decoding input"}`, 400,
			"invalid_parameter", "error(s) occurred while decoding input", "400 Bad Request: error(s) occurred while decoding input (invalid_parameter)"},
		{"RFC 6749", `{"error": "invalid_scope", "error_description": "scope x was not granted"}`, 400,
			"invalid_scope", "scope x was not granted", "400 Bad Request: scope x was not granted (invalid_scope)"},
		{"plain text", "no such thing", 500, "", "no such thing", "500 Internal Server Error: no such thing (about:blank)"},
		{"other JSON", `{"what": 1}`, 502, "", `{"what": 1}`, `502 Bad Gateway: {"what": 1} (about:blank)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := hostileAuthority(t, 10*time.Second, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			})
			_, err := c.GetRaw(context.Background(), "/v1/data/x")
			var p *client.Problem
			if !errors.As(err, &p) || p.Status != tc.status || p.Code != tc.code || p.Detail != tc.detail || p.Type != "about:blank" {
				t.Fatalf("GetRaw = %#v; want a problem of status %d, code %q, detail %q", err, tc.status, tc.code, tc.detail)
			}
			if err.Error() != tc.wantErrorString {
				t.Errorf("Error() = %s, want %s", err, tc.wantErrorString)
			}
		})
	}
}

// A 429's Retry-After, in seconds, is the problem's RetryAfter; a date,
// junk or none is 0, and more than a day is a day.
func TestProblemRetryAfter(t *testing.T) {
	for header, want := range map[string]time.Duration{
		"3":                             3 * time.Second,
		"0":                             0,
		"":                              0,
		"-1":                            0,
		"1.5":                           0,
		"Wed, 21 Oct 2026 07:28:00 GMT": 0,
		"99999999":                      24 * time.Hour,
		"99999999999999999999999":       24 * time.Hour,
	} {
		c := hostileAuthority(t, 10*time.Second, func(w http.ResponseWriter, r *http.Request) {
			if header != "" {
				w.Header().Set("Retry-After", header)
			}
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"type": "https://mandate.dev/problems/rate-limited", "title": "Rate limit reached", "status": 429}`))
		})
		_, err := c.GetRaw(context.Background(), "/v1/bundle")
		var p *client.Problem
		if !errors.As(err, &p) || p.Name() != "rate-limited" || p.RetryAfter != want || p.RetryDelay() != want {
			t.Errorf("Retry-After %q: GetRaw = %#v, want a rate-limited problem with RetryAfter %v", header, err, want)
		}
	}
}
