package authority

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/logtest"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
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

// A join token that expires while its join is on its way (its SVID
// made, its commit to come) is not used: the commit checks the token at
// its own time, not at the request's start. Nor is a retry of a join
// whose token expires meanwhile (refused as one sent after the expiry:
// the token is used).
func TestJoinTokenExpiringBeforeTheCommitIsRefused(t *testing.T) {
	for _, retry := range []bool{false, true} {
		t.Run(map[bool]string{false: "join", true: "retry"}[retry], func(t *testing.T) {
			holdRecords(t)
			a, _, skew := runSkewedAuthority(t)
			secret, _, err := a.CreateJoinToken(t.Context(), adminOf(t, a), time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			_, csr := newKeyAndCSR(t)
			if retry {
				if _, err := a.JoinNode(t.Context(), secret, csr); err != nil {
					t.Fatal(err)
				}
			}
			err = whileHeld(t.Context(), func(ctx context.Context) error {
				_, err := a.JoinNode(ctx, secret, csr)
				return err
			}, func() { skew.Add(int64(2 * time.Minute)) })
			want := attest.ErrTokenExpired
			if retry {
				want = attest.ErrTokenUsed
			}
			if !errors.Is(err, want) {
				t.Fatalf("JoinNode with its token expired before its commit = %v, want %v", err, want)
			}
		})
	}
}

// A join token whose id is that of a node already joined (two tokens
// drew the same 64-bit id) is refused: its holder gets no SVID of the
// other host's node (banned or not), whose record stays as it was.
func TestJoinTokenOfAnExistingNodeIsRefused(t *testing.T) {
	a, _ := runAuthority(t)
	ctx := t.Context()
	secret, rec, err := a.CreateJoinToken(ctx, adminOf(t, a), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := a.JoinNode(ctx, secret, newCSR(t))
	if err != nil {
		t.Fatal(err)
	}
	nodeID := svid.ID.String()
	if _, err := a.BanNode(ctx, adminOf(t, a), nodeID, "stolen"); err != nil {
		t.Fatal(err)
	}
	other, twin, err := attest.NewJoinToken(a.now(), time.Hour, rec.CreatedBy)
	if err != nil {
		t.Fatal(err)
	}
	twin.ID = rec.ID
	if err := a.store.Update(ctx, func(tx store.Tx) error { return attest.PutJoinToken(tx, other, twin) }); err != nil {
		t.Fatal(err)
	}
	if got, err := a.JoinNode(ctx, other, newCSR(t)); !errors.Is(err, attest.ErrTokenUsed) {
		t.Fatalf("join with a token of the id of node %s = %v, %v; want %v", nodeID, got, err, attest.ErrTokenUsed)
	}
	var n *registry.Node
	if err := a.store.View(ctx, func(tx store.Tx) (err error) { n, err = registry.GetNode(tx, nodeID); return err }); err != nil {
		t.Fatal(err)
	}
	if !n.Banned || n.SVIDSerial != svid.SerialNumber.Text(16) {
		t.Fatalf("node %s after the refused join: banned %v, serial %s; want banned, serial %s", nodeID, n.Banned, n.SVIDSerial, svid.SerialNumber.Text(16))
	}
	// The token is left unused (refused, not consumed).
	if err := a.store.View(ctx, func(tx store.Tx) error {
		_, err := attest.PeekJoinToken(tx, other, a.td, a.now())
		return err
	}); err != nil {
		t.Fatalf("the refused token: %v, want unused", err)
	}
}
