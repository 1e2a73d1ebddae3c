package attest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt/bolttest"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

var t0 = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

// newToken creates and stores a token valid for ttl from t0.
func newToken(t *testing.T, s store.Store, ttl time.Duration) (string, *attest.JoinToken) {
	t.Helper()
	secret, rec, err := attest.NewJoinToken(t0, ttl, "spiffe://example.org/admin/alice")
	if err != nil {
		t.Fatalf("NewJoinToken: %v", err)
	}
	if err := s.Update(context.Background(), func(tx store.Tx) error { return attest.PutJoinToken(tx, secret, rec) }); err != nil {
		t.Fatalf("PutJoinToken: %v", err)
	}
	return secret, rec
}

func consume(s store.Store, secret string, now time.Time) (*attest.JoinToken, error) {
	var rec *attest.JoinToken
	err := s.Update(context.Background(), func(tx store.Tx) error {
		var err error
		rec, err = attest.ConsumeJoinToken(tx, secret, td, now, "")
		return err
	})
	return rec, err
}

func TestNewJoinTokenTTL(t *testing.T) {
	tests := []struct {
		name    string
		ttl     time.Duration
		wantTTL time.Duration // 0: error expected
	}{
		{"zero means default", 0, attest.DefaultJoinTokenTTL},
		{"one second", time.Second, time.Second},
		{"one hour", time.Hour, time.Hour},
		{"maximum", attest.MaxJoinTokenTTL, attest.MaxJoinTokenTTL},
		{"below one second", time.Second - time.Nanosecond, 0},
		{"one nanosecond", time.Nanosecond, 0},
		{"negative", -time.Minute, 0},
		{"above maximum", attest.MaxJoinTokenTTL + time.Nanosecond, 0},
		{"far above maximum", 365 * 24 * time.Hour, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secret, rec, err := attest.NewJoinToken(t0, tt.ttl, "me")
			if tt.wantTTL == 0 {
				if !errors.Is(err, attest.ErrTokenTTL) {
					t.Fatalf("NewJoinToken(%v) = %v, want ErrTokenTTL", tt.ttl, err)
				}
				if secret != "" || rec != nil {
					t.Fatalf("NewJoinToken(%v) returned a token with its error", tt.ttl)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewJoinToken(%v) = %v", tt.ttl, err)
			}
			if got := rec.ExpiresAt.Sub(rec.CreatedAt); got != tt.wantTTL {
				t.Errorf("lifetime = %v, want %v", got, tt.wantTTL)
			}
			if !rec.CreatedAt.Equal(t0) || rec.CreatedBy != "me" || !rec.UsedAt.IsZero() || rec.UsedBy != "" {
				t.Errorf("record = %+v", rec)
			}
			if len(rec.ID) != 16 || strings.Trim(rec.ID, "0123456789abcdef") != "" {
				t.Errorf("ID = %q, want 16 hex digits", rec.ID)
			}
			if len(secret) < 40 {
				t.Errorf("secret has %d characters, want at least 40 (256 bits)", len(secret))
			}
		})
	}
}

func TestNewJoinTokenUnique(t *testing.T) {
	secrets, ids := map[string]bool{}, map[string]bool{}
	for range 50 {
		s, rec, err := attest.NewJoinToken(t0, 0, "me")
		if err != nil {
			t.Fatal(err)
		}
		if secrets[s] || ids[rec.ID] {
			t.Fatalf("repeated secret or id")
		}
		secrets[s], ids[rec.ID] = true, true
	}
}

// A token never begins with "-": given where a command takes an argument
// (its id, say), it would be read as a flag, and the flag error would
// show it. 3,000 tokens: without the rule, about 47 would.
func TestNewJoinTokenNotAFlag(t *testing.T) {
	for range 3000 {
		s, _, err := attest.NewJoinToken(t0, 0, "me")
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(s, "-") || len(s) != 43 {
			t.Fatalf("join token of %d characters beginning with %q, want 43 not beginning with -", len(s), s[:1])
		}
	}
}

func TestSecretNeverInRecord(t *testing.T) {
	s := bolttest.Open(t)
	secret, rec := newToken(t, s, time.Hour)

	check := func(what string, b []byte) {
		t.Helper()
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s contains the secret: %s", what, b)
		}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	check("JoinToken JSON", b)

	used, err := consume(s, secret, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(used)
	check("used JoinToken JSON", b)

	// Neither keys nor values of the bucket hold the secret.
	err = s.View(context.Background(), func(tx store.Tx) error {
		n := 0
		err := tx.Scan(attest.BucketJoinTokens, nil, nil, func(k, v []byte) error {
			n++
			check("stored key", k)
			check("stored value", v)
			return nil
		})
		if n != 1 {
			t.Errorf("bucket holds %d records, want 1", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// Errors do not carry the secret either.
	_, err = consume(s, secret, t0.Add(2*time.Minute))
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("replay error = %v, want an error without the secret", err)
	}
}

func TestNodeID(t *testing.T) {
	rec := &attest.JoinToken{ID: "0123456789abcdef"}
	got, err := rec.NodeID(td)
	if want := "spiffe://example.org/node/join/0123456789abcdef"; err != nil || got.String() != want {
		t.Errorf("NodeID = %s, %v; want %s", got, err, want)
	}
	for _, bad := range []string{"", "a/b", ".."} {
		if _, err := (&attest.JoinToken{ID: bad}).NodeID(td); err == nil {
			t.Errorf("NodeID(id %q) = nil error, want an error", bad)
		}
	}
}

func TestConsumeJoinToken(t *testing.T) {
	s := bolttest.Open(t)
	secret, rec := newToken(t, s, time.Hour)

	t.Run("unknown", func(t *testing.T) {
		for _, bad := range []string{"", "nope", secret + "x", secret[1:], strings.Repeat("a", 129), strings.Repeat("a", 100000)} {
			if _, err := consume(s, bad, t0); !errors.Is(err, attest.ErrTokenUnknown) {
				t.Errorf("ConsumeJoinToken(%.20q) = %v, want ErrTokenUnknown", bad, err)
			}
		}
	})

	now := t0.Add(time.Minute)
	t.Run("success", func(t *testing.T) {
		got, err := consume(s, secret, now)
		if err != nil {
			t.Fatalf("ConsumeJoinToken = %v", err)
		}
		wantNode := "spiffe://example.org/node/join/" + rec.ID
		if got.ID != rec.ID || !got.UsedAt.Equal(now) || got.UsedBy != wantNode {
			t.Errorf("consumed record = %+v, want used at %v by %s", got, now, wantNode)
		}
		if id, err := got.NodeID(td); err != nil || id.String() != wantNode {
			t.Errorf("NodeID = %s, %v; want %s", id, err, wantNode)
		}
	})

	t.Run("second use", func(t *testing.T) {
		got, err := consume(s, secret, now.Add(time.Second))
		if !errors.Is(err, attest.ErrTokenUsed) {
			t.Fatalf("ConsumeJoinToken(again) = %v, want ErrTokenUsed", err)
		}
		if got == nil || !got.UsedAt.Equal(now) {
			t.Errorf("record with ErrTokenUsed = %+v, want first use kept", got)
		}
	})

	t.Run("used and expired reports used", func(t *testing.T) {
		if _, err := consume(s, secret, rec.ExpiresAt.Add(time.Hour)); !errors.Is(err, attest.ErrTokenUsed) {
			t.Fatalf("ConsumeJoinToken(used, expired) = %v, want ErrTokenUsed", err)
		}
	})
}

func TestConsumeJoinTokenExpiry(t *testing.T) {
	tests := []struct {
		name    string
		at      time.Duration // after creation
		wantErr error
	}{
		{"at creation", 0, nil},
		{"just before expiry", time.Hour - time.Nanosecond, nil},
		{"at expiry", time.Hour, attest.ErrTokenExpired},
		{"after expiry", time.Hour + time.Second, attest.ErrTokenExpired},
		{"long after expiry", 1000 * time.Hour, attest.ErrTokenExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := bolttest.Open(t)
			secret, _ := newToken(t, s, time.Hour)
			_, err := consume(s, secret, t0.Add(tt.at))
			if tt.wantErr == nil && err != nil {
				t.Fatalf("ConsumeJoinToken = %v, want nil", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("ConsumeJoinToken = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				// An expired token is not marked used.
				if _, err := consume(s, secret, t0); err != nil {
					t.Errorf("ConsumeJoinToken before expiry after a refused one = %v, want nil", err)
				}
			}
		})
	}
}

func TestConsumeJoinTokenRollsBack(t *testing.T) {
	s := bolttest.Open(t)
	secret, _ := newToken(t, s, time.Hour)
	errLater := errors.New("csr refused")

	err := s.Update(context.Background(), func(tx store.Tx) error {
		if _, err := attest.ConsumeJoinToken(tx, secret, td, t0, ""); err != nil {
			return err
		}
		// Inside the transaction, the token is already used.
		if _, err := attest.ConsumeJoinToken(tx, secret, td, t0, ""); !errors.Is(err, attest.ErrTokenUsed) {
			t.Errorf("second ConsumeJoinToken in the same tx = %v, want ErrTokenUsed", err)
		}
		return errLater
	})
	if !errors.Is(err, errLater) {
		t.Fatalf("Update = %v, want the callback's error", err)
	}
	if _, err := consume(s, secret, t0.Add(time.Second)); err != nil {
		t.Fatalf("ConsumeJoinToken after a rolled-back join = %v, want nil (token still usable)", err)
	}
}

func TestConsumeJoinTokenConcurrent(t *testing.T) {
	s := bolttest.Open(t)
	secret, _ := newToken(t, s, time.Hour)

	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = consume(s, secret, t0.Add(time.Second))
		})
	}
	close(start)
	wg.Wait()

	wins := 0
	for i, err := range errs {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, attest.ErrTokenUsed):
		default:
			t.Errorf("goroutine %d: %v, want nil or ErrTokenUsed", i, err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d goroutines consumed the token, want exactly 1", wins)
	}
}

func TestPruneJoinTokens(t *testing.T) {
	s := bolttest.Open(t)
	expiredOld, _ := newToken(t, s, time.Minute)          // expires t0+1m
	expiredUsed, _ := newToken(t, s, 2*time.Minute)       // expires t0+2m, used
	boundary, _ := newToken(t, s, time.Hour)              // expires exactly at the cutoff
	live, _ := newToken(t, s, 2*time.Hour)                // expires after the cutoff
	liveUsed, _ := newToken(t, s, attest.MaxJoinTokenTTL) // used, not expired
	for _, sec := range []string{expiredUsed, liveUsed} {
		if _, err := consume(s, sec, t0); err != nil {
			t.Fatal(err)
		}
	}
	// A record that cannot be decoded is pruned too.
	if err := s.Update(context.Background(), func(tx store.Tx) error {
		return tx.Put(attest.BucketJoinTokens, []byte("garbage-key"), []byte("{not json"))
	}); err != nil {
		t.Fatal(err)
	}

	cutoff := t0.Add(time.Hour)
	var pruned int
	if err := s.Update(context.Background(), func(tx store.Tx) error {
		var err error
		pruned, err = attest.PruneJoinTokens(tx, cutoff)
		return err
	}); err != nil {
		t.Fatalf("PruneJoinTokens: %v", err)
	}
	if pruned != 3 {
		t.Errorf("PruneJoinTokens = %d, want 3 (two expired, one garbage)", pruned)
	}

	tests := []struct {
		name    string
		secret  string
		wantErr error
	}{
		{"expired is gone", expiredOld, attest.ErrTokenUnknown},
		{"expired used is gone", expiredUsed, attest.ErrTokenUnknown},
		{"expiring at cutoff is kept", boundary, nil},
		{"live is kept", live, nil},
		{"used live is kept and reports used", liveUsed, attest.ErrTokenUsed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := consume(s, tt.secret, t0.Add(time.Second))
			if tt.wantErr == nil && err != nil {
				t.Fatalf("ConsumeJoinToken = %v, want nil", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("ConsumeJoinToken = %v, want %v", err, tt.wantErr)
			}
		})
	}

	// Pruning again finds nothing more.
	if err := s.Update(context.Background(), func(tx store.Tx) error {
		var err error
		pruned, err = attest.PruneJoinTokens(tx, cutoff)
		return err
	}); err != nil || pruned != 0 {
		t.Errorf("second PruneJoinTokens = %d, %v; want 0, nil", pruned, err)
	}
}

func TestPruneJoinTokensEmpty(t *testing.T) {
	s := bolttest.Open(t)
	err := s.Update(context.Background(), func(tx store.Tx) error {
		n, err := attest.PruneJoinTokens(tx, t0)
		if n != 0 {
			t.Errorf("PruneJoinTokens on empty store = %d, want 0", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
