package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIDelegationChain: two organisations federate; org-a's planner
// delegates to org-b's booker, who delegates on to org-b's payer; the
// token verifies offline; org-b's auditor walks the chain into org-a's
// log and proves every hop.
func TestCLIDelegationChain(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	// org-a lets org-b's admin audit it (an auditor of a federated trust domain).
	cfgA := filepath.Join(dirA, "mandate.yaml")
	if err := os.WriteFile(cfgA, []byte("trust_domain: org-a.example\naudit:\n  auditors: [spiffe://org-b.example/mandate/admin]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	urlA := startServe(t, dirA, "--config", cfgA)
	urlB := startServe(t, dirB, "--trust-domain", "org-b.example")
	t.Chdir(dirA)
	must := func(url, dir string, args ...string) string {
		t.Helper()
		out, err := cli(t, url, dir, args...)
		if err != nil {
			t.Fatalf("mandate %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	// Federate both ways.
	for _, p := range []struct{ url, dir, peerURL, peerDir, peerTD string }{
		{urlA, dirA, urlB, dirB, "org-b.example"}, {urlB, dirB, urlA, dirA, "org-a.example"},
	} {
		doc := must(p.peerURL, p.peerDir, "bundle", "show", "--bundle", filepath.Join(p.peerDir, "mandate-data/admin/bundle.pem"))
		f := filepath.Join(p.dir, p.peerTD+".bundle.json")
		if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		must(p.url, p.dir, "admin", "federation", "add", "--trust-domain", p.peerTD, "--url", p.peerURL+"/v1/bundle", "--bundle-file", f)
	}
	// An agent of each organisation, with its SVID in a directory.
	agent := func(url, dir, td, name string, scopes ...string) string {
		t.Helper()
		tok := strings.TrimSpace(must(url, dir, "admin", "join-token", "create", "--quiet"))
		node := filepath.Join(dir, name+"-node")
		nodeID := strings.TrimSpace(must(url, dir, "node", "join", "--token", tok, "--quiet", "--out", node,
			"--bundle", filepath.Join(dir, "mandate-data/admin/bundle.pem")))
		id := "spiffe://" + td + "/agent/" + name
		args := []string{"admin", "agent", "create", "--spiffe-id", id, "--node-id", nodeID, "--operator", "team-" + name, "--responsible-party", name + "@" + td}
		for _, s := range scopes {
			args = append(args, "--scope", s)
		}
		must(url, dir, args...)
		creds := filepath.Join(dir, name)
		must(url, dir, "svid", "x509", "--spiffe-id", id, "--creds", node, "--out", creds)
		return creds
	}
	planner := agent(urlA, dirA, "org-a.example", "planner", "calendar:read", "mail:send")
	booker := agent(urlB, dirB, "org-b.example", "booker")
	payer := agent(urlB, dirB, "org-b.example", "payer")

	t1 := filepath.Join(dirA, "t1.jwt")
	must(urlA, dirA, "delegate", "request", "--creds", planner, "--delegatee", "spiffe://org-b.example/agent/booker",
		"--scope", "calendar:read", "--scope", "mail:send", "--principal", "alice@org-a.example", "--purpose", "plan the offsite", "--out", t1)
	t2 := filepath.Join(dirB, "t2.jwt")
	out := must(urlB, dirB, "delegate", "request", "--creds", booker, "--delegatee", "spiffe://org-b.example/agent/payer",
		"--scope", "calendar:read", "--parent", t1, "--out", t2)
	var ans struct{ ID string }
	if err := json.Unmarshal([]byte(out), &ans); err != nil || ans.ID == "" {
		t.Fatalf("delegate request printed %s", out)
	}
	// Offline, with the payer's bundles (its own and the federated ones).
	v := must("", dirB, "delegate", "verify", t2, "--bundles", filepath.Join(payer, "bundles.json"), "--presenter", "spiffe://org-b.example/agent/payer")
	if !strings.Contains(v, `"valid": true`) || !strings.Contains(v, `"principal": "alice@org-a.example"`) {
		t.Fatalf("delegate verify: %s", v)
	}
	// Online too: the root hop at its issuer, org-a.
	if v, err := cli(t, "", dirA, "delegate", "verify", t1, "--bundles", filepath.Join(booker, "bundles.json"), "--presenter", "spiffe://org-b.example/agent/booker",
		"--status", urlA); err != nil || !strings.Contains(v, `"status": "active"`) {
		t.Fatalf("delegate verify --status: %v\n%s", err, v)
	}
	// Asked of another authority than the last hop's issuer, the status
	// is unknown, and the error says which authority --status must name.
	if v, err := cli(t, "", dirA, "delegate", "verify", t1, "--bundles", filepath.Join(booker, "bundles.json"), "--presenter", "spiffe://org-b.example/agent/booker",
		"--status", urlB); err == nil || !strings.Contains(err.Error(), "--status is the address of the last hop's issuer, spiffe://org-a.example, whose server presents spiffe://org-a.example/mandate/server") {
		t.Fatalf("delegate verify --status at another authority: %v\n%s", err, v)
	}
	// Each hop asked of its own issuer: no issuer's word is taken for
	// another's hop. The last hop's issuer must be among them.
	statusEach := []string{"--status", "org-a.example=" + urlA, "--status", "org-b.example=" + urlB}
	v, err := cli(t, "", dirB, append([]string{"delegate", "verify", t2, "--bundles", filepath.Join(payer, "bundles.json"), "--presenter", "spiffe://org-b.example/agent/payer"}, statusEach...)...)
	var each struct {
		Status string
		Asked  []struct{ Issuer, Status string }
	}
	if err != nil || json.Unmarshal([]byte(v), &each) != nil || each.Status != "active" || len(each.Asked) != 2 ||
		each.Asked[0].Issuer != "spiffe://org-a.example" || each.Asked[1].Issuer != "spiffe://org-b.example" {
		t.Fatalf("delegate verify --status TD=URL for each issuer: %v\n%s", err, v)
	}
	if v, err := cli(t, "", dirB, "delegate", "verify", t2, "--bundles", filepath.Join(payer, "bundles.json"), "--presenter", "spiffe://org-b.example/agent/payer",
		"--status", "org-a.example="+urlA); err == nil || !strings.Contains(err.Error(), "give the last hop's issuer, org-b.example") {
		t.Fatalf("delegate verify --status without the last hop's issuer: %v\n%s", err, v)
	}
	// An issuer given that none of the hops has (a typo), one given
	// without its address, or the last one given twice, would leave
	// hops unasked that were meant to be: refused, nothing asked.
	for _, tc := range []struct {
		status []string
		want   string
	}{
		{[]string{"--status", "org-aa.example=" + urlA, "--status", "org-b.example=" + urlB}, "org-aa.example issued no hop of this chain"},
		{[]string{"--status", "org-a.example=", "--status", "org-b.example=" + urlB}, "give the address of org-a.example's authority"},
		{[]string{"--status", urlB, "--status", "org-b.example=" + urlA, "--status", "org-a.example=" + urlA}, "the last hop's issuer, org-b.example, given twice"},
	} {
		v, err := cli(t, "", dirB, append([]string{"delegate", "verify", t2, "--bundles", filepath.Join(payer, "bundles.json"), "--presenter", "spiffe://org-b.example/agent/payer"}, tc.status...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(v, `"asked"`) {
			t.Errorf("delegate verify %s: %v\n%s\nwant it refused: %s", strings.Join(tc.status, " "), err, v, tc.want)
		}
	}
	// org-b's auditor proves the chain in both logs.
	peer := "org-a.example=" + urlA + "," + filepath.Join(dirA, "mandate-data/admin/bundle.pem") + "," + filepath.Join(dirA, "mandate-data/audit/log.vkey")
	tree := must(urlB, dirB, "audit", "chain", ans.ID, "--verify", "--peer", peer)
	if n := strings.Count(tree, "signed by the delegator's X509-SVID"); n != 2 {
		t.Fatalf("audit chain verified %d delegator signatures, want 2:\n%s", n, tree)
	}
	for _, want := range []string{"on behalf of alice@org-a.example", "proven in org-a.example's log", "proven in org-b.example's log",
		"\n   purpose: plan the offsite\n",
		"responsible planner@org-a.example", "responsible payer@org-b.example",
		// A field the registration left blank shows as "-", never as nothing.
		"delegatee accountable: operator team-payer, model -, responsible payer@org-b.example"} {
		if !strings.Contains(tree, want) {
			t.Fatalf("audit chain lacks %q:\n%s", want, tree)
		}
	}
	if strings.Contains(tree, "REVOKED") {
		t.Fatalf("audit chain shows a revocation before any:\n%s", tree)
	}
	// The token given in place of its id (delegate request prints both)
	// is a bearer credential: refused, and shown nowhere, neither in an
	// authority's refusal nor in the error of a call that found no
	// authority (which names the URL it asked).
	tb, err := os.ReadFile(t2)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tb))
	for _, at := range []string{urlB, "https://" + freeAddr(t)} {
		if out, err := cli(t, at, dirB, "audit", "chain", token); err == nil || strings.Contains(err.Error()+out, token) {
			t.Errorf("audit chain TOKEN (at %s) = %v, want it refused without the token", at, err)
		}
		if out, err := cli(t, at, dirB, "audit", "search", "--delegation-id", token); err == nil || strings.Contains(err.Error()+out, token) {
			t.Errorf("audit search --delegation-id TOKEN (at %s) = %v, want it refused without the token", at, err)
		}
	}
	// The auditor remembers both logs' latest checkpoints (in the working
	// directory): every later run proves each log consistent with them.
	if mem, err := os.ReadDir("mandate-audit.logs"); err != nil || len(mem) != 2 ||
		!strings.Contains(tree, "remembered in mandate-audit.logs (a later run must prove these logs consistent with it): org-a.example/audit at size ") ||
		!strings.Contains(tree, ", org-b.example/audit at size ") {
		t.Fatalf("audit chain remembered %v (%v):\n%s", mem, err, tree)
	}
	// A --peer given wrong keys, or roots that are missing or another
	// authority's, is named in the error: not --vkey, not a bare file.
	for _, tc := range []struct{ name, peer, want string }{
		{"another log's key", "org-a.example=" + urlA + "," + filepath.Join(dirA, "mandate-data/admin/bundle.pem") + "," + filepath.Join(dirB, "mandate-data/audit/log.vkey"),
			"(is the LOG.vkey of --peer org-a.example that log's key?)"},
		{"roots missing", "org-a.example=" + urlA + "," + filepath.Join(dirA, "nope.pem") + "," + filepath.Join(dirA, "mandate-data/audit/log.vkey"),
			"--peer org-a.example: its roots: open "},
		{"another authority's roots", "org-a.example=" + urlA + "," + filepath.Join(dirB, "mandate-data/admin/bundle.pem") + "," + filepath.Join(dirA, "mandate-data/audit/log.vkey"),
			`--peer org-a.example: client: the trust domain given is "org-a.example", and the trust bundle given is "org-b.example"'s`},
	} {
		if out, err := cli(t, urlB, dirB, "audit", "chain", ans.ID, "--verify", "--peer", tc.peer); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("audit chain --peer with %s: %v, want an error saying %q\n%s", tc.name, err, tc.want, out)
		}
	}
	// org-b revokes the booker; then org-a revokes the root hop. The
	// auditor proves each revocation in the log of the hop it revokes.
	var root struct {
		Hops []struct {
			ID     string
			LogURL string `json:"log_url"`
		}
	}
	_ = json.Unmarshal([]byte(must(urlB, dirB, "audit", "chain", ans.ID, "--json", "--peer", peer)), &root)
	if len(root.Hops) != 2 {
		t.Fatalf("chain --json: %+v", root)
	}
	// Each proven hop's log_url is, as in the API's answer, the chain's
	// URL at the authority whose log proved it.
	for i, base := range []string{urlA, urlB} {
		if want := base + "/v1/audit/chains/" + root.Hops[i].ID; root.Hops[i].LogURL != want {
			t.Errorf("chain --json: hop %d's log_url = %q, want %q", i, root.Hops[i].LogURL, want)
		}
	}
	must(urlB, dirB, "admin", "revoke", "spiffe-id", "spiffe://org-b.example/agent/booker", "--reason", "compromised")
	if out := must(urlB, dirB, "admin", "revoke", "list"); !strings.Contains(out, `"spiffe_id": "spiffe://org-b.example/agent/booker"`) || !strings.Contains(out, `"reason": "compromised"`) {
		t.Fatalf("admin revoke list:\n%s", out)
	}
	tree = must(urlB, dirB, "audit", "chain", ans.ID, "--verify", "--peer", peer)
	if n := strings.Count(tree, "REVOKED"); n != 1 ||
		!strings.Contains(tree, `by spiffe://org-b.example/mandate/admin: "compromised" (spiffe://org-b.example/agent/booker; org-b.example's log, entry `) {
		t.Fatalf("audit chain after revoking the booker at org-b:\n%s", tree)
	}
	if out := must(urlA, dirA, "admin", "revoke", "delegation", root.Hops[0].ID, "--reason", "cancelled"); !strings.Contains(out, root.Hops[0].ID) {
		t.Fatalf("revoke: %s", out)
	}
	tree = must(urlB, dirB, "audit", "chain", ans.ID, "--verify", "--peer", peer)
	if !strings.Contains(tree, "remembered in mandate-audit.logs") {
		t.Fatalf("audit chain did not remember the logs that grew:\n%s", tree)
	}
	if n := strings.Count(tree, "REVOKED"); n != 2 || !strings.Contains(tree, `by spiffe://org-a.example/mandate/admin: "cancelled" (this hop; org-a.example's log, entry `) ||
		!strings.Contains(tree, `"compromised" (spiffe://org-b.example/agent/booker; org-b.example's log`) {
		t.Fatalf("audit chain after revoking the root too:\n%s", tree)
	}
	// org-b, asked about its own hop, answers for the root too.
	if v, err := cli(t, "", dirB, "delegate", "verify", t2, "--bundles", filepath.Join(payer, "bundles.json"), "--presenter", "spiffe://org-b.example/agent/payer",
		"--status", urlB); err == nil || !strings.Contains(v, `"status": "revoked"`) || !strings.Contains(err.Error(), "no longer holds") {
		t.Fatalf("delegate verify --status below a revoked root: %v\n%s", err, v)
	}
	// Asked of each issuer: the root hop, asked of org-a, is the one
	// named revoked.
	if v, err := cli(t, "", dirB, append([]string{"delegate", "verify", t2, "--bundles", filepath.Join(payer, "bundles.json"), "--presenter", "spiffe://org-b.example/agent/payer"}, statusEach...)...); err == nil ||
		!strings.Contains(v, `"status": "revoked"`) || !strings.Contains(err.Error(), "no longer holds: "+root.Hops[0].ID+" revoked") {
		t.Fatalf("delegate verify --status TD=URL below a revoked root: %v\n%s", err, v)
	}
	// Without org-a's keys the chain cannot be proven end to end.
	if out, err := cli(t, urlB, dirB, "audit", "chain", ans.ID, "--verify"); err == nil {
		t.Fatalf("audit chain --verify without --peer passed:\n%s", out)
	}
}

// A --ttl the authority would refuse is refused before anything is
// asked (or logged), with the limit --help gives.
func TestDelegateRequestTTLOverLimit(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		ttl  string
		want string
	}{
		{"48h", "--ttl 48h0m0s: at most 24h"},
		{"24h1s", "--ttl 24h0m1s: at most 24h"},
		{"500ms", "--ttl 500ms: give a whole number of seconds"},
	} {
		_, err := cli(t, "https://127.0.0.1:1", dir, "delegate", "request", "--creds", filepath.Join(dir, "none"),
			"--delegatee", "spiffe://org-b.example/agent/booker", "--scope", "calendar:read", "--principal", "alice", "--ttl", tc.ttl,
			"--out", filepath.Join(dir, "t.jwt"))
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("delegate request --ttl %s: %v, want a usage error saying %q", tc.ttl, err, tc.want)
		}
	}
}

// delegate verify without the bundles file it reads by default says
// what to give.
func TestDelegateVerifySaysWhatBundlesToGive(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := os.WriteFile("t.jwt", []byte("a.b.c"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"delegate", "verify", "--any-holder", "t.jwt"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "mandate-agent/bundles.json") || !strings.Contains(err.Error(), "give --bundles") {
		t.Fatalf("delegate verify with no bundles file = %v, want it to name the file and say to give --bundles", err)
	}
}
