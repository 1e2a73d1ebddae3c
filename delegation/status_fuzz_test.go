package delegation

import "testing"

// FuzzStatusAnswer feeds arbitrary answers to the reader of an issuer's
// status answer: no panic, and only an answer for the hop asked about,
// with a known status, is accepted, its reason printable (escaped if
// need be).
func FuzzStatusAnswer(f *testing.F) {
	f.Add([]byte(`{"id":"h1","status":"active","log_index":3,"leaf_hash":"ab"}`), "h1")
	f.Add([]byte(`{"id":"h1","status":"revoked","revoked_at":"2026-11-26T12:00:00Z","reason":"compromised","log_index":3,"leaf_hash":"ab"}`), "h1")
	f.Add([]byte(`{"id":"h1","ID":"h2","status":"active"}`), "h1")
	f.Add([]byte(`{"id":"h1","status":"revoked","reason":"\u001b[2J"}`), "h1")
	f.Add([]byte(`{"id":"h1","status":"maybe"}`), "h1")
	f.Add([]byte(`[]`), "")
	f.Fuzz(func(t *testing.T, body []byte, id string) {
		out, err := statusAnswerOf(body, id)
		if err != nil {
			return
		}
		if out.ID != id || (out.Status != StatusActive && out.Status != StatusRevoked && out.Status != StatusExpired) ||
			!IsPlainText(out.Reason) {
			t.Fatalf("accepted %q for %q: %+v", body, id, out)
		}
	})
}

// TestStatusAnswerOf: the answers the reader refuses.
func TestStatusAnswerOf(t *testing.T) {
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{`{"id":"h1","status":"active","log_index":3,"leaf_hash":"ab"}`, true},
		{`{"id":"h1","status":"revoked","reason":"compromised"}`, true},
		{`{"id":"h2","status":"active"}`, false},
		{`{"id":"h1","ID":"h2","status":"active"}`, false},
		{`{"id":"h1","status":"maybe"}`, false},
		{`{"id":"h1","status":"revoked","reason":"\u001b]0;owned\u0007"}`, true}, // escaped, below
		{`{"id":"h1","status":"active"} {}`, false},
	} {
		if _, err := statusAnswerOf([]byte(tc.body), "h1"); (err == nil) != tc.ok {
			t.Errorf("statusAnswerOf(%s) = %v, want ok=%v", tc.body, err, tc.ok)
		}
	}
	for _, body := range []string{`{"id":"h1","status":"revoked","reason":"a\ufffdb"}`, "{\"id\":\"h1\",\"status\":\"revoked\",\"reason\":\"a\xffb\"}"} {
		if out, err := statusAnswerOf([]byte(body), "h1"); err != nil || out.Status != StatusRevoked || !IsText(out.Reason) {
			t.Errorf("statusAnswerOf(%q) = %+v, %v; want revoked, the reason escaped to text", body, out, err)
		}
	}
	out, err := statusAnswerOf([]byte(`{"id":"h1","status":"revoked","reason":"withdrawn\n\u001b[2J"}`), "h1")
	if err != nil || out.Status != StatusRevoked || out.Reason != `"withdrawn\n\x1b[2J"` {
		t.Errorf("a reason with control characters: %+v, %v; want it revoked, the reason escaped", out, err)
	}
}
