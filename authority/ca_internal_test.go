package authority

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/ca"
)

// Each CA change made while the authority runs is stored in the commit
// that logs ca.rotated with the authorities it leaves; with the log
// stopped, the CA does not change.
func TestCAChangesAreStoredWithTheirEntry(t *testing.T) {
	clock := &testClock{now: time.Now()}
	advance := clock.Advance
	a, stop := runAuthorityWith(t, Options{Now: clock.Now})
	ctx := t.Context()
	rotated := func() [][]ca.AuthorityInfo {
		t.Helper()
		got, _, err := a.SearchAudit(ctx, adminOf(t, a), audit.Query{Type: "ca.rotated", Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var out [][]ca.AuthorityInfo
		for _, h := range got {
			var e struct {
				Details struct {
					Authorities []ca.AuthorityInfo `json:"authorities"`
				} `json:"details"`
			}
			if err := json.Unmarshal(h.Entry, &e); err != nil {
				t.Fatal(err)
			}
			out = append(out, e.Details.Authorities)
		}
		return out
	}
	if got := rotated(); len(got) != 0 {
		t.Fatalf("ca.rotated before any rotation: %v", got)
	}

	advance(13 * time.Hour) // past half the CA's 24 h: successors are prepared
	// (by this call, or by the CA's own ticker if it fired meanwhile)
	if _, err := a.ca.Rotate(ctx); err != nil {
		t.Fatalf("Rotate() = %v", err)
	}
	prepared := a.ca.Status()
	got := rotated()
	if len(got) != 1 || !sameAuthorities(got[0], prepared) {
		t.Fatalf("ca.rotated entries %v, want one with %v", got, prepared)
	}

	stop()                 // the audit log stops
	advance(8 * time.Hour) // past 5/6: the prepared ones would be activated
	if changed, err := a.ca.Rotate(ctx); err == nil || changed {
		t.Fatalf("Rotate() with the log stopped = %v, %v; want an error", changed, err)
	}
	if st := a.ca.Status(); !sameAuthorities(st, prepared) {
		t.Errorf("CA after a rotation the log could not record: %v, want it unchanged %v", st, prepared)
	}
	stored, err := caJournal{a}.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if infos, err := ca.StateAuthorities(a.td, stored); err != nil || !sameAuthorities(infos, prepared) {
		t.Errorf("stored CA state %v (%v), want it unchanged", infos, err)
	}
}

// sameAuthorities compares authority lists as JSON (times as logged).
func sameAuthorities(x, y []ca.AuthorityInfo) bool {
	jx, _ := json.Marshal(x)
	jy, _ := json.Marshal(y)
	var vx, vy any
	_ = json.Unmarshal(jx, &vx)
	_ = json.Unmarshal(jy, &vy)
	return reflect.DeepEqual(vx, vy)
}
