package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// A token the authority issued (and logged) whose --out file cannot be
// written after all (the path replaced after the check: here by a
// directory) is not lost without a word: the error names what was issued
// (a delegation's id and audit index, which its revocation takes; a
// JWT-SVID's subject and expiry) and what to do, never the token itself.
func TestCLIOutWriteFailsAfterIssue(t *testing.T) {
	dir := t.TempDir()
	url := startServe(t, dir)
	t.Chdir(dir)
	must := func(args ...string) string { t.Helper(); return mustCLI(t, url, dir, args...) }
	node := filepath.Join(dir, "node")
	nodeID := joinNode(t, url, dir, node)
	id := "spiffe://mandate.localhost/agent/planner"
	must("admin", "agent", "create", "--spiffe-id", id, "--node-id", nodeID, "--operator", "team", "--responsible-party", "p@example.com", "--scope", "mail:send")
	must("admin", "agent", "create", "--spiffe-id", "spiffe://mandate.localhost/agent/booker", "--node-id", nodeID, "--operator", "team", "--responsible-party", "p@example.com")
	agent := filepath.Join(dir, "planner")
	must("svid", "x509", "--spiffe-id", id, "--creds", node, "--out", agent)

	defer func() { outWriting = nil }()
	outWriting = func(path string) {
		if err := os.Mkdir(path, 0o700); err != nil {
			t.Error(err)
		}
	}
	jwtRE := regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+`)

	t.Run("delegate request", func(t *testing.T) {
		out := filepath.Join(dir, "d.jwt")
		stdout, err := cli(t, url, dir, "delegate", "request", "--creds", agent, "--delegatee", "spiffe://mandate.localhost/agent/booker",
			"--scope", "mail:send", "--principal", "alice@example.com", "--out", out)
		if err == nil {
			t.Fatalf("delegate request with --out replaced by a directory succeeded:\n%s", stdout)
		}
		m := regexp.MustCompile(`delegation (\S+) \(audit log index (\d+)`).FindStringSubmatch(err.Error())
		if m == nil || !strings.Contains(err.Error(), "mandate admin revoke delegation "+m[1]) || !strings.Contains(err.Error(), out) {
			t.Fatalf("delegate request's error = %v, want the delegation's id, audit index, --out and how to revoke it", err)
		}
		if jwtRE.MatchString(err.Error()) || jwtRE.MatchString(stdout) {
			t.Fatalf("delegate request showed the token: %v\n%s", err, stdout)
		}
		// The id and index named are those of the delegation issued.
		entry := must("audit", "search", "--delegation-id", m[1], "--type", "delegation.issued")
		if !strings.HasPrefix(entry, "#"+m[2]+" ") {
			t.Fatalf("audit search for delegation %s:\n%s\nwant its entry at %s", m[1], entry, m[2])
		}
		// And what it says to do works.
		must("admin", "revoke", "delegation", m[1], "--reason", "token not written")
	})
	t.Run("svid jwt", func(t *testing.T) {
		out := filepath.Join(dir, "s.jwt")
		stdout, err := cli(t, url, dir, "svid", "jwt", "--creds", agent, "--audience", "https://api.example.com", "--out", out)
		if err == nil {
			t.Fatalf("svid jwt with --out replaced by a directory succeeded:\n%s", stdout)
		}
		if !strings.Contains(err.Error(), "JWT-SVID for "+id) || !strings.Contains(err.Error(), "expires at") || !strings.Contains(err.Error(), out) {
			t.Fatalf("svid jwt's error = %v, want what was issued, until when, and --out", err)
		}
		if jwtRE.MatchString(err.Error()) || jwtRE.MatchString(stdout) {
			t.Fatalf("svid jwt showed the token: %v\n%s", err, stdout)
		}
	})
}
