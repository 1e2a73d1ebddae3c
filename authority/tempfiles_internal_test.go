package authority

import (
	"os"
	"path/filepath"
	"testing"
)

// Temporary files a crash left where the authority writes its own files
// (the admin credential, the audit keys), parts of keys among them, are
// gone after the next start, whatever their age.
func TestStartRemovesTemporaryFilesACrashLeft(t *testing.T) {
	dir := t.TempDir()
	first, stop := runAuthorityWith(t, Options{}, func(c *Config) { c.DataDir = dir })
	stop()
	first.Close()
	auditKey, _ := AuditPaths(dir)
	left := []string{
		filepath.Join(filepath.Dir(AdminPaths(dir).Key), ".tmp-svid.key-123"),
		filepath.Join(filepath.Dir(auditKey), ".tmp-log.key.new-456"),
		filepath.Join(filepath.Dir(auditKey), ".tmp-log.vkey-789"),
	}
	for _, p := range left {
		if err := os.WriteFile(p, []byte("part of a key"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kept := filepath.Join(dir, "admin", "notes.txt")
	if err := os.WriteFile(kept, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	runAuthorityWith(t, Options{}, func(c *Config) { c.DataDir = dir })
	for _, p := range left {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s after a start: %v, want it removed", filepath.Base(p), err)
		}
	}
	if _, err := os.Stat(kept); err != nil {
		t.Errorf("a file of another name: %v, want it kept", err)
	}
}
