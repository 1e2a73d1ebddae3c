package client_test

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"

	"mandate.dev/mandate/client"
	"mandate.dev/mandate/registry"
)

// A node record read by the client and written again (as the CLI prints
// it) has the members the authority wrote, no more: a field the API
// leaves out until it is set (drifted, ban_reason, ...) is not printed
// empty.
func TestNodeKeepsTheAuthoritysMembers(t *testing.T) {
	now := time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC)
	for _, n := range []registry.Node{
		{SPIFFEID: "spiffe://org-a.example/node/join/0123456789abcdef", AttestationMethod: "join", Level: registry.LevelToken,
			Selectors: []string{"level:token"}, AttestedAt: now, SVIDSerial: "1f", SVIDExpiresAt: now.Add(time.Hour), SVIDIssuedAt: now, NewestSVIDAt: now},
		{SPIFFEID: "spiffe://org-a.example/node/tpm/ab", AttestationMethod: "tpm", Level: registry.LevelHardware, AttestedAt: now,
			SVIDSerial: "2f", PrevSVIDSerial: "1f", SVIDExpiresAt: now.Add(time.Hour), Drifted: true, DriftedAt: now, DriftReason: "PCR 7",
			Banned: true, BannedAt: now, BanReason: "stolen", TPM: &registry.TPMFacts{EKSHA256: "ab", PCRs: map[string]string{"7": "00"}}},
		{SPIFFEID: "spiffe://org-a.example/node/join/fedcba9876543210"},
	} {
		wrote, err := json.Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		var c client.Node
		if err := json.Unmarshal(wrote, &c); err != nil {
			t.Fatal(err)
		}
		printed, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var a, b map[string]any
		if err := json.Unmarshal(wrote, &a); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(printed, &b); err != nil {
			t.Fatal(err)
		}
		if ka, kb := slices.Sorted(maps.Keys(a)), slices.Sorted(maps.Keys(b)); !slices.Equal(ka, kb) {
			t.Errorf("node %s: the authority wrote %v, the client prints %v", n.SPIFFEID, ka, kb)
		}
	}
}
