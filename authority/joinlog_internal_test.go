package authority

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/logtest"
)

// lockedBuffer is a log sink safe for the authority's goroutines.
type lockedBuffer = logtest.Buffer

// A refused join of a token that exists is logged at INFO; a guess at a
// token (anyone may send them, as fast as they like) at DEBUG only, so a
// flood of guesses does not bury the log; neither logs the secret.
func TestJoinRefusalsLogged(t *testing.T) {
	var logged lockedBuffer
	a, _ := runAuthorityWith(t, Options{Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	secret, _, err := a.CreateJoinToken(t.Context(), adminOf(t, a), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	guess := strings.Repeat("ab", 16)
	if _, err := a.JoinNode(t.Context(), guess, newCSR(t)); err == nil {
		t.Fatal("a guessed token joined")
	}
	if strings.Contains(logged.String(), "join refused") {
		t.Errorf("a guessed token's refusal logged above DEBUG:\n%s", logged.String())
	}
	if _, err := a.JoinNode(t.Context(), secret, newCSR(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.JoinNode(t.Context(), secret, newCSR(t)); err == nil { // used, and with another key
		t.Fatal("a used token joined with another key")
	}
	if out := logged.String(); !strings.Contains(out, `level=INFO msg="join refused"`) || strings.Contains(out, secret) || strings.Contains(out, guess) {
		t.Errorf("log after a used token's refusal: want one INFO line without the secrets:\n%s", out)
	}
}
