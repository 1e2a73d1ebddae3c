package attest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/attest/tpmdevice"
	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt/bolttest"
)

// rsaAK is an RSA 2048 RSASSA/SHA-256 AK made by the simulator.
func rsaAK(t *testing.T, tpm interface {
	Send([]byte) ([]byte, error)
}) []byte {
	t.Helper()
	tmpl := tpm2.TPMTPublic{Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, Restricted: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Scheme:  tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSASSA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256})},
			KeyBits: 2048})}
	rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tmpl)}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tpm)
	return tpm2.Marshal(rsp.OutPublic)
}

// A challenge's state travels sealed in its session id: it opens, with
// the key that sealed it only, to exactly the state sealed; an id altered
// anywhere, cut short, too long or sealed with another key is unknown.
func TestSessionIDSealsTheChallenge(t *testing.T) {
	tpm := openSim(t, 3)
	td := spiffeid.RequireTrustDomainFromString("org-a.example")
	for _, tc := range []struct {
		name, ek string
		ak       func(d *tpmdevice.Device) []byte
		caller   bool
	}{
		{"ECC P-256 AK, RSA EK", tpmdevice.EKRSA, func(d *tpmdevice.Device) []byte { return d.AKPublic() }, false},
		{"ECC P-256 AK, renewal", tpmdevice.EKECC, func(d *tpmdevice.Device) []byte { return d.AKPublic() }, true},
		{"RSA 2048 AK", tpmdevice.EKRSA, func(*tpmdevice.Device) []byte { return rsaAK(t, tpm) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := openDevice(t, tpm, tc.ek)
			prof := bootProfile(t, tpm, "edge-v1", 0, 7, 16)
			cfg := attest.TPMConfig{EKAllowlist: []string{ekHash(t, d)}, Profiles: []attest.PCRProfile{prof}, Allowed: []string{"edge-v1"},
				SessionKey: []byte(strings.Repeat("k", attest.SessionKeySize))}
			v, err := attest.NewTPMVerifier(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ek, err := v.CheckEK(d.EKPublic(), nil)
			if err != nil {
				t.Fatal(err)
			}
			ak, err := attest.CheckAK(tc.ak(d))
			if err != nil {
				t.Fatal(err)
			}
			caller := ""
			if tc.caller {
				caller = spiffeid.RequireFromSegments(td, "node", "tpm", ek.SHA256Hex()).String()
			}
			now := time.Now().UTC()
			ch, err := v.NewChallenge(ek, ak, caller, now)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("session_id: %d characters (AK TPM2B_PUBLIC %d bytes)", len(ch.SessionID), len(tc.ak(d)))
			if len(ch.SessionID) > attest.MaxSessionIDLen {
				t.Fatalf("session_id of %d characters, over %d", len(ch.SessionID), attest.MaxSessionIDLen)
			}
			s, err := v.OpenSession(ch.SessionID, td)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			want := *ch.Session
			if fmt.Sprint(*s) != fmt.Sprint(want) {
				t.Fatalf("opened\n%+v\nsealed\n%+v", *s, want)
			}
			if tc.name != "RSA 2048 AK" { // the device's own AK: the opened session verifies its answer
				if _, err := v.Verify(s, answer(t, tpm, d, ch)); err != nil {
					t.Fatalf("verify the opened session: %v", err)
				}
			}
			cfg.SessionKey = []byte(strings.Repeat("o", attest.SessionKeySize))
			other, err := attest.NewTPMVerifier(cfg)
			if err != nil {
				t.Fatal(err)
			}
			flip := func(i int) string {
				b := []byte(ch.SessionID)
				if b[i] == 'A' {
					b[i] = 'B'
				} else {
					b[i] = 'A'
				}
				return string(b)
			}
			for name, id := range map[string]string{
				"name altered":      flip(20),
				"state altered":     flip(len(ch.SessionID) / 2),
				"tag altered":       flip(len(ch.SessionID) - 2),
				"cut short":         ch.SessionID[:len(ch.SessionID)-10],
				"name only":         ch.Session.ID,
				"too long":          ch.SessionID + strings.Repeat("A", attest.MaxSessionIDLen),
				"empty":             "",
				"another's state":   ch.Session.ID[:47] + other47(ch.Session.ID) + ch.SessionID[48:],
				"CRLF in the state": ch.SessionID[:60] + "\r\n" + ch.SessionID[60:],
				"LF in the state":   ch.SessionID[:60] + "\n" + ch.SessionID[60:],
				"upper-case name":   strings.ToUpper(ch.Session.ID) + ch.SessionID[48:],
				"padded state":      ch.SessionID + "=",
				"space in the name": " " + ch.SessionID[1:],
			} {
				if _, err := v.OpenSession(id, td); !errors.Is(err, attest.ErrChallengeUnknown) {
					t.Errorf("%s: %v, want unknown", name, err)
				}
			}
			if _, err := other.OpenSession(ch.SessionID, td); !errors.Is(err, attest.ErrChallengeUnknown) {
				t.Errorf("opened with another key: %v, want unknown", err)
			}
		})
	}
}

// An answered challenge is marked in the store: a second answer is told
// "used" until the mark is pruned, an hour after the challenge expired
// (so a clock stepped back by less than that after a prune cannot
// reopen it), then "expired". An answer before the challenge was made
// (the clock went back further) is refused as expired.
func TestUsedMarkUntilExpiry(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name  string
		prune time.Duration // after now; 0: none
		at    time.Duration // the second answer, after now
		want  error         // nil: accepted
	}{
		{"replay at once", 0, time.Second, attest.ErrChallengeUsed},
		{"replay before expiry, after a prune", 30 * time.Second, 59 * time.Second, attest.ErrChallengeUsed},
		{"replay after expiry, before the prune", 0, 2 * time.Minute, attest.ErrChallengeUsed},
		{"clock stepped back after a prune at expiry", time.Minute + time.Millisecond, 58 * time.Second, attest.ErrChallengeUsed},
		{"clock stepped back after a prune within the hour", 50 * time.Minute, 30 * time.Second, attest.ErrChallengeUsed},
		{"late, once pruned", time.Minute + attest.UsedMarkRetention + time.Second, time.Minute + attest.UsedMarkRetention + time.Second, attest.ErrChallengeExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := bolttest.Open(t)
			ctx := context.Background()
			ses := &attest.TPMSession{ID: strings.Repeat("e", 48), EKHash: strings.Repeat("e", 64), CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
			consume := func(at time.Time) error {
				return s.Update(ctx, func(tx store.Tx) error { return attest.ConsumeTPMSession(tx, ses, at) })
			}
			if err := consume(now); err != nil {
				t.Fatalf("first answer: %v", err)
			}
			if tc.prune > 0 {
				if err := s.Update(ctx, func(tx store.Tx) error {
					_, err := attest.PruneTPMSessions(tx, now.Add(tc.prune))
					return err
				}); err != nil {
					t.Fatal(err)
				}
			}
			if err := consume(now.Add(tc.at)); !errors.Is(err, tc.want) {
				t.Fatalf("second answer = %v, want %v", err, tc.want)
			}
		})
	}
}

// An answer is refused when the clock reads before the challenge was made
// (beyond a small skew): the clock went back, and the challenge's mark
// may be gone.
func TestAnswerBeforeChallengeMade(t *testing.T) {
	made := time.Now()
	for _, tc := range []struct {
		name string
		at   time.Duration // after the challenge was made
		want error
	}{
		{"after", time.Second, nil},
		{"within the skew", -attest.SessionClockSkew + time.Millisecond, nil},
		{"clock gone back", -attest.SessionClockSkew - time.Millisecond, attest.ErrChallengeExpired},
		{"clock gone back an hour", -time.Hour, attest.ErrChallengeExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := bolttest.Open(t)
			ses := &attest.TPMSession{ID: strings.Repeat("e", 48), EKHash: strings.Repeat("e", 64), CreatedAt: made, ExpiresAt: made.Add(time.Minute)}
			err := s.Update(context.Background(), func(tx store.Tx) error { return attest.ConsumeTPMSession(tx, ses, made.Add(tc.at)) })
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("answer = %v, want %v", err, tc.want)
			}
		})
	}
}

// VoidTPMChallenges voids the challenges of one EK made up to its time
// (those made later, and another EK's, are answered), for as long as any
// such challenge could be answered: its mark is pruned only once the
// longest-lived of them has expired, and a used mark's retention after.
func TestVoidTPMChallenges(t *testing.T) {
	voided := time.Now()
	ek := strings.Repeat("e", 64)
	for _, tc := range []struct {
		name    string
		ek      string
		made    time.Duration // the challenge, after the void
		pruneAt time.Duration // after the void; 0: none
		want    error
	}{
		{"made before", ek, -time.Second, 0, attest.ErrChallengeExpired},
		{"made at the same time", ek, 0, 0, attest.ErrChallengeExpired},
		{"made after", ek, time.Millisecond, 0, nil},
		{"another EK's, made before", strings.Repeat("f", 64), -time.Second, 0, nil},
		{"made before, after a prune while one could live", ek, -time.Second, attest.MaxChallengeTTL + attest.UsedMarkRetention - time.Second, attest.ErrChallengeExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := bolttest.Open(t)
			ctx := context.Background()
			if err := s.Update(ctx, func(tx store.Tx) error { return attest.VoidTPMChallenges(tx, ek, voided) }); err != nil {
				t.Fatal(err)
			}
			if tc.pruneAt > 0 {
				if err := s.Update(ctx, func(tx store.Tx) error {
					_, err := attest.PruneTPMSessions(tx, voided.Add(tc.pruneAt))
					return err
				}); err != nil {
					t.Fatal(err)
				}
			}
			made := voided.Add(tc.made)
			ses := &attest.TPMSession{ID: tc.ek[:16] + strings.Repeat("0", 32), EKHash: tc.ek, CreatedAt: made, ExpiresAt: made.Add(time.Minute)}
			err := s.Update(ctx, func(tx store.Tx) error { return attest.ConsumeTPMSession(tx, ses, made.Add(time.Second)) })
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("answer = %v, want %v", err, tc.want)
			}
		})
	}
	// Pruned once every challenge it voids has expired: nothing is left.
	s := bolttest.Open(t)
	n := 0
	if err := s.Update(context.Background(), func(tx store.Tx) error {
		if err := attest.VoidTPMChallenges(tx, ek, voided); err != nil {
			return err
		}
		var err error
		n, err = attest.PruneTPMSessions(tx, voided.Add(attest.MaxChallengeTTL+attest.UsedMarkRetention+time.Second))
		return err
	}); err != nil || n != 1 {
		t.Fatalf("PruneTPMSessions once every voided challenge expired pruned %d (%v), want the mark", n, err)
	}
}

// other47 is a hex digit other than the ID's last.
func other47(id string) string {
	if id[47] == '0' {
		return "1"
	}
	return "0"
}

// A verifier's challenges live at most MaxChallengeTTL, the time the mark
// of VoidTPMChallenges assumes: one living longer would outlive the mark
// voiding it (a quote kept back from before an eviction would admit the
// node again). A longer or negative TTL is refused, not taken.
func TestChallengeTTLIsBounded(t *testing.T) {
	for _, tc := range []struct {
		ttl time.Duration
		ok  bool
	}{
		{0, true}, // DefaultChallengeTTL
		{time.Second, true},
		{attest.MaxChallengeTTL, true},
		{attest.MaxChallengeTTL + time.Nanosecond, false},
		{24 * time.Hour, false},
		{-time.Minute, false},
	} {
		_, err := attest.NewTPMVerifier(attest.TPMConfig{ChallengeTTL: tc.ttl})
		if (err == nil) != tc.ok {
			t.Errorf("NewTPMVerifier with ChallengeTTL %s: %v, want accepted %v", tc.ttl, err, tc.ok)
		}
	}
}
