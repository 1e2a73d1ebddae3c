package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemo runs `mandate demo` and checks that every step happened.
func TestDemo(t *testing.T) {
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, []string{"demo"}, &out, &errOut); err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{
		"(level hardware, profile edge-v1)",
		"the planner, picked by its uid, gets its SVID there",
		"the payer's token verifies offline: 2 hops",
		"[mail:send] denied (policy-denied): scope mail:send is not granted to the delegator",
		"proven in org-a.example's log", "proven in org-b.example's log",
		"responsible carol@org-b.example", "signed by the delegator's X509-SVID",
		"is revoked at org-a", "org-b asked org-a before extending the chain, and refused",
		"the auditor proves it in org-a.example's log, entry", "revoked with the hop above",
		"asks org-b about its hop", "above it was revoked)",
		"org-b witnesses org-a's log (C2SP tlog-witness): it cosigned org-a's checkpoint at size",
		"org-b checked the consistency proof and cosigned",
		"refused (409 witness-root-mismatch)",
		"Done.",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
