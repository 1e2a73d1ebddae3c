package audit

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt"
)

const testOrigin = "org-a.example/audit"

// testSigner and testVerifier are one key for all tests, so that a
// reopened log can check the stored checkpoint.
var testSigner, testVerifier = func() (note.Signer, note.Verifier) {
	skey, vkey, err := GenerateKey(testOrigin)
	if err != nil {
		panic(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		panic(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		panic(err)
	}
	return s, v
}()

// openBolt opens (or creates) the bbolt store at path, closed when t ends
// unless closed before.
func openBolt(t testing.TB, path string) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("bolt.Open(%q) = %v, want nil", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func tempStore(t testing.TB) (*bolt.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mandate.db")
	return openBolt(t, path), path
}

func testConfig(s store.Store) Config {
	return Config{Store: s, Origin: testOrigin, Signer: testSigner, Verifier: testVerifier}
}

// running is a Log with its Run goroutine.
type running struct {
	*Log
	cancel context.CancelFunc
	done   chan error
}

// start opens a log with cfg and runs it until stop or the end of t.
func start(t testing.TB, cfg Config) *running {
	t.Helper()
	l, err := Open(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Open() = %v, want nil", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Log: l, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- l.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop ends Run and checks that it returned nil. Calling it again is a
// no-op.
func (r *running) stop(t testing.TB) {
	t.Helper()
	if r.done == nil {
		return
	}
	r.cancel()
	if err := <-r.done; err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
	r.done = nil
}

var padding = strings.Repeat("x", 2048)

// testEntry returns a distinct entry for n, padded with pad bytes of
// details.
func testEntry(n, pad int) Entry {
	return Entry{
		Time:        time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Millisecond),
		Type:        "svid.issued",
		Actor:       "spiffe://org-a.example/node/join/n1",
		Subject:     fmt.Sprintf("spiffe://org-a.example/agent/a%d", n),
		Accountable: []Party{{SPIFFEID: testAgent, Operator: "ops", Model: "m"}},
		Details:     fmt.Appendf(nil, `{"n":%d,"pad":"%s"}`, n, padding[:pad]),
	}
}

func mustEncode(t testing.TB, e Entry) []byte {
	t.Helper()
	b, err := Encode(e)
	if err != nil {
		t.Fatalf("Encode() = %v, want nil", err)
	}
	return b
}

// Verification below uses only code Mandate did not write: sumdb/note,
// formats/log and merkle's rfc6962 and proof packages.

// openCheckpoint verifies a signed checkpoint and parses it.
func openCheckpoint(t testing.TB, b []byte) log.Checkpoint {
	t.Helper()
	n, err := note.Open(b, note.VerifierList(testVerifier))
	if err != nil {
		t.Fatalf("note.Open(%q) = %v, want nil", b, err)
	}
	var cp log.Checkpoint
	rest, err := cp.Unmarshal([]byte(n.Text))
	if err != nil || len(rest) != 0 {
		t.Fatalf("Checkpoint.Unmarshal(%q) = %q, %v, want no rest, nil", n.Text, rest, err)
	}
	if cp.Origin != testOrigin {
		t.Fatalf("checkpoint origin = %q, want %q", cp.Origin, testOrigin)
	}
	return cp
}

// checkReceipt verifies r for the entry bytes data.
func checkReceipt(t testing.TB, r Receipt, data []byte) log.Checkpoint {
	t.Helper()
	cp := openCheckpoint(t, r.Checkpoint)
	if cp.Size != r.TreeSize {
		t.Errorf("receipt tree size %d, checkpoint size %d", r.TreeSize, cp.Size)
	}
	if leaf := rfc6962.DefaultHasher.HashLeaf(data); !bytes.Equal(leaf, r.LeafHash) {
		t.Errorf("receipt %d: leaf hash %x, want %x", r.Index, r.LeafHash, leaf)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, r.Index, cp.Size, r.LeafHash, r.InclusionProof, cp.Hash); err != nil {
		t.Errorf("receipt %d: VerifyInclusion(size %d) = %v, want nil", r.Index, cp.Size, err)
	}
	return cp
}

// checkInclusion fetches entry index and its proof for size and verifies
// them against root.
func checkInclusion(t testing.TB, l *Log, index, size uint64, root []byte) {
	t.Helper()
	ctx := t.Context()
	data, err := l.Entry(ctx, index)
	if err != nil {
		t.Fatalf("Entry(%d) = %v, want nil", index, err)
	}
	p, err := l.InclusionProof(ctx, index, size)
	if err != nil {
		t.Fatalf("InclusionProof(%d, %d) = %v, want nil", index, size, err)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(data)
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, index, size, leaf, p, root); err != nil {
		t.Errorf("VerifyInclusion(%d, %d) = %v, want nil", index, size, err)
	}
}

// checkConsistency fetches the proof between two sizes and verifies it.
func checkConsistency(t testing.TB, l *Log, from, to uint64, root1, root2 []byte) {
	t.Helper()
	p, err := l.ConsistencyProof(t.Context(), from, to)
	if err != nil {
		t.Fatalf("ConsistencyProof(%d, %d) = %v, want nil", from, to, err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, from, to, p, root1, root2); err != nil {
		t.Errorf("VerifyConsistency(%d, %d) = %v, want nil", from, to, err)
	}
}

func mustSigner(t testing.TB, skey string) note.Signer {
	t.Helper()
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatalf("note.NewSigner() = %v, want nil", err)
	}
	return s
}

func mustVerifier(t testing.TB, vkey string) note.Verifier {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatalf("note.NewVerifier(%q) = %v, want nil", vkey, err)
	}
	return v
}

func nodeID(level uint, index uint64) compact.NodeID { return compact.NewNodeID(level, index) }

// rootAt is the root hash of the tree of the given size (at most
// l.Size()) computed from the stored nodes of its compact range; the root
// of the empty tree is SHA-256 of nothing.
func rootAt(ctx context.Context, l *Log, size uint64) ([]byte, error) {
	if err := l.checkSize(size); err != nil {
		return nil, err
	}
	hashes, err := l.nodes(ctx, compact.RangeNodes(0, size, nil))
	if err != nil {
		return nil, err
	}
	r, err := factory.NewRange(0, size, hashes)
	if err != nil {
		return nil, err
	}
	return rootOf(r), nil
}
