package main

import (
	"context"
	"path/filepath"
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
