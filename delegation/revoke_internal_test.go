package delegation

import (
	"context"
	"slices"
	"testing"
	"time"

	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt/bolttest"
)

// TestRevokeCascadeBounds: a cascade passes over hops already revoked or
// expired (and what is below them), so a tree of dead hops never makes a
// hop or its parties unrevocable; beyond its bound it marks what it may,
// says so, and still revokes the SPIFFE ID.
func TestRevokeCascadeBounds(t *testing.T) {
	const self = "spiffe://org-a.example"
	defer func(n int) { maxRevoke = n }(maxRevoke)
	maxRevoke = 3
	st := bolttest.Open(t)
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
