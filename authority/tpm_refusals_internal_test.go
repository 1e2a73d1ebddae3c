package authority

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/audit"
)

// refusalRecords lists the details of the node.attestation_refused
// entries about subject.
func refusalRecords(t *testing.T, a *Authority, subject string) []map[string]any {
	t.Helper()
	got, _, err := a.SearchAudit(t.Context(), adminOf(t, a), audit.Query{Type: "node.attestation_refused", SPIFFEID: subject, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, g := range got {
		var e struct {
			Subject string         `json:"subject"`
			Details map[string]any `json:"details"`
		}
		if err := json.Unmarshal(g.Entry, &e); err != nil {
			t.Fatal(err)
		}
		if e.Subject == subject {
			out = append(out, e.Details)
		}
	}
	return out
}

// Refusals counted but not recorded (after the first of a minute) are
// recorded once their minute has ended, by the maintenance pass, with
// their reasons, and those still pending at shutdown are recorded
// before the audit log stops: no quiet minute and no restart loses them.
func TestTPMRefusalCountsAreRecorded(t *testing.T) {
	a, stop, skew := runSkewedAuthority(t)
	ctx := t.Context()
	node := func(b string) spiffeid.ID {
		return spiffeid.RequireFromSegments(a.td, "node", attest.MethodTPM, strings.Repeat(b, 32))
	}
	x, y := node("ab"), node("cd")
	for i := range 31 {
		why := attest.ErrCredentialMismatch
		if i >= 20 {
			why = fmt.Errorf("%w (at now)", attest.ErrChallengeUsed)
		}
		a.recordUnprovenRefusal(ctx, x, why, map[string]any{"stage": "verify"})
	}
	if got := refusalRecords(t, a, x.String()); len(got) != 1 {
		t.Fatalf("after 31 refusals in a minute: %d records, want 1", len(got))
	}
	a.flushTPMRefusals(ctx, false) // the minute has not ended
	if got := refusalRecords(t, a, x.String()); len(got) != 1 {
		t.Fatalf("flushed within the minute: %d records, want 1", len(got))
	}
	skew.Add(int64(61 * time.Second))
	a.flushTPMRefusals(ctx, false)
	a.flushTPMRefusals(ctx, false) // nothing more pending
	got := refusalRecords(t, a, x.String())
	if len(got) != 2 {
		t.Fatalf("a quiet minute later: %d records, want 2", len(got))
	}
	want := map[string]any{"tpm-credential-mismatch": 19.0, "tpm-challenge-used": 11.0}
	if n := got[1]["refusals_not_recorded"]; n != 30.0 || fmt.Sprint(got[1]["refusal_reasons"]) != fmt.Sprint(want) {
		t.Fatalf("count record = %v; want 30 not recorded, reasons %v", got[1], want)
	}

	// Pending at shutdown: recorded before the log stops.
	for range 4 {
		a.recordProvenRefusal(ctx, y, fmt.Errorf("%w: bad", attest.ErrQuoteInvalid), map[string]any{})
	}
	stop()
	got = refusalRecords(t, a, y.String())
	if len(got) != 2 || got[1]["refusals_not_recorded"] != 3.0 || got[1]["proven"] != true {
		t.Fatalf("after shutdown: %v; want 2 records, the last counting 3 proven refusals", got)
	}
}

// The limiter is bounded without losing counts: when full, node IDs with
// nothing pending whose minute ended are forgotten, node IDs beyond the
// bound are counted together, and pending counts are kept; a count
// names at most maxRefusalReasons reasons.
func TestRefusalLimiterKeepsCounts(t *testing.T) {
	var l refusalLimiter
	now := time.Unix(1_700_000_000, 0)
	if ok, _ := l.allow("victim", false, "tpm-credential-mismatch", now); !ok {
		t.Fatal("first refusal not recorded")
	}
	for range 50 {
		l.allow("victim", false, "tpm-credential-mismatch", now.Add(time.Second))
	}
	// Fill the limiter, and more: the keys beyond the bound are counted
	// together.
	for i := range maxRefusedTokens + 5 {
		l.allow(fmt.Sprint("k", i), false, "tpm-challenge-used", now.Add(2*time.Second))
	}
	pending := map[string]int{}
	for _, p := range l.due(now.Add(2*time.Minute), false) {
		pending[p.subject] = p.n
	}
	if pending["victim"] != 50 || pending[""] != 6 || len(pending) != 2 {
		t.Fatalf("due after filling = %v; want victim 50 and 6 untracked", pending)
	}
	// Keys whose minute ended with nothing pending were forgotten: new
	// ones are tracked (and recorded) again.
	if ok, _ := l.allow("newcomer", false, "tpm-credential-mismatch", now.Add(2*time.Minute)); !ok {
		t.Fatal("a new key after the sweep was not recorded")
	}
	if n := len(l.m); n > 2 {
		t.Fatalf("%d keys kept after the sweep, want 2 (victim, newcomer)", n)
	}

	// Bounded reasons.
	var p refusalPending
	for i := range maxRefusalReasons + 3 {
		p.add(fmt.Sprint("type-", i))
	}
	p.add("type-0")
	m := p.reasonMap()
	if len(m) != maxRefusalReasons+1 || m["other"] != 3 || m["type-0"] != 2 || p.n != maxRefusalReasons+4 {
		t.Fatalf("reasons = %v (n %d)", m, p.n)
	}
}

// Every TPM refusal type the limiter names is the problem type the API
// answers (api/tpm_internal_test.go checks them against its table).
func TestTPMRefusalType(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("x: %w", attest.ErrCredentialMismatch), "tpm-credential-mismatch"},
		{errors.Join(attest.ErrPCRPolicy, errors.New("log")), "tpm-pcr-policy-mismatch"},
		{fmt.Errorf("%w: renew with your own SVID", ErrForbidden), "forbidden"},
		{errors.New("disk full"), "other"},
	} {
		if got := TPMRefusalType(tc.err); got != tc.want {
			t.Errorf("TPMRefusalType(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// The limiter's count passes keep what the first refusal of a minute is:
// recorded in full (a count pass does not start a new minute, so steady
// refusals still get their reason and evidence recorded once a minute);
// a count that could not be recorded is given back, never lost; a reason
// of its own named "other" and the reasons past the bound add up; node
// IDs beyond the bound are counted by kind.
func TestRefusalCountPasses(t *testing.T) {
	var l refusalLimiter
	t0 := time.Unix(1_700_000_000, 0)
	if ok, _ := l.allow("n", false, "tpm-credential-mismatch", t0); !ok {
		t.Fatal("first refusal not recorded")
	}
	for i := range 5 {
		l.allow("n", false, "tpm-credential-mismatch", t0.Add(time.Duration(10*(i+1))*time.Second))
	}
	due := l.due(t0.Add(61*time.Second), false)
	if len(due) != 1 || due[0].n != 5 {
		t.Fatalf("due = %+v, want n's 5", due)
	}
	if ok, _ := l.allow("n", false, "tpm-credential-mismatch", t0.Add(70*time.Second)); !ok {
		t.Error("the first refusal after a minute was counted, not recorded in full, because a count pass came between")
	}

	// Given back: due again, with its reasons.
	l.restore(due[0])
	again := l.due(t0.Add(200*time.Second), false)
	if len(again) != 1 || again[0].n != 5 || again[0].reasonMap()["tpm-credential-mismatch"] != 5 {
		t.Fatalf("a count given back = %+v, want the 5 again", again)
	}

	// "other" twice over adds up.
	var p refusalPending
	p.add("other")
	p.add("other")
	for i := range maxRefusalReasons {
		p.add(fmt.Sprint("type-", i))
	}
	sum := 0
	for _, n := range p.reasonMap() {
		sum += n
	}
	if sum != p.n {
		t.Errorf("reasons %v add up to %d, want %d", p.reasonMap(), sum, p.n)
	}

	// Beyond the bound, by kind.
	var full refusalLimiter
	for i := range maxRefusedTokens {
		full.allow(fmt.Sprint("k", i), false, "tpm-challenge-used", t0)
	}
	full.allow("late-proven", true, "tpm-pcr-policy-mismatch", t0)
	full.allow("late", false, "tpm-challenge-used", t0)
	kinds := map[bool]int{}
	for _, p := range full.due(t0.Add(time.Second), true) {
		if p.subject == "" {
			kinds[p.proven] += p.n
		}
	}
	if kinds[true] != 1 || kinds[false] != 1 {
		t.Errorf("untracked counts by kind = %v, want one proven and one not", kinds)
	}
}

// A count pass cut short (its context ends) gives back what it did not
// record: the pass at shutdown records it.
func TestRefusalCountsSurviveACutShortPass(t *testing.T) {
	a, stop, skew := runSkewedAuthority(t)
	x := spiffeid.RequireFromSegments(a.td, "node", attest.MethodTPM, strings.Repeat("ef", 32))
	for range 8 {
		a.recordUnprovenRefusal(t.Context(), x, attest.ErrCredentialMismatch, map[string]any{"stage": "verify"})
	}
	skew.Add(int64(61 * time.Second))
	cut, cancel := context.WithCancel(t.Context())
	cancel()
	a.flushTPMRefusals(cut, false)
	if got := refusalRecords(t, a, x.String()); len(got) != 1 {
		t.Fatalf("after a pass cut short: %d records, want the first refusal's only", len(got))
	}
	stop()
	got := refusalRecords(t, a, x.String())
	if len(got) != 2 || got[1]["refusals_not_recorded"] != 7.0 {
		t.Fatalf("after shutdown: %v; want the 7 counted refusals recorded", got)
	}
}

// A record that fails gives its count back, with itself: the next count
// pass records them.
func TestFailedRefusalRecordGivesItsCountBack(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	now := t0
	a := &Authority{now: func() time.Time { return now }}
	x := spiffeid.RequireFromString("spiffe://org-a.example/node/tpm/" + strings.Repeat("ab", 32))
	if ok, _ := a.allowRefusal(x, true, attest.ErrQuoteInvalid, map[string]any{}); !ok {
		t.Fatal("first refusal not allowed")
	}
	for range 3 {
		a.allowRefusal(x, true, attest.ErrQuoteInvalid, map[string]any{})
	}
	now = t0.Add(2 * time.Minute)
	details := map[string]any{}
	ok, taken := a.allowRefusal(x, true, attest.ErrPCRDigest, details)
	if !ok || details["refusals_not_recorded"] != 3 {
		t.Fatalf("the next minute's first refusal: allowed %v, details %v; want it to carry the 3", ok, details)
	}
	a.giveBack(taken, attest.ErrPCRDigest) // its record failed
	due := a.refusals.due(now.Add(2*time.Minute), false)
	if len(due) != 1 || due[0].n != 4 || due[0].subject != x.String() || !due[0].proven {
		t.Fatalf("due after a failed record = %+v, want the 3 and the refusal itself, proven, of %s", due, x)
	}
}
