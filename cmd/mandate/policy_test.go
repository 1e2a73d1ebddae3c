package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"mandate.dev/mandate/policy"
)

// TestCLIPolicy: export the embedded policies, test them, serve them from
// the directory, change them and reload.
func TestCLIPolicy(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	pdir := filepath.Join(dir, "policies")
	if _, err := cli(t, "", dir, "policy", "export", "--dir", pdir); err != nil {
		t.Fatalf("policy export: %v", err)
	}
	out, err := cli(t, "", dir, "policy", "test", "--dir", pdir)
	if err != nil || !strings.HasPrefix(out, "PASS: ") {
		t.Fatalf("policy test: %v\n%s", err, out)
	}
	// A directory that is not there, or a file, is named as such: a
	// runtime failure (exit status 1), with the loader's "stat ." nowhere.
	for _, tc := range []struct{ dir, want string }{
		{filepath.Join(dir, "nosuch"), "--dir: stat " + filepath.Join(dir, "nosuch") + ": no such file or directory"},
		{filepath.Join(pdir, "issuance.rego"), "--dir " + filepath.Join(pdir, "issuance.rego") + ": not a directory"},
	} {
		out, err := cli(t, "", dir, "policy", "test", "--dir", tc.dir)
		if err == nil || err.Error() != tc.want || errors.As(err, new(exitError)) || errors.As(err, new(usageError)) || out != "" {
			t.Errorf("policy test --dir %s = %v, output %q; want the error %q", tc.dir, err, out, tc.want)
		}
	}
	url := startServe(t, dir, "--policy-dir", pdir)
	status := func() map[string]any {
		s, err := cli(t, url, dir, "policy", "status", "--data-dir", filepath.Join(dir, "mandate-data"))
		if err != nil {
			t.Fatalf("policy status: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	before := status()
	if before["dir"] != pdir {
		t.Fatalf("status: %v", before)
	}
	// A failing test in the directory: reload is refused, nothing changes.
	bad := filepath.Join(pdir, "bad_test.rego")
	if err := os.WriteFile(bad, []byte("package bad\nimport rego.v1\ntest_no if false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, url, dir, "policy", "reload", "--data-dir", filepath.Join(dir, "mandate-data")); err == nil || !strings.Contains(err.Error(), "policy-rejected") {
		t.Fatalf("reload with a failing test = %v", err)
	}
	// Refused, with the exit status 1 of every failure and the reason
	// on stderr: nothing on stdout, which holds results only.
	if out, err := cli(t, "", dir, "policy", "test", "--dir", pdir); err == nil || !errors.Is(err, policy.ErrRejected) ||
		!strings.Contains(err.Error(), "bad.test_no") || errors.As(err, new(usageError)) || out != "" {
		t.Fatalf("policy test with a failing test = %v, stdout %q; want the refusal as the error, stdout empty", err, out)
	}
	if err := os.WriteFile(bad, []byte("package bad\nimport rego.v1\ntest_no if {\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := cli(t, "", dir, "policy", "test", "--dir", pdir); err == nil || !errors.Is(err, policy.ErrRejected) ||
		!strings.Contains(err.Error(), "rego_parse_error") || out != "" {
		t.Fatalf("policy test with a module that does not parse = %v, stdout %q; want the refusal as the error, stdout empty", err, out)
	}
	os.Remove(bad)
	if err := os.WriteFile(filepath.Join(pdir, "more.rego"), []byte("package more\nimport rego.v1\nx := 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, url, dir, "policy", "reload", "--data-dir", filepath.Join(dir, "mandate-data")); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if after := status(); after["revision"] == before["revision"] {
		t.Fatalf("the revision did not change: %v", after)
	}
}
