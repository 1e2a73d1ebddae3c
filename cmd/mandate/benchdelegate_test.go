package main

import (
	"strings"
	"testing"
	"time"
)

// TestDelegationVerdict: the delegation target is met by a run fast
// enough, with a p99 low enough, in which no request failed; failed
// requests are in neither the rate nor the latencies, so a run with
// any has not met it, however fast the others were.
func TestDelegationVerdict(t *testing.T) {
	for _, tc := range []struct {
		name   string
		r      benchResult
		met    bool
		saying string
	}{
		{"fast, no failure", benchResult{ops: 31000, elapsed: 10 * time.Second, p99: 15 * time.Millisecond}, true, ""},
		{"fast, one failure", benchResult{ops: 31000, errors: 1, elapsed: 10 * time.Second, p99: 15 * time.Millisecond}, false, "1 requests failed"},
		{"fast, half failed", benchResult{ops: 31000, errors: 31000, elapsed: 10 * time.Second, p99: 15 * time.Millisecond}, false, "31000 requests failed"},
		{"too slow", benchResult{ops: 29000, elapsed: 10 * time.Second, p99: 15 * time.Millisecond}, false, ""},
		{"p99 too high", benchResult{ops: 31000, elapsed: 10 * time.Second, p99: 20 * time.Millisecond}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := delegationVerdict(tc.r)
			if strings.HasPrefix(got, "met") != tc.met || !strings.Contains(got, "≥ 3,000/s, p99 < 20ms") || !strings.Contains(got, tc.saying) {
				t.Errorf("delegationVerdict = %q; want met=%v, saying the target and %q", got, tc.met, tc.saying)
			}
		})
	}
}
