package echo

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		s          string
		n          int
		cut, quote string
	}{
		{"", 4, "", `""`},
		{"abcd", 4, "abcd", `"abcd"`},
		{"abcde", 4, "abcd…", `"abcd"…`},
		// A two-byte character across the bound is left out whole.
		{"abcé", 4, "abc…", `"abc"…`},
		{"abcéz", 5, "abcé…", `"abcé"…`},
		{"a\nb", 2, "a\n…", `"a\n"…`},
		// Not UTF-8 past the bound: cut at the bound.
		{"ab\x80\x80\x80\x80\x80", 4, "ab\x80\x80…", `"ab\x80\x80"…`},
		{"abc", 0, "…", `""…`},
	} {
		if got := Cut(tc.s, tc.n); got != tc.cut {
			t.Errorf("Cut(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.cut)
		}
		if got := Quote(tc.s, tc.n); got != tc.quote {
			t.Errorf("Quote(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.quote)
		}
	}
}

// Whatever is sent, at most the bound is repeated, and valid UTF-8
// stays valid.
func FuzzCut(f *testing.F) {
	f.Add("abcé", 4)
	f.Add(strings.Repeat("€", 100), 7)
	f.Add("\xff\xfe", 1)
	f.Fuzz(func(t *testing.T, s string, n int) {
		n = max(0, n%1000)
		got := Cut(s, n)
		if len(got) > n+len(Mark) {
			t.Fatalf("Cut(%q, %d) = %d bytes", s, n, len(got))
		}
		if len(s) <= n && got != s || len(s) > n && !strings.HasSuffix(got, Mark) {
			t.Fatalf("Cut(%q, %d) = %q", s, n, got)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Fatalf("Cut(%q, %d) = %q, not valid UTF-8", s, n, got)
		}
		if !strings.HasPrefix(s, strings.TrimSuffix(got, Mark)) && got != s {
			t.Fatalf("Cut(%q, %d) = %q, not a prefix", s, n, got)
		}
	})
}
