package authority

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/store"
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

// TestPeerRevocationsKept: a revocation an issuer told is kept in the
// store until its hop has expired (the latest expiry known of it), an
// expired answer is not kept, and pruning forgets only what has expired
// (an unreadable entry is kept: forgetting is the unsafe way).
func TestPeerRevocationsKept(t *testing.T) {
	a, _, skew := runSkewedAuthority(t)
	ctx := context.Background()
	t0 := a.now()
	hop := func(id string) hopRef { return hopRef{Issuer: "spiffe://org-b.example", ID: id} }
	revoked := remoteHop{Status: delegation.StatusRevoked}
	a.keepPeerRevocation(ctx, askedHop{hop("short"), t0.Add(time.Minute)}, revoked)
	a.keepPeerRevocation(ctx, askedHop{hop("extended"), t0.Add(time.Minute)}, revoked)
	a.keepPeerRevocation(ctx, askedHop{hop("extended"), t0.Add(3 * time.Hour)}, revoked)
	a.keepPeerRevocation(ctx, askedHop{hop("extended"), t0.Add(2 * time.Minute)}, revoked) // not shortened
	a.keepPeerRevocation(ctx, askedHop{hop("expired"), t0.Add(time.Minute)}, remoteHop{Status: delegation.StatusExpired})
	if err := a.store.Update(ctx, func(tx store.Tx) error {
		return tx.Put(bucketPeerRevocations, peerRevocationKey(hop("unreadable")), []byte("{"))
	}); err != nil {
		t.Fatal(err)
	}
	kept := func() map[string]bool {
		t.Helper()
		out := map[string]bool{}
		for _, id := range []string{"short", "extended", "expired", "unreadable"} {
			ok, err := a.peerRevoked(ctx, hop(id))
			if err != nil {
				t.Fatal(err)
			}
			out[id] = ok
		}
		return out
	}
	want := map[string]bool{"short": true, "extended": true, "expired": false, "unreadable": true}
	if got := kept(); !maps.Equal(got, want) {
		t.Fatalf("kept = %v, want %v", got, want)
	}
	a.prunePeerRevocations(ctx) // nothing has expired
	if got := kept(); !maps.Equal(got, want) {
		t.Fatalf("after pruning before any expiry: kept = %v, want %v", got, want)
	}
	skew.Store(int64(2 * time.Hour)) // "short" expired over an hour ago
	a.prunePeerRevocations(ctx)
	want["short"] = false
	if got := kept(); !maps.Equal(got, want) {
		t.Fatalf("after pruning past the first expiry: kept = %v, want %v", got, want)
	}
	skew.Store(int64(5 * time.Hour))
	a.prunePeerRevocations(ctx)
	want["extended"] = false
	if got := kept(); !maps.Equal(got, want) {
		t.Fatalf("after pruning past every expiry: kept = %v, want %v", got, want)
	}
}

// TestPeerRevocationKeptAsLongAsAsked: a revocation first kept until a
// short expiry (learned for a hop of this authority's below it, whose
// expiry bounds nothing above) is kept until the later expiry of the
// hop itself once that is asked about, whether the revocation was then
// recalled from the store or from memory: pruning does not forget it
// while the hop's tokens still verify, and a restart then lets no
// issuer say "active" of it again.
func TestPeerRevocationKeptAsLongAsAsked(t *testing.T) {
	a, _, skew := runSkewedAuthority(t)
	ctx := context.Background()
	if err := a.store.Update(ctx, func(tx store.Tx) error {
		return putRecord(tx, bucketFederations, "org-b.example", &Federation{TrustDomain: "org-b.example",
			BundleEndpointURL: "https://127.0.0.1:1/bundle", Profile: "https_spiffe", EndpointSPIFFEID: "spiffe://org-b.example/mandate/server"})
	}); err != nil {
		t.Fatal(err)
	}
	t0 := a.now()
	revoked := remoteHop{Status: delegation.StatusRevoked}
	for _, tc := range []struct {
		name   string
		memory bool // the revocation is also remembered in memory
	}{{"recalled from the store", false}, {"recalled from memory", true}} {
		t.Run(tc.name, func(t *testing.T) {
			skew.Store(0)
			r := hopRef{Issuer: "spiffe://org-b.example", ID: "hop-" + strings.ReplaceAll(tc.name, " ", "-")}
			a.keepPeerRevocation(ctx, askedHop{r, t0.Add(time.Minute)}, revoked)
			if tc.memory {
				a.remote.put(r, revoked, nil, a.now())
			}
			// The hop itself, which expires in a day, is asked about (a
			// chain through it extended): it is known revoked, without
			// asking its issuer.
			got, err := a.remoteStatus(ctx, []askedHop{{r, t0.Add(24 * time.Hour)}}, 0)
			if err != nil || got[r].Status != delegation.StatusRevoked {
				t.Fatalf("remoteStatus = %v, %v; want revoked", got, err)
			}
			skew.Store(int64(3 * time.Hour)) // past the first expiry, long before the hop's
			a.prunePeerRevocations(ctx)
			if kept, err := a.peerRevoked(ctx, r); err != nil || !kept {
				t.Fatalf("after pruning, before the hop expired: kept = %v, %v; want kept", kept, err)
			}
			skew.Store(int64(26 * time.Hour))
			a.prunePeerRevocations(ctx)
			if kept, err := a.peerRevoked(ctx, r); err != nil || kept {
				t.Fatalf("after pruning past the hop's expiry: kept = %v, %v; want forgotten", kept, err)
			}
		})
	}
}

// TestFetchSlotsShareAmongPeers: one authority holds at most its share
// of the slots, the others get the rest, a request that gives up waiting
// holds none, and nothing is kept of an authority once its requests end.
func TestFetchSlotsShareAmongPeers(t *testing.T) {
	s := fetchSlots{all: make(chan struct{}, maxRemoteFetches)}
	gaveUp, cancel := context.WithCancel(context.Background())
	cancel()
	var releases []func()
	for _, step := range []struct {
		td      string
		n       int
		granted bool
	}{
		{"org-b.example", maxRemoteFetchesPerPeer, true},
		{"org-b.example", 1, false}, // beyond its share
		{"org-c.example", maxRemoteFetches - maxRemoteFetchesPerPeer, true},
		{"org-d.example", 1, false}, // every slot held
	} {
		for i := range step.n {
			ctx := context.Background()
			if !step.granted {
				ctx = gaveUp // it would wait
			}
			release, err := s.acquire(ctx, step.td)
			if (err == nil) != step.granted {
				t.Fatalf("%s's request %d with %d slots held: %v, want granted %v", step.td, i, len(s.all), err, step.granted)
			}
			if err == nil {
				releases = append(releases, release)
			}
		}
	}
	if len(s.all) != maxRemoteFetches {
		t.Fatalf("%d slots held, want all %d", len(s.all), maxRemoteFetches)
	}
	for _, release := range releases {
		release()
	}
	if len(s.all) != 0 || len(s.peers) != 0 {
		t.Fatalf("after every request ended: %d slots held, %d authorities kept", len(s.all), len(s.peers))
	}
}

// An issuer that cannot be reached is asked once per call, not once per
// hop of its in the chain: each ask would wait out the same timeout, and
// a chain of its hops would outlast the request's time. What is known
// of its hops here (a revocation kept) is still answered.
func TestUnreachableIssuerAskedOnce(t *testing.T) {
	a, _, _ := runSkewedAuthority(t)
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var dials atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dials.Add(1)
			c.Close() // down: no TLS handshake, no answer
		}
	}()
	if err := a.store.Update(ctx, func(tx store.Tx) error {
		return putRecord(tx, bucketFederations, "org-b.example", &Federation{TrustDomain: "org-b.example",
			BundleEndpointURL: "https://" + ln.Addr().String() + "/bundle", Profile: "https_spiffe", EndpointSPIFFEID: "spiffe://org-b.example/mandate/server"})
	}); err != nil {
		t.Fatal(err)
	}
	exp := a.now().Add(time.Hour)
	revoked := hopRef{Issuer: "spiffe://org-b.example", ID: "hop-revoked"}
	a.keepPeerRevocation(ctx, askedHop{revoked, exp}, remoteHop{Status: delegation.StatusRevoked})
	for _, maxAge := range []time.Duration{0, remoteStatusTTL} {
		dials.Store(0)
		var refs []askedHop
		for i := range 3 {
			refs = append(refs, askedHop{hopRef{Issuer: "spiffe://org-b.example", ID: fmt.Sprintf("hop-%d-%s", i, maxAge)}, exp})
		}
		refs = append(refs, askedHop{revoked, exp})
		got, err := a.remoteStatus(ctx, refs, maxAge)
		if !errors.Is(err, ErrStatusUnavailable) || got[revoked].Status != delegation.StatusRevoked {
			t.Errorf("maxAge %s: remoteStatus = %v, %v; want the kept revocation, and the issuer unavailable", maxAge, got, err)
		}
		if n := dials.Load(); n != 1 {
			t.Errorf("maxAge %s: the unreachable issuer was dialled %d times for three of its hops, want once", maxAge, n)
		}
	}
}
