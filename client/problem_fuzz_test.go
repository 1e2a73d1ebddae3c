package client

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzProblemFrom reads arbitrary error answers, as an authority (or a
// server posing as one) may send them, and requires a *Problem of the
// answer's status whose Error() is safe to print: valid UTF-8, every
// character printable but the line breaks a detail keeps, and bounded.
func FuzzProblemFrom(f *testing.F) {
	for _, s := range []struct {
		status int
		body   string
	}{
		{404, `{"type": "https://mandate.dev/problems/not-found", "title": "Not Found", "status": 404, "detail": "no agent spiffe://org-a.example/agent/x"}`},
		{403, `{"type": "https://mandate.dev/problems/policy-denied", "title": "Forbidden", "status": 403, "detail": "denied", "reasons": ["r1", "r2"], "decision_id": "d1"}`},
		{400, `{"code": "invalid_parameter", "message": "error(s) occurred while decoding input"}`},
		{400, `{"error": "invalid_scope", "error_description": "scope x was not granted"}`},
		{500, "no such thing"},
		{502, `{"what": 1}`},
		{302, ""},
		{400, `{"type": "x", "title": "Bad Request", "detail": "Bad Request: line one\nline two\x1b[2J\u202e"}`},
		{400, "{\"type\": \"x\", \"detail\": \"\xff\xfe\"}"},
		{400, `{"type": "x", "detail": "` + strings.Repeat("é", 700) + `"}`},
		{0, `{"type": ""}`},
		{999, `[1, 2]`},
	} {
		f.Add(s.status, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		err := problemFrom(status, body)
		var p *Problem
		if !errors.As(err, &p) {
			t.Fatalf("problemFrom(%d, %q) = %T, want a *Problem", status, body, err)
		}
		if p.Status != status {
			t.Fatalf("problemFrom(%d, %q).Status = %d", status, body, p.Status)
		}
		if p.Type == "" {
			t.Fatalf("problemFrom(%d, %q) has no type", status, body)
		}
		s := p.Error()
		if !utf8.ValidString(s) {
			t.Fatalf("Error() of %q is not UTF-8: %q", body, s)
		}
		if i := strings.IndexFunc(s, func(r rune) bool { return r != '\n' && !strconv.IsPrint(r) }); i >= 0 {
			t.Fatalf("Error() of %q shows an unprintable character at %d: %q", body, i, s)
		}
		// Three fields of at most maxShown bytes, each quoted at worst
		// (4 bytes for 1: \xff), and the status.
		if len(s) > 3*(4*maxShown+8)+32 {
			t.Fatalf("Error() of %d bytes, for an answer of %d", len(s), len(body))
		}
		_ = p.Name()
	})
}
