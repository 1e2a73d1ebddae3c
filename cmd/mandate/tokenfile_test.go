package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// A token file is read up to a bound: a file given by mistake (a device
// that never ends, a large file) is refused, not read into memory whole.
func TestTokenFileIsBounded(t *testing.T) {
	dir := t.TempDir()
	fits := filepath.Join(dir, "fits")
	if err := os.WriteFile(fits, bytes.Repeat([]byte{'a'}, maxTokenFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := readTokenFile("--token-file", fits, "hint"); err != nil || len(b) != maxTokenFile {
		t.Errorf("a file of %d bytes: %d bytes, %v; want it read", maxTokenFile, len(b), err)
	}
	tooLarge := filepath.Join(dir, "too-large")
	if err := os.WriteFile(tooLarge, bytes.Repeat([]byte{'a'}, maxTokenFile+1), 0o600); err != nil {
		t.Fatal(err)
	}
	files := []string{tooLarge}
	if runtime.GOOS != "windows" {
		files = append(files, "/dev/zero")
	}
	for _, f := range files {
		if _, err := readTokenFile("--token-file", f, "hint"); err == nil || !strings.Contains(err.Error(), "more than") {
			t.Errorf("%s: %v; want it refused as too large", f, err)
		}
	}
}
