package authority

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt"
)

// TestRecordBornRevoked: a revocation that commits while a hop below it
// is being issued (after the flow checked the chain, before the hop's
// record exists) cannot cascade to the record; the record is written
// revoked instead, whatever was revoked: a hop above issued here, the
// delegator, its host, the delegatee, or a party above.
func TestRecordBornRevoked(t *testing.T) {
	const self = "spiffe://org-a.example"
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
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
				_, err := delegation.RevokeID(tx, tc.id, "admin", "test", now)
				return err
			})
			if w := why(); !strings.Contains(w, tc.want) {
				t.Fatalf("revokedInTx = %q, want %q", w, tc.want)
			}
			revoke(func(tx store.Tx) error { return tx.Delete(delegation.BucketRevokedIDs, []byte(tc.id)) })
			put(root) // unrevoked again (revoking a party revokes the root too)
		})
	}
	revoke(func(tx store.Tx) error {
		_, err := delegation.Revoke(tx, "root", "admin", "test", now)
		return err
	})
	if w := why(); !strings.Contains(w, "root above it was revoked") {
		t.Fatalf("below a revoked hop issued here: %q", w)
	}
}
