//go:build unix

package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// policy export writes the policies the authority decides with: whatever
// the umask, no other user may change them (0644 files), and a name
// already taken in the directory, even by a link to nothing, stops it
// before anything is written, nothing written through the link.
func TestPolicyExportFiles(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	pdir := filepath.Join(dir, "policies")
	if _, err := cli(t, "", dir, "policy", "export", "--dir", pdir); err != nil {
		t.Fatalf("policy export: %v", err)
	}
	entries, err := os.ReadDir(pdir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("the exported directory: %v, %d entries", err, len(entries))
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 || strings.HasPrefix(e.Name(), ".") {
			t.Errorf("exported %s with mode %v under umask 0: want a 0644 file", e.Name(), fi.Mode())
		}
	}
	if fi, err := os.Stat(pdir); err != nil || fi.Mode().Perm()&0o022 != 0 {
		t.Errorf("the exported directory: %v, %v; want one only its owner may write to", fi.Mode(), err)
	}

	other := filepath.Join(dir, "other")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "target.json"), filepath.Join(other, "data.json")); err != nil {
		t.Fatal(err)
	}
	_, err = cli(t, "", dir, "policy", "export", "--dir", other)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(other, "data.json")) {
		t.Errorf("policy export into a directory with a link at data.json = %v; want it refused, naming the link", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "target.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("policy export wrote through the link: %v", err)
	}
	if left, _ := os.ReadDir(other); len(left) != 1 {
		t.Errorf("the refused export left %d entries in the directory, want only the link", len(left))
	}
}
