package credfile

import (
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
)

// recordSyncs makes syncDir record the directories it syncs, for the
// test's duration.
func recordSyncs(t *testing.T) func() []string {
	t.Helper()
	var mu sync.Mutex
	var synced []string
	old := syncDir
	syncDir = func(dir string) error {
		mu.Lock()
		synced = append(synced, filepath.Clean(dir))
		mu.Unlock()
		return old(dir)
	}
	t.Cleanup(func() { syncDir = old })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(synced)
	}
}

// TestPrivateDirMakesNewDirectoriesDurable: the directories PrivateDir
// creates are entries of their parents, made durable (the parent
// fsynced) before it returns, as a file's rename is: otherwise a power
// loss can take a credential, or a join's pending key, with the directory
// it was written in, although each of its files was synced.
func TestPrivateDirMakesNewDirectoriesDurable(t *testing.T) {
	base := t.TempDir()
	synced := recordSyncs(t)
	dir := filepath.Join(base, "a", "b")
	if err := PrivateDir(dir); err != nil {
		t.Fatal(err)
	}
	for _, parent := range []string{base, filepath.Join(base, "a")} {
		if !slices.Contains(synced(), parent) {
			t.Errorf("PrivateDir(%s) created a directory in %s without syncing it (synced: %q)", dir, parent, synced())
		}
	}
	// An existing directory is left as it is: nothing to sync.
	before := len(synced())
	if err := PrivateDir(dir); err != nil {
		t.Fatal(err)
	}
	if n := len(synced()); n != before {
		t.Errorf("PrivateDir of an existing directory synced %q", synced()[before:])
	}
}

// TestWriteInNewDirectoryIsDurable: Write into a directory it creates
// syncs that directory's parent, not only the files' own directory.
func TestWriteInNewDirectoryIsDurable(t *testing.T) {
	base := t.TempDir()
	synced := recordSyncs(t)
	cert, key := testPair(t)
	p := In(filepath.Join(base, "creds"))
	if err := Write(p, []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(synced(), base) {
		t.Errorf("Write into a new directory did not sync its parent %s (synced: %q)", base, synced())
	}
	if _, _, _, err := Load(p); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Dir(p.Cert)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("credential directory: %v, %v; want mode 0700", fi, err)
	}
}

// TestWriteWhereDirectoriesCannotBeSynced: a file system that cannot
// sync a directory (fsync answers EINVAL, or ENOTSUP: some FUSE and
// network file systems; Windows refuses a directory handle alike) has
// nothing more to make durable: a credential is written there, not
// refused after its files were renamed into place. A sync that fails
// otherwise (EIO) still fails the write.
func TestWriteWhereDirectoriesCannotBeSynced(t *testing.T) {
	cert, key := testPair(t)
	for _, tc := range []struct {
		errno syscall.Errno
		fails bool
	}{
		{syscall.EINVAL, false},
		{syscall.ENOTSUP, false},
		{syscall.EIO, true},
	} {
		t.Run(tc.errno.Error(), func(t *testing.T) {
			old := fsyncDir
			fsyncDir = func(d *os.File) error {
				return &fs.PathError{Op: "sync", Path: d.Name(), Err: tc.errno}
			}
			t.Cleanup(func() { fsyncDir = old })
			p := In(filepath.Join(t.TempDir(), "creds"))
			err := Write(p, []*x509.Certificate{cert}, key, []*x509.Certificate{cert})
			if tc.fails {
				if !errors.Is(err, tc.errno) {
					t.Errorf("Write with directory syncs failing with %v: %v, want that error", tc.errno, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Write where directories cannot be synced (%v): %v", tc.errno, err)
			}
			if _, _, _, err := Load(p); err != nil {
				t.Error(err)
			}
		})
	}
}
