package client_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/attest/tpmdevice"
	"mandate.dev/mandate/attest/tpmtest"
)

// An authority's challenge naming PCRs no TPM has (a negative index, one
// far past the bank, the same one over and over) is refused before the
// device is asked anything: the node reports it, it neither panics nor
// allocates a selection sized by the index, nor reads one PCR per entry.
func TestAttestTPMRefusesAHostilePCRSelection(t *testing.T) {
	dev := tpmtest.Device(t, 1, tpmdevice.Options{})
	ek, err := attest.ParseTPM2BPublic("ek", dev.EKPublic())
	if err != nil {
		t.Fatal(err)
	}
	// The authority is hostile, yet makes a genuine credential for the
	// device: the selection is all that is wrong.
	v, err := attest.NewTPMVerifier(attest.TPMConfig{EKAllowlist: []string{ek.SHA256Hex()},
		Profiles: []attest.PCRProfile{{Name: "p", SHA256: map[int][]byte{0: make([]byte, 32)}}}, Allowed: []string{"p"}})
	if err != nil {
		t.Fatal(err)
	}
	many := make([]int, 10000)
	for _, tc := range []struct {
		name string
		pcrs []int
		want string
	}{
		{"negative", []int{0, -1}, "PCR -1"},
		{"past the bank", []int{1 << 40}, "PCR 1099511627776"},
		{"just past the bank", []int{attest.NumPCRs}, "PCR 24"},
		{"repeated", many, "PCR 0 twice"},
		{"none", []int{}, "no PCR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var verified atomic.Bool
			c := hostileAuthority(t, 10*time.Second, func(w http.ResponseWriter, r *http.Request) {
				if strings.HasSuffix(r.URL.Path, "/verify") {
					verified.Store(true)
					http.Error(w, "no", http.StatusForbidden)
					return
				}
				var req struct {
					EKPublic []byte `json:"ek_public"`
					AKPublic []byte `json:"ak_public"`
				}
				if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
					t.Error(err)
					return
				}
				e, err := v.CheckEK(req.EKPublic, nil)
				if err != nil {
					t.Error(err)
					return
				}
				a, err := attest.CheckAK(req.AKPublic)
				if err != nil {
					t.Error(err)
					return
				}
				ch, err := v.NewChallenge(e, a, "", time.Now())
				if err != nil {
					t.Error(err)
					return
				}
				enc := base64.StdEncoding.EncodeToString
				json.NewEncoder(w).Encode(map[string]any{"session_id": ch.SessionID, "credential_blob": enc(ch.CredentialBlob),
					"encrypted_secret": enc(ch.EncryptedSecret), "nonce": enc(ch.Session.Nonce),
					"pcr_selection": map[string][]int{"sha256": tc.pcrs}, "expires_at": ch.Session.ExpiresAt})
			})
			_, err := c.AttestTPM(context.Background(), dev, nil, []byte("csr"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("AttestTPM of a challenge selecting %d PCRs (%v…): %v; want an error naming %q", len(tc.pcrs), tc.pcrs[:min(2, len(tc.pcrs))], err, tc.want)
			}
			if verified.Load() {
				t.Fatal("an answer to the challenge was sent")
			}
		})
	}
}
