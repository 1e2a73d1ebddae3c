package echo

import (
	"strconv"
	"unicode/utf8"
)

// Mark follows what was cut.
const Mark = "…"

// Cut is s cut to at most n bytes, at the start of a UTF-8 sequence
// (fewer bytes then), followed by Mark when it was cut.
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:start(s, n)] + Mark
}

// Quote is s as a Go string literal (strconv.Quote) of at most its
// first n bytes, cut as Cut cuts it, followed by Mark after the
// literal when it was cut.
func Quote(s string, n int) string {
	if len(s) <= n {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:start(s, n)]) + Mark
}

// start is where to cut s to at most n bytes (n < len(s)): n, or the
// start of a valid UTF-8 sequence that n falls inside (bytes that are
// not UTF-8 are cut where the bound falls).
func start(s string, n int) int {
	if n <= 0 {
		return 0
	}
	for i := n - 1; i >= 0 && i > n-utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			if r, size := utf8.DecodeRuneInString(s[i:]); i+size > n && (r != utf8.RuneError || size > 1) {
				return i
			}
			break
		}
	}
	return n
}
