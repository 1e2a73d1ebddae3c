package attest_test

import (
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/attest"
)

// IsNodeID takes the node IDs attestation makes, spelt as it spells
// them, and nothing else.
func TestIsNodeID(t *testing.T) {
	_, tok, err := attest.NewJoinToken(time.Now(), time.Minute, "admin")
	if err != nil {
		t.Fatal(err)
	}
	joined, err := tok.NodeID(td)
	if err != nil {
		t.Fatal(err)
	}
	ekHash := strings.Repeat("0123456789abcdef", 4)
	for _, c := range []struct {
		id   string
		want bool
	}{
		{joined.String(), true},
		{"spiffe://example.org/node/tpm/" + ekHash, true},
		{"spiffe://example.org/node/join/" + strings.ToUpper(tok.ID), false},
		{"spiffe://example.org/node/tpm/" + strings.ToUpper(ekHash), false},
		{"spiffe://example.org/node/tpm/" + ekHash[:63], false},
		{"spiffe://example.org/node/tpm/" + ekHash + "0", false},
		{"spiffe://example.org/node/tpm/" + ekHash + "/x", false},
		{joined.String() + "/x", false},
		{"spiffe://example.org/node/join", false},
		{"spiffe://example.org/node/x", false},
		{"spiffe://example.org/agent/join/" + tok.ID, false},
		{"spiffe://other.example/node/join/" + tok.ID, false},
	} {
		if got := attest.IsNodeID(td, spiffeid.RequireFromString(c.id)); got != c.want {
			t.Errorf("IsNodeID(%s) = %v, want %v", c.id, got, c.want)
		}
	}
}
