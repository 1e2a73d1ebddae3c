package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/attest/tpmdevice"
	"mandate.dev/mandate/store/bolt"
)

// TestBenchAttestCountsFailuresApart: an attestation that fails is an
// error, not an attestation made: it adds nothing to the count the
// rate and the CPU per attestation are computed from, nor a latency.
func TestBenchAttestCountsFailuresApart(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "bench.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, tc := range []struct {
		name      string
		alter     bool
		withStore bool
	}{
		{"honest answers", false, false},
		{"honest answers, stored", false, true},
		{"altered answers", true, false},
		{"altered answers, stored", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := newAttestBench(tpmdevice.EKECC, 2)
			if err != nil {
				t.Fatal(err)
			}
			if tc.alter {
				for i := range b.evidence {
					b.evidence[i].Secret = []byte("not the activated credential")
				}
			}
			r := b.measure(context.Background(), st, tc.withStore, 2, 100*time.Millisecond)
			if tc.alter {
				if r.ops != 0 || r.errors == 0 || r.p50 != 0 || r.p99 != 0 {
					t.Errorf("every answer refused: %d attestations, %d errors, p50 %s, p99 %s; want 0 attestations, errors, no latency",
						r.ops, r.errors, r.p50, r.p99)
				}
				return
			}
			if r.ops == 0 || r.errors != 0 {
				t.Errorf("honest answers: %d attestations, %d errors (%v); want attestations and no error", r.ops, r.errors, r.firstErr)
			}
		})
	}
}

// TestAttestVerdict: a row meets the target with attestations made at
// ≤ 1 ms of CPU each and none failed; a row with no attestation (the
// run interrupted, or too short for one) measured nothing and says so,
// rather than pass with 0s of CPU per attestation.
func TestAttestVerdict(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    attestBenchResult
		want string
	}{
		{"fast enough", attestBenchResult{ops: 100, cpuPerOp: 400 * time.Microsecond}, "met (≤ 1ms)"},
		{"at the target", attestBenchResult{ops: 100, cpuPerOp: time.Millisecond}, "met (≤ 1ms)"},
		{"too slow", attestBenchResult{ops: 100, cpuPerOp: 1001 * time.Microsecond}, "MISSED (≤ 1ms)"},
		{"none made", attestBenchResult{}, "NOT MEASURED: no attestation made"},
		{"failures", attestBenchResult{ops: 100, errors: 2, firstErr: errors.New("refused"), cpuPerOp: 400 * time.Microsecond}, "2 ERRORS: refused"},
	} {
		if got := attestVerdict(tc.r); got != tc.want {
			t.Errorf("%s: attestVerdict = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestBenchRefusesDurationsItCannotMeasure: a run of no time measures
// nothing, and bench delegate signs its requests beforehand (3,000 a
// second): each bench refuses such a --duration before it sets anything
// up.
func TestBenchRefusesDurationsItCannotMeasure(t *testing.T) {
	for _, tc := range []struct{ args []string }{
		{[]string{"bench", "attest", "--duration", "0s"}},
		{[]string{"bench", "attest", "--duration", "-1s"}},
		{[]string{"bench", "issue", "--duration", "0s"}},
		{[]string{"bench", "audit", "--duration", "0s"}},
		{[]string{"bench", "decide", "--duration", "-5s"}},
		{[]string{"bench", "delegate", "--duration", "0s"}},
		{[]string{"bench", "delegate", "--duration", "24h"}},
	} {
		var out, errOut bytes.Buffer
		err := run(t.Context(), tc.args, &out, &errOut)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--duration") || out.Len() != 0 {
			t.Errorf("mandate %s = %v, printed %q; want a usage error about --duration, nothing measured", strings.Join(tc.args, " "), err, out.String())
		}
	}
}
