package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/authority"
)

// chainFuzzKeys are the keys that sign the checkpoints of the seeds
// below: made from fixed bytes (and Ed25519 signatures are
// deterministic), so that the seeds the fuzzing coordinator makes verify
// in every worker too.
func chainFuzzKeys(t testing.TB) (note.Signer, note.Verifier) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{0x5e}, 32)), "org-a.example/audit")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return signer, verifier
}

// provenChainAnswer is a chain answer whose one hop is proven: its entry
// is the only leaf of a log whose checkpoint signer signed.
func provenChainAnswer(t testing.TB, signer note.Signer) []byte {
	t.Helper()
	id := "0123456789abcdef0123456789abcdef"
	details, err := json.Marshal(authority.IssuedDetails{ID: id, Delegator: "spiffe://org-a.example/agent/planner",
		Delegatee: "spiffe://org-b.example/agent/booker", Principal: "alice", Scopes: []string{"calendar:read"}, Depth: 1,
		ExpiresAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	details = bytes.Replace(details, []byte(`"decision":{"allow":false`), []byte(`"decision":{"allow":true`), 1)
	entry, err := audit.Encode(audit.Entry{Time: time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC), Type: "delegation.issued",
		Actor: "spiffe://org-a.example/agent/planner", DecisionID: "dec-1", PolicyRevision: "rev-1", DelegationID: id,
		Accountable: []audit.Party{}, Details: details})
	if err != nil {
		t.Fatal(err)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(entry)
	cp, err := note.Sign(&note.Note{Text: string(log.Checkpoint{Origin: signer.Name(), Size: 1, Hash: leaf}.Marshal())}, signer)
	if err != nil {
		t.Fatal(err)
	}
	index := uint64(0)
	b, err := json.Marshal(map[string]any{"hops": []authority.ChainHop{{ID: id, Issuer: "spiffe://org-a.example",
		Delegator: "spiffe://org-a.example/agent/planner", Delegatee: "spiffe://org-b.example/agent/booker", Principal: "alice",
		Scopes: []string{"calendar:read"}, Depth: 1, Index: &index, LeafHash: hex.EncodeToString(leaf), TreeSize: 1,
		Checkpoint: string(cp), EntryB64: entry, InclusionProof: [][]byte{}}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzChainAnswer feeds arbitrary chain answers, as an authority or a
// peer's authority sends them to mandate audit chain, to their reader and
// to the check of a proven hop: no panic, and what is read prints with no
// character that is not printable (a hop's names are printed by the
// auditor whether or not they are proven).
func FuzzChainAnswer(f *testing.F) {
	signer, verifier := chainFuzzKeys(f)
	proven := provenChainAnswer(f, signer)
	f.Add(proven)
	f.Add(bytes.Replace(proven, []byte(`"alice"`), []byte(`"mallory"`), 1))
	f.Add([]byte(`{"hops":[{"id":"d1","issuer":"spiffe://org-b.example","delegator":"spiffe://org-a.example/agent/b","delegatee":"spiffe://org-b.example/agent/c","principal":"alice","scopes":["a"],"depth":2,"log_url":"https://b.example/v1/audit/chains/d1"}]}`))
	f.Add([]byte(`{"hops":[{"id":"d1","issuer":"spiffe://org-b.example","delegator":"spiffe://a/x","delegatee":"spiffe://b/y","principal":"\u202ealice","scopes":["a b"],"index":18446744073709551615,"tree_size":0}]}`))
	f.Add([]byte(`{"hops":[{"id":"d1","issuer":"spiffe://org-b.example","delegator":"spiffe://org-a.example/agent/b","delegatee":"spiffe://org-b.example/agent/c","principal":"alice","scopes":["a"],"depth":2,` +
		`"decision":{"id":"dec\u0007","result":"allow\u001b[2J","policy_revision":"\u202e"},"accountability":{"delegator":{"operator":"\u001b]0;x\u0007","model":"\u200b"}}}]}`))
	f.Add([]byte(`{"hops":[]}`))
	f.Add([]byte(`{"hops":null}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"hops":[` + strings.Repeat(`{},`, 40) + `{}]}`))
	f.Fuzz(func(t *testing.T, answer []byte) {
		hops, err := readChainAnswer(answer)
		if err != nil {
			return
		}
		for i := range hops {
			if h := &hops[i]; h.Index != nil {
				_ = verifyHop(h, verifier, h.Issuer, func(*log.Checkpoint, []byte) {})
			}
		}
		var out bytes.Buffer
		printChain(&out, hops)
		for _, line := range strings.Split(out.String(), "\n") {
			if !utf8.ValidString(line) {
				t.Fatalf("printed invalid UTF-8: %q", line)
			}
			for _, r := range line {
				if !strconv.IsPrint(r) {
					t.Fatalf("printed %U in %q", r, line)
				}
			}
		}
	})
}

// TestChainAnswerSeedIsProven: the proven seed of FuzzChainAnswer passes
// the check of a proven hop, so that the fuzzer starts past it.
func TestChainAnswerSeedIsProven(t *testing.T) {
	signer, verifier := chainFuzzKeys(t)
	hops, err := readChainAnswer(provenChainAnswer(t, signer))
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyHop(&hops[0], verifier, "spiffe://org-a.example", func(*log.Checkpoint, []byte) {}); err != nil {
		t.Fatal(err)
	}
	if hops[0].verifiedBy == "" {
		t.Fatal("not proven")
	}
}
