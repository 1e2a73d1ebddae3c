//go:build unix

package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"mandate.dev/mandate/store"
)

// unwritableEnv names the data file a child process of the test binary
// writes to while its files may not grow (RLIMIT_FSIZE at the file's
// size, as on a full disk), then again once they may.
const unwritableEnv = "MANDATE_BOLT_TEST_UNWRITABLE"

// unwritableChild is the child's part of TestUpdateUnwritable: what it
// prints on failure is the test's error.
func unwritableChild(path string) error {
	ctx := context.Background()
	s, err := Open(path, Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	put := func(key string, size int) error {
		return s.Update(ctx, func(tx store.Tx) error {
			return tx.Put("b", []byte(key), bytes.Repeat([]byte{'x'}, size))
		})
	}
	if err := put("small", 10); err != nil {
		return fmt.Errorf("first Update: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		return err
	}
	lim := old
	lim.Cur = uint64(fi.Size())
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		return err
	}
	err = put("big", 1<<20)
	if !errors.Is(err, store.ErrUnwritable) {
		return fmt.Errorf("Update that must grow the file past the limit = %v, want store.ErrUnwritable", err)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		return err
	}
	// Room again: the same store takes writes, and kept what it had.
	if err := put("big", 1<<20); err != nil {
		return fmt.Errorf("Update once the file may grow = %v, want nil", err)
	}
	return s.View(ctx, func(tx store.Tx) error {
		for key, size := range map[string]int{"small": 10, "big": 1 << 20} {
			v, err := tx.Get("b", []byte(key))
			if err != nil || len(v) != size {
				return fmt.Errorf("after recovery, %s: %d bytes, %v; want %d", key, len(v), err, size)
			}
		}
		return nil
	})
}

// An Update whose commit cannot be written (its file may not grow: a full
// disk) fails with store.ErrUnwritable, which callers answer as a
// temporary refusal, not as a fault of theirs. The store stays usable:
// once the file may grow, the next Update succeeds.
func TestUpdateUnwritable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mandate.db")
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), unwritableEnv+"="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}
