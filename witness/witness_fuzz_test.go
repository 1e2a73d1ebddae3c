package witness_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"mandate.dev/mandate/witness"
)

// FuzzAddCheckpoint sends arbitrary bodies to a witness of one log:
// never a panic, and every refusal one of the witness's.
func FuzzAddCheckpoint(f *testing.F) {
	l := newTestLog(f, "org-a.example/audit", 6)
	w := newWitness(f, openStore(f, filepath.Join(f.TempDir(), "w.db")), witnessKey(f), l.vkey)
	first := l.request(0)
	if _, err := w.AddCheckpoint(context.Background(), first); err != nil {
		f.Fatal(err)
	}
	l.grow(3)
	f.Add(l.request(6))
	f.Add(l.request(0))
	f.Add(first)
	f.Add([]byte("old 6\n\n"))
	f.Add([]byte("old 18446744073709551615\n\norg-a.example/audit\n1\nAAAA\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := w.AddCheckpoint(context.Background(), b)
		var c *witness.SizeConflict
		if err != nil && !errors.Is(err, witness.ErrMalformed) && !errors.Is(err, witness.ErrUnknownLog) && !errors.Is(err, witness.ErrNotSigned) &&
			!errors.Is(err, witness.ErrInconsistent) && !errors.Is(err, witness.ErrRootMismatch) && !errors.As(err, &c) {
			t.Fatalf("AddCheckpoint(%q) = %v, not one of the witness's refusals", b, err)
		}
	})
}
