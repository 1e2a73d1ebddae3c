package attest_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt/bolttest"
)

// Anonymous challenges share their EK's slots fairly between network
// sources: a flood from one source, or from fewer sources than there are
// slots, never evicts the device's challenge.
func TestAnonymousChallengesAreSharedBySource(t *testing.T) {
	const max = 2 // per source; 8 sources' worth in all: 16
	s := bolttest.Open(t)
	ctx := context.Background()
	ek := strings.Repeat("e", 64)
	now := time.Now()
	n := 0
	put := func(from string) *attest.TPMSession {
		t.Helper()
		n++
		ses := &attest.TPMSession{ID: fmt.Sprintf("%s%032x", ek[:16], n), EKHash: ek, From: from,
			CreatedAt: now.Add(time.Duration(n) * time.Millisecond), ExpiresAt: now.Add(time.Hour)}
		if err := s.Update(ctx, func(tx store.Tx) error { return attest.PutTPMSession(tx, ses, max) }); err != nil {
			t.Fatal(err)
		}
		return ses
	}
	open := func(ses *attest.TPMSession) bool {
		err := s.View(ctx, func(tx store.Tx) error {
			_, err := attest.GetTPMSession(tx, ses.ID, now)
			return err
		})
		if err != nil && !errors.Is(err, attest.ErrChallengeUnknown) {
			t.Fatal(err)
		}
		return err == nil
	}
	device := put("10.0.0.0/24")
	for range 100 { // one source floods
		put("192.0.2.0/24")
	}
	if !open(device) {
		t.Fatal("a flood from one source evicted the device's challenge")
	}
	// Thirteen more sources take a slot each: 16 open in all (the
	// device's, the flooder's 2, 13).
	for i := range 13 {
		put(fmt.Sprintf("198.51.%d.0/24", i))
	}
	// At the cap, the source holding the most (the flooder, 2) loses.
	newest := put("203.0.113.0/24")
	if !open(device) || !open(newest) {
		t.Fatalf("at the cap: device open %v, newest open %v; want both", open(device), open(newest))
	}
	// Every source holds one now: one asking again loses its own oldest.
	for i := range 13 {
		put(fmt.Sprintf("198.51.%d.0/24", i))
	}
	put("192.0.2.0/24")
	if !open(device) {
		t.Fatal("sources asking again at the cap evicted the device's challenge")
	}
	// A sixteenth attacker network, new, ties with every source, and the
	// oldest goes: as many networks as slots crowd the device out (the
	// documented limit).
	put("203.0.114.0/24")
	if open(device) {
		t.Error("the device's challenge survived sixteen attacker networks; the fairness rule changed")
	}
}

func TestSourcePrefix(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.77":           "192.0.2.0/24",
		"::ffff:192.0.2.77":    "192.0.2.0/24",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1::/48",
		"2001:db8:1:ffff::1":   "2001:db8:1::/48",
		"2001:db8:2:0:0:0:0:1": "2001:db8:2::/48",
		"127.0.0.1":            "127.0.0.0/24",
	} {
		if got := attest.SourcePrefix(netip.MustParseAddr(addr)); got != want {
			t.Errorf("SourcePrefix(%s) = %s, want %s", addr, got, want)
		}
	}
}

// A caller answering its own challenges at once (anyone may ask for a
// public EK, and answer with junk) keeps a bounded number of an EK's
// sessions stored: answered ones count too, and the oldest go.
func TestAnsweredChallengesAreBounded(t *testing.T) {
	const max = 2 // per source; 8 sources' worth open in all
	s := bolttest.Open(t)
	ctx := context.Background()
	ek := strings.Repeat("f", 64)
	now := time.Now()
	for n := range 500 {
		ses := &attest.TPMSession{ID: fmt.Sprintf("%s%032x", ek[:16], n), EKHash: ek, From: "192.0.2.0/24",
			CreatedAt: now.Add(time.Duration(n) * time.Millisecond), ExpiresAt: now.Add(time.Hour)}
		if err := s.Update(ctx, func(tx store.Tx) error {
			if err := attest.PutTPMSession(tx, ses, max); err != nil {
				return err
			}
			_, err := attest.ConsumeTPMSession(tx, ses.ID, ses.CreatedAt)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	stored := 0
	if err := s.View(ctx, func(tx store.Tx) error {
		return tx.Scan(attest.BucketTPMSessions, []byte(ek[:16]), nil, func(_, _ []byte) error { stored++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if stored > max*9 {
		t.Fatalf("%d sessions of one EK stored after 500 answered challenges, want at most %d", stored, max*9)
	}
}
