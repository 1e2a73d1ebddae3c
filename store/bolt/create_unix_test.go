//go:build unix

package bolt

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// limitedOpenEnv names the data file a child process of the test binary
// opens with its files limited to one page (RLIMIT_FSIZE), as on a full
// disk.
const limitedOpenEnv = "MANDATE_BOLT_TEST_LIMITED_OPEN"

func TestMain(m *testing.M) {
	if path := os.Getenv(limitedOpenEnv); path != "" {
		lim := syscall.Rlimit{Cur: 4096, Max: 4096}
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			fmt.Fprintln(os.Stderr, "setrlimit:", err)
			os.Exit(2)
		}
		s, err := Open(path, Options{})
		if err == nil {
			s.Close()
			fmt.Fprintln(os.Stderr, "opened")
			os.Exit(3)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if path := os.Getenv(unwritableEnv); path != "" {
		if err := unwritableChild(path); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A data file whose creation could not be written whole (here a process
// whose files may not grow past a page, as on a full disk) leaves
// nothing behind: once there is room, Open creates it, rather than
// refusing a partial file as damaged for ever.
func TestCreateCutShortLeavesNoFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mandate.db")
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), limitedOpenEnv+"="+path)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("Open with files limited to a page: %v, %s; want it to fail", err, out)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after a creation cut short: Lstat(%s) = %v, want no file", path, err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		t.Errorf("after a creation cut short: %s left in the directory", e.Name())
	}
	s := mustOpen(t, path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// Two first starts on one data directory at once: the one that creates
// the data file first may remove the other's temporary file as one a
// crash left. The other keeps the file created first and opens it (or,
// while the first holds it, is refused as locked), never failing on its
// own temporary file gone.
func TestCreateRacedByAnother(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mandate.db")
	defer func(f func(string, string)) { beforeLink = f }(beforeLink)
	beforeLink = func(tmp, path string) {
		beforeLink = func(string, string) {} // the other start's own create goes its way
		// The other start: its data file made, this one's temporary
		// file removed.
		other, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		other.Close()
		if err := os.Remove(tmp); err != nil {
			t.Fatal(err)
		}
	}
	s, err := Open(path, Options{Check: true})
	if err != nil {
		t.Fatalf("Open with its temporary file removed by another start's = %v, want the file that start made", err)
	}
	s.Close()
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".tmp-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
