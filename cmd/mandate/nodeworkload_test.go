package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/logtest"
	"mandate.dev/mandate/workload"
)

// node run --workload-api serves a hosted agent's SVIDs to the local
// process its entry selects, through go-spiffe's Workload API client;
// an agent the node may not host gets nothing, and says why.
func TestNodeRunServesTheWorkloadAPI(t *testing.T) {
	dir := t.TempDir()
	url := startServe(t, dir)
	t.Chdir(dir)
	nodeID := joinNode(t, url, dir, "")
	mustCLI(t, url, dir, "admin", "agent", "create", "--spiffe-id", "spiffe://mandate.localhost/agent/planner", "--node-id", nodeID, "--scope", "read")
	mustCLI(t, url, dir, "admin", "agent", "create", "--spiffe-id", "spiffe://mandate.localhost/agent/elsewhere", "--node-id", "spiffe://mandate.localhost/node/join_token/0000", "--scope", "read")

	sock := filepath.Join(dir, "workload.sock")
	uid := strconv.Itoa(os.Getuid())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Setenv("MANDATE_SERVER", url)
	// A relative path, as a user may give it: the log names the absolute
	// one, which the workloads need.
	errOut, done := nodeRun(ctx, "--workload-api", "workload.sock", "--workload", "uid:"+uid+"=spiffe://mandate.localhost/agent/planner")
	addr := workloadapi.WithAddr("unix://" + sock)
	var xc *workloadapi.X509Context
	var err error
	for xc == nil {
		if xc, err = workloadapi.FetchX509Context(ctx, addr); err != nil && ctx.Err() != nil {
			t.Fatalf("FetchX509Context = %v", err)
		} else if err != nil {
			time.Sleep(20 * time.Millisecond) // the socket is not there yet
		}
	}
	if len(xc.SVIDs) != 1 || xc.SVIDs[0].ID.String() != "spiffe://mandate.localhost/agent/planner" {
		t.Fatalf("SVIDs = %v, want the planner's", xc.SVIDs)
	}
	if _, _, err := x509svid.Verify(xc.SVIDs[0].Certificates, xc.Bundles); err != nil {
		t.Errorf("the planner's X509-SVID does not verify: %v", err)
	}
	jwt, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "billing"}, addr)
	if err != nil || jwt.ID.String() != "spiffe://mandate.localhost/agent/planner" {
		t.Fatalf("FetchJWTSVID = %v, %v", jwt, err)
	}
	bundles, err := workloadapi.FetchJWTBundles(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(jwt.Marshal(), bundles, []string{"billing"}); err != nil {
		t.Errorf("the JWT-SVID does not validate with the JWT bundles served: %v", err)
	}
	// svid workload says what the Workload API gives this process.
	var said bytes.Buffer
	if err := run(ctx, []string{"svid", "workload", "--workload-api", sock, "--audience", "billing"}, &said, io.Discard); err != nil {
		t.Fatalf("svid workload = %v", err)
	}
	var got struct {
		X509SVIDs []struct {
			SPIFFEID string `json:"spiffe_id"`
		} `json:"x509_svids"`
		Bundles  []string `json:"bundles"`
		JWTSVIDs []struct {
			SPIFFEID, Token string
		} `json:"jwt_svids"`
	}
	if err := json.Unmarshal(said.Bytes(), &got); err != nil || len(got.X509SVIDs) != 1 || got.X509SVIDs[0].SPIFFEID != "spiffe://mandate.localhost/agent/planner" ||
		!slices.Equal(got.Bundles, []string{"spiffe://mandate.localhost"}) || len(got.JWTSVIDs) != 1 || got.JWTSVIDs[0].Token == "" {
		t.Errorf("svid workload printed %s (%v)", said.String(), err)
	}
	if strings.Contains(said.String(), "PRIVATE KEY") {
		t.Error("svid workload printed a key")
	}
	// The socket as a path, relative or absolute, or as a URI, in the
	// flag or in $SPIFFE_ENDPOINT_SOCKET.
	for _, tc := range []struct{ flag, env string }{
		{flag: sock}, {flag: "workload.sock"}, {flag: "./workload.sock"}, {flag: "unix://" + sock},
		{env: "workload.sock"}, {env: "unix://" + sock},
	} {
		t.Setenv("SPIFFE_ENDPOINT_SOCKET", tc.env)
		args := []string{"svid", "workload"}
		if tc.flag != "" {
			args = append(args, "--workload-api", tc.flag)
		}
		said.Reset()
		if err := run(ctx, args, &said, io.Discard); err != nil || !strings.Contains(said.String(), `"spiffe_id": "spiffe://mandate.localhost/agent/planner"`) {
			t.Errorf("svid workload with --workload-api %q, $SPIFFE_ENDPOINT_SOCKET %q = %v, printed %s", tc.flag, tc.env, err, said.String())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("node run = %v (%s), want it stopped cleanly", err, errOut.String())
	}
	if want := "serving the SPIFFE Workload API on " + sock + " (SPIFFE_ENDPOINT_SOCKET=unix://" + sock + ")"; !strings.Contains(errOut.String(), want) {
		t.Errorf("node run's log does not say %q:\n%s", want, errOut.String())
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket is left after node run stopped: %v", err)
	}

	// An agent this node may not host: the workload is told why.
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, done = nodeRun(ctx, "--workload-api", sock, "--workload", "uid:"+uid+"=spiffe://mandate.localhost/agent/elsewhere")
	for {
		_, err := workloadapi.FetchX509SVID(ctx, addr)
		if status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "no X509-SVID could be obtained") {
			break
		}
		time.Sleep(20 * time.Millisecond)
		if ctx.Err() != nil {
			t.Fatalf("FetchX509SVID of an agent not hosted here = %v, want Unavailable saying why", err)
		}
	}
	// svid workload says the Workload API's answer, and does not ask
	// whether one serves there: it does.
	err = run(ctx, []string{"svid", "workload", "--workload-api", sock}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "no X509-SVID could be obtained") || strings.Contains(err.Error(), "serving this socket?") {
		t.Errorf("svid workload of an agent not hosted here = %v, want the Workload API's answer alone", err)
	}
	cancel()
	<-done
}

// node run follows the authority between renewals: an agent deleted is
// served no more from the next sync, and a node banned stops node run,
// its socket removed.
func TestNodeRunFollowsTheAuthority(t *testing.T) {
	dir, url, nodeID := serveSyncedNode(t)
	var reg struct{ ID string }
	if err := json.Unmarshal([]byte(mustCLI(t, url, dir, "admin", "agent", "create", "--spiffe-id", "spiffe://mandate.localhost/agent/planner", "--node-id", nodeID)), &reg); err != nil || reg.ID == "" {
		t.Fatalf("the registration's id: %v", err)
	}
	sock := filepath.Join(dir, "workload.sock")
	addr := workloadapi.WithAddr("unix://" + sock)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errOut, done := nodeRun(ctx, "--workload-api", sock, "--workload", "uid:"+strconv.Itoa(os.Getuid())+"=spiffe://mandate.localhost/agent/planner")
	for {
		if _, err := workloadapi.FetchX509SVID(ctx, addr); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("FetchX509SVID = %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mustCLI(t, url, dir, "admin", "agent", "delete", reg.ID)
	for {
		_, err := workloadapi.FetchX509SVID(ctx, addr)
		if status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "no longer lets this host serve it") && strings.Contains(err.Error(), "agent-not-registered") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("FetchX509SVID of an agent deleted = %v, want Unavailable saying why", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mustCLI(t, url, dir, "admin", "node", "ban", nodeID, "--reason", "compromised")
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "node-banned") {
			t.Errorf("node run of a node banned = %v, want it stopped saying node-banned", err)
		}
	case <-ctx.Done():
		t.Fatalf("node run went on serving a node banned:\n%s", errOut.String())
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket is left after node run stopped: %v", err)
	}
}

// nodeRun runs node run with args in the background until ctx ends, or
// it stops: its log, read safely while it runs, and its end.
func nodeRun(ctx context.Context, args ...string) (*logtest.Buffer, <-chan error) {
	log, done := &logtest.Buffer{}, make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"node", "run"}, args...), io.Discard, log) }()
	return log, done
}

// svid workload asked at a socket where no Workload API answers (none
// there, or one a stopped process left) says what to check, not only
// gRPC's failed dial.
func TestSVIDWorkloadSaysNothingAnswers(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	for _, sock := range []string{filepath.Join(dir, "none.sock"), stale} {
		err := run(context.Background(), []string{"svid", "workload", "--workload-api", sock, "--timeout", "1m"}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "is mandate node run --workload-api serving this socket?") {
			t.Errorf("svid workload at %s = %v, want it to ask whether node run serves there", sock, err)
		}
	}
}

func TestNodeRunWorkloadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"node", "run", "--workload-api", "x.sock"},
		{"node", "run", "--workload", "uid:1=spiffe://mandate.localhost/agent/a"},
		{"node", "run", "--workload-api", "x.sock", "--workload", "uid:x=spiffe://mandate.localhost/agent/a"},
		{"node", "run", "--workload-api", "x.sock", "--workload", "uid:1=spiffe://mandate.localhost/node/join/0123456789abcdef"},
	} {
		var out, errOut bytes.Buffer
		var ue usageError
		if err := run(context.Background(), args, &out, &errOut); !errors.As(err, &ue) {
			t.Errorf("%v = %v, want a usage error", args, err)
		}
	}
}

// node run with no node credential to renew says so before it serves
// anything; one stopping at once once serving (here: its credential has
// expired) leaves no socket behind.
func TestNodeRunRemovesTheSocketWhenItStopsAtOnce(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	sock := filepath.Join(dir, "workload.sock")
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"node", "run", "--out", "none", "--workload-api", sock, "--workload", "uid:1=spiffe://mandate.localhost/agent/a"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "join first") || strings.Contains(errOut.String(), "serving") {
		t.Fatalf("node run with no node credential = %v (%q), want it to say to join first, serving nothing", err, errOut.String())
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
		URIs: []*url.URL{spiffeid.RequireFromString("spiffe://mandate.localhost/node/join/0123456789abcdef").URL()}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	if err := credfile.Write(credfile.In("expired"), []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	// An agent of another trust domain than the node's is refused
	// before anything is served.
	out.Reset()
	errOut.Reset()
	var ue usageError
	err = run(context.Background(), []string{"node", "run", "--out", "expired", "--server", "https://127.0.0.1:1", "--workload-api", sock, "--workload", "uid:1=spiffe://org-b.example/agent/a"}, &out, &errOut)
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "trust domain mandate.localhost") || strings.Contains(errOut.String(), "serving") {
		t.Fatalf("node run serving an agent of another trust domain = %v (%q), want it refused at its start", err, errOut.String())
	}
	for i := range 20 {
		out.Reset()
		errOut.Reset()
		err := run(context.Background(), []string{"node", "run", "--out", "expired", "--server", "https://127.0.0.1:1", "--workload-api", sock, "--workload", "uid:1=spiffe://mandate.localhost/agent/a"}, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), "expired") || !strings.Contains(errOut.String(), "serving the SPIFFE Workload API") {
			t.Fatalf("node run with an expired credential = %v (%q), want it stopped, saying so, once serving", err, errOut.String())
		}
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("run %d: the socket is left after node run stopped: %v", i, err)
		}
	}
}

// serveSensorOnTPM starts mandate serve in dir trusting the TPM
// simulator's ECC EK in the profile of its current PCRs, and registers
// the agent sensor on the node that EK makes; it returns the server's URL.
func serveSensorOnTPM(t *testing.T, dir string, more ...string) string {
	t.Helper()
	ek := strings.TrimSpace(mustCLI(t, "", dir, "node", "ek", "--tpm", "simulator", "--ek", "ecc", "--quiet"))
	profile := mustCLI(t, "", dir, "node", "pcrs", "--tpm", "simulator", "--pcrs", "0-7,16", "--profile", "edge-v1")
	url := serveTrustingTPM(t, dir, ek, profile, more...)
	mustCLI(t, url, dir, "admin", "agent", "create", "--spiffe-id", "spiffe://mandate.localhost/agent/sensor", "--node-id", "spiffe://mandate.localhost/node/tpm/"+ek)
	return url
}

// node run --tpm serves the Workload API too, with the credential its
// attestation obtains.
func TestNodeRunTPMServesTheWorkloadAPI(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	url := serveSensorOnTPM(t, dir)

	sock := filepath.Join(dir, "workload.sock")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Setenv("MANDATE_SERVER", url)
	errOut, done := nodeRun(ctx, "--tpm", "simulator", "--ek", "ecc", "--workload-api", sock,
		"--workload", "uid:"+strconv.Itoa(os.Getuid())+"=spiffe://mandate.localhost/agent/sensor")
	var svid *x509svid.SVID
	for svid == nil {
		var err error
		if svid, err = workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+sock)); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("FetchX509SVID = %v", err)
			}
			time.Sleep(50 * time.Millisecond) // attesting, or the socket is not there yet
		}
	}
	if svid.ID.String() != "spiffe://mandate.localhost/agent/sensor" {
		t.Errorf("the Workload API gave %s", svid.ID)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("node run --tpm = %v (%s)", err, errOut.String())
	}
}

// node run goes on serving the Workload API when its log's reader has
// gone (the reading end of its standard error closed), and stops as
// asked, with exit status 0.
func TestNodeRunGoesOnWithItsLogGone(t *testing.T) {
	dir, bin := buildMandate(t)
	url := startServe(t, dir)
	t.Chdir(dir)
	nodeID := joinNode(t, url, dir, "")
	mustCLI(t, url, dir, "admin", "agent", "create", "--spiffe-id", "spiffe://mandate.localhost/agent/planner", "--node-id", nodeID)
	sock := filepath.Join(dir, "workload.sock")
	cmd := exec.Command(bin, "node", "run", "--server", url, "--workload-api", sock, "--workload", "uid:"+strconv.Itoa(os.Getuid())+"=spiffe://mandate.localhost/agent/planner")
	logs, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if err := logs.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Served once it has renewed, and said so, and obtained the agent's
	// SVID, saying nothing on the way.
	for {
		if _, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr("unix://"+sock)); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatalf("the Workload API of node run with its log gone: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if !cmd.ProcessState.Success() {
		t.Errorf("node run stopped by SIGTERM with its log gone: %v; want exit status 0", cmd.ProcessState)
	}
}

// orgBCACert is a self-signed CA certificate of org-b.example: an X.509
// authority of another trust domain than org-a.example's.
func orgBCACert(t *testing.T) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tdB, _ := url.Parse("spiffe://org-b.example")
	tpl := &x509.Certificate{SerialNumber: big.NewInt(3), URIs: []*url.URL{tdB}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	other, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return other
}

// The Workload API's issuer syncs with the authority with the node's
// credential: which agents it may serve (one not hosted here refused,
// with the problem its SVIDs would get), and the bundles as the
// authority publishes them, this trust domain's with a refresh hint, and
// verifying what the authority issued. A node banned is refused for
// good (ErrNodeRefused: node run stops).
func TestNodeIssuerSync(t *testing.T) {
	dir := t.TempDir()
	url := startServe(t, dir)
	t.Chdir(dir)
	nodeID := joinNode(t, url, dir, "")
	planner, elsewhere := spiffeid.RequireFromString("spiffe://mandate.localhost/agent/planner"), spiffeid.RequireFromString("spiffe://mandate.localhost/agent/elsewhere")
	mustCLI(t, url, dir, "admin", "agent", "create", "--spiffe-id", planner.String(), "--node-id", nodeID)
	mustCLI(t, url, dir, "admin", "agent", "create", "--spiffe-id", elsewhere.String(), "--node-id", "spiffe://mandate.localhost/node/join/0000000000000000")
	cf := clientFlags{server: url, creds: filepath.Join(dir, "mandate-node")}
	is := &nodeIssuer{dial: func() (*client.Client, error) { return cf.dial(true) }}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sync, err := is.Sync(ctx, []spiffeid.ID{planner, elsewhere})
	if err != nil {
		t.Fatalf("Sync = %v", err)
	}
	var p *client.Problem
	if len(sync.Refused) != 1 || !errors.As(sync.Refused[elsewhere], &p) || p.Name() != "agent-not-allowed-on-node" || p.Status != http.StatusForbidden {
		t.Errorf("refused %v; want %s alone, as agent-not-allowed-on-node", sync.Refused, elsewhere)
	}
	if len(sync.Bundles) != 1 {
		t.Fatalf("%d bundles; want this trust domain's", len(sync.Bundles))
	}
	b := sync.Bundles[0]
	if b.TrustDomain().Name() != "mandate.localhost" {
		t.Errorf("the bundle is of %s", b.TrustDomain())
	}
	if hint, ok := b.RefreshHint(); !ok || hint <= 0 {
		t.Errorf("the bundle's refresh hint = %v, %v", hint, ok)
	}
	chain, _, _, err := credfile.Load(credfile.In(filepath.Join(dir, "mandate-node")))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(chain, b); err != nil {
		t.Errorf("the node's SVID does not verify with the bundle: %v", err)
	}
	if len(b.JWTAuthorities()) == 0 {
		t.Error("the bundle has no JWT authority")
	}
	mustCLI(t, url, dir, "admin", "node", "ban", nodeID, "--reason", "compromised")
	if _, err := is.Sync(ctx, []spiffeid.ID{planner}); !errors.Is(err, workload.ErrNodeRefused) || !strings.Contains(err.Error(), "node-banned") {
		t.Errorf("Sync of a banned node = %v; want ErrNodeRefused, node-banned", err)
	}
}

// The Workload API's issuer refuses, as the authority's bundles, an
// answer that is not one: no bundle of its own trust domain, no
// authority in one, or an X.509 authority of another trust domain (the
// workloads would trust that trust domain's CA for this one's IDs); and
// it reads a refresh hint too large for go-spiffe's reading (which
// would overflow to under a second, and have the node sync every
// second) as the largest one.
func TestNodeIssuerSyncRefusesWhatIsNotTheAuthoritysBundle(t *testing.T) {
	ca := newOrgACA(t)
	other := orgBCACert(t)
	own := x509BundleJSON(t, ca.cert)
	for name, tc := range map[string]struct {
		bundles string
		want    string // in the error; none: the bundle, with a refresh hint of at least an hour
	}{
		"no authority":                    {bundles: `{"org-a.example": {"keys":[],"spiffe_refresh_hint":300}}`, want: "no authorities"},
		"another trust domain's CA":       {bundles: `{"org-a.example": ` + x509BundleJSON(t, other) + `}`, want: "another trust domain"},
		"another trust domain's alone":    {bundles: `{"org-b.example": ` + x509BundleJSON(t, other) + `}`, want: "no bundle of org-a.example"},
		"a refresh hint past go-spiffe's": {bundles: `{"org-a.example": ` + strings.TrimSuffix(own, "}") + `,"spiffe_refresh_hint":18446744074}}`},
	} {
		t.Run(name, func(t *testing.T) {
			url := ca.serve(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"node_id": "spiffe://org-a.example/node/join/0000000000000000", "hosted": [], "refused": [], "bundles": ` + tc.bundles + `}`))
			})
			is := &nodeIssuer{dial: func() (*client.Client, error) {
				return client.New(client.Config{Server: url, Bundle: []*x509.Certificate{ca.cert}})
			}}
			sync, err := is.Sync(t.Context(), nil)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Sync = %v, %v; want an error saying %q", sync, err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Sync = %v", err)
			}
			if hint, ok := sync.Bundles[0].RefreshHint(); !ok || hint < time.Hour {
				t.Errorf("the bundle's refresh hint = %v, %v; want at least an hour", hint, ok)
			}
		})
	}
}

// The Workload API's issuer reads the bundles an X509-SVID's answer
// carries as it reads a sync's (they are served as the trust bundles
// alike, until the next answer): an X.509 authority of another trust
// domain in this one's bundle is refused (the workloads would trust that
// trust domain's CA for this one's IDs), and a key with its private part
// is left out (it would be handed to every workload).
func TestNodeIssuerX509SVIDReadsItsBundlesAsASyncsAre(t *testing.T) {
	ca := newOrgACA(t)
	other := orgBCACert(t)
	own := x509BundleJSON(t, ca.cert)
	jwtKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	raw, _ := jwtKey.PublicKey.Bytes()
	d, _ := jwtKey.Bytes()
	b64 := base64.RawURLEncoding.EncodeToString
	withPrivate := `{"keys":[{"use":"jwt-svid","kty":"EC","crv":"P-256","kid":"k1","x":"` + b64(raw[1:33]) + `","y":"` + b64(raw[33:]) + `","d":"` + b64(d) + `"}]}`
	agent := spiffeid.RequireFromString(tdA + "/agent/planner")
	for name, tc := range map[string]struct {
		bundles string
		want    string // in the error; none: served, with no private key in any bundle
	}{
		"another trust domain's CA": {bundles: `{"org-a.example": {"keys":[` + strings.TrimSuffix(strings.TrimPrefix(own, `{"keys":[`), "]}") + `,` + strings.TrimSuffix(strings.TrimPrefix(x509BundleJSON(t, other), `{"keys":[`), "]}") + `]}}`, want: "another trust domain"},
		"a private JWT key":         {bundles: `{"org-a.example": ` + own + `, "org-b.example": ` + strings.TrimSuffix(x509BundleJSON(t, other), "]}") + `,` + strings.TrimPrefix(withPrivate, `{"keys":[`) + `}`},
	} {
		t.Run(name, func(t *testing.T) {
			addr := ca.serve(t, func(w http.ResponseWriter, r *http.Request) {
				var req struct{ SPIFFEID, CSR string }
				if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				blk, _ := pem.Decode([]byte(req.CSR))
				csr, err := x509.ParseCertificateRequest(blk.Bytes)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				u, _ := url.Parse(agent.String())
				leaf := &x509.Certificate{SerialNumber: big.NewInt(4), URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
					NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
				der, err := x509.CreateCertificate(rand.Reader, leaf, ca.cert, csr.PublicKey, ca.key)
				if err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				svid, _ := json.Marshal(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"spiffe_id": "` + agent.String() + `", "x509_svid": ` + string(svid) + `, "expires_at": "` + leaf.NotAfter.UTC().Format(time.RFC3339) + `", "bundles": ` + tc.bundles + `}`))
			})
			is := &nodeIssuer{dial: func() (*client.Client, error) {
				return client.New(client.Config{Server: addr, Bundle: []*x509.Certificate{ca.cert}})
			}}
			svid, bundles, err := is.X509SVID(t.Context(), agent)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("X509SVID = %v, %v; want an error saying %q", svid, err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("X509SVID = %v", err)
			}
			for _, b := range bundles {
				for kid, k := range b.JWTAuthorities() {
					if _, private := k.(crypto.Signer); private {
						t.Errorf("the bundle of %s holds the private key %s", b.TrustDomain(), kid)
					}
				}
			}
		})
	}
}

// A TPM node evicted (or that an authority restored from an older backup
// does not know) attests again at its next sync, not at its next
// renewal: its workloads are served again within seconds.
func TestNodeRunTPMAttestsAgainOnceUnknown(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url, addr, errOut, done := runSensorOnTPM(ctx, t, dir)
	var nodes struct {
		Nodes []struct {
			SPIFFEID   string    `json:"spiffe_id"`
			AttestedAt time.Time `json:"attested_at"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, url, dir, "admin", "node", "list")), &nodes); err != nil || len(nodes.Nodes) != 1 {
		t.Fatalf("node list: %+v, %v", nodes, err)
	}
	first := nodes.Nodes[0]
	mustCLI(t, url, dir, "admin", "node", "evict", first.SPIFFEID, "--reason", "test")
	for {
		nodes.Nodes = nil
		if err := json.Unmarshal([]byte(mustCLI(t, url, dir, "admin", "node", "list")), &nodes); err != nil {
			t.Fatal(err)
		}
		if len(nodes.Nodes) == 1 && nodes.Nodes[0].AttestedAt.After(first.AttestedAt) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("node run --tpm did not attest again after its eviction:\n%s", errOut.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(errOut.String(), "attesting again now") {
		t.Errorf("node run did not say why it attested again:\n%s", errOut.String())
	}
	if _, err := workloadapi.FetchX509SVID(ctx, addr); err != nil {
		t.Errorf("FetchX509SVID once attested again = %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("node run --tpm = %v (%s)", err, errOut.String())
	}
}

// A TPM node whose attestation again, woken by a sync that says the
// authority does not know it, fails (here: --out held by another
// command) retries when it said it would, not at each sync failing
// meanwhile (every 1, 2, 4… s at first).
func TestNodeRunTPMRetriesAFailedAttestationAtItsOwnPace(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url, _, errOut, done := runSensorOnTPM(ctx, t, dir)
	unlock, err := lockOut("mandate-node")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	var nodes struct {
		Nodes []struct {
			SPIFFEID string `json:"spiffe_id"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, url, dir, "admin", "node", "list")), &nodes); err != nil || len(nodes.Nodes) != 1 {
		t.Fatalf("node list: %+v, %v", nodes, err)
	}
	mustCLI(t, url, dir, "admin", "node", "evict", nodes.Nodes[0].SPIFFEID, "--reason", "test")
	// The first failed attestation, then two syncs failing after it.
	var after string
	for {
		log := errOut.String()
		if i := strings.Index(log, "attestation failed"); i >= 0 {
			after = log[i:]
			if strings.Count(after, "no sync with the authority") >= 2 {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("node run --tpm did not fail to attest again, then to sync twice:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := strings.Count(after, "attesting again now"); n != 0 {
		t.Errorf("node run --tpm attested again %d times at failed syncs after a failed attestation, before its retry:\n%s", n, errOut.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("node run --tpm = %v (%s)", err, errOut.String())
	}
}

// A TPM node marked drifted, whose host was rebooted into its
// known-good state, comes back with node run --workload-api: a sync
// refused as node-drifted does not stop node run (a ban does), and its
// attestation, whose quote matches again, clears the mark. Here the
// first attestation waits for --out, held by another command, so that
// the syncs are refused first.
func TestNodeRunTPMComesBackFromDrift(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	url := serveSensorOnTPM(t, dir, "federation:\n  bundle_refresh_hint: 1s")
	t.Setenv("MANDATE_SERVER", url)
	mustCLI(t, url, dir, "node", "attest", "--tpm", "simulator", "--ek", "ecc")
	if _, err := cli(t, url, dir, "node", "attest", "--tpm", "simulator", "--ek", "ecc", "--simulator-extend-pcr", "16"); err == nil || !strings.Contains(err.Error(), "tpm-pcr-policy-mismatch") {
		t.Fatalf("node attest with PCR 16 changed = %v, want it refused as drifted", err)
	}
	unlock, err := lockOut("mandate-node") // released once (a second unlock would remove node run's lock file)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sock := filepath.Join(dir, "workload.sock")
	addr := workloadapi.WithAddr("unix://" + sock)
	errOut, done := nodeRun(ctx, "--tpm", "simulator", "--ek", "ecc", "--workload-api", sock,
		"--workload", "uid:"+strconv.Itoa(os.Getuid())+"=spiffe://mandate.localhost/agent/sensor")
	// until waits for cond while node run goes on.
	until := func(cond func() bool, what string) {
		t.Helper()
		for !cond() {
			select {
			case err := <-done:
				t.Fatalf("node run --tpm of a drifted node stopped: %v\n%s", err, errOut.String())
			case <-ctx.Done():
				t.Fatalf("node run --tpm %s:\n%s", what, errOut.String())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	until(func() bool { return strings.Count(errOut.String(), "problems/node-drifted") >= 2 }, "had no sync refused as drifted")
	unlock()
	until(func() bool { _, err := workloadapi.FetchX509SVID(ctx, addr); return err == nil }, "did not come back from its drift")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("node run --tpm = %v (%s)", err, errOut.String())
	}
}

// runSensorOnTPM serves the sensor agent (serveSensorOnTPM, with a sync
// every second) from node run --tpm --workload-api in dir (the test's
// working directory from now on) until ctx ends, once its X509-SVID is
// served: the authority's URL, the Workload API's address, node run's
// log and its end.
func runSensorOnTPM(ctx context.Context, t *testing.T, dir string) (string, workloadapi.ClientOption, *logtest.Buffer, <-chan error) {
	t.Helper()
	t.Chdir(dir)
	url := serveSensorOnTPM(t, dir, "federation:\n  bundle_refresh_hint: 1s")
	sock := filepath.Join(dir, "workload.sock")
	addr := workloadapi.WithAddr("unix://" + sock)
	t.Setenv("MANDATE_SERVER", url)
	errOut, done := nodeRun(ctx, "--tpm", "simulator", "--ek", "ecc", "--workload-api", sock,
		"--workload", "uid:"+strconv.Itoa(os.Getuid())+"=spiffe://mandate.localhost/agent/sensor")
	for {
		if _, err := workloadapi.FetchX509SVID(ctx, addr); err == nil {
			return url, addr, errOut, done
		} else if ctx.Err() != nil {
			t.Fatalf("FetchX509SVID = %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The trust domain an entry's agent must be of is the one node run will
// hold a credential of: a join-token node's credential's; a TPM node's
// valid credential's; and for a TPM node without one (before its first
// attestation, or once its credential lapsed, when it attests anew
// trusting --bundle) that of the authority it attests to: --trust-domain's
// or its bundle's, else its lapsed credential's bundle's.
func TestNodeRunWorkloadTrustDomain(t *testing.T) {
	const tpmPath = "/node/tpm/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	now := time.Now()
	expired, valid := now.Add(-time.Hour), now.Add(time.Hour)
	for _, tc := range []struct {
		name         string
		attests      bool
		node         string
		notAfter     time.Time
		trustDomain  string // --trust-domain, with a --bundle of its CA
		allowed, not string
	}{
		{"a TPM node whose credential lapsed, attesting anew into --trust-domain's", true, "spiffe://org-a.example" + tpmPath, expired, "org-b.example", "org-b.example", "org-a.example"},
		{"a TPM node whose credential lapsed, with no --bundle", true, "spiffe://org-a.example" + tpmPath, expired, "", "org-a.example", "org-b.example"},
		{"a TPM node with a valid credential", true, "spiffe://org-a.example" + tpmPath, valid, "org-b.example", "org-a.example", "org-b.example"},
		{"a join-token node whose credential lapsed", false, "spiffe://org-a.example/node/join/0123456789abcdef", expired, "org-b.example", "org-a.example", "org-b.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "node")
			node := selfSigned(t, tc.node, now.Add(-2*time.Hour), tc.notAfter, false)
			ca := selfSigned(t, "spiffe://org-a.example", now.Add(-2*time.Hour), valid, true)
			if err := credfile.Write(credfile.In(out), []*x509.Certificate{node.cert}, node.key, []*x509.Certificate{ca.cert}); err != nil {
				t.Fatal(err)
			}
			cf := clientFlags{server: "https://127.0.0.1:1", creds: out, bundle: filepath.Join(dir, "none.pem")}
			if tc.trustDomain != "" {
				other := selfSigned(t, "spiffe://"+tc.trustDomain, now.Add(-2*time.Hour), valid, true)
				cf.trustDomain, cf.bundle, cf.bundleGiven = tc.trustDomain, filepath.Join(dir, "bundle.pem"), true
				if err := os.WriteFile(cf.bundle, credfile.EncodeCertsPEM([]*x509.Certificate{other.cert}), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			for _, c := range []struct {
				td   string
				want bool
			}{{tc.allowed, true}, {tc.not, false}} {
				e, err := workload.ParseEntry("uid:1=spiffe://" + c.td + "/agent/a")
				if err != nil {
					t.Fatal(err)
				}
				w := workloadFlags{entries: []workload.Entry{e}, attests: tc.attests}
				if err := w.checkTrustDomain(&cf); (err == nil) != c.want {
					t.Errorf("an agent of %s: %v, want allowed %v", c.td, err, c.want)
				}
			}
		})
	}
}

// serveSyncedNode starts an authority whose nodes sync every second (a
// change is heard at once) in a new directory, the test's working
// directory and MANDATE_SERVER, and joins a node there: the directory,
// the authority's URL and the node's SPIFFE ID.
func serveSyncedNode(t *testing.T) (dir, url, nodeID string) {
	t.Helper()
	dir = t.TempDir()
	cfg := filepath.Join(dir, "mandate.yaml")
	if err := os.WriteFile(cfg, []byte("federation:\n  bundle_refresh_hint: 1s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url = startServe(t, dir, "--config", cfg)
	t.Chdir(dir)
	t.Setenv("MANDATE_SERVER", url)
	return dir, url, joinNode(t, url, dir, "")
}
