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
				"name altered":    flip(20),
				"state altered":   flip(len(ch.SessionID) / 2),
				"tag altered":     flip(len(ch.SessionID) - 2),
				"cut short":       ch.SessionID[:len(ch.SessionID)-10],
				"name only":       ch.Session.ID,
				"too long":        ch.SessionID + strings.Repeat("A", attest.MaxSessionIDLen),
				"empty":           "",
				"another's state": ch.Session.ID[:47] + "0" + ch.SessionID[48:],
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
// "used" until the challenge expires, then "expired"; the mark is pruned
// once the challenge expired, not before.
func TestUsedMarkUntilExpiry(t *testing.T) {
	s := bolttest.Open(t)
	ctx := context.Background()
	now := time.Now()
	ses := &attest.TPMSession{ID: strings.Repeat("e", 48), EKHash: strings.Repeat("e", 64), ExpiresAt: now.Add(time.Minute)}
	consume := func(at time.Time) error {
		return s.Update(ctx, func(tx store.Tx) error { return attest.ConsumeTPMSession(tx, ses, at) })
	}
	prune := func(cutoff time.Time) int {
		var n int
		if err := s.Update(ctx, func(tx store.Tx) error {
			var err error
			n, err = attest.PruneTPMSessions(tx, cutoff)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := consume(now); err != nil {
		t.Fatalf("first answer: %v", err)
	}
	if err := consume(now.Add(time.Second)); !errors.Is(err, attest.ErrChallengeUsed) {
		t.Fatalf("second answer = %v, want used", err)
	}
	if n := prune(now.Add(30 * time.Second)); n != 0 {
		t.Fatalf("pruned %d marks before the challenge expired", n)
	}
	if err := consume(now.Add(59 * time.Second)); !errors.Is(err, attest.ErrChallengeUsed) {
		t.Fatalf("replay before expiry = %v, want used", err)
	}
	if n := prune(now.Add(2 * time.Minute)); n != 1 {
		t.Fatalf("pruned %d marks after the challenge expired, want 1", n)
	}
	if err := consume(now.Add(2 * time.Minute)); !errors.Is(err, attest.ErrChallengeExpired) {
		t.Fatalf("answer after expiry = %v, want expired", err)
	}
}
