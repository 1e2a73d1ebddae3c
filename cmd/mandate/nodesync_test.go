package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/api"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/workload"
)

// runAuthority runs an authority with the default configuration and
// opts, its data directory dir's mandate-data, until the test ends, and
// returns its API server (not serving yet).
func runAuthority(t *testing.T, dir string, opts authority.Options) (*authority.Authority, *api.Server) {
	t.Helper()
	cfg := authority.Config{DataDir: filepath.Join(dir, "mandate-data"), Listen: "127.0.0.1:0"}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := authority.New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(runCtx) }()
	t.Cleanup(func() {
		stopRun()
		if err := <-runDone; err != nil {
			t.Errorf("authority stopped with %v", err)
		}
		a.Close()
	})
	srv, err := api.New(a)
	if err != nil {
		t.Fatal(err)
	}
	return a, srv
}

// startClockedServe serves an authority, as mandate serve does, whose
// clock reads now; its data directory is dir's mandate-data.
func startClockedServe(t *testing.T, dir string, now func() time.Time) string {
	t.Helper()
	a, srv := runAuthority(t, dir, authority.Options{Now: now})
	if err := a.WriteAdminCredential(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve = %v", err)
		}
	})
	return "https://" + ln.Addr().String()
}

// A node whose credential is the SVID before its latest (its renewal's
// answer was lost) is still renewed with it: the authority refusing its
// sync as svid-superseded once the grace for the SVID replaced has
// passed is left to that renewal, not a refusal for good that would
// stop node run; once renewed, the node syncs again.
func TestNodeSyncLeavesASupersededSVIDToTheRenewal(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	// The authority's clock runs a minute behind until the renewal whose
	// answer is lost, then catches up: past the grace of the SVID it
	// replaced.
	var skew atomic.Int64
	skew.Store(int64(-time.Minute))
	url := startClockedServe(t, dir, func() time.Time { return time.Now().Add(time.Duration(skew.Load())) })
	t.Setenv("MANDATE_SERVER", url)
	nodeID := spiffeid.RequireFromString(joinNode(t, url, dir, "node"))
	agent := spiffeid.RequireFromString("spiffe://mandate.localhost/agent/planner")
	mustCLI(t, url, dir, "admin", "agent", "create", "--spiffe-id", agent.String(), "--node-id", nodeID.String())

	chain, key, bundle, err := credfile.Load(credfile.In("node"))
	if err != nil {
		t.Fatal(err)
	}
	if err := credfile.Write(credfile.In("lost"), chain, key, bundle); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	lost := clientFlags{server: url, creds: "lost"}
	if _, err := renewNodeOnce(ctx, &lost, "lost", nodeID); err != nil {
		t.Fatalf("the renewal whose answer is lost: %v", err)
	}
	skew.Store(0)

	cf := clientFlags{server: url, creds: "node"}
	is := &nodeIssuer{dial: func() (*client.Client, error) { return cf.dial(true) }}
	var p *client.Problem
	if _, err := is.Sync(ctx, []spiffeid.ID{agent}); errors.Is(err, workload.ErrNodeRefused) || !errors.As(err, &p) || p.Name() != "svid-superseded" {
		t.Fatalf("Sync() with the SVID before the latest = %v; want svid-superseded, not a refusal for good", err)
	}
	if _, err := renewNodeOnce(ctx, &cf, "node", nodeID); err != nil {
		t.Fatalf("the renewal with the SVID before the latest = %v", err)
	}
	if s, err := is.Sync(ctx, []spiffeid.ID{agent}); err != nil || len(s.Refused) != 0 {
		t.Fatalf("Sync() once renewed = %+v, %v; want %s served", s, err, agent)
	}
}

// A TPM node that the authority knows no more, restored from a backup
// made before the node attested, is known again once it attests again:
// its sync refused as node-not-attested meanwhile is no refusal for
// good that would stop node run --tpm (a join-token node's is: unknown,
// it joins again), and has node run --tpm attest again (told on
// unknown). So has a credential the authority refuses at the handshake
// (signed by a CA revoked since).
func TestNodeSyncLeavesAnUnknownTPMNodeToItsAttestation(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	url := serveSensorOnTPM(t, dir)
	agent := spiffeid.RequireFromString("spiffe://mandate.localhost/agent/sensor")
	var backup struct{ Dir string }
	if err := json.Unmarshal([]byte(mustCLI(t, url, dir, "admin", "backup", "create")), &backup); err != nil || backup.Dir == "" {
		t.Fatalf("the backup's dir: %v", err)
	}
	attest := func(url string) {
		t.Helper()
		mustCLI(t, url, dir, "node", "attest", "--tpm", "simulator", "--ek", "ecc", "--bundle", filepath.Join(dir, "mandate-data/admin/bundle.pem"))
	}
	attest(url)
	restored := filepath.Join(dir, "restored")
	if out, err := exec.Command("cp", "-a", backup.Dir, restored).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v: %s", err, out)
	}
	restoredURL := startServe(t, dir, "--config", filepath.Join(dir, "mandate.yaml"), "--data-dir", restored)

	ctx := t.Context()
	for _, c := range []struct {
		attests bool
		forGood bool
	}{{attests: true}, {attests: false, forGood: true}} {
		cf := clientFlags{server: restoredURL, creds: "mandate-node"}
		unknown := make(chan struct{}, 1)
		is := &nodeIssuer{dial: func() (*client.Client, error) { return cf.dial(true) }, attests: c.attests}
		if c.attests {
			is.unknown = unknown
		}
		var p *client.Problem
		if _, err := is.Sync(ctx, []spiffeid.ID{agent}); errors.Is(err, workload.ErrNodeRefused) != c.forGood || !errors.As(err, &p) || p.Name() != "node-not-attested" {
			t.Fatalf("Sync() of a node unknown (attests %v) = %v; want node-not-attested, for good %v", c.attests, err, c.forGood)
		}
		if told := len(unknown) == 1; told != c.attests {
			t.Errorf("Sync() of a node unknown (attests %v) told it to attest again: %v", c.attests, told)
		}
	}
	chain, _, roots, err := credfile.Load(credfile.In("mandate-node"))
	if err != nil {
		t.Fatal(err)
	}
	forged := selfSigned(t, chain[0].URIs[0].String(), time.Now().Add(-time.Hour), time.Now().Add(time.Hour), false)
	if err := credfile.Write(credfile.In("forged"), []*x509.Certificate{forged.cert}, forged.key, roots); err != nil {
		t.Fatal(err)
	}
	forgedCF := clientFlags{server: url, creds: "forged"}
	unknown := make(chan struct{}, 1)
	is := &nodeIssuer{dial: func() (*client.Client, error) { return forgedCF.dial(true) }, attests: true, unknown: unknown}
	if _, err := is.Sync(ctx, []spiffeid.ID{agent}); !errors.Is(err, client.ErrCredentialRefused) || errors.Is(err, workload.ErrNodeRefused) || len(unknown) != 1 {
		t.Fatalf("Sync() with a credential the authority refuses = %v (told %d); want it refused at the handshake, not for good, and told to attest again", err, len(unknown))
	}
	attest(restoredURL)
	cf := clientFlags{server: restoredURL, creds: "mandate-node"}
	is = &nodeIssuer{dial: func() (*client.Client, error) { return cf.dial(true) }, attests: true}
	if s, err := is.Sync(ctx, []spiffeid.ID{agent}); err != nil || len(s.Refused) != 0 {
		t.Fatalf("Sync() once attested again = %+v, %v; want %s served", s, err, agent)
	}
}

// A node's credential that the authority stops trusting while node run
// keeps a connection to it open (reusedClient) is refused as at a new
// handshake (client.ErrCredentialRefused): the join-token node's node
// run stops, and the TPM node's attests anew (told on unknown), rather
// than each call on the kept connection being refused as
// unauthenticated, a passing failure, until the node's next renewal.
// The authority stops trusting it here by ending the federation with the
// node's trust domain; a CA revoked with --force does the same to its
// own nodes.
func TestNodeIssuerSeesItsCredentialRefusedOnAKeptConnection(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	urlA := startServe(t, dirA, "--trust-domain", "org-a.example")
	urlB := startServe(t, dirB, "--trust-domain", "org-b.example")
	doc := mustCLI(t, urlB, dirB, "bundle", "show", "--bundle", filepath.Join(dirB, "mandate-data/admin/bundle.pem"))
	bundleFile := filepath.Join(dirA, "org-b.bundle.json")
	if err := os.WriteFile(bundleFile, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, urlA, dirA, "admin", "federation", "add", "--trust-domain", "org-b.example", "--url", urlB+"/v1/bundle", "--bundle-file", bundleFile)
	nodeDir := filepath.Join(dirB, "node")
	joinNode(t, urlB, dirB, nodeDir)
	chain, key, _, err := credfile.Load(credfile.In(nodeDir))
	if err != nil {
		t.Fatal(err)
	}
	pemA, err := os.ReadFile(filepath.Join(dirA, "mandate-data/admin/bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	rootsA, err := credfile.ParseCertsPEM(pemA)
	if err != nil {
		t.Fatal(err)
	}
	agent := spiffeid.RequireFromString("spiffe://org-a.example/agent/a")
	ctx := t.Context()
	issuers := map[bool]*nodeIssuer{}
	unknown := make(chan struct{}, 1)
	for _, attests := range []bool{true, false} {
		clients := &reusedClient{dir: nodeDir, dial: func() (*client.Client, error) {
			return client.New(client.Config{Server: urlA, TrustDomain: spiffeid.RequireTrustDomainFromString("org-a.example"), Bundle: rootsA, SVID: chain, Key: key})
		}}
		is := &nodeIssuer{dial: clients.get, forget: clients.forget, attests: attests}
		if attests {
			is.unknown = unknown
		}
		// Org-a takes the credential (not a node of its own: forbidden),
		// and the connection stays open.
		var p *client.Problem
		if _, err := is.Sync(ctx, []spiffeid.ID{agent}); !errors.As(err, &p) || p.Name() != "forbidden" {
			t.Fatalf("Sync() at org-a, federated = %v; want 403 forbidden", err)
		}
		issuers[attests] = is
	}
	mustCLI(t, urlA, dirA, "admin", "federation", "delete", "org-b.example")
	for attests, is := range issuers {
		_, err := is.Sync(ctx, []spiffeid.ID{agent})
		if !errors.Is(err, client.ErrCredentialRefused) || errors.Is(err, workload.ErrNodeRefused) == attests {
			t.Errorf("Sync() (attests %v) once org-a no longer trusts the credential = %v; want it refused at the handshake, for good %v", attests, err, !attests)
		}
	}
	if len(unknown) != 1 {
		t.Error("the TPM node's issuer was not told to attest anew")
	}
}
