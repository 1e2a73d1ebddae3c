package api

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/delegation"
)

// The answer to POST /v1/delegations is written byte for byte as it was
// from maps: members in name order, the proof's hashes in base64 (an
// empty proof as []), strings escaped as encoding/json escapes them.
func TestDelegationAnswerBytes(t *testing.T) {
	hop := func(id string, depth int, purpose string, cnf bool) *delegation.Claims {
		c := &delegation.Claims{Issuer: "spiffe://org-a.example", Subject: "alice <&> \u2028", ID: id, Scope: "calendar:read mail:send",
			Expiry: 1767225600, IssuedAt: 1767225000,
			Hop: delegation.Hop{Delegator: "spiffe://org-a.example/agent/a", Delegatee: "spiffe://org-a.example/agent/b", Depth: depth, Purpose: purpose}}
		if cnf {
			c.Cnf = &delegation.Confirmation{X5tS256: "x"}
		}
		return c
	}
	chain := []*delegation.Claims{hop("p1", 1, "", false), hop("c2", 2, "plan <b>", true)}
	for _, tc := range []struct {
		name  string
		proof [][]byte
		chain []*delegation.Claims
	}{
		{"no proof", nil, chain[:1]},
		{"empty proof", [][]byte{}, chain},
		{"proof", [][]byte{bytes.Repeat([]byte{0xfb}, 32), bytes.Repeat([]byte{0x01}, 32), {0xff, 0xfe}}, chain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ans := &authority.DelegateAnswer{ID: "0123abcd", Token: "eyJ.eyJ.sig", ExpiresAt: time.Date(2026, 1, 1, 1, 0, 0, 0, time.FixedZone("x", 3600)),
				Chain: tc.chain, Receipt: audit.Receipt{Index: 41, LeafHash: []byte{0xde, 0xad}, TreeSize: 42,
					Checkpoint: []byte("org-a.example/log\n42\nabc=\n\n\u2014 org-a.example sig<>&\n"), InclusionProof: tc.proof}}
			// As the answer was written before, from maps.
			proof := make([]string, len(ans.Receipt.InclusionProof))
			for i, h := range ans.Receipt.InclusionProof {
				proof[i] = base64.StdEncoding.EncodeToString(h)
			}
			want := httptest.NewRecorder()
			writeJSON(want, http.StatusCreated, map[string]any{
				"id": ans.ID, "token": ans.Token, "expires_at": ans.ExpiresAt.UTC(), "chain": delegation.ViewsOf(ans.Chain),
				"receipt": map[string]any{"index": ans.Receipt.Index, "leaf_hash": hexOf(ans.Receipt.LeafHash), "tree_size": ans.Receipt.TreeSize,
					"checkpoint": string(ans.Receipt.Checkpoint), "inclusion_proof": proof},
			})
			got := httptest.NewRecorder()
			writeJSON(got, http.StatusCreated, delegationAnswerOf(ans))
			if !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
				t.Fatalf("answer\n%s\nwant\n%s", got.Body, want.Body)
			}
			if got.Header().Get("Content-Length") != want.Header().Get("Content-Length") || got.Code != want.Code {
				t.Fatalf("headers %v %d, want %v %d", got.Header(), got.Code, want.Header(), want.Code)
			}
		})
	}
}
