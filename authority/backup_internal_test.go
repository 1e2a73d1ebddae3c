package authority

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// A backup, once asked, is made whole and recorded whatever becomes of
// the request that asked it: its context ending (a copy of a large data
// file outlasts the request's deadline, or the client hangs up) does not
// throw the copy away.
func TestBackupOutlivesItsRequest(t *testing.T) {
	a, _ := runAuthority(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	b, err := a.MakeBackup(ctx, adminOf(t, a))
	if err != nil {
		t.Fatalf("MakeBackup with the request's context ended: %v", err)
	}
	if _, err := os.Stat(filepath.Join(b.Dir, "mandate.db")); err != nil {
		t.Fatal(err)
	}
	if n := entriesOf(t, a, "backup.created"); n != 1 {
		t.Fatalf("%d backup.created entries, want 1", n)
	}
}
