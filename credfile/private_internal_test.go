//go:build unix

package credfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestReadPrivateReadsTheFileItChecked: ReadPrivate returns the content
// of the file whose mode and owner it checked. A file put in its place
// meanwhile (by whoever may write to its directory: one others may
// read, or a named pipe whose writer is theirs) is never what it
// returns.
func TestReadPrivateReadsTheFileItChecked(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("the checked key\n")
	readable := filepath.Join(dir, "readable")
	if err := os.WriteFile(readable, []byte("readable by others\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, swapIn := range []string{readable, fifo} {
		t.Run(filepath.Base(swapIn), func(t *testing.T) {
			key := filepath.Join(t.TempDir(), "svid.key")
			if err := os.WriteFile(key, secret, 0o600); err != nil {
				t.Fatal(err)
			}
			privateChecked = func(path string) {
				tmp := path + ".swap"
				if err := os.Symlink(swapIn, tmp); err != nil {
					t.Error(err)
				}
				if err := os.Rename(tmp, path); err != nil {
					t.Error(err)
				}
				if swapIn == fifo {
					// The pipe's writer, which the reader of the pipe
					// would read from.
					go func() {
						if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
							w.Write([]byte("written into the pipe\n"))
							w.Close()
						}
					}()
				}
			}
			t.Cleanup(func() {
				privateChecked = nil
				// A writer left waiting for a reader is let go.
				if r, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
					r.Close()
				}
			})
			b, err := ReadPrivate(key)
			switch {
			case err == nil && !bytes.Equal(b, secret):
				t.Errorf("ReadPrivate returned %q, from the file put in place of the one it checked", b)
			case err != nil && !errors.Is(err, ErrNotPrivate):
				t.Errorf("ReadPrivate: %v, want the checked content or ErrNotPrivate", err)
			}
		})
	}
}
