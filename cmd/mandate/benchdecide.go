package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/policies"
)

// benchDecidePolicy is a ~40-line cross-organisation delegation policy:
// the kind of question platforms ask.
const benchDecidePolicy = `package bench.delegation

import rego.v1

default allow := false

allow if count(deny) == 0

federated := {"org-a.example", "org-b.example", "org-c.example"}

deny contains msg if {
	not input.delegatee.trust_domain in federated
	msg := sprintf("trust domain %s is not federated", [input.delegatee.trust_domain])
}

deny contains msg if {
	some s in input.scopes
	not s in input.delegator.scopes
	msg := sprintf("scope %s is not granted to the delegator", [s])
}

deny contains msg if {
	count(input.chain) > 3
	msg := sprintf("chain depth %d exceeds 3", [count(input.chain)])
}

deny contains "expiry beyond the parent's" if input.exp > input.parent.exp

deny contains msg if {
	some hop in input.chain
	hop.revoked
	msg := sprintf("%s is revoked", [hop.delegatee])
}

deny contains msg if {
	some s in input.scopes
	s in {"payments:write", "secrets:read"}
	input.delegator.host.level != "hardware"
	msg := sprintf("scope %s needs a hardware-attested host", [s])
}

decision := {"allow": allow, "reasons": sort(deny)}
`

// benchDecideInput is the ~1.6 KB input sent with every decision.
const benchDecideInput = `{"input": {
  "delegator": {"spiffe_id": "spiffe://org-a.example/agent/planner", "trust_domain": "org-a.example",
    "scopes": ["calendar:read", "calendar:write", "mail:send", "payments:write", "files:read"],
    "host": {"spiffe_id": "spiffe://org-a.example/node/tpm/9f2c", "level": "hardware", "profile": "edge-v1"},
    "accountability": {"operator": "research", "model_provider": "acme", "model": "acme-1", "responsible_party": "alice@org-a.example"}},
  "delegatee": {"spiffe_id": "spiffe://org-b.example/agent/booker", "trust_domain": "org-b.example",
    "accountability": {"operator": "travel", "model_provider": "globex", "model": "gx-2", "responsible_party": "bob@org-b.example"}},
  "principal": "alice@org-a.example", "purpose": "book the offsite venue and pay the deposit",
  "scopes": ["calendar:read", "payments:write"], "exp": 1790000000,
  "parent": {"id": "5f1d3c1e-8a7b-4c2d-9e6f-0a1b2c3d4e5f", "exp": 1790003600, "scopes": ["calendar:read", "payments:write", "mail:send"]},
  "chain": [
    {"delegator": "spiffe://org-a.example/agent/assistant", "delegatee": "spiffe://org-a.example/agent/planner", "revoked": false,
     "scopes": ["calendar:read", "calendar:write", "payments:write", "mail:send"], "decision_id": "0d6e2f4a-1b3c-4d5e-8f9a-0b1c2d3e4f5a"},
    {"delegator": "spiffe://org-a.example/agent/planner", "delegatee": "spiffe://org-b.example/agent/booker", "revoked": false,
     "scopes": ["calendar:read", "payments:write"], "decision_id": "7a8b9c0d-1e2f-4a3b-9c4d-5e6f7a8b9c0d"}],
  "request": {"method": "POST", "path": "/v1/bookings", "host": "api.org-b.example", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}
}}`

func runBenchDecide(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench decide", "bench decide [flags]", stderr)
	levels := fs.String("concurrency", "1,8,32", "comma-separated concurrency levels")
	dur := fs.Duration("duration", 5*time.Second, "how long to measure each server at each level")
	opaPath := fs.String("opa", "", "opa binary (default: opa of the version in go.mod, installed with go install if missing into the user's cache directory, mandate/opa@VERSION)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkBenchDuration(*dur, time.Hour); err != nil {
		return err
	}
	var concs []int
	for _, f := range splitList(*levels) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 1024 {
			return usagef("--concurrency: %q is not a level", f)
		}
		concs = append(concs, n)
	}
	tmp, err := os.MkdirTemp("", "mandate-bench-decide-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	pdir := filepath.Join(tmp, "policies")
	if err := os.CopyFS(pdir, policies.FS); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(pdir, "bench.rego"), []byte(benchDecidePolicy), 0o644); err != nil {
		return err
	}
	opa, err := findOPA(ctx, *opaPath, stderr)
	if err != nil {
		return err
	}

	mandate, err := startMandateServer(ctx, tmp, pdir)
	if err != nil {
		return err
	}
	defer mandate.stop()
	opaSrv, err := startOPAServer(ctx, opa, tmp, filepath.Join(pdir, "bench.rego"))
	if err != nil {
		return err
	}
	defer opaSrv.stop()

	const path = "/v1/data/bench/delegation/decision"
	check := func(ans []byte) error {
		var a struct {
			Result struct {
				Allow bool `json:"allow"`
			} `json:"result"`
		}
		if err := json.Unmarshal(ans, &a); err != nil || !a.Result.Allow {
			return fmt.Errorf("bench: unexpected decision %.200s", ans)
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "concurrency\tserver\tdecisions\tdecisions/s\tp50\tp99\tserver CPU per decision\tMandate ÷ OPA")
	servers := []*benchServer{mandate, opaSrv}
	conn := func(srv *benchServer) func(int) (*benchConn, error) {
		return func(int) (*benchConn, error) {
			return newBenchConn(srv.url, path, []byte(benchDecideInput), srv.tls)
		}
	}
	// Each server is warmed up first (its query prepared, its code paths
	// hot), not measured; and the order alternates from one level to the
	// next: neither server always bears what going first, or second,
	// costs on a shared machine.
	for _, srv := range servers {
		if _, err := load(ctx, srv.name, 2, min(*dur/5, time.Second), conn(srv), check, nil); err != nil {
			return fmt.Errorf("%s warm-up: %w", srv.name, err)
		}
	}
	for k, conc := range concs {
		var res [2]benchResult
		var cpus [2]time.Duration
		for _, i := range []int{k % 2, 1 - k%2} {
			srv := servers[i]
			var cpu0 time.Duration
			r, err := load(ctx, srv.name, conc, *dur, conn(srv), check, func() { cpu0 = srv.cpu() })
			if err != nil {
				return fmt.Errorf("%s at concurrency %d: %w", srv.name, conc, err)
			}
			res[i], cpus[i] = r, (srv.cpu()-cpu0)/time.Duration(r.ops)
		}
		for i, r := range res {
			ratio := ""
			if i == 1 {
				ratio = fmt.Sprintf("%.2f", res[0].opsPerSec()/res[1].opsPerSec())
			}
			errs := ""
			if r.errors > 0 {
				errs = fmt.Sprintf(" (%d errors: %v)", r.errors, r.firstErr)
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%.0f%s\t%s\t%s\t%s\t%s\n", conc, servers[i].name, r.ops, r.opsPerSec(), errs,
				r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), cpus[i].Round(time.Microsecond), ratio)
		}
	}
	tw.Flush()
	fmt.Fprintf(stdout, "(the same ~40-line policy and %d-byte input, same load generator: one keep-alive TLS connection per\n", len(benchDecideInput))
	fmt.Fprintln(stdout, " in-flight request; Mandate authenticates each caller with mTLS and records every decision durably in its")
	fmt.Fprintln(stdout, " audit log before answering; opa run --server (TLS, no decision log) as shipped; server CPU from /proc;")
	fmt.Fprintln(stdout, " each server warmed up first, unmeasured; Mandate first at the 1st, 3rd... level, OPA first at the others)")
	return nil
}

// benchServer is a server process under load.
type benchServer struct {
	name    string
	url     string
	tls     *tls.Config
	cmd     *exec.Cmd
	stopped bool
}

// stop stops the server (again: nothing).
func (s *benchServer) stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-done
		}
	}
}

// cpu is the server process's user+system CPU time so far.
func (s *benchServer) cpu() time.Duration { return procCPU(s.cmd.Process.Pid) }

// procCPU is process pid's user+system CPU time so far, all its threads
// (/proc/<pid>/stat; 10 ms resolution), or 0 if it cannot be read.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start at ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * (time.Second / 100) // USER_HZ is 100 on Linux
}

var servingRE = regexp.MustCompile(`is serving on (https://\S+)`)

// startMandateServer runs this binary's serve with the policies of pdir
// (empty: the embedded ones), without a rate limit.
func startMandateServer(ctx context.Context, tmp, pdir string) (*benchServer, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Join(tmp, "mandate-data")
	// The load is one caller's: with http.rate_limit, the bench would
	// measure the limit.
	args := []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--rate-limit", "0", "--log-level", "warn"}
	if pdir != "" {
		args = append(args, "--policy-dir", pdir)
	}
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	srv := &benchServer{name: "mandate", cmd: cmd}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	select {
	case srv.url = <-found:
	case <-time.After(30 * time.Second):
		srv.stop()
		return nil, errors.New("bench: mandate serve did not start")
	}
	chain, key, bundle, err := credfile.Load(credfile.In(filepath.Join(dataDir, "admin")))
	if err != nil {
		srv.stop()
		return nil, err
	}
	c, err := client.New(client.Config{Server: srv.url, SVID: chain, Key: key, Bundle: bundle})
	if err != nil {
		srv.stop()
		return nil, err
	}
	srv.tls = c.TLSConfig()
	return srv, nil
}

// startOPAServer runs opa run --server with TLS on 127.0.0.1.
func startOPAServer(ctx context.Context, opa, tmp, policyFile string) (*benchServer, error) {
	certFile, keyFile, pool, err := selfSignedCert(tmp)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.CommandContext(ctx, opa, "run", "--server", "--addr", addr, "--tls-cert-file", certFile, "--tls-private-key-file", keyFile,
		"--log-level", "error", policyFile)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start opa: %w", err)
	}
	srv := &benchServer{name: "opa", url: "https://" + addr, tls: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, cmd: cmd}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: srv.tls}, Timeout: time.Second}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := hc.Get(srv.url + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return srv, nil
			}
		}
	}
	srv.stop()
	return nil, errors.New("bench: opa run --server did not become healthy")
}

// selfSignedCert writes a certificate for 127.0.0.1 and its key.
func selfSignedCert(dir string) (certFile, keyFile string, pool *x509.CertPool, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "opa bench"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return "", "", nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", nil, err
	}
	certFile, keyFile = filepath.Join(dir, "opa.crt"), filepath.Join(dir, "opa.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return "", "", nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool, nil
}

// findOPA returns an opa binary of the OPA version this binary embeds,
// installing it with go install (from the Go module proxy) if needed.
func findOPA(ctx context.Context, flagPath string, stderr io.Writer) (string, error) {
	if flagPath != "" {
		return flagPath, nil
	}
	want := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/open-policy-agent/opa" {
				want = d.Version
			}
		}
	}
	if want == "" {
		return "", errors.New("bench: cannot tell the embedded OPA version; pass --opa")
	}
	// Installed where nothing else is (not GOBIN: an opa of another
	// version there is the user's), and used only if it is that version.
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("bench: %w (pass --opa)", err)
	}
	dir := filepath.Join(cache, "mandate", "opa@"+want)
	bin := filepath.Join(dir, "opa")
	versionLine := regexp.MustCompile(`(?m)^Version: ` + regexp.QuoteMeta(strings.TrimPrefix(want, "v")) + `$`)
	if out, err := exec.CommandContext(ctx, bin, "version").Output(); err == nil && versionLine.Match(out) {
		return bin, nil
	}
	fmt.Fprintf(stderr, "installing opa %s into %s with go install (a few minutes the first time)...\n", want, dir)
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/open-policy-agent/opa@"+want)
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("bench: could not install opa %s (go install: %w; its output is above, and it needs the Go module proxy): pass --opa with the path of an opa binary (of that version: the OPA Mandate embeds)", want, err)
	}
	return bin, nil
}
