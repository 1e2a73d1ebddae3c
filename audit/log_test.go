package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/transparency-dev/merkle/rfc6962"

	"mandate.dev/mandate/store"
)

func TestEmptyLog(t *testing.T) {
	s, _ := tempStore(t)
	l := start(t, testConfig(s))
	if got := l.Size(); got != 0 {
		t.Errorf("Size() = %d, want 0", got)
	}
	cp := openCheckpoint(t, l.Checkpoint())
	if cp.Size != 0 || !bytes.Equal(cp.Hash, rfc6962.DefaultHasher.EmptyRoot()) {
		t.Errorf("empty checkpoint = %d %x, want 0 %x", cp.Size, cp.Hash, rfc6962.DefaultHasher.EmptyRoot())
	}
	root, err := rootAt(t.Context(), l.Log, 0)
	if err != nil || !bytes.Equal(root, cp.Hash) {
		t.Errorf("rootAt(0) = %x, %v, want %x, nil", root, err, cp.Hash)
	}
}

// TestProofsSmallTrees appends entries one by one, so that every size from
// 1 to n has a checkpoint, and checks every inclusion and consistency proof
// between those sizes.
func TestProofsSmallTrees(t *testing.T) {
	const n = 70
	s, _ := tempStore(t)
	l := start(t, testConfig(s))
	roots := [][]byte{openCheckpoint(t, l.Checkpoint()).Hash}
	for i := range n {
		data := mustEncode(t, testEntry(i, 10))
		r, err := l.Append(t.Context(), testEntry(i, 10))
		if err != nil {
			t.Fatalf("Append(%d) = %v, want nil", i, err)
		}
		if r.Index != uint64(i) || r.TreeSize != uint64(i+1) {
			t.Fatalf("Append(%d) = index %d, size %d, want %d, %d", i, r.Index, r.TreeSize, i, i+1)
		}
		roots = append(roots, checkReceipt(t, r, data).Hash)
	}
	for size := uint64(0); size <= n; size++ {
		root, err := rootAt(t.Context(), l.Log, size)
		if err != nil || !bytes.Equal(root, roots[size]) {
			t.Errorf("rootAt(%d) = %x, %v, want %x, nil", size, root, err, roots[size])
		}
		for index := range size {
			checkInclusion(t, l.Log, index, size, roots[size])
		}
		for from := range size + 1 {
			checkConsistency(t, l.Log, from, size, roots[from], roots[size])
		}
	}
}

// TestConcurrentAppends appends from 64 goroutines: indexes are unique and
// dense, every receipt verifies, checkpoints of one size agree, and random
// proofs between the checkpointed sizes verify.
func TestConcurrentAppends(t *testing.T) {
	const writers, each = 64, 25
	s, _ := tempStore(t)
	l := start(t, testConfig(s))

	type acked struct {
		r    Receipt
		data []byte
	}
	var (
		mu    sync.Mutex
		got   []acked
		wg    sync.WaitGroup
		fails = make(chan error, writers)
	)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				e := testEntry(w*each+i, 400)
				r, err := l.Append(t.Context(), e)
				if err != nil {
					fails <- err
					return
				}
				mu.Lock()
				got = append(got, acked{r, mustEncode(t, e)})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(fails)
	for err := range fails {
		t.Fatalf("Append() = %v, want nil", err)
	}

	roots := map[uint64][]byte{}
	seen := make([]bool, writers*each)
	for _, a := range got {
		cp := checkReceipt(t, a.r, a.data)
		if seen[a.r.Index] {
			t.Fatalf("index %d acknowledged twice", a.r.Index)
		}
		seen[a.r.Index] = true
		if root, ok := roots[cp.Size]; ok && !bytes.Equal(root, cp.Hash) {
			t.Fatalf("two checkpoints of size %d with different roots", cp.Size)
		}
		roots[cp.Size] = cp.Hash
		stored, err := l.Entry(t.Context(), a.r.Index)
		if err != nil || !bytes.Equal(stored, a.data) {
			t.Fatalf("Entry(%d) = %q, %v, want the appended bytes", a.r.Index, stored, err)
		}
	}
	if got := l.Size(); got != writers*each { // with seen, the indexes are dense
		t.Fatalf("Size() = %d, want %d", got, writers*each)
	}
	if len(roots) < 2 {
		t.Logf("only %d batch(es): no concurrency observed", len(roots))
	}
	// Every batch's receipts name its own checkpoint size.
	if st := l.Stats(); st.Entries != writers*each || st.Commits != uint64(len(roots)) || st.CommitTime <= 0 {
		t.Fatalf("Stats() = %+v, want %d entries in %d commits, and their time", st, writers*each, len(roots))
	}

	sizes := slices.Sorted(func(yield func(uint64) bool) {
		for s := range roots {
			if !yield(s) {
				return
			}
		}
	})
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		a, b := sizes[rnd.IntN(len(sizes))], sizes[rnd.IntN(len(sizes))]
		if a > b {
			a, b = b, a
		}
		checkInclusion(t, l.Log, rnd.Uint64N(b), b, roots[b])
		checkConsistency(t, l.Log, a, b, roots[a], roots[b])
	}
}

// TestLargerTree checks random proofs in a tree of a few thousand entries
// built in batches of random sizes.
func TestLargerTree(t *testing.T) {
	s, _ := tempStore(t)
	rnd := rand.New(rand.NewPCG(3, 4))
	l := start(t, testConfig(s))
	roots := map[uint64][]byte{0: openCheckpoint(t, l.Checkpoint()).Hash}
	n := 0
	for n < 3000 {
		batch := 1 + rnd.IntN(300)
		var wg sync.WaitGroup
		for i := range batch {
			wg.Go(func() {
				if _, err := l.Append(t.Context(), testEntry(n+i, 20)); err != nil {
					t.Errorf("Append() = %v, want nil", err)
				}
			})
		}
		wg.Wait()
		n += batch
		roots[l.Size()] = openCheckpoint(t, l.Checkpoint()).Hash
	}
	sizes := slices.Collect(func(yield func(uint64) bool) {
		for s := range roots {
			if !yield(s) {
				return
			}
		}
	})
	for range 500 {
		a, b := sizes[rnd.IntN(len(sizes))], sizes[rnd.IntN(len(sizes))]
		if a > b {
			a, b = b, a
		}
		if b > 0 {
			checkInclusion(t, l.Log, rnd.Uint64N(b), b, roots[b])
		}
		checkConsistency(t, l.Log, a, b, roots[a], roots[b])
	}
}

// TestReopen closes the log and its store and reopens them: same size,
// same root, and later appends stay consistent with every earlier
// checkpoint.
func TestReopen(t *testing.T) {
	s, path := tempStore(t)
	l := start(t, testConfig(s))
	var cps [][]byte // checkpoints handed out, in order
	for round := range 3 {
		for i := range 20 + round {
			r, err := l.Append(t.Context(), testEntry(round*100+i, 50))
			if err != nil {
				t.Fatalf("round %d: Append() = %v, want nil", round, err)
			}
			cps = append(cps, r.Checkpoint)
		}
		size, cp := l.Size(), l.Checkpoint()
		l.stop(t)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = openBolt(t, path)
		l = start(t, testConfig(s))
		if got := l.Size(); got != size {
			t.Fatalf("round %d: Size() after reopen = %d, want %d", round, got, size)
		}
		if got := l.Checkpoint(); !bytes.Equal(got, cp) {
			t.Fatalf("round %d: Checkpoint() after reopen = %q, want %q", round, got, cp)
		}
	}
	if _, err := l.Append(t.Context(), testEntry(999, 0)); err != nil {
		t.Fatalf("Append() after reopen = %v, want nil", err)
	}
	last := openCheckpoint(t, l.Checkpoint())
	for _, b := range cps {
		cp := openCheckpoint(t, b)
		checkConsistency(t, l.Log, cp.Size, last.Size, cp.Hash, last.Hash)
	}
}

func TestReadErrors(t *testing.T) {
	s, _ := tempStore(t)
	l := start(t, testConfig(s))
	for i := range 5 {
		if _, err := l.Append(t.Context(), testEntry(i, 0)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := t.Context()
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"Entry(5)", func() error { _, err := l.Entry(ctx, 5); return err }, ErrIndexOutOfRange},
		{"InclusionProof(5, 5)", func() error { _, err := l.InclusionProof(ctx, 5, 5); return err }, ErrIndexOutOfRange},
		{"InclusionProof(3, 3)", func() error { _, err := l.InclusionProof(ctx, 3, 3); return err }, ErrIndexOutOfRange},
		{"InclusionProof(0, 0)", func() error { _, err := l.InclusionProof(ctx, 0, 0); return err }, ErrIndexOutOfRange},
		{"InclusionProof(0, 6)", func() error { _, err := l.InclusionProof(ctx, 0, 6); return err }, ErrTreeSize},
		{"ConsistencyProof(3, 2)", func() error { _, err := l.ConsistencyProof(ctx, 3, 2); return err }, ErrTreeSize},
		{"ConsistencyProof(2, 6)", func() error { _, err := l.ConsistencyProof(ctx, 2, 6); return err }, ErrTreeSize},
		{"Append(invalid)", func() error { _, err := l.Append(ctx, Entry{}); return err }, ErrInvalidEntry},
	}
	for _, tc := range tests {
		if err := tc.call(); !errors.Is(err, tc.want) {
			t.Errorf("%s = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestAppendAfterStop(t *testing.T) {
	s, _ := tempStore(t)
	l := start(t, testConfig(s))
	l.stop(t)
	if _, err := l.Append(t.Context(), testEntry(0, 0)); !errors.Is(err, ErrClosed) {
		t.Errorf("Append() after Run returned = %v, want %v", err, ErrClosed)
	}
	if err := l.Run(t.Context()); err == nil {
		t.Errorf("second Run() = nil, want error")
	}
}

// TestIndexHook checks that Config.Index writes in the commit's
// transaction with the leaf hash the receipt gives, and that its failure
// fails the batch without a trace.
func TestIndexHook(t *testing.T) {
	s, _ := tempStore(t)
	cfg := testConfig(s)
	var mu sync.Mutex
	leaves := map[uint64][]byte{}
	cfg.Index = func(tx store.Tx, index uint64, e Entry, leafHash []byte) error {
		if e.Subject == "spiffe://org-a.example/agent/a13" {
			return errors.New("refused")
		}
		mu.Lock()
		leaves[index] = bytes.Clone(leafHash)
		mu.Unlock()
		return tx.Put("test_by_subject", []byte(e.Subject), entryKey(index))
	}
	l := start(t, cfg)
	for i := range 20 {
		r, err := l.Append(t.Context(), testEntry(i, 0))
		if (err != nil) != (i == 13) {
			t.Fatalf("Append(%d) = %v, want an error only for 13", i, err)
		}
		if err != nil {
			continue
		}
		mu.Lock()
		got := leaves[r.Index]
		mu.Unlock()
		if !bytes.Equal(got, r.LeafHash) {
			t.Errorf("entry %d: the index hook had leaf hash %x, the receipt says %x", r.Index, got, r.LeafHash)
		}
	}
	if got := l.Size(); got != 19 {
		t.Errorf("Size() = %d, want 19", got)
	}
	err := s.View(t.Context(), func(tx store.Tx) error {
		n := 0
		err := tx.Scan("test_by_subject", nil, nil, func(k, v []byte) error {
			n++
			return nil
		})
		if n != 19 {
			t.Errorf("index holds %d keys, want 19", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint64(19) {
		b, err := l.Entry(t.Context(), i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := Decode(b)
		if err != nil || e.Subject == "spiffe://org-a.example/agent/a13" {
			t.Errorf("Entry(%d) = %s, %v: the refused entry is in the log", i, e.Subject, err)
		}
	}
}

func TestOpenConfigErrors(t *testing.T) {
	s, _ := tempStore(t)
	otherSkey, otherVkey, _ := GenerateKey(testOrigin)
	_ = otherSkey
	tests := []struct {
		name   string
		modify func(*Config)
	}{
		{"no store", func(c *Config) { c.Store = nil }},
		{"no origin", func(c *Config) { c.Origin = "" }},
		{"origin with newline", func(c *Config) { c.Origin = "a\nb" }},
		{"origin with space", func(c *Config) { c.Origin = "a b" }},
		{"no signer", func(c *Config) { c.Signer = nil }},
		{"mismatched verifier", func(c *Config) { c.Verifier = mustVerifier(t, otherVkey) }},
		{"negative batch", func(c *Config) { c.MaxBatch = -1 }},
	}
	for _, tc := range tests {
		cfg := testConfig(s)
		tc.modify(&cfg)
		if _, err := Open(t.Context(), cfg); err == nil {
			t.Errorf("Open(%s) = nil error, want error", tc.name)
		}
	}
}

// TestOpenRefusesInconsistent tampers with a stored log in ways a bug, a
// partial restore or an edit could, and checks that Open refuses it.
func TestOpenRefusesInconsistent(t *testing.T) {
	otherSkey, _, _ := GenerateKey(testOrigin)
	otherSigner := mustSigner(t, otherSkey)
	tests := []struct {
		name   string
		tamper func(tx store.Tx, old map[string][]byte) error
		origin string
	}{
		{"tree state rolled back", func(tx store.Tx, old map[string][]byte) error {
			return tx.Put(bucketState, keyTree, old["tree"])
		}, ""},
		{"tree state and checkpoint rolled back", func(tx store.Tx, old map[string][]byte) error {
			if err := tx.Put(bucketState, keyTree, old["tree"]); err != nil {
				return err
			}
			return tx.Put(bucketState, keyCheckpoint, old["checkpoint"])
		}, ""},
		{"checkpoint rolled back", func(tx store.Tx, old map[string][]byte) error {
			return tx.Put(bucketState, keyCheckpoint, old["checkpoint"])
		}, ""},
		{"checkpoint deleted", func(tx store.Tx, _ map[string][]byte) error {
			return tx.Delete(bucketState, keyCheckpoint)
		}, ""},
		{"checkpoint by another key", func(tx store.Tx, _ map[string][]byte) error {
			cp, err := signCheckpoint(testOrigin, otherSigner, 10, mustRoot(tx))
			if err != nil {
				return err
			}
			return tx.Put(bucketState, keyCheckpoint, cp)
		}, ""},
		{"range hash changed", func(tx store.Tx, _ map[string][]byte) error {
			b, _ := tx.Get(bucketState, keyTree)
			return tx.Put(bucketState, keyTree, bytes.Replace(b, []byte(`"range":["`), []byte(`"range":["A`), 1))
		}, ""},
		{"range hash replaced", func(tx store.Tx, _ map[string][]byte) error {
			return rewriteTree(tx, func(w *wireTree) { w.Range[0][0] ^= 1 })
		}, ""},
		{"root replaced", func(tx store.Tx, _ map[string][]byte) error {
			return rewriteTree(tx, func(w *wireTree) { w.Root[0] ^= 1 })
		}, ""},
		{"size replaced", func(tx store.Tx, _ map[string][]byte) error {
			return rewriteTree(tx, func(w *wireTree) { w.Size = 11 })
		}, ""},
		{"stored node changed", func(tx store.Tx, _ map[string][]byte) error {
			return tx.Put(bucketNodes, nodeKey(nodeID(3, 0)), make([]byte, 32))
		}, ""},
		{"last entry changed", func(tx store.Tx, _ map[string][]byte) error {
			return tx.Put(bucketEntries, entryKey(9), mustEncode(t, testEntry(99, 0)))
		}, ""},
		{"last entry deleted", func(tx store.Tx, _ map[string][]byte) error {
			return tx.Delete(bucketEntries, entryKey(9))
		}, ""},
		{"entry beyond the tree", func(tx store.Tx, _ map[string][]byte) error {
			return tx.Put(bucketEntries, entryKey(10), mustEncode(t, testEntry(99, 0)))
		}, ""},
		{"state deleted", func(tx store.Tx, _ map[string][]byte) error {
			return tx.Delete(bucketState, keyTree)
		}, ""},
		{"state garbage", func(tx store.Tx, _ map[string][]byte) error {
			return tx.Put(bucketState, keyTree, []byte(`{"size":10,"extra":1}`))
		}, ""},
		{"other origin", func(store.Tx, map[string][]byte) error { return nil }, "org-b.example/audit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := tempStore(t)
			l := start(t, testConfig(s))
			old := map[string][]byte{}
			for i := range 10 {
				if _, err := l.Append(t.Context(), testEntry(i, 0)); err != nil {
					t.Fatal(err)
				}
				if i == 4 {
					old = rawState(t, s)
				}
			}
			l.stop(t)
			if err := s.Update(t.Context(), func(tx store.Tx) error { return tc.tamper(tx, old) }); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig(s)
			if tc.origin != "" {
				cfg.Origin = tc.origin
			}
			_, err := Open(t.Context(), cfg)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open() = %v, want %v", err, ErrCorrupt)
			}
			t.Log(err)
		})
	}
}

func rawState(t *testing.T, s store.Store) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	err := s.View(t.Context(), func(tx store.Tx) error {
		return tx.Scan(bucketState, nil, nil, func(k, v []byte) error {
			m[string(k)] = v
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// rewriteTree changes the stored tree state with edit.
func rewriteTree(tx store.Tx, edit func(*wireTree)) error {
	b, err := tx.Get(bucketState, keyTree)
	if err != nil {
		return err
	}
	var w wireTree
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	edit(&w)
	if b, err = json.Marshal(w); err != nil {
		return err
	}
	return tx.Put(bucketState, keyTree, b)
}

func mustRoot(tx store.Tx) []byte {
	b, _ := tx.Get(bucketState, keyTree)
	st, err := decodeTree(b)
	if err != nil {
		panic(fmt.Sprint("decodeTree: ", err))
	}
	return st.root
}

func TestMaxBatch(t *testing.T) {
	s, _ := tempStore(t)
	cfg := testConfig(s)
	cfg.MaxBatch = 1
	l := start(t, cfg)
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			r, err := l.Append(t.Context(), testEntry(i, 0))
			if err != nil || r.TreeSize != r.Index+1 {
				t.Errorf("Append() = index %d, tree size %d, %v; want a batch of one", r.Index, r.TreeSize, err)
			}
		})
	}
	wg.Wait()
	if st := l.Stats(); st.Commits != 32 || st.Entries != 32 {
		t.Fatalf("Stats() = %+v, want 32 commits of one entry", st)
	}
}

func TestAppendCanceled(t *testing.T) {
	s, _ := tempStore(t)
	l := start(t, testConfig(s))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := l.Append(ctx, testEntry(0, 0)); !errors.Is(err, context.Canceled) {
		t.Errorf("Append(canceled) = %v, want %v", err, context.Canceled)
	}
	r, err := l.Append(t.Context(), testEntry(1, 0))
	if err != nil || r.Index != 0 {
		t.Errorf("Append() after a canceled one = index %d, %v, want 0, nil", r.Index, err)
	}
}
