package authority

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"mandate.dev/mandate/delegation"
)

// TestRemoteStatusesKeepFinalAnswers: an issuer's answer that a hop no
// longer holds (revoked, expired) is recalled whenever it was given, and
// no other answer replaces it, an answer asked for later included; one
// that still holds (or a failure) is recalled only while it is young,
// and an older one does not replace a younger one.
func TestRemoteStatusesKeepFinalAnswers(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	active := remoteHop{Status: delegation.StatusActive, LogIndex: 1, LeafHash: "ab"}
	revoked := remoteHop{Status: delegation.StatusRevoked}
	expired := remoteHop{Status: delegation.StatusExpired}
	failed := errors.New("unreachable")
	type put struct {
		h   remoteHop
		err error
		at  time.Duration // after t0
	}
	for _, tc := range []struct {
		name      string
		puts      []put
		now       time.Duration // after t0
		want      string        // the status recalled by get ("" none, "error")
		wantFinal bool
	}{
		{"active, young", []put{{active, nil, 0}}, 3 * time.Second, delegation.StatusActive, false},
		{"active, old", []put{{active, nil, 0}}, time.Minute, "", false},
		{"failure, young", []put{{remoteHop{}, failed, 0}}, time.Second, "error", false},
		{"failure, old", []put{{remoteHop{}, failed, 0}}, time.Minute, "", false},
		{"revoked, long ago", []put{{revoked, nil, 0}}, 24 * time.Hour, delegation.StatusRevoked, true},
		{"expired, long ago", []put{{expired, nil, 0}}, 24 * time.Hour, delegation.StatusExpired, true},
		{"revoked, then active asked later", []put{{revoked, nil, 0}, {active, nil, time.Second}}, 2 * time.Second, delegation.StatusRevoked, true},
		{"active asked later, then revoked", []put{{active, nil, time.Second}, {revoked, nil, 0}}, 2 * time.Second, delegation.StatusRevoked, true},
		{"revoked, then a failure", []put{{revoked, nil, 0}, {remoteHop{}, failed, time.Second}}, 2 * time.Second, delegation.StatusRevoked, true},
		{"revoked, the clock set back", []put{{revoked, nil, time.Hour}}, 0, delegation.StatusRevoked, true},
		{"active asked later, then an older active", []put{{active, nil, 4 * time.Second}, {active, nil, 0}}, 8 * time.Second, delegation.StatusActive, false},
		{"failure asked later, then an older active", []put{{remoteHop{}, failed, time.Second}, {active, nil, 0}}, 2 * time.Second, "error", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c remoteStatuses
			r := hopRef{Issuer: "spiffe://org-b.example", ID: "d1"}
			for _, p := range tc.puts {
				c.put(r, p.h, p.err, t0.Add(p.at))
			}
			h, err, ok := c.get(r, t0.Add(tc.now), remoteStatusTTL)
			got := ""
			switch {
			case ok && err != nil:
				got = "error"
			case ok:
				got = h.Status
			}
			if got != tc.want {
				t.Errorf("get = %q (%v), want %q", got, err, tc.want)
			}
			if f, ok := c.final(r); ok != tc.wantFinal || ok && f.Status != tc.want {
				t.Errorf("final = %+v, %v; want final %v", f, ok, tc.wantFinal)
			}
		})
	}
}

// TestRemoteStatusesKeepFinalAnswersWhenFull: when the memory is full,
// what it forgets is never a final answer (up to half of it).
func TestRemoteStatusesKeepFinalAnswersWhenFull(t *testing.T) {
	var c remoteStatuses
	t0 := time.Unix(1_800_000_000, 0)
	gone := hopRef{Issuer: "spiffe://org-b.example", ID: "revoked"}
	c.put(gone, remoteHop{Status: delegation.StatusRevoked}, nil, t0)
	for i := range maxRemoteStatuses + 1 {
		c.put(hopRef{Issuer: "spiffe://org-b.example", ID: fmt.Sprint(i)}, remoteHop{Status: delegation.StatusActive}, nil, t0)
	}
	if len(c.m) > maxRemoteStatuses {
		t.Fatalf("%d answers remembered, more than %d", len(c.m), maxRemoteStatuses)
	}
	if h, ok := c.final(gone); !ok || h.Status != delegation.StatusRevoked {
		t.Fatalf("the revocation was forgotten when the memory was full: %+v %v", h, ok)
	}
}
