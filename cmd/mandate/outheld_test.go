package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A still valid credential of another identity is not written over
// because something else in its directory keeps it from loading as it
// is (its key made readable by others, its bundle damaged): fixed, it is
// usable again, and its key is nowhere else.
func TestOutHeldWhateverElseIsWrong(t *testing.T) {
	dir := t.TempDir()
	url := startServe(t, dir)
	t.Chdir(dir)
	must := func(args ...string) string {
		t.Helper()
		out, err := cli(t, url, dir, args...)
		if err != nil {
			t.Fatalf("mandate %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	tok := strings.TrimSpace(must("admin", "join-token", "create", "--quiet"))
	nodeID := strings.TrimSpace(must("node", "join", "--token", tok, "--quiet", "--bundle", "mandate-data/admin/bundle.pem"))
	for _, name := range []string{"a1", "a2"} {
		must("admin", "agent", "create", "--spiffe-id", "spiffe://mandate.localhost/agent/"+name, "--node-id", nodeID,
			"--operator", "team", "--responsible-party", "x@mandate.localhost")
	}
	for _, tc := range []struct {
		name  string
		spoil func(dir string) error
	}{
		{"key readable by others", func(dir string) error { return os.Chmod(filepath.Join(dir, "svid.key"), 0o644) }},
		{"bundle damaged", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "bundle.pem"), []byte("damaged"), 0o644)
		}},
	} {
		out := "agent-" + strings.ReplaceAll(tc.name, " ", "-")
		must("svid", "x509", "--spiffe-id", "spiffe://mandate.localhost/agent/a1", "--out", out)
		key, err := os.ReadFile(filepath.Join(out, "svid.key"))
		if err != nil {
			t.Fatal(err)
		}
		if err := tc.spoil(out); err != nil {
			t.Fatal(err)
		}
		_, err = cli(t, url, dir, "svid", "x509", "--spiffe-id", "spiffe://mandate.localhost/agent/a2", "--out", out)
		if err == nil || !strings.Contains(err.Error(), "holds the credential of spiffe://mandate.localhost/agent/a1") || !strings.Contains(err.Error(), "does not load as it is") {
			t.Errorf("%s: svid x509 of a2 into a1's credential = %v, want it refused", tc.name, err)
		}
		if now, err := os.ReadFile(filepath.Join(out, "svid.key")); err != nil || !bytes.Equal(now, key) {
			t.Errorf("%s: a1's key was replaced (%v)", tc.name, err)
		}
	}
}
