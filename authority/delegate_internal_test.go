package authority

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt"
	"mandate.dev/mandate/store/bolt/bolttest"
)

// TestRecordBornRevoked: a revocation that commits while a hop below it
// is being issued (after the flow checked the chain, before the hop's
// record exists) cannot cascade to the record; the record is written
// revoked instead, whatever was revoked: a hop above issued here, the
// delegator, its host, the delegatee, or a party above; and so is one
// below another authority's hop that its issuer said was revoked
// meanwhile.
func TestRecordBornRevoked(t *testing.T) {
	const self = "spiffe://org-a.example"
	st := bolttest.Open(t)
	ctx := context.Background()
	now := time.Now()
	put := func(r *delegation.Record) {
		t.Helper()
		if err := st.Update(ctx, func(tx store.Tx) error { return delegation.Put(tx, r) }); err != nil {
			t.Fatal(err)
		}
	}
	root := &delegation.Record{ID: "root", Issuer: self, Delegator: self + "/agent/a", Delegatee: "spiffe://org-b.example/agent/b", ExpiresAt: now.Add(time.Hour)}
	put(root)
	hop := func() *delegation.Record {
		return &delegation.Record{ID: "new", Issuer: self, Delegator: self + "/agent/c", Delegatee: self + "/agent/d", DelegatorHost: self + "/node/n",
			Ancestors: []delegation.Ancestor{
				{ID: "root", Issuer: self, Delegator: self + "/agent/a", Delegatee: "spiffe://org-b.example/agent/b"},
				{ID: "mid", Issuer: "spiffe://org-b.example", Delegator: "spiffe://org-b.example/agent/b", Delegatee: self + "/agent/c"},
			}}
	}
	why := func() string {
		t.Helper()
		var out string
		if err := st.View(ctx, func(tx store.Tx) error {
			var err error
			out, err = revokedInTx(tx, self, hop())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if w := why(); w != "" {
		t.Fatalf("nothing revoked, yet %q", w)
	}
	revoke := func(do func(tx store.Tx) error) {
		t.Helper()
		if err := st.Update(ctx, do); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, id, want string
	}{
		{"the delegator's host", self + "/node/n", "node/n was revoked"},
		{"the delegatee", self + "/agent/d", "agent/d was revoked"},
		{"a party above (and so the hop above, issued here)", "spiffe://org-b.example/agent/b", "was revoked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			revoke(func(tx store.Tx) error {
				_, _, err := delegation.RevokeID(tx, tc.id, "admin", "test", now)
				return err
			})
			if w := why(); !strings.Contains(w, tc.want) {
				t.Fatalf("revokedInTx = %q, want %q", w, tc.want)
			}
			revoke(func(tx store.Tx) error { return tx.Delete(delegation.BucketRevokedIDs, []byte(tc.id)) })
			put(root) // unrevoked again (revoking a party revokes the root too)
		})
	}
	// Another authority's hop above, that its issuer said was revoked
	// (kept by keepPeerRevocation) after the flow asked it.
	mid := peerRevocationKey(hopRef{Issuer: "spiffe://org-b.example", ID: "mid"})
	revoke(func(tx store.Tx) error { return tx.Put(bucketPeerRevocations, mid, []byte(`{}`)) })
	if w := why(); !strings.Contains(w, "mid of spiffe://org-b.example above it was revoked") {
		t.Fatalf("below a hop its issuer said was revoked: %q", w)
	}
	revoke(func(tx store.Tx) error { return tx.Delete(bucketPeerRevocations, mid) })
	revoke(func(tx store.Tx) error {
		_, _, err := delegation.Revoke(tx, "root", "admin", "test", now)
		return err
	})
	if w := why(); !strings.Contains(w, "root above it was revoked") {
		t.Fatalf("below a revoked hop issued here: %q", w)
	}
}

// ids drops a revocation's more flag.
func ids(ids []string, _ bool, err error) ([]string, error) { return ids, err }

// TestRevokePreviewIsRevoke: what a revocation's entry lists (read before
// the commit) is what the commit revokes, for a delegation and for a
// SPIFFE ID, and a preview changes nothing.
func TestRevokePreviewIsRevoke(t *testing.T) {
	const self = "spiffe://org-a.example"
	st := bolttest.Open(t)
	ctx := context.Background()
	now := time.Now()
	// root → a1 → a2, root → b1; x (another delegator), y below a1 by x's host.
	recs := []*delegation.Record{
		{ID: "root", Issuer: self, Delegator: self + "/agent/p", Delegatee: self + "/agent/q"},
		{ID: "a1", Issuer: self, ParentID: "root", ParentIssuer: self, Delegator: self + "/agent/q", Delegatee: self + "/agent/r"},
		{ID: "a2", Issuer: self, ParentID: "a1", ParentIssuer: self, Delegator: self + "/agent/r", Delegatee: self + "/agent/s"},
		{ID: "b1", Issuer: self, ParentID: "root", ParentIssuer: self, Delegator: self + "/agent/q", Delegatee: self + "/agent/t"},
		{ID: "x", Issuer: self, Delegator: self + "/agent/x", Delegatee: self + "/agent/r", DelegatorHost: self + "/node/n"},
	}
	for _, r := range recs {
		r.ExpiresAt = now.Add(time.Hour)
		if err := st.Update(ctx, func(tx store.Tx) error { return delegation.Put(tx, r) }); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name     string
		preview  func(tx store.Tx) ([]string, error)
		revoke   func(tx store.Tx) ([]string, error)
		expected []string
	}{
		{"a delegation", func(tx store.Tx) ([]string, error) { return ids(delegation.RevokePreview(tx, "a1", now)) },
			func(tx store.Tx) ([]string, error) { return ids(delegation.Revoke(tx, "a1", "admin", "test", now)) }, []string{"a1", "a2"}},
		{"an agent", func(tx store.Tx) ([]string, error) { return ids(delegation.RevokeIDPreview(tx, self+"/agent/q", now)) },
			func(tx store.Tx) ([]string, error) {
				return ids(delegation.RevokeID(tx, self+"/agent/q", "admin", "test", now))
			},
			[]string{"b1", "root"}},
		{"a node", func(tx store.Tx) ([]string, error) { return ids(delegation.RevokeIDPreview(tx, self+"/node/n", now)) },
			func(tx store.Tx) ([]string, error) {
				return ids(delegation.RevokeID(tx, self+"/node/n", "admin", "test", now))
			},
			[]string{"x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var preview, again, revoked []string
			if err := st.View(ctx, func(tx store.Tx) (err error) { preview, err = tc.preview(tx); return }); err != nil {
				t.Fatal(err)
			}
			if err := st.View(ctx, func(tx store.Tx) (err error) { again, err = tc.preview(tx); return }); err != nil {
				t.Fatal(err)
			}
			if err := st.Update(ctx, func(tx store.Tx) (err error) { revoked, err = tc.revoke(tx); return }); err != nil {
				t.Fatal(err)
			}
			slices.Sort(preview)
			slices.Sort(again)
			slices.Sort(revoked)
			if !slices.Equal(preview, tc.expected) || !slices.Equal(again, preview) || !slices.Equal(revoked, preview) {
				t.Fatalf("preview %v (again %v), revoked %v, want %v", preview, again, revoked, tc.expected)
			}
		})
	}
}

// TestStatusFindsRevokedParties: a hop whose record a cascade did not
// mark (it stopped at its bound) but whose delegator is revoked here is
// answered revoked, and marked so then.
func TestStatusFindsRevokedParties(t *testing.T) {
	a := startAuthority(t)
	ctx := t.Context()
	self := a.td.IDString()
	rec := &delegation.Record{ID: "h1", Issuer: self, Delegator: self + "/agent/m", Delegatee: self + "/agent/w", ExpiresAt: time.Now().Add(time.Hour)}
	if err := a.store.Update(ctx, func(tx store.Tx) error { return delegation.Put(tx, rec) }); err != nil {
		t.Fatal(err)
	}
	if _, status, err := a.DelegationStatus(ctx, "h1"); err != nil || status != delegation.StatusActive {
		t.Fatalf("DelegationStatus = %q, %v; want active", status, err)
	}
	if err := a.store.Update(ctx, func(tx store.Tx) error {
		return tx.Put(delegation.BucketRevokedIDs, []byte(self+"/agent/m"), []byte(`{}`))
	}); err != nil {
		t.Fatal(err)
	}
	got, status, err := a.DelegationStatus(ctx, "h1")
	if err != nil || status != delegation.StatusRevoked || !strings.Contains(got.Reason, "agent/m was revoked") {
		t.Fatalf("DelegationStatus = %q (%+v), %v; want revoked, its delegator named", status, got, err)
	}
}

// startAuthority is a running authority of org-a.example in a temporary
// directory, stopped when the test ends.
func startAuthority(t testing.TB) *Authority {
	a, _ := runAuthority(t)
	return a
}

// runAuthority is startAuthority, and a stop that ends its Run (its
// audit log among it) before the test ends, the store left open.
func runAuthority(t testing.TB) (*Authority, func()) {
	t.Helper()
	return runAuthorityWith(t, Options{})
}

// runSkewedAuthority is runAuthority with a clock the test moves on:
// the time now, plus skew.
func runSkewedAuthority(t testing.TB) (a *Authority, stop func(), skew *atomic.Int64) {
	t.Helper()
	skew = new(atomic.Int64)
	a, stop = runAuthorityWith(t, Options{Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	return a, stop, skew
}

// runAuthorityWith is runAuthority with opts (a clock), and its config
// changed by mutate.
func runAuthorityWith(t testing.TB, opts Options, mutate ...func(*Config)) (*Authority, func()) {
	t.Helper()
	cfg := Config{TrustDomain: "org-a.example", DataDir: t.TempDir(), Listen: "127.0.0.1:0"}
	for _, m := range mutate {
		m(&cfg)
	}
	cfg.SetDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := New(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	// Run has begun (what the CA changes from now on is logged with it)
	// before the test goes on: a test's change made before would be
	// stored without its entry.
	for !a.running.Load() {
		select {
		case err := <-done:
			t.Fatalf("Run() = %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(func() { stop(); a.Close() })
	return a, stop
}

// TestNodeRevocationLeftBehind: a hop made on a revoked node that the
// node's cascade did not mark (it stopped at its bound) is not extended,
// and a hop below it is answered revoked.
func TestNodeRevocationLeftBehind(t *testing.T) {
	a := startAuthority(t)
	ctx := t.Context()
	self := a.td.IDString()
	node := self + "/node/n"
	h1 := &delegation.Record{ID: "h1", Issuer: self, Delegator: self + "/agent/m", Delegatee: self + "/agent/w", DelegatorHost: node, ExpiresAt: time.Now().Add(time.Hour)}
	h2 := &delegation.Record{ID: "h2", Issuer: self, ParentID: "h1", ParentIssuer: self, Delegator: self + "/agent/w", Delegatee: self + "/agent/z",
		DelegatorHost: self + "/node/other", ExpiresAt: time.Now().Add(time.Hour),
		Ancestors: []delegation.Ancestor{{ID: "h1", Issuer: self, Delegator: self + "/agent/m", Delegatee: self + "/agent/w"}}}
	if err := a.store.Update(ctx, func(tx store.Tx) error {
		if err := delegation.Put(tx, h1); err != nil {
			return err
		}
		if err := delegation.Put(tx, h2); err != nil {
			return err
		}
		return tx.Put(delegation.BucketRevokedIDs, []byte(node), []byte(`{}`))
	}); err != nil {
		t.Fatal(err)
	}
	chain := []*delegation.Claims{{Issuer: self, ID: "h1", Hop: delegation.Hop{Delegator: self + "/agent/m", Delegatee: self + "/agent/w"}}}
	revoked, err := a.chainRevocations(ctx, chain, self+"/agent/w", self+"/agent/z", self+"/node/other")
	if err != nil || !revoked[hopRef{Issuer: self, ID: "h1"}.key()] {
		t.Fatalf("chainRevocations = %v, %v; want h1 revoked (made on the revoked node)", revoked, err)
	}
	if rec, status, err := a.DelegationStatus(ctx, "h2"); err != nil || status != delegation.StatusRevoked || !strings.Contains(rec.Reason, "node/n") {
		t.Fatalf("DelegationStatus(h2) = %q (%+v), %v; want revoked, naming the node", status, rec, err)
	}
}

// TestStatusOfAHopBelowAMissingRecord: a hop whose hop above, issued
// here, has no record here is not answered active.
func TestStatusOfAHopBelowAMissingRecord(t *testing.T) {
	a := startAuthority(t)
	self := a.td.IDString()
	rec := &delegation.Record{ID: "h2", Issuer: self, ParentID: "gone", ParentIssuer: self, Delegator: self + "/agent/w", Delegatee: self + "/agent/z",
		ExpiresAt: time.Now().Add(time.Hour), Ancestors: []delegation.Ancestor{{ID: "gone", Issuer: self, Delegator: self + "/agent/m", Delegatee: self + "/agent/w"}}}
	if err := a.store.Update(t.Context(), func(tx store.Tx) error { return delegation.Put(tx, rec) }); err != nil {
		t.Fatal(err)
	}
	if _, status, err := a.DelegationStatus(t.Context(), "h2"); err == nil {
		t.Fatalf("DelegationStatus = %q, want an error", status)
	}
}

// TestSharedCheckSurvivesAPanic: a panic in work shared by status
// callers is their error, not the end of the process.
func TestSharedCheckSurvivesAPanic(t *testing.T) {
	var c remoteStatuses
	_, err := c.shared(t.Context(), "k", time.Second, func(context.Context) (any, error) { panic("boom") })
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("shared = %v, want the panic as an error", err)
	}
}

// TestSharedWorkEndsWithTheAuthority: work shared by status callers,
// which runs detached from them, ends when the authority closes.
func TestSharedWorkEndsWithTheAuthority(t *testing.T) {
	a := startAuthority(t)
	started, ended := make(chan struct{}), make(chan error, 1)
	go func() {
		_, err := a.remote.shared(context.Background(), "k", time.Hour, func(ctx context.Context) (any, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		})
		ended <- err
	}()
	<-started
	a.remote.end() // as Close does
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("shared = %v, want canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shared work outlived the authority")
	}
}

// TestOldDataDirIndexedByParty: the delegations a data directory kept
// before the party index are indexed when the authority starts, so that
// revoking an agent reads its own hops.
func TestOldDataDirIndexedByParty(t *testing.T) {
	const self = "spiffe://org-a.example"
	dir := t.TempDir()
	st, err := bolt.Open(filepath.Join(dir, "mandate.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	old := delegation.Record{ID: "old", Issuer: self, Delegator: self + "/agent/a", Delegatee: self + "/agent/b", ExpiresAt: time.Now().Add(time.Hour)}
	b, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update(t.Context(), func(tx store.Tx) error { return tx.Put(delegation.BucketDelegations, []byte(old.ID), b) }); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	cfg := Config{TrustDomain: "org-a.example", DataDir: dir, Listen: "127.0.0.1:0"}
	cfg.SetDefaults()
	a, err := New(t.Context(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.store.View(t.Context(), func(tx store.Tx) error {
		if ok, err := delegation.PartiesIndexed(tx); !ok || err != nil {
			t.Errorf("PartiesIndexed = %v, %v; want true", ok, err)
		}
		ids, _, err := delegation.RevokeIDPreview(tx, self+"/agent/b", time.Now())
		if err != nil || !slices.Equal(ids, []string{"old"}) {
			t.Errorf("RevokeIDPreview = %v, %v; want [old]", ids, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestOldDataDirIndexesItsSVIDs: a data directory whose log recorded
// X509-SVIDs before the serial index existed has them indexed at its next
// start, so that an SVID issued before still signs delegations.
func TestOldDataDirIndexesItsSVIDs(t *testing.T) {
	dir := t.TempDir()
	a, stop := runAuthorityWith(t, Options{}, func(c *Config) { c.DataDir = dir })
	if err := a.WriteAdminCredential(t.Context(), true); err != nil { // an svid.issued entry
		t.Fatal(err)
	}
	stop()
	want := map[string]uint64{}
	if err := a.store.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.Scan(bucketSVIDSerials, nil, nil, func(k, v []byte) error {
			want[string(k)] = binary.BigEndian.Uint64(v)
			return nil
		}); err != nil {
			return err
		}
		// What an older build left: no index, no mark.
		for k := range want {
			if err := tx.Delete(bucketSVIDSerials, []byte(k)); err != nil {
				return err
			}
		}
		return tx.Delete(bucketSVIDMeta, keySVIDsIndexed)
	}); err != nil {
		t.Fatal(err)
	}
	if len(want) == 0 {
		t.Fatal("the first start logged no X509-SVID")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	b, _ := runAuthorityWith(t, Options{}, func(c *Config) { c.DataDir = dir })
	if err := b.store.View(t.Context(), func(tx store.Tx) error {
		for serial, index := range want {
			if got, err := svidEntryIndex(tx, serial); err != nil || got != index {
				t.Errorf("svidEntryIndex(%s) = %d, %v; want %d", serial, got, err, index)
			}
		}
		if _, err := tx.Get(bucketSVIDMeta, keySVIDsIndexed); err != nil {
			t.Errorf("mark: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
