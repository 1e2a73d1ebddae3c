package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/logtest"
)

// syncBuffer is a bytes.Buffer safe for a writer and a concurrent reader.
type syncBuffer = logtest.Buffer

// startServe runs "mandate serve" in-process with dir as its data
// directory's parent and returns the server URL.
func startServe(t *testing.T, dir string, extra ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, errOut := &syncBuffer{}, &syncBuffer{}
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "mandate-data")}, extra...)
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, out, errOut) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("serve stopped with %v; log:\n%s", err, errOut)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := servingRE.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
		select {
		case err := <-done:
			done <- err // for the cleanup, which waits for it
			t.Fatalf("serve exited: %v; log:\n%s", err, errOut)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("serve did not start; log:\n%s", errOut)
	return ""
}

// readmeBlock returns the text between two marker lines of README.md.
func readmeBlock(t *testing.T, start, end string) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i, j := strings.Index(s, start), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("README.md has no block between %q and %q", start, end)
	}
	return s[i+len(start) : j]
}

// TestReadmeQuickstart runs the README's quickstart, as written, against a
// server started the way the README says.
func TestReadmeQuickstart(t *testing.T) {
	block := readmeBlock(t, "<!-- quickstart: tested by cmd/mandate/readme_test.go -->", "<!-- end quickstart -->")
	script := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(block), "```sh"), "```")
	if !strings.Contains(script, "go build -o mandate ./cmd/mandate") {
		t.Fatal("the quickstart no longer builds ./mandate; update this test")
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "mandate"), ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	script = strings.Replace(script, "go build -o mandate ./cmd/mandate", "", 1)
	url := startServe(t, dir)

	cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "MANDATE_SERVER="+url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("quickstart failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		`"spiffe_id": "spiffe://mandate.localhost/agent/hello"`,
		`"responsible_party": "alice@example.com"`,
		`"credential": "mandate-agent"`,
		`"use": "x509-svid"`,
		`"use": "jwt-svid"`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("quickstart output lacks %s:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`(?m)^ey[\w-]+\.ey[\w-]+\.[\w-]+$`).Match(out) {
		t.Errorf("quickstart printed no JWT-SVID:\n%s", out)
	}
	for _, f := range []string{"mandate-node/svid.key", "mandate-agent/svid.key", "mandate-data/admin/svid.key"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, fi.Mode().Perm())
		}
	}
}

// TestReadmeConfigReference checks that the README's configuration
// reference is the one `mandate serve -h` prints, and that it is a valid
// configuration file.
func TestReadmeConfigReference(t *testing.T) {
	block := readmeBlock(t, "naming the key. `mandate serve -h` prints this reference:", "Files in the data directory")
	yml := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(block), "```yaml")), "```"))
	var help []string
	for _, line := range strings.Split(strings.TrimSpace(serveHelp[strings.Index(serveHelp, "\n\n")+2:]), "\n") {
		help = append(help, strings.TrimPrefix(line, "  "))
	}
	if got := strings.Join(help, "\n"); got != yml {
		t.Errorf("README configuration reference differs from serve -h:\nREADME:\n%s\n\nserve -h:\n%s", yml, got)
	}
	doc := strings.ReplaceAll(yml, "<td>", "mandate.localhost")
	path := filepath.Join(t.TempDir(), "mandate.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := authority.LoadConfigFile(path); err != nil {
		t.Errorf("LoadConfigFile(README reference) = %v", err)
	}
	var anyDoc map[string]any
	if err := yaml.Unmarshal([]byte(doc), &anyDoc); err != nil {
		t.Errorf("README reference is not YAML: %v", err)
	}
}

// readmeCommands are the "mandate ..." command lines of a README block,
// their comments left out.
func readmeCommands(t *testing.T, block string) [][]string {
	t.Helper()
	var cmds [][]string
	for line := range strings.Lines(block) {
		line, _, _ = strings.Cut(line, "#")
		if f := strings.Fields(line); len(f) > 1 && f[0] == "mandate" {
			cmds = append(cmds, f[1:])
		}
	}
	if len(cmds) == 0 {
		t.Fatalf("no mandate command in the README block:\n%s", block)
	}
	return cmds
}

// TestReadmeAuditCommands runs the README's audit commands, as written,
// in the directory the authority runs in.
func TestReadmeAuditCommands(t *testing.T) {
	cmds := readmeCommands(t, readmeBlock(t, "server (`golang.org/x/mod/sumdb/note`, `transparency-dev/merkle`):", "`verify` remembers the last checkpoint"))
	dir := t.TempDir()
	url := startServe(t, dir)
	t.Chdir(dir)
	// Entries for "show 3" and "prove 3" to find.
	for range 3 {
		if _, err := cli(t, url, dir, "admin", "join-token", "create"); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range cmds {
		if out, err := cli(t, url, dir, args...); err != nil {
			t.Errorf("mandate %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "entry3.tlog-proof")); err != nil {
		t.Errorf("audit prove --out wrote no proof: %v", err)
	}
}

// TestReadmePolicyCommands runs the README's policy commands, as written:
// the serve line as startServe starts the authority.
func TestReadmePolicyCommands(t *testing.T) {
	cmds := readmeCommands(t, readmeBlock(t, "says), result and policy revision.", "A reload whose policies do not compile"))
	dir := t.TempDir()
	t.Chdir(dir)
	var url string
	for _, args := range cmds {
		if args[0] == "serve" {
			url = startServe(t, dir, args[1:]...)
			continue
		}
		out, err := cli(t, url, dir, append(args, policyDataDir(args, dir)...)...)
		if err != nil {
			t.Errorf("mandate %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if args[1] == "status" && !strings.Contains(out, `"dir": "my-policies"`) {
			t.Errorf("policy status after serve --policy-dir my-policies: %s", out)
		}
	}
	if url == "" {
		t.Fatal("the README's policy commands start no authority")
	}
}

// policyDataDir is the --data-dir a policy command that asks the
// authority needs when run from the test (cli adds it to admin commands).
func policyDataDir(args []string, dir string) []string {
	if args[0] == "policy" && (args[1] == "status" || args[1] == "reload") {
		return []string{"--data-dir", filepath.Join(dir, "mandate-data")}
	}
	return nil
}
