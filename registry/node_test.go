package registry_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt/bolttest"
)

const nodeA = "spiffe://example.org/node/join/aaaa"

func putNode(t *testing.T, s store.Store, n *registry.Node) {
	t.Helper()
	if err := update(t, s, func(tx store.Tx) error { return registry.PutNode(tx, n) }); err != nil {
		t.Fatalf("PutNode(%s): %v", n.SPIFFEID, err)
	}
}

func getNode(t *testing.T, s store.Store, id string) *registry.Node {
	t.Helper()
	var n *registry.Node
	view(t, s, func(tx store.Tx) error {
		var err error
		n, err = registry.GetNode(tx, id)
		if err != nil {
			t.Fatalf("GetNode(%s): %v", id, err)
		}
		return nil
	})
	return n
}

func TestPutGetNode(t *testing.T) {
	s := bolttest.Open(t)
	at := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)
	putNode(t, s, &registry.Node{
		SPIFFEID: nodeA, AttestationMethod: "join", Level: registry.LevelToken,
		Selectors: []string{"level:token", "attestation:join", "level:token"}, AttestedAt: at,
		SVIDSerial: "ab", SVIDExpiresAt: at.Add(time.Hour),
	})
	n := getNode(t, s, nodeA)
	if n.AttestationMethod != "join" || n.Level != registry.LevelToken || n.SVIDSerial != "ab" ||
		!n.AttestedAt.Equal(at) || !n.SVIDExpiresAt.Equal(at.Add(time.Hour)) || n.Banned {
		t.Errorf("GetNode = %+v", n)
	}
	if want := []string{"attestation:join", "level:token"}; !slices.Equal(n.Selectors, want) {
		t.Errorf("selectors = %q, want %q (sorted, deduplicated)", n.Selectors, want)
	}
	view(t, s, func(tx store.Tx) error {
		if _, err := registry.GetNode(tx, "spiffe://example.org/node/join/none"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("GetNode(unknown) = %v, want ErrNotFound", err)
		}
		return nil
	})
}

func TestListNodesOrdered(t *testing.T) {
	s := bolttest.Open(t)
	ids := []string{"spiffe://example.org/node/c", "spiffe://example.org/node/a", "spiffe://example.org/node/b"}
	for _, id := range ids {
		putNode(t, s, &registry.Node{SPIFFEID: id})
	}
	view(t, s, func(tx store.Tx) error {
		nodes, err := registry.ListNodes(tx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, n := range nodes {
			got = append(got, n.SPIFFEID)
		}
		want := slices.Sorted(slices.Values(ids))
		if !slices.Equal(got, want) {
			t.Errorf("ListNodes = %q, want %q", got, want)
		}
		return nil
	})
}

func TestBanNode(t *testing.T) {
	s := bolttest.Open(t)
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	putNode(t, s, &registry.Node{SPIFFEID: nodeA, AttestedAt: t0})

	ban := func(reason string, at time.Time) (*registry.Node, bool, error) {
		var n *registry.Node
		var banned bool
		err := update(t, s, func(tx store.Tx) error {
			var err error
			n, banned, err = registry.BanNode(tx, nodeA, reason, at)
			return err
		})
		return n, banned, err
	}

	t1 := t0.Add(time.Hour)
	n, banned, err := ban("compromised", t1)
	if err != nil {
		t.Fatalf("BanNode: %v", err)
	}
	if !banned || !n.Banned || n.BanReason != "compromised" || !n.BannedAt.Equal(t1) {
		t.Errorf("BanNode returned %+v, banned %v", n, banned)
	}

	// A second ban keeps the first one, and says it banned nothing.
	n, banned, err = ban("again", t1.Add(time.Hour))
	if err != nil {
		t.Fatalf("BanNode(again): %v", err)
	}
	if banned || n.BanReason != "compromised" || !n.BannedAt.Equal(t1) {
		t.Errorf("second BanNode = %+v, banned %v; want the first ban kept", n, banned)
	}
	if got := getNode(t, s, nodeA); got.BanReason != "compromised" || !got.BannedAt.Equal(t1) {
		t.Errorf("stored node after second ban = %+v", got)
	}

	err = update(t, s, func(tx store.Tx) error {
		_, _, err := registry.BanNode(tx, "spiffe://example.org/node/unknown", "x", t1)
		return err
	})
	if !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("BanNode(unknown) = %v, want ErrNotFound", err)
	}
}

func TestPutNodeKeepsBan(t *testing.T) {
	s := bolttest.Open(t)
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	putNode(t, s, &registry.Node{SPIFFEID: nodeA, AttestedAt: t0})
	if err := update(t, s, func(tx store.Tx) error {
		_, _, err := registry.BanNode(tx, nodeA, "stolen", t0.Add(time.Minute))
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// Re-attestation writes a fresh, unbanned record.
	re := &registry.Node{SPIFFEID: nodeA, AttestedAt: t0.Add(time.Hour), SVIDSerial: "new"}
	putNode(t, s, re)
	if !re.Banned {
		t.Errorf("PutNode did not mark the caller's record banned")
	}
	got := getNode(t, s, nodeA)
	if !got.Banned || got.BanReason != "stolen" || !got.BannedAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("after re-attestation node = %+v, want ban kept", got)
	}
	if got.SVIDSerial != "new" || !got.AttestedAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("after re-attestation node = %+v, want the new attestation stored", got)
	}

	// An unbanned node stays unbanned on re-put.
	const nodeB = "spiffe://example.org/node/join/bbbb"
	putNode(t, s, &registry.Node{SPIFFEID: nodeB})
	putNode(t, s, &registry.Node{SPIFFEID: nodeB, SVIDSerial: "2"})
	if got := getNode(t, s, nodeB); got.Banned || got.SVIDSerial != "2" {
		t.Errorf("node B = %+v, want unbanned with serial 2", got)
	}
}

// Evicting a node removes its record; a banned node's only when its ban
// is lifted with it, and then a record put again is not banned.
func TestEvictNode(t *testing.T) {
	s := bolttest.Open(t)
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	const nodeB = "spiffe://example.org/node/join/bbbb"
	putNode(t, s, &registry.Node{SPIFFEID: nodeA, AttestedAt: t0, SVIDSerial: "1"})
	putNode(t, s, &registry.Node{SPIFFEID: nodeB, AttestedAt: t0})
	evict := func(id string, liftBan bool) (*registry.Node, error) {
		var n *registry.Node
		err := update(t, s, func(tx store.Tx) error {
			var err error
			n, err = registry.EvictNode(tx, id, liftBan)
			return err
		})
		return n, err
	}
	absent := func(id string) bool {
		var err error
		view(t, s, func(tx store.Tx) error { _, err = registry.GetNode(tx, id); return nil })
		return errors.Is(err, registry.ErrNotFound)
	}

	if n, err := evict(nodeA, false); err != nil || n.SVIDSerial != "1" || !absent(nodeA) {
		t.Fatalf("EvictNode(%s) = %+v, %v; want the record returned and gone", nodeA, n, err)
	}
	if _, err := evict(nodeA, false); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("EvictNode(evicted) = %v, want ErrNotFound", err)
	}

	if err := update(t, s, func(tx store.Tx) error {
		_, _, err := registry.BanNode(tx, nodeB, "stolen", t0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := evict(nodeB, false); !errors.Is(err, registry.ErrBanStands) || errors.Is(err, registry.ErrBanned) || absent(nodeB) {
		t.Fatalf("EvictNode(banned) = %v (record gone: %v), want ErrBanStands and the record kept", err, absent(nodeB))
	}
	if n, err := evict(nodeB, true); err != nil || !n.Banned || !absent(nodeB) {
		t.Fatalf("EvictNode(banned, lift the ban) = %+v, %v; want the banned record returned and gone", n, err)
	}
	re := &registry.Node{SPIFFEID: nodeB, AttestedAt: t0.Add(time.Hour)}
	putNode(t, s, re)
	if got := getNode(t, s, nodeB); got.Banned || re.Banned {
		t.Errorf("node attested again after its ban was lifted = %+v, want it unbanned", got)
	}
}

func TestCheckHosting(t *testing.T) {
	const nodeB = "spiffe://example.org/node/join/bbbb"
	agent := func(nodes, sels []string) *registry.Agent {
		return &registry.Agent{SPIFFEID: "spiffe://example.org/agent/bot", NodeIDs: nodes, Selectors: sels}
	}
	tests := []struct {
		name    string
		agent   *registry.Agent
		node    *registry.Node
		wantErr error
	}{
		{"listed node", agent([]string{nodeB, nodeA}, nil), &registry.Node{SPIFFEID: nodeA}, nil},
		{"listed node, selectors not carried", agent([]string{nodeA}, []string{"x:1"}), &registry.Node{SPIFFEID: nodeA}, nil},
		{"selectors exact", agent(nil, []string{"a:1", "b:2"}), &registry.Node{SPIFFEID: nodeA, Selectors: []string{"a:1", "b:2"}}, nil},
		{"selectors subset of node's", agent(nil, []string{"b:2"}), &registry.Node{SPIFFEID: nodeA, Selectors: []string{"a:1", "b:2", "c:3"}}, nil},
		{"missing selector", agent(nil, []string{"a:1", "d:4"}), &registry.Node{SPIFFEID: nodeA, Selectors: []string{"a:1", "b:2"}}, registry.ErrNotHosted},
		{"node without selectors", agent(nil, []string{"a:1"}), &registry.Node{SPIFFEID: nodeA}, registry.ErrNotHosted},
		{"no nodes, no selectors", agent(nil, nil), &registry.Node{SPIFFEID: nodeA, Selectors: []string{"a:1"}}, registry.ErrNotHosted},
		{"empty selectors do not match everything", agent([]string{}, []string{}), &registry.Node{SPIFFEID: nodeA, Selectors: []string{"a:1"}}, registry.ErrNotHosted},
		{"other node listed", agent([]string{nodeB}, nil), &registry.Node{SPIFFEID: nodeA}, registry.ErrNotHosted},
		{"banned listed node", agent([]string{nodeA}, nil), &registry.Node{SPIFFEID: nodeA, Banned: true}, registry.ErrBanned},
		{"banned selector match", agent(nil, []string{"a:1"}), &registry.Node{SPIFFEID: nodeA, Selectors: []string{"a:1"}, Banned: true}, registry.ErrBanned},
		{"banned no match", agent(nil, nil), &registry.Node{SPIFFEID: nodeA, Banned: true}, registry.ErrBanned},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := registry.CheckHosting(tt.agent, tt.node)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("CheckHosting = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("CheckHosting = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// A node's newest SVID time follows each issue forward, never back (a
// clock stepped back), also from a record written before it was kept,
// whose latest SVID's issue time is the newest then.
func TestIssuedSVIDAt(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 5, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		rec        registry.Node
		at         time.Time
		wantNewest time.Time
	}{
		{"first", registry.Node{}, t0, t0},
		{"later", registry.Node{SVIDIssuedAt: t0, NewestSVIDAt: t0}, t0.Add(time.Hour), t0.Add(time.Hour)},
		{"clock stepped back", registry.Node{SVIDIssuedAt: t0, NewestSVIDAt: t0.Add(time.Hour)}, t0.Add(time.Minute), t0.Add(time.Hour)},
		{"record without it, later", registry.Node{SVIDIssuedAt: t0}, t0.Add(time.Hour), t0.Add(time.Hour)},
		{"record without it, clock stepped back", registry.Node{SVIDIssuedAt: t0}, t0.Add(-time.Hour), t0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.rec
			n.IssuedSVIDAt(tc.at)
			if !n.SVIDIssuedAt.Equal(tc.at) || !n.NewestSVIDAt.Equal(tc.wantNewest) {
				t.Errorf("after IssuedSVIDAt(%v): svid_issued_at %v, newest_svid_at %v; want %v, %v",
					tc.at, n.SVIDIssuedAt, n.NewestSVIDAt, tc.at, tc.wantNewest)
			}
		})
	}
}
