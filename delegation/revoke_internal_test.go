package delegation

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt/bolttest"
)

// TestRevokeCascadeBounds: a cascade passes over hops already revoked or
// expired (and what is below them), so a tree of dead hops never makes a
// hop or its parties unrevocable; beyond its bound it marks what it may,
// says so, and still revokes the SPIFFE ID.
//
// It runs with the party index, and with the scan a data directory from
// before the index uses until it is indexed.
func TestRevokeCascadeBounds(t *testing.T) {
	for _, indexed := range []bool{true, false} {
		t.Run(map[bool]string{true: "party index", false: "scan"}[indexed], func(t *testing.T) {
			st := bolttest.Open(t)
			if indexed {
				indexParties(t, st)
			}
			testRevokeCascadeBounds(t, st)
		})
	}
}

// indexParties indexes st by party (a new authority's store is).
func indexParties(t *testing.T, st store.Store) {
	t.Helper()
	if err := st.Update(t.Context(), func(tx store.Tx) error { _, _, err := IndexParties(tx); return err }); err != nil {
		t.Fatalf("IndexParties: %v", err)
	}
}

func testRevokeCascadeBounds(t *testing.T, st store.Store) {
	const self = "spiffe://org-a.example"
	defer func(n int) { maxRevoke = n }(maxRevoke)
	maxRevoke = 3
	ctx := context.Background()
	now := time.Now()
	rec := func(id, parent string, exp time.Time, revoked bool) *Record {
		r := &Record{ID: id, Issuer: self, ParentID: parent, Delegator: self + "/agent/m", Delegatee: self + "/agent/w", ExpiresAt: exp}
		if parent != "" {
			r.ParentIssuer = self
			r.Ancestors = []Ancestor{{ID: "root", Issuer: self, Delegator: self + "/agent/a", Delegatee: self + "/agent/m"}}
		}
		if revoked {
			r.RevokedAt = now.Add(-time.Minute)
		}
		return r
	}
	recs := []*Record{{ID: "root", Issuer: self, Delegator: self + "/agent/a", Delegatee: self + "/agent/m", ExpiresAt: now.Add(time.Hour)}}
	for _, id := range []string{"e1", "e2", "e3", "e4"} {
		recs = append(recs, rec(id, "root", now.Add(-time.Second), false), rec(id+"-below", id, now.Add(-time.Second), false))
	}
	for _, id := range []string{"r1", "r2"} {
		recs = append(recs, rec(id, "root", now.Add(time.Hour), true), rec(id+"-below", id, now.Add(time.Hour), true))
	}
	recs = append(recs, rec("a1", "root", now.Add(time.Hour), false), rec("a2", "root", now.Add(time.Hour), false),
		rec("a3", "root", now.Add(time.Hour), false))
	if err := st.Update(ctx, func(tx store.Tx) error {
		for _, r := range recs {
			if err := Put(tx, r); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Preview and revocation agree; the dead hops are passed over, and
	// the bound stops the cascade, which says so.
	var preview []string
	var more bool
	if err := st.View(ctx, func(tx store.Tx) (err error) { preview, more, err = RevokePreview(tx, "root", now); return }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(preview, []string{"root", "a1", "a2"}) || !more {
		t.Fatalf("RevokePreview = %v, more %v; want [root a1 a2], more", preview, more)
	}
	var revoked []string
	if err := st.Update(ctx, func(tx store.Tx) (err error) { revoked, more, err = Revoke(tx, "root", "admin", "test", now); return }); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if !slices.Equal(revoked, preview) || !more {
		t.Fatalf("Revoke = %v, more %v; want %v, more", revoked, more, preview)
	}

	// The party of every hop here (m delegated them all) is revoked,
	// whatever the size of what it delegated; the rest of the cascade
	// goes on from where it is not revoked yet.
	if err := st.Update(ctx, func(tx store.Tx) (err error) {
		revoked, more, err = RevokeID(tx, self+"/agent/m", "admin", "test", now)
		return
	}); err != nil {
		t.Fatalf("RevokeID: %v", err)
	}
	if !slices.Equal(revoked, []string{"a3"}) || more {
		t.Fatalf("RevokeID = %v, more %v; want [a3]", revoked, more)
	}
	if err := st.View(ctx, func(tx store.Tx) error {
		if ok, err := IDRevoked(tx, self+"/agent/m"); !ok || err != nil {
			t.Errorf("IDRevoked = %v, %v; want true", ok, err)
		}
		for _, id := range []string{"e1", "e1-below"} {
			if r, err := Get(tx, id); err != nil || !r.RevokedAt.IsZero() || r.Status(now) != StatusExpired {
				t.Errorf("%s: %+v %v, want left expired", id, r, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A party above a hop (in its ancestors), and no party at all.
	if err := st.Update(ctx, func(tx store.Tx) (err error) {
		r := rec("under-a", "", now.Add(time.Hour), false)
		r.Delegator, r.Delegatee = self+"/agent/x", self+"/agent/y"
		r.Ancestors = []Ancestor{{ID: "far", Issuer: "spiffe://org-b.example", Delegator: "spiffe://org-b.example/agent/booker", Delegatee: self + "/agent/x"}}
		if err := Put(tx, r); err != nil {
			return err
		}
		if revoked, _, err = RevokeID(tx, "spiffe://org-b.example/agent/nobody", "admin", "test", now); err != nil || len(revoked) != 0 {
			t.Errorf("RevokeID of no party = %v, %v", revoked, err)
		}
		revoked, _, err = RevokeID(tx, "spiffe://org-b.example/agent/booker", "admin", "test", now)
		return
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(revoked, []string{"under-a"}) {
		t.Fatalf("RevokeID of a party above = %v, want [under-a]", revoked)
	}
}

// TestRevokeReadBound: a cascade stops after maxRevokeRead records,
// those it passes over included, and says so.
func TestRevokeReadBound(t *testing.T) {
	const self = "spiffe://org-a.example"
	defer func(n int) { maxRevokeRead = n }(maxRevokeRead)
	maxRevokeRead = 4
	st := bolttest.Open(t)
	now := time.Now()
	if err := st.Update(t.Context(), func(tx store.Tx) error {
		if err := Put(tx, &Record{ID: "root", Issuer: self, ExpiresAt: now.Add(time.Hour)}); err != nil {
			return err
		}
		for _, id := range []string{"e1", "e2", "e3", "e4", "e5"} {
			if err := Put(tx, &Record{ID: id, Issuer: self, ParentID: "root", ParentIssuer: self, ExpiresAt: now.Add(-time.Second)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.View(t.Context(), func(tx store.Tx) error {
		ids, more, err := RevokePreview(tx, "root", now)
		if err != nil || !slices.Equal(ids, []string{"root"}) || !more {
			t.Errorf("RevokePreview = %v, more %v, %v; want [root], more", ids, more, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestRevokeIDReadsLiveHops: revoking a party reads its hops that have
// not expired, however many expired ones it has.
func TestRevokeIDReadsLiveHops(t *testing.T) {
	const self = "spiffe://org-a.example"
	defer func(n int) { maxRevokeRead = n }(maxRevokeRead)
	maxRevokeRead = 2
	st := bolttest.Open(t)
	indexParties(t, st)
	now := time.Now()
	if err := st.Update(t.Context(), func(tx store.Tx) error {
		for i, id := range []string{"a-expired", "b-expired", "c-expired", "d-live", "e-expired", "f-live"} {
			exp := now.Add(-time.Duration(i+1) * time.Second)
			if strings.HasSuffix(id, "live") {
				exp = now.Add(time.Hour)
			}
			if err := Put(tx, &Record{ID: id, Issuer: self, Delegator: self + "/agent/m", Delegatee: self + "/agent/w", ExpiresAt: exp}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var revoked []string
	var more bool
	if err := st.Update(t.Context(), func(tx store.Tx) (err error) {
		revoked, more, err = RevokeID(tx, self+"/agent/w", "admin", "test", now)
		return
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(revoked, []string{"d-live", "f-live"}) || more {
		t.Fatalf("RevokeID = %v, more %v; want [d-live f-live], not more", revoked, more)
	}
}

// TestIndexParties: records a store kept before the party index (put
// without it) are indexed once, and are revoked the same before and
// after.
func TestIndexParties(t *testing.T) {
	const self = "spiffe://org-a.example"
	st := bolttest.Open(t)
	now := time.Now()
	old := []*Record{
		{ID: "h1", Issuer: self, Delegator: self + "/agent/a", Delegatee: self + "/agent/b", DelegatorHost: self + "/node/n1", ExpiresAt: now.Add(time.Hour)},
		{ID: "h2", Issuer: self, Delegator: self + "/agent/c", Delegatee: self + "/agent/d", ExpiresAt: now.Add(time.Hour),
			Ancestors: []Ancestor{{ID: "far", Issuer: "spiffe://org-b.example", Delegator: "spiffe://org-b.example/agent/x", Delegatee: self + "/agent/c"}}},
		{ID: "h3", Issuer: self, Delegator: self + "/agent/b", Delegatee: self + "/agent/d", DelegatorHost: self + "/node/n1", ExpiresAt: now.Add(time.Hour)},
	}
	if err := st.Update(t.Context(), func(tx store.Tx) error {
		for _, r := range old {
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := tx.Put(BucketDelegations, []byte(r.ID), b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]string{
		self + "/node/n1": {"h1", "h3"}, "spiffe://org-b.example/agent/x": {"h2"}, self + "/agent/d": {"h2", "h3"},
		self + "/agent/b": {"h1", "h3"}, self + "/agent/z": nil,
	}
	previews := func() map[string][]string {
		got := map[string][]string{}
		if err := st.View(t.Context(), func(tx store.Tx) error {
			for id := range cases {
				ids, _, err := RevokeIDPreview(tx, id, now)
				if err != nil {
					return err
				}
				slices.Sort(ids)
				got[id] = ids
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	for id, ids := range previews() {
		if !slices.Equal(ids, cases[id]) {
			t.Errorf("before indexing, RevokeIDPreview(%s) = %v, want %v", id, ids, cases[id])
		}
	}
	if err := st.Update(t.Context(), func(tx store.Tx) error { return tx.Put(BucketDelegations, []byte("garbled"), []byte("{")) }); err != nil {
		t.Fatal(err)
	}
	for run, want := range [][2]int{{len(old), 1}, {0, 0}} {
		var n, bad int
		if err := st.Update(t.Context(), func(tx store.Tx) (err error) { n, bad, err = IndexParties(tx); return }); err != nil || n != want[0] || bad != want[1] {
			t.Fatalf("IndexParties, run %d = %d indexed, %d unreadable, %v; want %v", run+1, n, bad, err, want)
		}
	}
	for id, ids := range previews() {
		if !slices.Equal(ids, cases[id]) {
			t.Errorf("after indexing, RevokeIDPreview(%s) = %v, want %v", id, ids, cases[id])
		}
	}
}

// BenchmarkRevokeIDPreview: what revoking one agent reads, in a store of
// 20,000 hops, 200 of them its own (29 live), with the party index
// and with the scan of a data directory not indexed yet.
func BenchmarkRevokeIDPreview(b *testing.B) {
	const self = "spiffe://org-a.example"
	now := time.Now()
	for _, indexed := range []bool{true, false} {
		b.Run(map[bool]string{true: "party index", false: "scan"}[indexed], func(b *testing.B) {
			st := bolttest.Open(b)
			if err := st.Update(b.Context(), func(tx store.Tx) error {
				if indexed {
					if _, _, err := IndexParties(tx); err != nil {
						return err
					}
				}
				for i := range 20000 {
					exp := now.Add(-time.Hour)
					if i%7 == 0 {
						exp = now.Add(time.Hour)
					}
					r := &Record{ID: fmt.Sprintf("h%05d", i), Issuer: self, Delegator: fmt.Sprintf("%s/agent/a%d", self, i%100),
						Delegatee: fmt.Sprintf("%s/agent/b%d", self, i%1000), DelegatorHost: self + "/node/n", ExpiresAt: exp}
					if err := Put(tx, r); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := st.View(b.Context(), func(tx store.Tx) error {
					ids, _, err := RevokeIDPreview(tx, self+"/agent/a0", now)
					if err == nil && len(ids) != 29 {
						err = fmt.Errorf("revoked %d hops, want 29", len(ids))
					}
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestRevokeIDExpiryBoundary: the party index yields, as the scan does,
// every hop that has not expired at now, to the nanosecond: those
// expiring later in now's second included.
func TestRevokeIDExpiryBoundary(t *testing.T) {
	const self = "spiffe://org-a.example"
	now := time.Unix(1_800_000_000, 700_000_000)
	exps := map[string]time.Duration{"gone-1s": -time.Second, "gone-200ms": -200 * time.Millisecond, "now": 0,
		"live-200ms": 200 * time.Millisecond, "live-500ms": 500 * time.Millisecond, "live-1s": time.Second}
	for _, indexed := range []bool{true, false} {
		st := bolttest.Open(t)
		if indexed {
			indexParties(t, st)
		}
		if err := st.Update(t.Context(), func(tx store.Tx) error {
			for id, d := range exps {
				if err := Put(tx, &Record{ID: id, Issuer: self, Delegator: self + "/agent/m", Delegatee: self + "/agent/w", ExpiresAt: now.Add(d)}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var ids []string
		if err := st.View(t.Context(), func(tx store.Tx) (err error) { ids, _, err = RevokeIDPreview(tx, self+"/agent/m", now); return }); err != nil {
			t.Fatal(err)
		}
		slices.Sort(ids)
		if want := []string{"live-1s", "live-200ms", "live-500ms"}; !slices.Equal(ids, want) {
			t.Errorf("indexed %v: RevokeIDPreview = %v, want %v", indexed, ids, want)
		}
	}
}

// countingTx counts the keys a scan of bucket yields.
type countingTx struct {
	store.Tx
	bucket string
	keys   int
}

func (c *countingTx) Scan(bucket string, prefix, start []byte, fn func(k, v []byte) error) error {
	return c.Tx.Scan(bucket, prefix, start, func(k, v []byte) error {
		if bucket == c.bucket {
			c.keys++
		}
		return fn(k, v)
	})
}

// TestRevokeIDReadBound: revoking a party with more live hops than a
// revocation reads reads at most that many of them from the party
// index (not every one, into memory, before the bound applies), and
// says that more are left.
func TestRevokeIDReadBound(t *testing.T) {
	const self = "spiffe://org-a.example"
	defer func(n int) { maxRevokeRead = n }(maxRevokeRead)
	maxRevokeRead = 3
	st := bolttest.Open(t)
	indexParties(t, st)
	now := time.Now()
	if err := st.Update(t.Context(), func(tx store.Tx) error {
		for i := range 10 {
			if err := Put(tx, &Record{ID: fmt.Sprintf("h%d", i), Issuer: self, Delegator: self + "/agent/m", Delegatee: self + "/agent/w",
				ExpiresAt: now.Add(time.Hour)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.View(t.Context(), func(tx store.Tx) error {
		ctx := &countingTx{Tx: tx, bucket: BucketParties}
		ids, more, err := RevokeIDPreview(ctx, self+"/agent/w", now)
		if err != nil || len(ids) != 3 || !more {
			t.Errorf("RevokeIDPreview = %v, more %v, %v; want 3 ids, more", ids, more, err)
		}
		if ctx.keys > maxRevokeRead+1 { // one past it, to know more are left
			t.Errorf("read %d keys of the party index, more than the bound, %d", ctx.keys, maxRevokeRead)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
