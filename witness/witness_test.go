package witness_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt"
	"mandate.dev/mandate/witness"
)

// testLog is a log of origin whose checkpoints a test signs.
type testLog struct {
	t      testing.TB
	origin string
	signer note.Signer
	vkey   string
	tree   *testonly.Tree
}

func newTestLog(t testing.TB, origin string, leaves int) *testLog {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	l := &testLog{t: t, origin: origin, signer: s, vkey: vkey, tree: testonly.New(rfc6962.DefaultHasher)}
	l.grow(leaves)
	return l
}

func (l *testLog) grow(n int) {
	for range n {
		l.tree.AppendData(fmt.Appendf(nil, "entry %d", l.tree.Size()))
	}
}

// checkpoint is the log's signed checkpoint at size, with root in place
// of its root hash if given.
func (l *testLog) checkpoint(size uint64, root []byte) []byte {
	l.t.Helper()
	if root == nil {
		root = l.tree.HashAt(size)
	}
	text := fmt.Sprintf("%s\n%d\n%s\n", l.origin, size, base64.StdEncoding.EncodeToString(root))
	b, err := note.Sign(&note.Note{Text: text}, l.signer)
	if err != nil {
		l.t.Fatal(err)
	}
	return b
}

// request is an add-checkpoint body from old to the log's size now.
func (l *testLog) request(old uint64) []byte {
	l.t.Helper()
	var proof [][]byte
	if old > 0 {
		var err error
		if proof, err = l.tree.ConsistencyProof(old, l.tree.Size()); err != nil {
			l.t.Fatal(err)
		}
	}
	return body(old, proof, l.checkpoint(l.tree.Size(), nil))
}

func body(old uint64, proof [][]byte, cp []byte) []byte { return witness.Request(old, proof, cp) }

func openStore(t testing.TB, path string) store.Store {
	t.Helper()
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func newWitness(t testing.TB, st store.Store, skey string, logs ...string) *witness.Witness {
	t.Helper()
	w, err := witness.New(st, skey, logs)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func witnessKey(t testing.TB) string {
	t.Helper()
	skey, _, err := note.GenerateKey(rand.Reader, "witness.example/w1")
	if err != nil {
		t.Fatal(err)
	}
	return skey
}

// checkCosigned verifies cosig, the answer to a request for cp, with the
// witness's cosignature/v1 verifier key, as a log client would
// (transparency-dev/formats), and its timestamp.
func checkCosigned(t *testing.T, w *witness.Witness, cp, cosig []byte) {
	t.Helper()
	if !strings.HasPrefix(string(cosig), "— ") || !strings.HasSuffix(string(cosig), "\n") || strings.Count(string(cosig), "\n") != 1 {
		t.Fatalf("answer %q: want one note signature line", cosig)
	}
	v, err := fnote.NewVerifierForCosignatureV1(w.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(append(append([]byte{}, cp...), cosig...), note.VerifierList(v))
	if err != nil {
		t.Fatalf("the cosignature does not verify with the witness's key %s: %v", w.VerifierKey(), err)
	}
	at, err := fnote.CoSigV1Timestamp(n.Sigs[0])
	if err != nil || time.Since(at) > time.Minute || time.Until(at) > time.Minute {
		t.Errorf("cosignature timestamp %v (%v), want about now", at, err)
	}
}

func TestAddCheckpoint(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "w.db")
	st := openStore(t, path)
	skey := witnessKey(t)
	l := newTestLog(t, "org-a.example/audit", 5)
	other := newTestLog(t, "org-c.example/audit", 3)
	w := newWitness(t, st, skey, l.vkey, other.vkey)
	if !strings.HasPrefix(w.VerifierKey(), "witness.example/w1+") || w.Name() != "witness.example/w1" {
		t.Errorf("VerifierKey() = %q, Name() = %q", w.VerifierKey(), w.Name())
	}

	// The first checkpoint of a log: from 0, without a proof.
	cosig, err := w.AddCheckpoint(ctx, l.request(0))
	if err != nil {
		t.Fatalf("first checkpoint: %v", err)
	}
	checkCosigned(t, w, l.checkpoint(5, nil), cosig)

	// It grows: cosigned from 5 with a proof.
	l.grow(4)
	if cosig, err = w.AddCheckpoint(ctx, l.request(5)); err != nil {
		t.Fatalf("5 → 9: %v", err)
	}
	checkCosigned(t, w, l.checkpoint(9, nil), cosig)

	// The same checkpoint again is cosigned again.
	if _, err = w.AddCheckpoint(ctx, body(9, nil, l.checkpoint(9, nil))); err != nil {
		t.Errorf("9 → 9, the same root: %v", err)
	}

	var conflict *witness.SizeConflict
	refusals := []struct {
		name string
		body []byte
		want error
	}{
		{"an old size not the last cosigned", l.request(5), nil}, // *SizeConflict{9}
		{"a fork at the size cosigned", body(9, nil, l.checkpoint(9, make([]byte, 32))), witness.ErrRootMismatch},
		{"a proof between equal sizes", body(9, [][]byte{l.tree.HashAt(9)}, l.checkpoint(9, nil)), witness.ErrInconsistent},
		{"a proof that does not verify", func() []byte {
			l.grow(1)
			p, _ := l.tree.ConsistencyProof(9, 10)
			p[0] = make([]byte, 32)
			return body(9, p, l.checkpoint(10, nil))
		}(), witness.ErrInconsistent},
		{"a root not the proof's", func() []byte {
			p, _ := l.tree.ConsistencyProof(9, 10)
			return body(9, p, l.checkpoint(10, make([]byte, 32)))
		}(), witness.ErrInconsistent},
		{"an unknown log", newTestLog(t, "org-b.example/audit", 2).request(0), witness.ErrUnknownLog},
		{"signed by another key of the same name", newTestLog(t, "org-a.example/audit", 12).request(9), witness.ErrNotSigned},
		{"no signature lines", body(9, nil, []byte("org-a.example/audit\n9\n"+base64.StdEncoding.EncodeToString(l.tree.HashAt(9))+"\n")), witness.ErrMalformed},
		{"a control character in the note", body(9, nil, bytes.Replace(l.checkpoint(10, nil), []byte("\n10\n"), []byte("\n10\r\n"), 1)), witness.ErrMalformed},
		{"its signature of another text", body(9, nil, bytes.Replace(l.checkpoint(10, nil), []byte("\n10\n"), []byte("\n11\n"), 1)), witness.ErrNotSigned},
		{"an old size past the checkpoint's", body(11, nil, l.checkpoint(10, nil)), witness.ErrMalformed},
		{"an old size with a leading zero", append([]byte("old 09"), l.request(9)[5:]...), witness.ErrMalformed},
		{"a signed old size", append([]byte("old +9"), l.request(9)[5:]...), witness.ErrMalformed},
		{"no old line", l.checkpoint(10, nil), witness.ErrMalformed},
		{"no empty line", []byte("old 9\n"), witness.ErrMalformed},
		{"a proof line that is no hash", append([]byte("old 9\nnot base64!\n\n"), l.checkpoint(10, nil)...), witness.ErrMalformed},
		{"a proof line in base64 not canonical", func() []byte {
			p, _ := l.tree.ConsistencyProof(9, 10)
			return fmt.Appendf(nil, "old 9\n%s\n\n%s", nonCanonical(p[0]), l.checkpoint(10, nil))
		}(), witness.ErrMalformed},
		{"a proof line with a CR in it", func() []byte {
			p, _ := l.tree.ConsistencyProof(9, 10)
			enc := base64.StdEncoding.EncodeToString(p[0])
			return fmt.Appendf(nil, "old 9\n%s\r%s\n\n%s", enc[:10], enc[10:], l.checkpoint(10, nil))
		}(), witness.ErrMalformed},
		{"a root in base64 not canonical", func() []byte {
			p, _ := l.tree.ConsistencyProof(9, 10)
			cp, err := note.Sign(&note.Note{Text: fmt.Sprintf("%s\n10\n%s\n", l.origin, nonCanonical(l.tree.HashAt(10)))}, l.signer)
			if err != nil {
				t.Fatal(err)
			}
			return body(9, p, cp)
		}(), witness.ErrMalformed},
		{"a proof line of 31 bytes", body(9, [][]byte{make([]byte, 31)}, l.checkpoint(10, nil)), witness.ErrMalformed},
		{"64 proof lines", body(9, slices.Repeat([][]byte{make([]byte, 32)}, 64), l.checkpoint(10, nil)), witness.ErrMalformed},
		{"a proof from 0", body(0, [][]byte{make([]byte, 32)}, other.checkpoint(3, nil)), witness.ErrMalformed},
		{"an empty extension line", func() []byte {
			p, _ := l.tree.ConsistencyProof(9, 10)
			text := fmt.Sprintf("%s\n10\n%s\n\nextension\n", l.origin, base64.StdEncoding.EncodeToString(l.tree.HashAt(10)))
			cp, err := note.Sign(&note.Note{Text: text}, l.signer)
			if err != nil {
				t.Fatal(err)
			}
			return body(9, p, cp)
		}(), witness.ErrMalformed},
	}
	for _, r := range refusals {
		_, err := w.AddCheckpoint(ctx, r.body)
		switch {
		case r.want == nil:
			if !errors.As(err, &conflict) || conflict.Size != 9 {
				t.Errorf("%s: %v, want a size conflict naming 9", r.name, err)
			}
		case !errors.Is(err, r.want):
			t.Errorf("%s: %v, want %v", r.name, err, r.want)
		}
	}

	// None of those moved the state: 9 → 10 with the right proof.
	if cosig, err = w.AddCheckpoint(ctx, l.request(9)); err != nil {
		t.Fatalf("9 → 10 after the refusals: %v", err)
	}
	checkCosigned(t, w, l.checkpoint(10, nil), cosig)
	// The other log has its own state.
	if _, err = w.AddCheckpoint(ctx, other.request(0)); err != nil {
		t.Errorf("the other log's first checkpoint: %v", err)
	}

	// The state is durable: reopened, the witness still holds 10.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	w = newWitness(t, openStore(t, path), skey, l.vkey)
	if _, err := w.AddCheckpoint(ctx, l.request(5)); !errors.As(err, &conflict) || conflict.Size != 10 {
		t.Errorf("after a reopen: %v, want a size conflict naming 10", err)
	}
}

// nonCanonical is h in standard base64 with a padding bit set: Go's
// lenient decoder reads it as h.
func nonCanonical(h []byte) string {
	enc := []byte(base64.StdEncoding.EncodeToString(h))
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	last := strings.LastIndexFunc(string(enc), func(r rune) bool { return r != '=' })
	enc[last] = alphabet[strings.IndexByte(alphabet, enc[last])^1]
	if b, err := base64.StdEncoding.DecodeString(string(enc)); err != nil || !bytes.Equal(b, h) {
		panic("nonCanonical: not the same hash")
	}
	return string(enc)
}

// Requests racing from the same old size: exactly one is cosigned, the
// others are told the new size (the check and the update are one
// transaction).
func TestAddCheckpointRace(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t, "org-a.example/audit", 4)
	w := newWitness(t, openStore(t, filepath.Join(t.TempDir(), "w.db")), witnessKey(t), l.vkey)
	if _, err := w.AddCheckpoint(ctx, l.request(0)); err != nil {
		t.Fatal(err)
	}
	var bodies [][]byte
	for range 8 {
		l.grow(1)
		bodies = append(bodies, l.request(4))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, conflicts := 0, 0
	for _, b := range bodies {
		wg.Go(func() {
			_, err := w.AddCheckpoint(ctx, b)
			var c *witness.SizeConflict
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.As(err, &c):
				conflicts++
			default:
				t.Errorf("AddCheckpoint: %v", err)
			}
		})
	}
	wg.Wait()
	if ok != 1 || conflicts != 7 {
		t.Errorf("8 requests from 4: %d cosigned, %d conflicts; want 1 and 7", ok, conflicts)
	}
}

func TestNewRefusesBadKeys(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "w.db"))
	l := newTestLog(t, "org-a.example/audit", 1)
	skey := witnessKey(t)
	if _, err := witness.New(st, "PRIVATE+KEY+junk", nil); err == nil || strings.Contains(err.Error(), "junk") {
		t.Errorf("New(a bad signer key) = %v, want an error not quoting it", err)
	}
	if _, err := witness.New(st, skey, []string{"not a vkey"}); err == nil {
		t.Error("New(a bad log key) = nil")
	}
	if _, err := witness.New(st, skey, []string{l.vkey, newTestLog(t, "org-a.example/audit", 1).vkey}); err == nil {
		t.Error("New(two keys for one origin) = nil")
	}
}

// BenchmarkAddCheckpoint is a log submitting each new checkpoint (one
// entry more, with its consistency proof) to the witness: the signature
// checks, the proof, a durable store transaction and the cosignature.
// `go test -run '^$' -bench AddCheckpoint ./witness/`
func BenchmarkAddCheckpoint(b *testing.B) {
	ctx := context.Background()
	l := newTestLog(b, "org-a.example/audit", 1000)
	w := newWitness(b, openStore(b, filepath.Join(b.TempDir(), "w.db")), witnessKey(b), l.vkey)
	if _, err := w.AddCheckpoint(ctx, l.request(0)); err != nil {
		b.Fatal(err)
	}
	bodies := make([][]byte, b.N)
	for i := range bodies {
		old := l.tree.Size()
		l.grow(1)
		bodies[i] = l.request(old)
	}
	b.ResetTimer()
	for _, body := range bodies {
		if _, err := w.AddCheckpoint(ctx, body); err != nil {
			b.Fatal(err)
		}
	}
}

// A log cosigned at size 0 (an empty tree) that then signs another root
// for size 0 forked: the witness refuses it (409 witness-root-mismatch),
// as it does at any other size, and still holds the root it cosigned.
func TestAddCheckpointForkAtSizeZero(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t, "org-a.example/audit", 0)
	w := newWitness(t, openStore(t, filepath.Join(t.TempDir(), "w.db")), witnessKey(t), l.vkey)
	if _, err := w.AddCheckpoint(ctx, l.request(0)); err != nil {
		t.Fatalf("the empty tree: %v", err)
	}
	if _, err := w.AddCheckpoint(ctx, l.request(0)); err != nil {
		t.Errorf("the empty tree again: %v", err)
	}
	other := make([]byte, 32)
	other[0] = 1
	if _, err := w.AddCheckpoint(ctx, body(0, nil, l.checkpoint(0, other))); !errors.Is(err, witness.ErrRootMismatch) {
		t.Errorf("another root for size 0: %v, want %v", err, witness.ErrRootMismatch)
	}
	if _, err := w.AddCheckpoint(ctx, l.request(0)); err != nil {
		t.Errorf("the empty tree after the fork was refused: %v", err)
	}
}
