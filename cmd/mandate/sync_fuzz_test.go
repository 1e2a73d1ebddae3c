package main

import (
	"encoding/json"
	"os"
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/client"
)

// FuzzSyncAnswer feeds arbitrary answers to a node's sync, as node run
// reads them from the authority: no panic, and an answer taken names
// valid identities and holds a bundle of the node's trust domain, each
// with an authority.
func FuzzSyncAnswer(f *testing.F) {
	// A bundle of org-a.example's, from a file: the seeds are the same in
	// every process of the fuzzing (the coordinator's and its workers').
	doc, err := os.ReadFile("testdata/sync-bundle.json")
	if err != nil {
		f.Fatal(err)
	}
	bundle := string(doc)
	for _, s := range []string{
		`{"node_id":"spiffe://org-a.example/node/join/0000000000000000","hosted":["spiffe://org-a.example/agent/a"],"refused":[],"bundles":{"org-a.example":` + bundle + `}}`,
		`{"hosted":[],"refused":[{"spiffe_id":"spiffe://org-a.example/agent/b","type":"https://mandate.dev/problems/agent-not-registered","title":"Agent not registered","status":403,"detail":"x"}],"bundles":{"org-a.example":` + bundle + `,"org-b.example":` + bundle + `}}`,
		`{"refused":[{"spiffe_id":"not an id"}],"bundles":{"org-a.example":` + bundle + `}}`,
		`{"bundles":{"ORG-A.example":` + bundle + `}}`,
		`{"bundles":{"org-a.example":` + bundle + `,"spiffe://org-a.example/x":` + bundle + `}}`,
		`{"bundles":{"org-a.example":{"keys":[]}}}`,
		`{"bundles":{"org-a.example":{"keys":[{"kty":"EC","use":"jwt-svid","kid":"k","crv":"P-256","x":"AA","y":"AA"}]}}}`,
		`{"bundles":{}}`,
		`{}`,
	} {
		f.Add([]byte(s))
	}
	own := spiffeid.RequireTrustDomainFromString("org-a.example")
	f.Fuzz(func(t *testing.T, b []byte) {
		var ans client.NodeSync
		if json.Unmarshal(b, &ans) != nil {
			return
		}
		sync, err := syncOf(own, &ans)
		if err != nil {
			return
		}
		if !slices.ContainsFunc(sync.Bundles, func(b *spiffebundle.Bundle) bool { return b.TrustDomain() == own }) {
			t.Fatalf("an answer without %s's bundle was taken", own)
		}
		seen := map[spiffeid.TrustDomain]bool{}
		for _, b := range sync.Bundles {
			if b.Empty() {
				t.Fatalf("a bundle of %s without authorities was taken", b.TrustDomain())
			}
			if seen[b.TrustDomain()] {
				t.Fatalf("two bundles of %s were taken", b.TrustDomain())
			}
			seen[b.TrustDomain()] = true
		}
		for id := range sync.Refused {
			if id.IsZero() {
				t.Fatal("a refusal of no identity was taken")
			}
		}
	})
}
