package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fullWriter is a stdout on a full disk: every write fails.
type fullWriter struct{}

func (fullWriter) Write([]byte) (int, error) { return 0, syscall.ENOSPC }

// TestCLIUnwrittenOutputFails: a command whose result could not be written
// to stdout fails (exit status 1), whichever command it is and however it
// prints, with the write error said on stderr.
func TestCLIUnwrittenOutputFails(t *testing.T) {
	dir := t.TempDir()
	url := startServe(t, dir)
	t.Chdir(dir)
	t.Setenv("MANDATE_SERVER", url)
	if _, err := cli(t, url, dir, "admin", "join-token", "create"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, url, dir, "audit", "prove", "0", "--out", "entry0.proof"); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "mandate-data")
	for _, args := range [][]string{
		{"version"},
		{"help"},
		{"policy", "test"},
		{"bundle", "show", "--bundle", filepath.Join(data, "admin", "bundle.pem")},
		{"audit", "tail", "--data-dir", data},
		{"audit", "tail", "--json", "--data-dir", data},
		{"audit", "verify", "--data-dir", data, "--state", filepath.Join(dir, "state")},
		{"audit", "check-proof", "entry0.proof", "--data-dir", data},
		{"admin", "agent", "list", "--data-dir", data},
	} {
		var errOut bytes.Buffer
		err := run(context.Background(), args, fullWriter{}, &errOut)
		if !errors.Is(err, syscall.ENOSPC) || errors.As(err, new(usageError)) {
			t.Errorf("mandate %s with stdout on a full disk = %v, want the write error", strings.Join(args, " "), err)
		}
	}
}
