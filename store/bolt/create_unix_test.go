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
