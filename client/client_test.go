package client

import (
	"strings"
	"testing"
)

func TestPrintable(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text, Zoë", "plain text, Zoë"},
		{"", ""},
		{"line\nbreak", `"line\nbreak"`},
		{"esc\x1b[8m", `"esc\x1b[8m"`},
		{"bidi\u202eoverride", `"bidi\u202eoverride"`},
		{"zero\u200bwidth", `"zero\u200bwidth"`},
		{"bad \xff byte", `"bad \xff byte"`},
	} {
		if got := Printable(tc.in); got != tc.want {
			t.Errorf("Printable(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// A problem's fields are the authority's words: its error shows them
// escaped, and at most maxShown bytes of each.
func TestProblemErrorShowsFieldsEscaped(t *testing.T) {
	p := &Problem{Type: "about:blank", Title: "Bad\x1b[2K", Status: 400, Detail: "1 error:\nline 3: \u202eunexpected"}
	if got, want := p.Error(), "400 \"Bad\\x1b[2K\": 1 error:\n\"line 3: \\u202eunexpected\" (about:blank)"; got != want {
		t.Errorf("Error() = %s, want %s", got, want)
	}
	long := &Problem{Type: "about:blank", Status: 502, Detail: strings.Repeat("é", maxShown)}
	got := long.Error()
	if !strings.HasSuffix(got, "... (about:blank)") || len(got) > maxShown+64 || strings.Contains(got, `"`) {
		t.Errorf("a long detail shows as %d bytes ending %q, want at most %d bytes of whole characters, then ...", len(got), got[len(got)-40:], maxShown)
	}
}

// A detail that says no more than the title is not shown twice.
func TestProblemErrorWithoutRepeatedDetail(t *testing.T) {
	for _, tc := range []struct {
		p    Problem
		want string
	}{
		{Problem{Type: "https://mandate.dev/problems/join-token-unknown", Title: "Join token unknown", Status: 403, Detail: "join token unknown"},
			"403 Join token unknown (https://mandate.dev/problems/join-token-unknown)"},
		{Problem{Type: "about:blank", Title: "Bad Gateway", Status: 502},
			"502 Bad Gateway (about:blank)"},
		{Problem{Type: "https://mandate.dev/problems/not-found", Title: "Not found", Status: 404, Detail: `agent "x"`},
			`404 Not found: agent "x" (https://mandate.dev/problems/not-found)`},
		{Problem{Type: "https://mandate.dev/problems/pcr-mismatch", Title: "PCR values match no allowed profile", Status: 403, Detail: "PCR values match no allowed profile (edge-v1: PCR 16 differ)"},
			"403 PCR values match no allowed profile (edge-v1: PCR 16 differ) (https://mandate.dev/problems/pcr-mismatch)"},
		{Problem{Type: "https://mandate.dev/problems/not-found", Title: "Not found", Status: 404, Detail: "not foundable"},
			"404 Not found: not foundable (https://mandate.dev/problems/not-found)"},
	} {
		if got := tc.p.Error(); got != tc.want {
			t.Errorf("Error() = %s, want %s", got, tc.want)
		}
	}
}
