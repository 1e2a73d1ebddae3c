package delegation_test

import (
	"encoding/json"
	"flag"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/delegation"
)

// chainFile holds one genuine three-hop chain (A→B in org-a, B→C and
// C→D in org-b), the two organisations' bundles and a time at which it
// verifies. FuzzVerify reads it rather than make a new world: a fuzzing
// run is a coordinator and several worker processes, each running the
// target's setup, and the seeds the coordinator made are what every
// worker is given. Organisations made afresh in each process (new keys)
// would make the genuine token of one process garbage in the others:
// no mutation of it would get past the first signature check. Record it
// again with go test -run TestVerifyChainFile ./delegation -args -update-chain-file
const chainFile = "testdata/chain.json"

var updateChainFile = flag.Bool("update-chain-file", false, "record "+chainFile+" again")

type chainRecord struct {
	Token   string                     `json:"token"`
	At      int64                      `json:"at"` // Unix time at which it verifies
	Bundles map[string]json.RawMessage `json:"bundles"`
}

// recordedChain is the chain of chainFile, the bundles to verify it
// with, and the time at which it verifies.
type recordedChain struct {
	tok string
	set *spiffebundle.Set
	at  time.Time
}

func loadChain(t testing.TB) *recordedChain {
	t.Helper()
	b, err := os.ReadFile(chainFile)
	if err != nil {
		t.Fatal(err)
	}
	var rec chainRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("%s: %v", chainFile, err)
	}
	set := spiffebundle.NewSet()
	for name, doc := range rec.Bundles {
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			t.Fatal(err)
		}
		bundle, err := spiffebundle.Parse(td, doc)
		if err != nil {
			t.Fatalf("%s: bundle of %s: %v", chainFile, name, err)
		}
		set.Add(bundle)
	}
	c := &recordedChain{tok: rec.Token, set: set, at: time.Unix(rec.At, 0)}
	if _, err := delegation.Verify(c.tok, c.set, c.opts()); err != nil {
		t.Fatalf("the recorded chain does not verify: %v", err)
	}
	return c
}

func (c *recordedChain) opts() delegation.VerifyOptions {
	return delegation.VerifyOptions{AnyHolder: true, Now: c.at}
}

// TestVerifyChainFile checks the recorded chain: it verifies at its time,
// read again it is the same chain, and it is refused once expired; with
// -update-chain-file it is recorded again.
func TestVerifyChainFile(t *testing.T) {
	if *updateChainFile {
		w := newWorld(t)
		tok, claims := w.chain(t)
		rec := chainRecord{Token: tok, At: claims[2].IssuedAt, Bundles: map[string]json.RawMessage{}}
		for _, o := range []*org{w.orgA, w.orgB} {
			doc, err := o.bundle.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			rec.Bundles[o.td.Name()] = doc
		}
		b, err := json.MarshalIndent(rec, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(chainFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := loadChain(t)
	// Read again, as by a fuzzing worker after its coordinator made the
	// seeds, it is the same chain: the genuine token verifies there.
	again := loadChain(t)
	chain, err := delegation.Verify(c.tok, again.set, again.opts())
	if err != nil {
		t.Fatalf("the token of one reading does not verify with the bundles of another: %v", err)
	}
	if len(chain) != 3 {
		t.Fatalf("%d hops, want 3", len(chain))
	}
	late := c.opts()
	late.Now = time.Unix(chain[len(chain)-1].Expiry, 0).Add(time.Hour)
	if _, err := delegation.Verify(c.tok, c.set, late); err == nil {
		t.Fatal("the recorded chain verifies after it expired")
	}
}
