package ca_test

import (
	"context"
	"crypto/elliptic"
	"errors"
	"testing"
	"time"

	"mandate.dev/mandate/ca"
)

// TestMintX509SVIDAfterClockSteppedBack steps the clock back after the
// CA was made. An SVID is never dated before its CA (relying parties
// would refuse the chain then), so it is shortened; one that would be
// valid at no instant (NotBefore after NotAfter: the clock went back by
// its whole lifetime) is refused, not handed out.
func TestMintX509SVIDAfterClockSteppedBack(t *testing.T) {
	tests := []struct {
		name    string
		back    time.Duration
		ttl     time.Duration
		refused bool
	}{
		{"within the backdate", 5 * time.Second, time.Hour, false},
		{"less than the lifetime", 30 * time.Minute, time.Hour, false},
		{"the whole lifetime", time.Hour + 10*time.Second, time.Hour, true},
		{"a day", 24 * time.Hour, time.Hour, true},
		{"a day, a longer lifetime", 24 * time.Hour, 23 * time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock(testStart)
			c, _ := newTestCA(t, func(cfg *ca.Config) { cfg.Now = clk.Now })
			caStart := c.Status()[0].NotBefore
			clk.Add(-tt.back)
			key := ecKey(t, elliptic.P256())
			svid, err := c.MintX509SVID(context.Background(), ca.X509Params{ID: testID, PublicKey: key.Public(), TTL: tt.ttl})
			if tt.refused {
				if !errors.Is(err, ca.ErrAuthorityNotYetValid) {
					leaf := svid.Certificates[0]
					t.Fatalf("MintX509SVID = valid %s to %s, err %v; want ErrAuthorityNotYetValid", leaf.NotBefore, leaf.NotAfter, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("MintX509SVID: %v", err)
			}
			leaf := svid.Certificates[0]
			if !leaf.NotBefore.Before(leaf.NotAfter) || leaf.NotBefore.Before(caStart) {
				t.Errorf("SVID valid %s to %s, its CA from %s", leaf.NotBefore, leaf.NotAfter, caStart)
			}
		})
	}
}
