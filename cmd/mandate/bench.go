package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
)

// benchResult is one measured run.
type benchResult struct {
	kind     string
	ops      int
	errors   int
	elapsed  time.Duration
	p50, p99 time.Duration
	firstErr error
	ranOut   bool          // a worker sent every request prepared for it, which ended the run early
	cpu      time.Duration // server CPU per op, if measured (--server-pid)
}

// checkBenchDuration refuses a --duration a bench cannot measure: none
// (a run of no time measures nothing, and said only "no request
// succeeded"), or more than most.
func checkBenchDuration(d, most time.Duration) error {
	if d <= 0 || d > most {
		return usagef("--duration %s: give one more than 0 and at most %s", d, most)
	}
	return nil
}

func (r benchResult) opsPerSec() float64 { return float64(r.ops) / r.elapsed.Seconds() }

const benchUsage = `Usage: mandate bench issue [--kind x509|jwt|both] [--concurrency 16] [--duration 10s] [--server-pid PID]
       mandate bench audit [--concurrency 1,16,256,1024] [--duration 5s]
       mandate bench attest [--concurrency 8] [--duration 5s] [--ek rsa,ecc]
       mandate bench decide [--concurrency 1,8,32] [--duration 5s] [--opa PATH]
       mandate bench delegate [--concurrency 16] [--duration 5s]
`

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "audit" {
		return runBenchAudit(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "attest" {
		return runBenchAttest(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "decide" {
		return runBenchDecide(ctx, args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "delegate" {
		return runBenchDelegate(ctx, args[1:], stdout, stderr)
	}
	if helpAsked(args, benchUsage, stdout) {
		return nil
	}
	if len(args) == 0 || args[0] != "issue" {
		fmt.Fprint(stderr, benchUsage)
		return usagef("bench: want issue, audit, attest, decide or delegate")
	}
	fs := newFlagSet("bench issue", "bench issue [flags]", stderr)
	var cf clientFlags
	var dataDir, kind string
	var conc int
	var dur time.Duration
	fs.StringVar(&dataDir, "data-dir", "mandate-data", "the authority's data directory (admin credential, to set up a bench node and agent)")
	cf.register(fs, "", "admin credential directory (default <data-dir>/admin)")
	fs.StringVar(&kind, "kind", "both", "x509, jwt or both")
	fs.IntVar(&conc, "concurrency", 16, "concurrent requests in flight (each on its own keep-alive connection)")
	fs.DurationVar(&dur, "duration", 10*time.Second, "how long to measure each kind")
	procs := fs.Int("procs", 0, "GOMAXPROCS of this load generator (0: Go's default, every core)")
	serverPID := fs.Int("server-pid", 0, "the server's process id on this host: print its CPU time per SVID over each measured window (/proc/PID/stat)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if *serverPID < 0 || *serverPID > 0 && procCPU(*serverPID) == 0 {
		return usagef("--server-pid %d: no process whose CPU time this host shows (/proc/%d/stat)", *serverPID, *serverPID)
	}
	if conc < 1 || conc > 1024 {
		return usagef("--concurrency must be 1..1024")
	}
	if err := checkBenchDuration(dur, time.Hour); err != nil {
		return err
	}
	if kind != "x509" && kind != "jwt" && kind != "both" {
		return usagef("--kind must be x509, jwt or both")
	}
	if cf.creds == "" {
		cf.creds = filepath.Join(dataDir, "admin")
	}
	tuneGC()
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	setup, err := benchSetup(ctx, cf, conc)
	if err != nil {
		return fmt.Errorf("bench setup: %w", err)
	}
	defer setup.cleanup(context.WithoutCancel(ctx))
	var results []benchResult
	for _, k := range []string{"x509", "jwt"} {
		if kind == k || kind == "both" {
			r, err := setup.run(ctx, k, conc, dur, *serverPID)
			if err != nil {
				return err
			}
			results = append(results, r)
		}
	}
	printBench(stdout, results, conc, dur)
	return nil
}

// benchEnv is a node credential hosting one bench agent.
type benchEnv struct {
	admin, node *client.Client
	agentID     string
	regID       string
	csrs        [][]byte
}

func benchSetup(ctx context.Context, cf clientFlags, conc int) (*benchEnv, error) {
	admin, err := cf.dial(true)
	if err != nil {
		return nil, err
	}
	joinCfg := cf
	joinCfg.bundle = filepath.Join(cf.creds, "bundle.pem")
	pub, err := joinCfg.dial(false)
	if err != nil {
		return nil, err
	}
	n, err := joinNewNode(ctx, admin, pub)
	if err != nil {
		return nil, err
	}
	env := &benchEnv{admin: admin, agentID: fmt.Sprintf("spiffe://%s/agent/bench-%s", admin.TrustDomain(), n.tokenID)}
	reg, err := admin.CreateAgent(ctx, &client.Agent{SPIFFEID: env.agentID, NodeIDs: []string{n.id}})
	if err != nil {
		return nil, err
	}
	env.regID = reg.ID
	bundle, err := benchBundle(cf)
	if err != nil {
		return nil, err
	}
	env.node, err = client.New(client.Config{Server: cf.server, SVID: n.chain, Key: n.key, Bundle: bundle, MaxConns: conc})
	if err != nil {
		return nil, err
	}
	return env, env.makeCSRs(conc)
}

// joinedNode is a node joined with a fresh join token.
type joinedNode struct {
	id      string // its SPIFFE ID
	tokenID string
	chain   []*x509.Certificate
	key     crypto.Signer
}

// joinNewNode has admin create a join token and joins a new node with it
// through pub (a client of the same authority, with no credential).
func joinNewNode(ctx context.Context, admin, pub *client.Client) (*joinedNode, error) {
	tok, err := admin.CreateJoinToken(ctx, time.Minute)
	if err != nil {
		return nil, err
	}
	key, csr, err := client.NewKeyAndCSR()
	if err != nil {
		return nil, err
	}
	ans, err := pub.Join(ctx, tok.Token, csr)
	if err != nil {
		return nil, err
	}
	chain, err := ans.Certificates()
	if err != nil {
		return nil, err
	}
	return &joinedNode{id: ans.SPIFFEID, tokenID: tok.ID, chain: chain, key: key}, nil
}

func benchBundle(cf clientFlags) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(filepath.Join(cf.creds, "bundle.pem"))
	if err != nil {
		return nil, err
	}
	return credfile.ParseCertsPEM(b)
}

// makeCSRs prepares one agent CSR per worker: the bench measures the
// authority, not the client's key generation.
func (e *benchEnv) makeCSRs(n int) error {
	for range n {
		_, csr, err := client.NewKeyAndCSR()
		if err != nil {
			return err
		}
		e.csrs = append(e.csrs, csr)
	}
	return nil
}

func (e *benchEnv) cleanup(ctx context.Context) {
	if e.regID != "" {
		_ = e.admin.DeleteAgent(ctx, e.regID)
	}
}

func (e *benchEnv) run(ctx context.Context, kind string, conc int, dur time.Duration, serverPID int) (benchResult, error) {
	conn := func(w int) (*benchConn, error) {
		path, body := "/v1/svid/jwt", []byte(fmt.Sprintf(`{"spiffe_id":%q,"audience":["bench"]}`, e.agentID))
		if kind == "x509" {
			b, _ := json.Marshal(map[string]string{"spiffe_id": e.agentID, "csr": string(e.csrs[w])})
			path, body = "/v1/svid/x509", b
		}
		return newBenchConn(e.node.Server(), path, body, e.node.TLSConfig())
	}
	var cpu0 time.Duration
	var onStart func()
	if serverPID > 0 {
		onStart = func() { cpu0 = procCPU(serverPID) }
	}
	res, err := load(ctx, kind, conc, dur, conn, func(ans []byte) error { return e.check(kind, ans) }, onStart)
	if err == nil && serverPID > 0 && res.ops > 0 {
		res.cpu = (procCPU(serverPID) - cpu0) / time.Duration(res.ops)
	}
	return res, err
}

// load runs conc workers for dur, each sending its connection's requests
// over its own keep-alive connection as fast as answers come, and reports
// the successful requests' latencies. Every worker's connection is made
// (TCP and the TLS handshake) before the clock starts: the rate and the
// latencies are those of requests on open connections. onStart, if not
// nil, is called once they are open, just before the clock starts (for
// the caller to start what it measures over the same window). A worker
// whose connection is spent (each of its prepared requests sent once)
// ends the run for every worker, before dur if need be: the rate is then
// over that shorter window, and no request was sent twice.
func load(ctx context.Context, kind string, conc int, dur time.Duration, conn func(w int) (*benchConn, error), check func([]byte) error, onStart func()) (benchResult, error) {
	var mu sync.Mutex
	var lat []time.Duration
	res := benchResult{kind: kind}
	fail := func(err error) {
		res.errors++
		if res.firstErr == nil {
			res.firstErr = err
		}
	}
	conns := make([]*benchConn, conc)
	var wg sync.WaitGroup
	for w := range conc {
		wg.Go(func() {
			c, err := conn(w)
			if err == nil {
				if err = c.dial(ctx); err == nil {
					conns[w] = c
					return
				}
			}
			mu.Lock()
			defer mu.Unlock()
			fail(err)
		})
	}
	wg.Wait()
	if onStart != nil {
		onStart()
	}
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	ctx, endRun := context.WithCancel(ctx)
	defer endRun()
	start := time.Now()
	for _, c := range conns {
		if c == nil {
			continue
		}
		wg.Go(func() {
			own, errs, first := loadWorker(ctx, c, check)
			if c.spent() {
				endRun()
			}
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, own...)
			res.errors += errs
			res.ranOut = res.ranOut || c.spent()
			if first != nil && res.firstErr == nil {
				res.firstErr = first
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.ops = len(lat)
	if res.ops == 0 {
		return res, fmt.Errorf("bench %s: no request succeeded: %v", kind, res.firstErr)
	}
	slices.Sort(lat)
	res.p50, res.p99 = percentile(lat, 50), percentile(lat, 99)
	return res, nil
}

// percentile is the q-th percentile (0 < q ≤ 100) of the sorted
// latencies: the smallest of them that at least q% of them do not
// exceed (the nearest rank, ⌈q·n/100⌉). A p99 of 100 latencies is the
// 99th, not the largest.
func percentile(sorted []time.Duration, q int) time.Duration {
	return sorted[(len(sorted)*q+99)/100-1]
}

// cutByEnd reports whether err is that of an operation cut by the end
// of a run (its deadline, or an interrupt), and so is no failure.
func cutByEnd(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// checkEvery is how often a worker fully decodes and checks an answer;
// the others are only checked for their status, so that the load
// generator, which shares the machine, spends its CPU sending requests.
const checkEvery = 64

// loadWorker sends conn's requests until ctx ends or conn is spent, and
// closes it.
func loadWorker(ctx context.Context, conn *benchConn, check func([]byte) error) (lat []time.Duration, errs int, first error) {
	defer conn.close()
	for n := 0; ctx.Err() == nil && !conn.spent(); n++ {
		t := time.Now()
		status, ans, err := conn.do(ctx)
		took := time.Since(t) // the answer's latency, not the check's that follows
		switch {
		case err == nil && status == http.StatusTooManyRequests:
			err = fmt.Errorf("bench: answer 429: the server limits this caller (http.rate_limit): bench a server started with --rate-limit 0: %.300s", ans)
		case err == nil && (status < 200 || status > 299):
			err = fmt.Errorf("bench: answer %d: %.300s", status, ans)
		}
		if err == nil && n%checkEvery == 0 {
			err = check(ans)
		}
		if err != nil {
			// A request cut by the end of the run is no error; one that
			// failed on its own is, also when its answer came after the
			// end (a request in flight then is finished, not cut).
			if !cutByEnd(err) {
				errs++
				if first == nil {
					first = err
				}
				if ctx.Err() == nil {
					time.Sleep(10 * time.Millisecond) // do not spin on a server that is gone
				}
			}
			continue
		}
		lat = append(lat, took)
	}
	return lat, errs, first
}

// check decodes an answer and checks it carries an SVID for the agent.
func (e *benchEnv) check(kind string, ans []byte) error {
	if kind == "jwt" {
		var j client.JWTAnswer
		if err := json.Unmarshal(ans, &j); err != nil || j.SPIFFEID != e.agentID || j.Token == "" {
			return fmt.Errorf("bench: bad jwt answer (%v)", err)
		}
		return nil
	}
	var a client.SVIDAnswer
	if err := json.Unmarshal(ans, &a); err != nil {
		return fmt.Errorf("bench: bad x509 answer: %w", err)
	}
	certs, err := a.Certificates()
	if err != nil {
		return err
	}
	if len(certs[0].URIs) != 1 || certs[0].URIs[0].String() != e.agentID {
		return fmt.Errorf("bench: x509 answer for %v, want %s", certs[0].URIs, e.agentID)
	}
	return nil
}

// rawECDSA measures single-goroutine P-256 sign and verify on this machine.
func rawECDSA(d time.Duration) (signPerSec, verifyPerSec float64) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("mandate bench"))
	sig, _ := ecdsa.SignASN1(rand.Reader, key, digest[:])
	n, start := 0, time.Now()
	for time.Since(start) < d {
		_, _ = ecdsa.SignASN1(rand.Reader, key, digest[:])
		n++
	}
	signPerSec = float64(n) / time.Since(start).Seconds()
	n, start = 0, time.Now()
	for time.Since(start) < d {
		ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig)
		n++
	}
	return signPerSec, float64(n) / time.Since(start).Seconds()
}

func printBench(w io.Writer, results []benchResult, conc int, dur time.Duration) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "kind\tconcurrency\tduration\tops\tops/s\tp50\tp99\terrors\tserver CPU per op")
	for _, r := range results {
		cpu := "-" // no --server-pid
		if r.cpu > 0 {
			cpu = r.cpu.Round(time.Microsecond).String()
		}
		fmt.Fprintf(tw, "%s-svid\t%d\t%s\t%d\t%.0f\t%s\t%s\t%d\t%s\n", r.kind, conc, dur, r.ops, r.opsPerSec(),
			r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.errors, cpu)
	}
	tw.Flush()
	sign, verify := rawECDSA(time.Second)
	fmt.Fprintf(w, "raw crypto/ecdsa P-256, one goroutine, this machine: sign %.0f/s (%.1fµs), verify %.0f/s (%.1fµs)\n",
		sign, 1e6/sign, verify, 1e6/verify)
	for _, r := range results {
		fmt.Fprintf(w, "%s-svid issuance ÷ raw sign = %.3f\n", r.kind, r.opsPerSec()/sign)
		if r.firstErr != nil {
			fmt.Fprintf(w, "first %s error: %v\n", r.kind, r.firstErr)
		}
	}
}
