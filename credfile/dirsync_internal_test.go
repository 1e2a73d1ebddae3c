package credfile

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"sync"
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
