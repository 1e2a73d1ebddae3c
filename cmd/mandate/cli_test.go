package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
)

// cli runs one mandate command in-process against the authority at url
// whose data directory is under dir.
func cli(t *testing.T, url, dir string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t.Setenv("MANDATE_SERVER", url)
	full := append([]string(nil), args...)
	if len(args) > 0 && (args[0] == "admin" || args[0] == "bench" || args[0] == "audit") {
		full = append(full, "--data-dir", filepath.Join(dir, "mandate-data"))
	}
	err := run(ctx, full, &out, &errOut)
	return out.String(), err
}

// mustCLI is cli, failing the test if the command fails.
func mustCLI(t *testing.T, url, dir string, args ...string) string {
	t.Helper()
	out, err := cli(t, url, dir, args...)
	if err != nil {
		t.Fatalf("mandate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// joinToken is a new join token of the authority at url.
func joinToken(t *testing.T, url, dir string) string {
	t.Helper()
	return strings.TrimSpace(mustCLI(t, url, dir, "admin", "join-token", "create", "--quiet"))
}

// joinNode joins a new node (a new join token) into out (node join's
// default if ""), and returns its SPIFFE ID.
func joinNode(t *testing.T, url, dir, out string) string {
	t.Helper()
	args := []string{"node", "join", "--token", joinToken(t, url, dir), "--quiet", "--bundle", filepath.Join(dir, "mandate-data/admin/bundle.pem")}
	if out != "" {
		args = append(args, "--out", out)
	}
	return strings.TrimSpace(mustCLI(t, url, dir, args...))
}

func TestCLIAdminCommands(t *testing.T) {
	dir := t.TempDir()
	url := startServe(t, dir)
	t.Chdir(dir)

	token, err := cli(t, url, dir, "admin", "join-token", "create", "--quiet")
	if err != nil {
		t.Fatalf("join-token create: %v", err)
	}
	nodeID, err := cli(t, url, dir, "node", "join", "--token", strings.TrimSpace(token), "--quiet", "--bundle", "mandate-data/admin/bundle.pem")
	if err != nil {
		t.Fatalf("node join: %v", err)
	}
	nodeID = strings.TrimSpace(nodeID)
	// The token from a file, off the command line (other local users can
	// read command lines); one of --token and --token-file, not none.
	token2, err := cli(t, url, dir, "admin", "join-token", "create", "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token2), 0o600); err != nil {
		t.Fatal(err)
	}
	if id, err := cli(t, url, dir, "node", "join", "--token-file", "token", "--quiet", "--bundle", "mandate-data/admin/bundle.pem", "--out", "node2"); err != nil ||
		!strings.HasPrefix(id, "spiffe://mandate.localhost/node/") {
		t.Fatalf("node join --token-file: %q, %v", id, err)
	}
	if _, err := cli(t, url, dir, "node", "join", "--quiet"); err == nil || !strings.Contains(err.Error(), "--token-file") {
		t.Fatalf("node join without a token: %v, want a usage error naming both flags", err)
	}
	// A join into a directory holding another node's valid credential is
	// refused before the token is spent: the token still joins elsewhere.
	token3, err := cli(t, url, dir, "admin", "join-token", "create", "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	heldBefore, _ := os.ReadFile(filepath.Join(dir, "node2", "svid.key"))
	if _, err := cli(t, url, dir, "node", "join", "--token", strings.TrimSpace(token3), "--quiet", "--bundle", "mandate-data/admin/bundle.pem", "--out", "node2"); err == nil ||
		!strings.Contains(err.Error(), "holds the credential of spiffe://mandate.localhost/node/") {
		t.Fatalf("node join into another node's credential directory: %v, want it refused", err)
	}
	if heldAfter, _ := os.ReadFile(filepath.Join(dir, "node2", "svid.key")); !bytes.Equal(heldBefore, heldAfter) {
		t.Fatal("the refused join replaced the key in node2")
	}
	// An --out that cannot be written to is found before the token is spent.
	if err := os.WriteFile(filepath.Join(dir, "a-file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, url, dir, "node", "join", "--token", strings.TrimSpace(token3), "--quiet", "--bundle", "mandate-data/admin/bundle.pem", "--out", "a-file/node"); err == nil {
		t.Fatal("node join into a path under a file succeeded")
	}
	if _, err := cli(t, url, dir, "node", "join", "--token", strings.TrimSpace(token3), "--quiet", "--bundle", "mandate-data/admin/bundle.pem", "--out", "node3"); err != nil {
		t.Fatalf("node join with the token of the refused joins: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node3", "join.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("join.key left after the join: %v", err)
	}
	// A join whose answer was lost: the same command again gets the node.
	token4, err := cli(t, url, dir, "admin", "join-token", "create", "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := encodeJoinKey(key, tokenDigest(strings.TrimSpace(token4)))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "node4"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "node4", "join.key"), kb, 0o600); err != nil {
		t.Fatal(err)
	}
	bundle := adminRoots(t, dir)
	pub, err := client.New(client.Config{Server: url, Bundle: bundle})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := client.CSRFor(key, spiffeid.ID{})
	if err != nil {
		t.Fatal(err)
	}
	lost, err := pub.Join(t.Context(), strings.TrimSpace(token4), csr) // its answer never reaches the CLI
	if err != nil {
		t.Fatal(err)
	}
	if id, err := cli(t, url, dir, "node", "join", "--token", strings.TrimSpace(token4), "--quiet", "--bundle", "mandate-data/admin/bundle.pem", "--out", "node4"); err != nil || strings.TrimSpace(id) != lost.SPIFFEID {
		t.Fatalf("node join again after a lost answer: %q, %v; want %s", id, err, lost.SPIFFEID)
	}
	// A token withdrawn before it is used lets no node join.
	created, err := cli(t, url, dir, "admin", "join-token", "create")
	if err != nil {
		t.Fatal(err)
	}
	var withdrawn struct{ Token, ID string }
	if err := json.Unmarshal([]byte(created), &withdrawn); err != nil {
		t.Fatal(err)
	}
	// The token given in place of its id is shown nowhere: not in the
	// error of an authority's refusal, nor in that of a call that found
	// no authority (which names the URL it asked).
	for _, at := range []string{url, "https://" + freeAddr(t)} {
		if _, err := cli(t, at, dir, "admin", "join-token", "withdraw", withdrawn.Token); err == nil || strings.Contains(err.Error(), withdrawn.Token) {
			t.Errorf("admin join-token withdraw TOKEN (at %s) = %v, want it refused without the token", at, err)
		}
	}
	if _, err := cli(t, url, dir, "admin", "join-token", "withdraw", withdrawn.ID); err != nil {
		t.Fatalf("admin join-token withdraw: %v", err)
	}
	if _, err := cli(t, url, dir, "node", "join", "--token", withdrawn.Token, "--quiet", "--bundle", "mandate-data/admin/bundle.pem", "--out", "withdrawn"); err == nil || !strings.Contains(err.Error(), "withdrawn") {
		t.Errorf("node join with a withdrawn token = %v, want it refused as withdrawn", err)
	}
	// A join cut short while writing its credential (the key and
	// certificate written, join.key and bundles.json not yet settled):
	// the same command again finishes it, for the same node.
	token5, err := cli(t, url, dir, "admin", "join-token", "create", "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	join5 := []string{"node", "join", "--token", strings.TrimSpace(token5), "--quiet", "--bundle", "mandate-data/admin/bundle.pem", "--out", "node5"}
	id5, err := cli(t, url, dir, join5...)
	if err != nil {
		t.Fatal(err)
	}
	svidKey, err := os.ReadFile(filepath.Join(dir, "node5", "svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	key5, err := credfile.ParseKeyPEM(svidKey)
	if err != nil {
		t.Fatal(err)
	}
	kb5, err := encodeJoinKey(key5, tokenDigest(strings.TrimSpace(token5)))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "node5", "join.key"), kb5, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "node5", "bundles.json")); err != nil {
		t.Fatal(err)
	}
	if again, err := cli(t, url, dir, join5...); err != nil || again != id5 {
		t.Fatalf("node join again after its write was cut short: %q, %v; want %s", again, err, id5)
	}
	for name, want := range map[string]bool{"join.key": false, "bundles.json": true} {
		if _, err := os.Stat(filepath.Join(dir, "node5", name)); (err == nil) != want {
			t.Errorf("%s after the join was finished: %v, want present %v", name, err, want)
		}
	}
	out, err := cli(t, url, dir, "admin", "agent", "create", "--spiffe-id", "spiffe://mandate.localhost/agent/a1", "--node-id", nodeID, "--scope", "read", "--x509-ttl", "30m")
	if err != nil {
		t.Fatalf("agent create: %v", err)
	}
	var reg struct {
		ID             string   `json:"id"`
		Scopes         []string `json:"scopes"`
		X509TTLSeconds int64    `json:"x509_ttl_seconds"`
	}
	if err := json.Unmarshal([]byte(out), &reg); err != nil || reg.ID == "" || reg.X509TTLSeconds != 1800 {
		t.Fatalf("agent create printed %s (%v)", out, err)
	}
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"admin", "agent", "list"}, `"spiffe_id": "spiffe://mandate.localhost/agent/a1"`},
		{[]string{"admin", "agent", "show", reg.ID}, `"read"`},
		{[]string{"admin", "agent", "update", reg.ID, "--spiffe-id", "spiffe://mandate.localhost/agent/a1", "--node-id", nodeID, "--scope", "write"}, `"write"`},
		{[]string{"svid", "x509", "--spiffe-id", "spiffe://mandate.localhost/agent/a1", "--out", "agent"}, `"credential": "agent"`},
		{[]string{"svid", "x509", "--spiffe-id", "spiffe://mandate.localhost/agent/a1", "--creds", "agent", "--out", "agent"}, `"credential": "agent"`},
		{[]string{"svid", "jwt", "--creds", "agent", "--audience", "x", "--json"}, `"token": "ey`},
		{[]string{"svid", "jwt", "--creds", "agent", "--audience", "x", "--out", "agent/token.jwt"}, ``},
		{[]string{"admin", "node", "list"}, nodeID},
		{[]string{"admin", "node", "show", nodeID}, `"attestation_method": "join"`},
		{[]string{"admin", "node", "ban", nodeID, "--reason", "test"}, `"banned": true`},
		// When it was banned, as the node record says.
		{[]string{"admin", "node", "ban", nodeID}, `"banned_at": "`},
		{[]string{"admin", "node", "list"}, `"banned_at": "`},
		{[]string{"admin", "agent", "delete", reg.ID}, `"deleted"`},
		{[]string{"admin", "federation", "list"}, `"federations": []`},
		{[]string{"bundle", "show", "--bundle", "mandate-data/admin/bundle.pem"}, `"spiffe_sequence"`},
		{[]string{"admin", "ca", "rotate", "--kind", "x509", "--reason", "test"}, `"state": "prepared"`},
		{[]string{"admin", "ca", "rotate", "--kind", "jwt", "--reason", "test", "--immediately"}, `"state": "active"`},
		{[]string{"admin", "ca", "status"}, `"activates_at": "`},
	}
	for _, s := range steps {
		out, err := cli(t, url, dir, s.args...)
		if err != nil || !strings.Contains(out, s.want) {
			t.Errorf("mandate %s = %q, %v; want output containing %s", strings.Join(s.args, " "), out, err, s.want)
		}
	}
	// Errors a new user meets say what to do.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"admin", "agent", "show", "spiffe://mandate.localhost/agent/a1"}, "give the registration's id"},
		{[]string{"svid", "jwt", "--audience", "x"}, "--creds mandate-node is a node's credential: give --spiffe-id"},
		{[]string{"svid", "jwt", "--audience", "x", "--creds", "agent", "--server", "127.0.0.1:8443"}, `"127.0.0.1:8443" is not an https:// URL`},
		{[]string{"svid", "jwt", "--audience", "x", "--creds", "no-such-dir"}, "no credential in no-such-dir"},
		{[]string{"admin", "ca", "rotate", "--kind", "x509", "--reason", "r", "--immediately"}, "--immediately is for a JWT key only"},
		{[]string{"admin", "ca", "rotate", "--kind", "jwt"}, "--reason is required"},
		{[]string{"admin", "ca", "rotate", "--kind", "x5", "--reason", "r"}, `--kind "x5": want x509 (the X.509 CA) or jwt`},
		{[]string{"admin", "ca", "rotate", "--reason", "r"}, "--kind x509 or --kind jwt is required"},
		{[]string{"admin", "ca", "revoke", "0123", "--reason", "r"}, "404 Not found"},
		// A JWT key's id, its RFC 7638 thumbprint in base64url, may begin
		// with "-": it is the id still, not an unknown flag.
		{[]string{"admin", "ca", "revoke", "-KvWdxERmLzdtx3YQYwnJ7bu3flP-jcJOBAESqQetJo", "--reason", "r"}, "404 Not found"},
		{[]string{"admin", "ca", "revoke", "--reason", "r", "--KvWdxERmLzdtx3YQYwnJ7bu3flP-jcJOBAESqQetJ", "--force"}, "404 Not found"},
		{[]string{"admin", "ca", "revoke", "--reason", "-KvWdxERmLzdtx3YQYwnJ7bu3flP-jcJOBAESqQetJo"}, "want exactly one argument: the authority's id"},
		{[]string{"admin", "ca", "revoke", "--reason", "r"}, "want exactly one argument: the authority's id"},
	} {
		if _, err := cli(t, url, dir, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("mandate %s = %v, want an error saying %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	// What the authority refuses is said in its words, once, without the
	// names of its Go errors ("registry: not found", "authority: forbidden").
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"admin", "agent", "show", "0123456789abcdef"}, `404 Not found: agent "0123456789abcdef" (https://mandate.dev/problems/not-found)`},
		{[]string{"admin", "agent", "list", "--creds", "agent"}, "403 Forbidden: spiffe://mandate.localhost/agent/a1 has role agent; this needs admin (https://mandate.dev/problems/forbidden)"},
		{[]string{"node", "join", "--token", "not-a-token", "--bundle", "mandate-data/admin/bundle.pem", "--out", "unknown"}, "403 Join token unknown (https://mandate.dev/problems/join-token-unknown): ask an administrator for a new join token (mandate admin join-token create)"},
	} {
		if _, err := cli(t, url, dir, tc.args...); err == nil || err.Error() != tc.want {
			t.Errorf("mandate %s = %v, want the error %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	// Another authority of the same trust domain (a data directory made
	// anew): the bundle file that does not verify it, or the credential
	// it refuses, is named.
	dir2 := t.TempDir()
	url2 := startServe(t, dir2)
	mixed := filepath.Join(dir, "mixed")
	if err := os.Mkdir(mixed, 0o700); err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{
		filepath.Join(dir, "agent", "svid.pem"): "svid.pem", filepath.Join(dir, "agent", "svid.key"): "svid.key",
		filepath.Join(dir2, "mandate-data", "admin", "bundle.pem"): "bundle.pem",
	} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mixed, to), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"admin", "agent", "list", "--server", url2}, "client: GET " + url2 + "/v1/admin/agents?limit=500: the server's certificate is not signed by the trust bundle in " + filepath.Join(dir, "mandate-data", "admin", "bundle.pem") + ":"},
		{[]string{"bundle", "show", "--server", url2}, "not signed by the trust bundle in mandate-data/admin/bundle.pem:"},
		{[]string{"svid", "jwt", "--audience", "x", "--creds", "mixed", "--server", url2}, "client: POST " + url2 + "/v1/svid/jwt: the authority refused the credential in mixed:"},
	} {
		if _, err := cli(t, url, dir, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), `Post "`) || strings.Contains(err.Error(), `Get "`) {
			t.Errorf("mandate %s = %v, want an error saying %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	// Another identity's credential is not written over one still valid.
	if _, err := cli(t, url, dir, "svid", "x509", "--spiffe-id", "spiffe://mandate.localhost/agent/a2", "--out", "agent"); err == nil ||
		!strings.Contains(err.Error(), "--out agent holds the credential of spiffe://mandate.localhost/agent/a1") {
		t.Errorf("svid x509 of another agent into agent/: %v, want it refused", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "agent", "token.jwt")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("svid jwt --out: %v, want a 0600 file", err)
	}
	// After the ban, the node gets a problem, which the CLI reports as an error.
	_, err = cli(t, url, dir, "svid", "jwt", "--spiffe-id", "spiffe://mandate.localhost/agent/a1", "--audience", "x")
	if err == nil || !strings.Contains(err.Error(), "problems/") {
		t.Errorf("svid jwt from a banned node = %v, want a problem error", err)
	}
}

func TestCLIUsageErrors(t *testing.T) {
	tests := [][]string{
		{},
		{"frobnicate"},
		{"admin"},
		{"admin", "agent", "fly"},
		{"admin", "agent", "create", "--no-such-flag"},
		{"node"},
		{"node", "join"},
		{"svid", "x509"},
		{"svid", "pem"},
		{"svid", "jwt"},
		{"bench", "issue", "--kind", "both", "--concurrency", "0"},
		{"serve", "--listen"},
		{"audit"},
		{"audit", "rewrite"},
		// Each audit command accepts only the flags it uses.
		{"audit", "verify", "--limit", "5"},
		{"audit", "search", "--spiffe-id", ""}, // an unset variable: not the whole log
		{"audit", "search", "--type", "svid.issued", "--delegation-id="},
		{"audit", "verify", "--peer", "x=https://127.0.0.1:1,a.pem,b.vkey"},
		{"audit", "chain", "abc", "-n", "3"},
		{"audit", "check-proof", "p.proof", "--server", "https://127.0.0.1:1"},
		// A value without its flag is refused, not ignored with every
		// flag after it.
		{"serve", "oops", "--trust-domain", "b.example"},
		{"node", "join", "--token", "t", "stray", "--out", "wanted"},
		{"admin", "agent", "create", "--spiffe-id", "spiffe://a.example/agent/a", "--node-id", "spiffe://a.example/node/n1", "spiffe://a.example/node/n2"},
		{"admin", "join-token", "create", "extra"},
		{"audit", "tail", "extra"},
		{"bundle", "show", "extra"},
		{"svid", "jwt", "--audience", "a", "b"},
		// --json prints the answer, --out writes the token alone: not
		// both, the JSON expected on stdout silently missing.
		{"svid", "jwt", "--audience", "a", "--json", "--out", "token.jwt"},
		// An empty value is not the default in disguise.
		{"serve", "--trust-domain", ""},
		{"serve", "--data-dir=", "--listen", "127.0.0.1:0"},
		// The API takes whole seconds: 500ms is not 0 (the default).
		{"admin", "join-token", "create", "--ttl", "500ms"},
		{"admin", "join-token", "create", "--ttl", "200h"},
		{"admin", "join-token", "create", "--ttl", "0s"},
		{"admin", "agent", "create", "--spiffe-id", "spiffe://a.example/agent/a", "--jwt-ttl", "1500ms"},
		// A mistake in the command line is said as one, not hidden behind
		// the credential that is looked for after (none here).
		{"admin", "agent", "create", "--node-id", "spiffe://a.example/node/n1"},
		{"admin", "agent", "show"},
		{"admin", "agent", "update", "spiffe://a.example/agent/a", "--spiffe-id", "spiffe://a.example/agent/a"},
		{"admin", "node", "ban"},
		{"admin", "revoke", "delegation", "d1"},
		{"admin", "revoke", "spiffe-id", "spiffe://a.example/agent/a"},
		{"admin", "federation", "add", "--url", "https://b.example/v1/bundle"},
		{"admin", "federation", "delete"},
		{"admin", "join-token", "withdraw"},
		{"audit", "show"},
		{"audit", "show", "first"},
		{"audit", "prove", "1", "2"},
		{"audit", "chain"},
		// A delegation's lifetime in whole seconds: 500ms is not 0, the
		// default of 10 minutes.
		{"delegate", "request", "--delegatee", "spiffe://a.example/agent/b", "--scope", "s", "--principal", "p", "--ttl", "500ms"},
		{"delegate", "request", "--delegatee", "spiffe://a.example/agent/b", "--scope", "s", "--principal", "p", "--ttl", "-5m"},
		// Said before the token file is looked for.
		{"delegate", "verify", "no-such.jwt"},
	}
	for _, args := range tests {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, &out, &errOut)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("mandate %q = %v, want a usage error (exit 2)", args, err)
		}
	}
	// A file that a flag names and that cannot be read is said with the flag.
	files := t.TempDir()
	for name, content := range map[string]string{"t.jwt": "x.y.z", "bundles.json": "{}"} {
		if err := os.WriteFile(filepath.Join(files, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"admin", "federation", "add", "--trust-domain", "b.example", "--url", "https://b.example/v1/bundle", "--bundle-file", "no-such.json"}, "--bundle-file: open no-such.json"},
		{[]string{"delegate", "verify", filepath.Join(files, "t.jwt"), "--any-holder", "--bundles", filepath.Join(files, "bundles.json"), "--presenter-cert", "no-such.pem"}, "--presenter-cert: open no-such.pem"},
	} {
		if err := run(context.Background(), tc.args, io.Discard, io.Discard); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("mandate %s = %v, want an error beginning %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	// An unknown admin command is named as unknown, not as missing.
	if err := run(context.Background(), []string{"admin", "fly"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), `unknown command "fly"`) {
		t.Errorf("mandate admin fly = %v, want it named an unknown command", err)
	}
	// A command group asked for help prints its usage and succeeds.
	for _, args := range [][]string{{"delegate", "-h"}, {"admin", "--help"}, {"admin", "revoke", "-h"}, {"audit", "-h"}, {"node", "help"}, {"policy", "-h"}, {"svid", "-h"}, {"bench", "-h"}, {"bundle", "-h"}} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), args, &out, &errOut); err != nil || !strings.Contains(out.String(), "Usage") {
			t.Errorf("mandate %q = %v, output %q; want its usage", args, err, out.String())
		}
	}
	// An admin command's help names the operand it takes.
	for cmd, operand := range map[string]string{"node ban": "NODE_SPIFFE_ID", "revoke delegation": "DELEGATION_ID", "agent show": "ID"} {
		var out, errOut bytes.Buffer
		_ = run(context.Background(), append(append([]string{"admin"}, strings.Fields(cmd)...), "-h"), &out, &errOut)
		if want := "mandate admin " + cmd + " " + operand + " [flags]"; !strings.Contains(out.String()+errOut.String(), want) {
			t.Errorf("mandate admin %s -h: %q, want %q", cmd, out.String()+errOut.String(), want)
		}
	}
	// A command without flags says what it does, with no empty flag list.
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"demo", "-h"}, &out, &errOut); !errors.Is(err, flag.ErrHelp) || !strings.Contains(errOut.String(), "auditor verifies the chain") || strings.Contains(errOut.String(), "Flags:") {
		t.Errorf("mandate demo -h = %v, %q; want what it does and no empty Flags: list", err, errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if err := run(context.Background(), []string{"serve", "-h"}, &out, &errOut); !errors.Is(err, flag.ErrHelp) || !strings.Contains(errOut.String(), "trust_domain:") {
		t.Errorf("mandate serve -h = %v, want help with the configuration reference", err)
	}
	if err := run(context.Background(), []string{"serve", "--trust-domain", "Bad Domain", "--data-dir", t.TempDir()}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "trust_domain") {
		t.Errorf("mandate serve with a bad trust domain = %v, want a configuration error naming trust_domain", err)
	}
	// A policy that does not compile stops the server before it creates
	// anything: the data directory is not made.
	pol, data := t.TempDir(), filepath.Join(t.TempDir(), "mandate-data")
	if err := os.WriteFile(filepath.Join(pol, "broken.rego"), []byte("package x\nallow if {"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"serve", "--policy-dir", pol, "--data-dir", data, "--listen", "127.0.0.1:0"}, &out, &errOut); err == nil {
		t.Error("mandate serve with a policy that does not compile started")
	}
	if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mandate serve refused its policy but made its data directory (%v)", err)
	}
	// Stopped (SIGTERM) while it starts: a stop as asked, exit status 0.
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	errOut.Reset()
	if err := run(stopped, []string{"serve", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0"}, &out, &errOut); err != nil {
		t.Errorf("mandate serve stopped while starting = %v, want nil (exit 0)", err)
	}
	if !strings.Contains(errOut.String(), "stopped while starting") {
		t.Errorf("mandate serve stopped while starting logged %q, want it said", errOut.String())
	}
}

// TestServeEmptyPolicyDirFlag: --policy-dir "" is the one flag an empty
// value is taken for: the embedded policies, over the file's policy.dir
// (README, Configuration).
func TestServeEmptyPolicyDirFlag(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mandate.yaml")
	if err := os.WriteFile(cfg, []byte("policy:\n  dir: "+filepath.Join(dir, "no-such-dir")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stopped, cancel := context.WithCancel(context.Background())
	cancel() // the configuration is read and checked; nothing is served
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"the file's policy.dir", nil, "policy.dir"},
		{"--policy-dir \"\" over it", []string{"--policy-dir", ""}, ""},
		{"--log-level \"\"", []string{"--log-level", ""}, "--log-level given an empty value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"serve", "--config", cfg, "--data-dir", filepath.Join(t.TempDir(), "data"), "--listen", "127.0.0.1:0"}, tc.args...)
			var out, errOut bytes.Buffer
			err := run(stopped, args, &out, &errOut)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("mandate %q = %v, want the embedded policies (no error)", args, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("mandate %q = %v, want an error naming %q", args, err, tc.wantErr)
			}
		})
	}
}

// --rate-limit sets http.rate_limit.requests_per_second over the file's;
// 0 (no limit) drops the file's burst, which would bound nothing.
func TestServeRateLimitFlag(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "mandate.yaml")
	if err := os.WriteFile(cfg, []byte("http:\n  rate_limit:\n    requests_per_second: 50\n    burst: 70\n    callers: {spiffe://mandate.localhost/gw: 5}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args        []string
		rate, burst int
		wantErr     string
	}{
		{nil, authority.DefaultRequestsPerSecond, 2 * authority.DefaultRequestsPerSecond, ""},
		{[]string{"--config", cfg}, 50, 70, ""},
		{[]string{"--config", cfg, "--rate-limit", "0"}, 0, 0, ""},
		{[]string{"--config", cfg, "--rate-limit", "1000"}, 1000, 70, ""},
		{[]string{"--rate-limit", "10"}, 10, 20, ""},
		{[]string{"--rate-limit", "ten"}, 0, 0, "--rate-limit"},
		{[]string{"--rate-limit", "-1"}, 0, 0, "http.rate_limit.requests_per_second"},
		{[]string{"--rate-limit", ""}, 0, 0, "--rate-limit given an empty value"},
	} {
		c, err := serveConfig(tc.args, io.Discard)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("serve %q = %v, want an error naming %s", tc.args, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("serve %q = %v", tc.args, err)
		case *c.HTTP.RateLimit.RequestsPerSecond != tc.rate || c.HTTP.RateLimit.Burst != tc.burst || tc.rate == 0 && len(c.HTTP.RateLimit.Callers) > 0 || tc.rate == 1000 && len(c.HTTP.RateLimit.Callers) != 1:
			t.Errorf("serve %q: requests_per_second %d, burst %d, callers %v; want %d, %d, and the file's callers but with --rate-limit 0", tc.args, *c.HTTP.RateLimit.RequestsPerSecond, c.HTTP.RateLimit.Burst, c.HTTP.RateLimit.Callers, tc.rate, tc.burst)
		}
	}
}

// admin backup create writes a backup on the authority's host, in
// <data-dir>/backups, and prints where and what.
func TestCLIAdminBackup(t *testing.T) {
	dir := t.TempDir()
	url := startServe(t, dir)
	out, err := cli(t, url, dir, "admin", "backup", "create")
	if err != nil {
		t.Fatalf("admin backup create: %v", err)
	}
	var b struct {
		Dir   string
		Files []struct{ Path string }
	}
	if err := json.Unmarshal([]byte(out), &b); err != nil || !filepath.IsAbs(b.Dir) || filepath.Dir(b.Dir) != filepath.Join(dir, "mandate-data", "backups") || len(b.Files) < 4 {
		t.Fatalf("admin backup create printed %s (%v): want the backup's directory in <data-dir>/backups and its files", out, err)
	}
	if _, err := os.Stat(filepath.Join(b.Dir, "mandate.db")); err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, url, dir, "admin", "backup", "create", "extra"); err == nil {
		t.Error("admin backup create with an operand: nil, want a usage error")
	}
}

func TestBenchIssue(t *testing.T) {
	dir := t.TempDir()
	url := startServe(t, dir, "--rate-limit", "0") // as README runs it: the load is one node's
	// The server runs in this process: --server-pid is this process's.
	out, err := cli(t, url, dir, "bench", "issue", "--duration", "300ms", "--concurrency", "2", "--server-pid", strconv.Itoa(os.Getpid()))
	if err != nil {
		t.Fatalf("bench issue: %v\n%s", err, out)
	}
	for _, want := range []string{"x509-svid", "jwt-svid", "raw crypto/ecdsa P-256", "issuance ÷ raw sign", "server CPU per op"} {
		if !strings.Contains(out, want) {
			t.Errorf("bench output lacks %q:\n%s", want, out)
		}
	}
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) > 1 && strings.HasSuffix(f[0], "-svid") && f[1] != "issuance" && (len(f) != 9 || !strings.HasSuffix(f[8], "s")) {
			t.Errorf("bench row without the server's CPU per SVID: %q", line)
		}
	}
	if _, err := cli(t, url, dir, "bench", "issue", "--server-pid", "999999999"); err == nil || !strings.Contains(err.Error(), "--server-pid") {
		t.Errorf("bench issue --server-pid of no process: %v, want a usage error naming it", err)
	}
	if strings.Contains(out, "error:") {
		t.Errorf("bench reported errors:\n%s", out)
	}
	agents, err := cli(t, url, dir, "admin", "agent", "list")
	if err != nil || !strings.Contains(agents, `"agents": []`) {
		t.Errorf("after bench, agent list = %s, %v; want the bench agent removed", agents, err)
	}
}

// TestNextStepsRun runs the commands "mandate serve" prints, as printed,
// against a server with a non-default address and data directory.
func TestNextStepsRun(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	var out, errOut syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", "state"}, &out, &errOut)
	}()
	defer func() { cancel(); <-done }()
	var steps []string
	deadline := time.Now().Add(30 * time.Second)
	for len(steps) == 0 && time.Now().Before(deadline) {
		if i := strings.Index(out.String(), "Next steps"); i >= 0 && strings.Contains(out.String(), "./mandate bundle show") {
			for _, line := range strings.Split(out.String()[i:], "\n")[1:] {
				if line = strings.TrimSpace(line); strings.HasPrefix(line, "./mandate ") {
					steps = append(steps, line)
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(steps) != 6 {
		t.Fatalf("serve printed steps %q; log %s", steps, errOut.String())
	}
	t.Setenv("MANDATE_SERVER", "")
	var token, nodeID string
	for i, step := range steps {
		step = strings.Replace(step, "<token>", token, 1)
		step = strings.Replace(step, "<node spiffe id>", nodeID, 1)
		args := strings.Fields(step)[1:]
		if i < 2 {
			args = append(args, "--quiet")
		}
		var o, e bytes.Buffer
		if err := run(context.Background(), args, &o, &e); err != nil {
			t.Fatalf("step %q: %v\n%s", step, err, e.String())
		}
		switch i {
		case 0:
			token = strings.TrimSpace(o.String())
		case 1:
			nodeID = strings.TrimSpace(o.String())
		}
	}
}

// webCert writes a self-signed certificate for 127.0.0.1 and its key.
func webCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kb, _ := credfile.EncodeKeyPEM(key)
	certFile, keyFile = filepath.Join(dir, "web.pem"), filepath.Join(dir, "web.key")
	if err := os.WriteFile(certFile, credfile.EncodeCertsPEM([]*x509.Certificate{cert}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, kb, 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestCLIFederation federates two authorities with the CLI, the way the
// README says, and serves org-b's bundle on a Web PKI listener too.
func TestCLIFederation(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	certFile, keyFile, pool := webCert(t, dirB)
	webAddr := freeAddr(t)
	cfgB := filepath.Join(dirB, "mandate.yaml")
	yml := fmt.Sprintf("trust_domain: org-b.example\nfederation:\n  web_listen: %s\n  web_cert_file: %s\n  web_key_file: %s\n", webAddr, certFile, keyFile)
	if err := os.WriteFile(cfgB, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	urlB := startServe(t, dirB, "--config", cfgB)
	urlA := startServe(t, dirA, "--trust-domain", "org-a.example")

	doc, err := cli(t, urlB, dirB, "bundle", "show", "--bundle", filepath.Join(dirB, "mandate-data/admin/bundle.pem"))
	if err != nil {
		t.Fatalf("bundle show at org-b: %v", err)
	}
	bundleFile := filepath.Join(dirA, "org-b.bundle.json")
	if err := os.WriteFile(bundleFile, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := cli(t, urlA, dirA, "admin", "federation", "add", "--trust-domain", "org-b.example", "--url", urlB+"/v1/bundle", "--bundle-file", bundleFile)
	if err != nil || !strings.Contains(out, `"endpoint_spiffe_id": "spiffe://org-b.example/mandate/server"`) || !strings.Contains(out, `"created_at": "`) {
		t.Fatalf("federation add = %s, %v", out, err)
	}
	// The answers are printed whole: created_at too (docs/api.md, §8).
	if out, err := cli(t, urlA, dirA, "admin", "federation", "list"); err != nil || !strings.Contains(out, `"trust_domain": "org-b.example"`) || !strings.Contains(out, `"created_at": "`) {
		t.Errorf("federation list = %s, %v", out, err)
	}

	// The https_web bundle endpoint answers with the same bundle.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var resp *http.Response
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if resp, err = hc.Get("https://" + webAddr + "/"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("GET web bundle endpoint: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"spiffe_sequence"`) {
		t.Errorf("web bundle endpoint = %d %s", resp.StatusCode, body)
	}

	if out, err := cli(t, urlA, dirA, "admin", "federation", "delete", "org-b.example"); err != nil || !strings.Contains(out, `"deleted"`) {
		t.Errorf("federation delete = %s, %v", out, err)
	}
	if _, err := cli(t, urlA, dirA, "admin", "federation", "add", "--trust-domain", "org-b.example"); err == nil {
		t.Error("federation add without --url succeeded")
	}
}

// TestCLIAudit: an auditor verifies the log with the verifier key, shows an
// entry with its proof checked, and catches a log that contradicts the
// checkpoint it remembers.
func TestCLIAudit(t *testing.T) {
	dir := t.TempDir()
	url := startServe(t, dir)
	t.Chdir(dir)
	if out, err := cli(t, url, dir, "audit", "checkpoint"); err != nil || !strings.HasPrefix(out, "mandate.localhost/audit\n") {
		t.Fatalf("audit checkpoint = %q, %v", out, err)
	}
	if out, err := cli(t, url, dir, "audit", "verify"); err != nil || !strings.Contains(out, "first checkpoint seen") {
		t.Fatalf("audit verify (first) = %q, %v", out, err)
	}
	if _, err := cli(t, url, dir, "admin", "join-token", "create"); err != nil {
		t.Fatal(err)
	}
	if out, err := cli(t, url, dir, "audit", "verify"); err != nil || !strings.Contains(out, "is consistent with the remembered size") {
		t.Fatalf("audit verify (second) = %q, %v", out, err)
	}
	if out, err := cli(t, url, dir, "audit", "show", "1"); err != nil || !strings.Contains(out, "inclusion proof verified") {
		t.Errorf("audit show 1 = %q, %v", out, err)
	}
	// Another log's key: the error names the key asked and the signer.
	_, otherKey, err := note.GenerateKey(nil, "org-b.example/audit")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, url, dir, "audit", "verify", "--vkey", otherKey); err == nil ||
		!strings.Contains(err.Error(), "with the verifier key org-b.example/audit+") || !strings.Contains(err.Error(), "is signed by mandate.localhost/audit+") {
		t.Errorf("audit verify with another log's key = %v, want both keys named", err)
	}
	if out, err := cli(t, url, dir, "audit", "tail", "-n", "2"); err != nil || strings.Count(out, "\n#") != 1 || !strings.Contains(out, "join_token.created") {
		t.Errorf("audit tail -n 2 = %q, %v", out, err)
	}
	if out, err := cli(t, url, dir, "audit", "search", "--type", "join_token.created", "--json"); err != nil || !strings.Contains(out, `"type":"join_token.created"`) {
		t.Errorf("audit search --type join_token.created = %q, %v", out, err)
	}
	// A search whose pages come back empty (the log reads 500 entries a
	// page) goes on to the end: the log's size allows them.
	admin := adminClient(t, url, filepath.Join(dir, "mandate-data"))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 70 {
				if _, err := admin.CreateJoinToken(t.Context(), time.Minute); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if out, err := cli(t, url, dir, "audit", "search", "--type", "join_token.created", "--until", "2000-01-01T00:00:00Z"); err != nil || out != "" {
		t.Errorf("audit search over empty pages = %q, %v; want nothing found", out, err)
	}
	// An offline proof: written with prove, checked without the server.
	if out, err := cli(t, url, dir, "audit", "prove", "1", "--out", "entry1.tlog-proof"); err != nil || !strings.HasPrefix(out, "wrote entry1.tlog-proof: entry 1, proven in the log of size ") {
		t.Fatalf("audit prove = %q, %v", out, err)
	}
	if out, err := cli(t, "https://127.0.0.1:1", dir, "audit", "check-proof", "entry1.tlog-proof"); err != nil || !strings.Contains(out, "entry 1 is in the log") {
		t.Errorf("audit check-proof = %q, %v", out, err)
	}
	proofText, _ := os.ReadFile("entry1.tlog-proof")
	if !strings.HasPrefix(string(proofText), "c2sp.org/tlog-proof@v1\nextra ") {
		t.Errorf("proof file does not start as a C2SP tlog-proof: %.60q", proofText)
	}
	tampered := strings.Replace(string(proofText), "extra e", "extra f", 1)
	if err := os.WriteFile("bad.tlog-proof", []byte(tampered), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, url, dir, "audit", "check-proof", "bad.tlog-proof"); err == nil {
		t.Error("audit check-proof accepted a proof whose entry was altered")
	}
	// A checkpoint signed with another key is refused.
	_, otherVKey, err := note.GenerateKey(rand.Reader, "mandate.localhost/audit")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, url, dir, "audit", "verify", "--vkey", otherVKey); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Errorf("audit verify with another verifier key = %v, want a signature error", err)
	}
	// A remembered checkpoint, validly signed by the log's key, for a
	// history the log no longer has (as if it had been rewritten): a fork,
	// shown with both checkpoints.
	signer, _, err := audit.LoadOrCreateSigner(filepath.Join(dir, "mandate-data", "audit", "log.key"), "mandate.localhost/audit")
	if err != nil {
		t.Fatal(err)
	}
	forged := log.Checkpoint{Origin: "mandate.localhost/audit", Size: 1, Hash: bytes.Repeat([]byte{7}, 32)}
	signed, err := note.Sign(&note.Note{Text: string(forged.Marshal())}, signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("forged.state", signed, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = cli(t, url, dir, "audit", "verify", "--state", "forged.state")
	if err == nil || !strings.Contains(err.Error(), "not consistent") || !strings.Contains(err.Error(), "remembered checkpoint") {
		t.Errorf("audit verify against a rewritten history = %v, want a fork report with both checkpoints", err)
	}
}

func TestBenchAudit(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"bench", "audit", "--duration", "200ms", "--concurrency", "1,8", "--dir", t.TempDir()}, &out, &errOut)
	if err != nil {
		t.Fatalf("bench audit: %v\n%s", err, errOut.String())
	}
	for _, want := range []string{"writers", "raw bbolt group commit", "÷ raw bbolt group commit"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("bench audit output lacks %q:\n%s", want, out.String())
		}
	}
}

// A port in use stops serve before it creates anything: no data
// directory, no CA, no admin credential, no audit log.
func TestServeOnABusyPortChangesNothing(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dataDir := filepath.Join(t.TempDir(), "mandate-data")
	var out, errOut bytes.Buffer
	err = run(t.Context(), []string{"serve", "--listen", busy.Addr().String(), "--data-dir", dataDir}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("serve on a busy port = %v, want a listen error", err)
	}
	if !strings.Contains(err.Error(), "--listen 127.0.0.1:PORT, or 127.0.0.1:0") {
		t.Errorf("serve on a busy port = %v, want it to say how to serve on another port", err)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data directory after the refused start: %v, want none made", err)
	}
	if strings.Contains(errOut.String(), "level=ERROR") {
		t.Errorf("log of the refused start:\n%s", errOut.String())
	}
}

// The https_web certificate is read again when its files change (a Web
// PKI certificate is renewed every few months); a renewal that does not
// load keeps the last one.
func TestWebCertificateReloaded(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := webCert(t, dir)
	var logs bytes.Buffer
	c := &webCertFiles{certFile: certFile, keyFile: keyFile, log: slog.New(slog.NewTextHandler(&logs, nil))}
	if err := c.load(); err != nil {
		t.Fatal(err)
	}
	first, _ := c.get(nil)
	// Renewed: new files, a later modification time.
	renewed := t.TempDir()
	newCert, newKey, _ := webCert(t, renewed)
	for _, f := range [][2]string{{newCert, certFile}, {newKey, keyFile}} {
		b, _ := os.ReadFile(f[0])
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Minute)
		_ = os.Chtimes(f[1], later, later)
	}
	c.checked = time.Time{} // as if webCertCheck had passed
	second, _ := c.get(nil)
	if bytes.Equal(second.Certificate[0], first.Certificate[0]) {
		t.Fatal("the renewed certificate was not served")
	}
	// A renewal that does not load: the last one stays, and the log says so.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	even := time.Now().Add(2 * time.Minute)
	_ = os.Chtimes(keyFile, even, even)
	c.checked = time.Time{}
	third, _ := c.get(nil)
	if !bytes.Equal(third.Certificate[0], second.Certificate[0]) || !strings.Contains(logs.String(), "not reloaded") {
		t.Errorf("after a broken renewal: served the last one %v, log %q", bytes.Equal(third.Certificate[0], second.Certificate[0]), logs.String())
	}
}

// A credential that has expired is said to have expired, with what to
// do, before a TLS handshake would refuse it as a "bad certificate".
func TestCLIExpiredCredential(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromString("spiffe://mandate.localhost/agent/old").URL()
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour), URIs: []*url.URL{id}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	dir := filepath.Join(t.TempDir(), "old")
	if err := credfile.Write(credfile.In(dir), []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err = run(context.Background(), []string{"svid", "jwt", "--creds", dir, "--audience", "x", "--server", "https://127.0.0.1:1"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "expired at") {
		t.Errorf("mandate svid jwt with an expired credential = %v, want it said to have expired", err)
	}
}

// A join-token node keeps its credential renewed with node run (its
// agents get SVIDs only while it does), until stopped.
func TestCLINodeRunRenewsAJoinNode(t *testing.T) {
	dir := t.TempDir()
	url := startServe(t, dir)
	t.Chdir(dir)
	token, err := cli(t, url, dir, "admin", "join-token", "create", "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, url, dir, "node", "join", "--token", strings.TrimSpace(token), "--quiet", "--bundle", "mandate-data/admin/bundle.pem"); err != nil {
		t.Fatal(err)
	}
	before, _, _, err := credfile.Load(credfile.In("mandate-node"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	t.Setenv("MANDATE_SERVER", url)
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"node", "run"}, &out, &errOut); err != nil {
		t.Fatalf("node run = %v (%s), want it renewing until stopped", err, errOut.String())
	}
	after, _, _, err := credfile.Load(credfile.In("mandate-node"))
	if err != nil {
		t.Fatal(err)
	}
	if after[0].SerialNumber.Cmp(before[0].SerialNumber) == 0 || !strings.Contains(errOut.String(), "renewed "+after[0].URIs[0].String()) {
		t.Errorf("node run left the credential as it was, or said nothing: %q", errOut.String())
	}
	// A directory holding no node credential is said so at once, and a
	// TPM flag without --tpm is refused.
	if err := run(ctx, []string{"node", "run", "--out", "nowhere"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "join first") {
		t.Errorf("node run without a credential = %v, want it told to join first", err)
	}
	var ue usageError
	if err := run(ctx, []string{"node", "run", "--ek", "ecc"}, &out, &errOut); !errors.As(err, &ue) {
		t.Errorf("node run --ek ecc without --tpm = %v, want a usage error", err)
	}
	// A node banned meanwhile: node run stops at once, saying why, rather
	// than retrying until its credential expires.
	if _, err := cli(t, url, dir, "admin", "node", "ban", after[0].URIs[0].String(), "--reason", "stolen"); err != nil {
		t.Fatal(err)
	}
	banned, cancelBanned := context.WithTimeout(context.Background(), time.Minute)
	defer cancelBanned()
	if err := run(banned, []string{"node", "run"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "node-banned") || banned.Err() != nil {
		t.Errorf("node run of a banned node = %v, want it stopped at once, naming the ban", err)
	}
	// Evicted (its ban lifted with it: refused without --lift-ban), a
	// join-token node can never attest again: node run stops at once.
	nodeID := after[0].URIs[0].String()
	if _, err := cli(t, url, dir, "admin", "node", "evict", nodeID); err == nil || !strings.Contains(err.Error(), "node-ban-stands") {
		t.Errorf("node evict of a banned node without --lift-ban = %v, want node-ban-stands", err)
	}
	if out, err := cli(t, url, dir, "admin", "node", "evict", nodeID, "--lift-ban", "--reason", "host retired"); err != nil || !strings.Contains(out, `"ban_reason": "stolen"`) {
		t.Errorf("node evict --lift-ban = %q, %v; want the record removed printed", out, err)
	}
	if out, err := cli(t, url, dir, "admin", "node", "list"); err != nil || strings.Contains(out, nodeID) {
		t.Errorf("node list after the eviction = %q, %v; want the node gone", out, err)
	}
	evicted, cancelEvicted := context.WithTimeout(context.Background(), time.Minute)
	defer cancelEvicted()
	// It says what to do then: join again, with a new token. So does
	// node run serving the Workload API, whichever of its renewal and its
	// sync is refused first.
	if err := run(evicted, []string{"node", "run"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "node-not-attested") ||
		!strings.Contains(err.Error(), "join again with a new join token") || evicted.Err() != nil {
		t.Errorf("node run of an evicted node = %v, want it stopped at once, saying it is not attested and to join again", err)
	}
	err = run(evicted, []string{"node", "run", "--workload-api", filepath.Join(dir, "w.sock"), "--workload", "uid:0=spiffe://mandate.localhost/agent/a"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "node-not-attested") || !strings.Contains(err.Error(), "join again with a new join token") || evicted.Err() != nil {
		t.Errorf("node run --workload-api of an evicted node = %v, want it stopped at once, saying it is not attested and to join again", err)
	}
}

// A duration flag given a bare number (SPIFFE's tools take seconds) or
// no duration at all is a one-line usage error saying how to give one,
// not Go's "parse error" with the whole usage; every duration flag of
// the commands.
func TestCLIDurationFlagsSayHowToGiveOne(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"delegate", "request", "--ttl", "5"}, "--ttl 5: a duration needs its unit: give one such as 90s or 10m (5s for 5 seconds)"},
		{[]string{"admin", "join-token", "create", "--ttl", "5"}, "--ttl 5: a duration needs its unit"},
		{[]string{"admin", "join-token", "create", "--ttl=600"}, "(600s for 600 seconds)"},
		{[]string{"admin", "agent", "create", "--x509-ttl", "3600"}, "--x509-ttl 3600: a duration needs its unit"},
		{[]string{"admin", "agent", "create", "--jwt-ttl", "ten"}, `--jwt-ttl "ten" is not a duration: give one such as 90s or 10m`},
		// Numbers that are no duration with an "s" added get no such hint.
		{[]string{"delegate", "request", "--ttl", "1e3"}, `--ttl "1e3" is not a duration: give one such as 90s or 10m`},
		{[]string{"delegate", "request", "--ttl", "NaN"}, `--ttl "NaN" is not a duration`},
		{[]string{"delegate", "request", "--ttl", "-Inf"}, `--ttl "-Inf" is not a duration`},
		{[]string{"delegate", "request", "--ttl", "0x1p4"}, `--ttl "0x1p4" is not a duration`},
		{[]string{"delegate", "request", "--ttl", "1.5"}, "(1.5s for 1.5 seconds)"},
		{[]string{"bench", "issue", "--duration", "3"}, "--duration 3: a duration needs its unit"},
		{[]string{"bench", "audit", "--duration", "3"}, "--duration 3: a duration needs its unit"},
		{[]string{"bench", "attest", "--duration", "3"}, "--duration 3: a duration needs its unit"},
		{[]string{"bench", "decide", "--duration", "3"}, "--duration 3: a duration needs its unit"},
		{[]string{"bench", "delegate", "--duration", "3"}, "--duration 3: a duration needs its unit"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tc.args, &out, &errOut)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("mandate %s = %v, want a usage error saying %q", strings.Join(tc.args, " "), err, tc.want)
		}
		if errOut.Len() > 0 || strings.Contains(err.Error(), "parse error") {
			t.Errorf("mandate %s printed %q (error %v), want only the one-line error", strings.Join(tc.args, " "), errOut.String(), err)
		}
	}
	// Other flag mistakes are said as before, with the usage.
	var errOut bytes.Buffer
	err := run(context.Background(), []string{"admin", "join-token", "create", "--no-such-flag"}, io.Discard, &errOut)
	if !strings.Contains(errOut.String(), "flag provided but not defined: -no-such-flag\nUsage: mandate admin join-token create") {
		t.Errorf("unknown flag: %v, printed %q; want the flag package's error and the usage", err, errOut.String())
	}
	// The duration flags still take durations, and print their defaults.
	errOut.Reset()
	if err := run(context.Background(), []string{"admin", "join-token", "create", "-h"}, io.Discard, &errOut); !errors.Is(err, flag.ErrHelp) || !strings.Contains(errOut.String(), "(default 10m0s)") {
		t.Errorf("admin join-token create -h = %v, %q; want the usage with --ttl's default", err, errOut.String())
	}
}

// A missing credential is said with the flags of the command that
// looked for it: --creds for a node's or an agent's, --data-dir (or
// --creds) for the admin credential; never another command's.
func TestCLIMissingCredentialHintFitsTheCommand(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, tc := range []struct {
		args        []string
		want, avoid []string
	}{
		{[]string{"svid", "jwt", "--audience", "x"}, []string{"no credential in mandate-node (mandate-node/svid.pem: ", "give --creds DIR, the credential to authenticate with"}, []string{"--data-dir", "admin", "audit", "credfile:"}},
		{[]string{"svid", "x509", "--spiffe-id", "spiffe://a.example/agent/x"}, []string{"give --creds DIR, the credential to authenticate with"}, []string{"--data-dir", "admin", "audit"}},
		{[]string{"delegate", "request", "--delegatee", "spiffe://a.example/agent/b", "--scope", "s", "--principal", "p"},
			[]string{"no credential in mandate-agent (mandate-agent/svid.pem: ", "give --creds DIR, the delegator agent's credential directory"}, []string{"--data-dir", "admin", "audit", "credfile:"}},
		{[]string{"admin", "agent", "list"}, []string{"no credential in mandate-data/admin", "give --data-dir of the authority", "or --creds DIR"}, []string{"credfile:"}},
		{[]string{"policy", "status"}, []string{"give --data-dir of the authority"}, nil},
	} {
		err := run(context.Background(), tc.args, io.Discard, io.Discard)
		if err == nil || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("mandate %s = %v, want a missing credential", strings.Join(tc.args, " "), err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("mandate %s = %v, want it to say %q", strings.Join(tc.args, " "), err, w)
			}
		}
		for _, a := range tc.avoid {
			if strings.Contains(err.Error(), a) {
				t.Errorf("mandate %s = %v, want nothing of %q", strings.Join(tc.args, " "), err, a)
			}
		}
	}
}

// A join token of an older build may begin with "-": pasted where a
// command takes an argument, it is read as an unknown flag, which is
// then said without being shown; so is a token given as an argument to
// a command that takes flags only. A flag misspelt, or an argument
// out of place, is still named.
func TestArgumentLikeASecretIsNotShown(t *testing.T) {
	secret := strings.Repeat("Zq9_", 10) + "x-y"
	for _, tc := range []struct {
		args  []string
		shown string // "": the secret, not shown
	}{
		{[]string{"admin", "join-token", "withdraw", "-" + secret}, ""},
		{[]string{"admin", "node", "list", secret}, ""},
		{[]string{"admin", "join-token", "withdraw", "---" + secret}, ""},
		{[]string{"admin", "join-token", "withdraw", "--trust-domian"}, "trust-domian"},
		{[]string{"admin", "node", "list", "extra"}, `"extra"`},
		// Given where a command's name goes (a leaked token pasted after
		// join-token, to withdraw it, without withdraw and its id).
		{[]string{"admin", "join-token", secret}, "join-token"},
		{[]string{"admin", secret}, ""},
		{[]string{"node", secret}, ""},
		{[]string{"delegate", secret}, ""},
		{[]string{"policy", secret}, ""},
		{[]string{secret}, ""},
		{[]string{"node", "jion"}, `"jion"`},
		{[]string{"admin", "join-token", "widthraw"}, `"join-token widthraw"`},
	} {
		var out, errOut bytes.Buffer
		err := run(t.Context(), tc.args, &out, &errOut)
		said := fmt.Sprint(err) + out.String() + errOut.String()
		if err == nil || strings.Contains(said, secret) || tc.shown != "" && !strings.Contains(said, tc.shown) {
			t.Errorf("mandate %s: %v\n%s\nwant it refused, naming %q, never the secret", strings.Join(tc.args, " "), err, errOut.String(), tc.shown)
		}
	}
}

// A JWT-SVID or a delegation token (the JWS compact form) given where
// an argument, a flag or a token file goes is not shown either: not as
// an unknown flag, an unexpected argument, nor as the name of a token
// file that cannot be read. A file name is still said.
func TestTokenLikeArgumentIsNotShown(t *testing.T) {
	dir := t.TempDir()
	agent := selfSigned(t, "spiffe://mandate.localhost/agent/a", time.Now().Add(-time.Minute), time.Now().Add(time.Hour), false)
	creds := filepath.Join(dir, "agent")
	if err := credfile.Write(credfile.In(creds), []*x509.Certificate{agent.cert}, agent.key, []*x509.Certificate{agent.cert}); err != nil {
		t.Fatal(err)
	}
	seg := strings.Repeat("eyJhbGciOiJFUzI1NiJ9", 3)
	missing := filepath.Join(dir, "missing.jwt")
	request := func(parent string) []string {
		return []string{"delegate", "request", "--creds", creds, "--delegatee", "spiffe://mandate.localhost/agent/b", "--scope", "s",
			"--parent", parent, "--out", filepath.Join(dir, "out.jwt"), "--server", "https://127.0.0.1:1"}
	}
	verify := func(file string) []string {
		return []string{"delegate", "verify", "--any-holder", "--bundles", filepath.Join(dir, "bundles.json"), file}
	}
	for _, tc := range []struct {
		args   []string
		secret string
		shown  string // "": the secret, not shown
	}{
		{[]string{"bundle", "show", seg + "." + seg + "." + seg}, seg + "." + seg + "." + seg, ""},
		{[]string{"bundle", "show", "--" + seg + "." + seg + "." + seg}, seg + "." + seg + "." + seg, ""},
		{[]string{"bundle", "show", seg + "." + seg + "." + seg + "." + seg + "." + seg}, seg + "." + seg + "." + seg + "." + seg + "." + seg, ""},
		{request(seg + "." + seg + "." + seg), seg + "." + seg + "." + seg, ""},
		{request(seg + "." + seg + "."), seg + "." + seg + ".", ""},
		{verify(seg + "." + seg + "." + seg), seg + "." + seg + "." + seg, ""},
		{request(missing), "", missing},
		{verify(missing), "", missing},
		{[]string{"bundle", "show", "a." + seg}, "", "a." + seg},
		{verify(seg + "." + seg + "." + seg + "\n"), seg + "." + seg + "." + seg, ""},
		{[]string{"node", "join", "--out", filepath.Join(dir, "n"), "--token-file", strings.Repeat(seg+".", 4) + seg}, strings.Repeat(seg+".", 4) + seg, ""}, // too long a name to open
		{[]string{"admin", "node", "show", "--data-dir", dir, strings.Repeat("Ab1_", 10) + "xyz"}, strings.Repeat("Ab1_", 10) + "xyz", ""},
		{[]string{"admin", "node", "show", "--data-dir", dir, "node/join/ff"}, "", "node/join/ff"},
	} {
		var out, errOut bytes.Buffer
		err := run(t.Context(), tc.args, &out, &errOut)
		said := fmt.Sprint(err) + out.String() + errOut.String()
		if err == nil || tc.secret != "" && strings.Contains(said, tc.secret) || tc.shown != "" && !strings.Contains(said, tc.shown) {
			t.Errorf("mandate %s: %v\n%s\nwant it refused, naming %q, never the secret", strings.Join(tc.args, " "), err, errOut.String(), tc.shown)
		}
	}
}

// A join-token node whose credential the authority refuses at the
// handshake (signed by an X.509 CA revoked since: here, by a CA it never
// had) can never renew it: node run stops at once, saying to join again,
// rather than retrying until the credential expires; so does node run
// serving the Workload API, whose sync is refused so.
func TestCLINodeRunStopsWithARefusedCredential(t *testing.T) {
	dir := t.TempDir()
	url := startServe(t, dir)
	t.Chdir(dir)
	t.Setenv("MANDATE_SERVER", url)
	roots := adminRoots(t, dir)
	forged := selfSigned(t, "spiffe://mandate.localhost/node/join/0123456789abcdef", time.Now().Add(-time.Minute), time.Now().Add(time.Hour), false)
	if err := credfile.Write(credfile.In("mandate-node"), []*x509.Certificate{forged.cert}, forged.key, roots); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"node", "run"},
		{"node", "run", "--workload-api", filepath.Join(dir, "w.sock"), "--workload", "uid:0=spiffe://mandate.localhost/agent/a"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var out, errOut bytes.Buffer
		err := run(ctx, args, &out, &errOut)
		if err == nil || !errors.Is(err, client.ErrCredentialRefused) || !strings.Contains(err.Error(), "join again with a new join token") || ctx.Err() != nil {
			t.Errorf("mandate %s with a credential the authority refuses = %v, want it stopped at once, saying to join again", strings.Join(args, " "), err)
		}
		cancel()
	}
}

// adminRoots is the trust bundle of the authority running in dir, as it
// wrote it for the admin credential (mandate-data/admin/bundle.pem).
func adminRoots(t *testing.T, dir string) []*x509.Certificate {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(dir, "mandate-data", "admin", "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := credfile.ParseCertsPEM(pem)
	if err != nil {
		t.Fatal(err)
	}
	return roots
}
