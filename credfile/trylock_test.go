//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package credfile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"mandate.dev/mandate/credfile"
)

// TryLock refuses a second holder at once, and its unlock removes the
// file, which the next run makes and locks again.
func TestTryLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.lock")
	unlock, err := credfile.TryLock(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := credfile.TryLock(path); !errors.Is(err, credfile.ErrLocked) {
		t.Fatalf("a second TryLock = %v, want ErrLocked", err)
	}
	unlock()
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the lock file after unlock: %v, want it removed", err)
	}
	// A lock file a crash left (no one holds it) is locked again.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	unlock, err = credfile.TryLock(path)
	if err != nil {
		t.Fatalf("TryLock of a file left unlocked = %v", err)
	}
	unlock()
}
