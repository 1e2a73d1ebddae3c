package authority

import (
	"testing"
	"time"
)

// The policy's documents are built once the authority runs, not at the
// first decision, which would otherwise wait for them (seconds, with a
// hundred thousand registrations).
func TestPolicyDataIsBuiltAtStart(t *testing.T) {
	a, _ := runAuthority(t)
	for deadline := time.Now().Add(10 * time.Second); a.policySynced.Load() < a.policyGen.Load(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no decision asked, and after 10 s the policy data is at generation %d of %d: not built at start", a.policySynced.Load(), a.policyGen.Load())
		}
	}
}
