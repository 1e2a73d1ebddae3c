package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"mandate.dev/mandate/api"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/credfile"
)

const serveHelp = `
Configuration file (--config, YAML; flags override it; unknown keys are errors;
a duration of 0s, or a key left out, takes the default shown; group_commit_wait: 0s
turns the wait off; a key whose default is not "" or [] is left out for it, never
given an empty value, null or 0):

  trust_domain: mandate.localhost   # SPIFFE trust domain of this authority
  listen: 127.0.0.1:8443            # HTTPS listener (TLS 1.3 only)
  data_dir: ./mandate-data          # store (mandate.db), keys (0600), admin credential, audit log key
  log_level: info                   # debug, info, warn, error
  admins: [spiffe://<td>/team/ops]  # more admin SPIFFE IDs (besides .../mandate/admin; none under <td>/node/ or <td>/agent/)
  ca:
    key_type: ec-p256               # or ec-p384; CA and JWT signing keys
    ca_ttl: 24h                     # X.509 CA lifetime, at most 43800h (next prepared at 1/2, active at 5/6; later if prepared late)
    jwt_key_ttl: 24h                # JWT signing key lifetime, at most 43800h
    x509_svid_ttl: 1h               # default X509-SVID lifetime (at most ca_ttl/2 and 720h)
    jwt_svid_ttl: 5m                # default JWT-SVID lifetime (at most jwt_key_ttl/2 and 720h)
    upstream_cert_file: ""          # PEM chain of an existing CA (signing cert first, its root last)
    upstream_key_file: ""           # its PEM private key (0600, this user's); SVIDs then chain to it
    pkcs11:                         # make and keep the CA's and JWT keys in a PKCS#11 token (an HSM), not in <data_dir>/keys (cgo builds; keys made in keys/ before sign from there until replaced)
      module: ""                    #   the module's absolute path, e.g. /usr/lib/softhsm/libsofthsm2.so (root's or this user's, with its directories: none others may write to)
      token_label: ""               #   the token's label
      pin_file: ""                  #   its user PIN, one line (0600, this user's)
  federation:
    bundle_refresh_hint: 5m         # spiffe_refresh_hint of this authority's bundle
    web_roots_file: ""              # PEM roots for https_web peers (default: system roots)
    web_listen: ""                  # serve the bundle endpoint also with a Web PKI cert
    web_cert_file: ""               #   (https_web profile) at https://<web_listen>/; reloaded when it changes
    web_key_file: ""                # its key (0600, this user's)
    trust_domains:                  # federation relationships, added at start unless stored (also: mandate admin federation); one taken out here stays: mandate admin federation delete
      - trust_domain: org-b.example
        bundle_endpoint_url: https://mandate.org-b.example:8443/v1/bundle
        profile: https_spiffe       # or https_web
        endpoint_spiffe_id: spiffe://org-b.example/mandate/server
        bundle_file: org-b.bundle.json   # peer's SPIFFE bundle, to authenticate it the first time
  attestation:
    tpm:                            # TPM 2.0 node attestation; off until an EK can be trusted and a profile allowed
      ek_ca_roots: [ek-ca.pem]      # PEM files of TPM manufacturer CAs (roots and intermediates)
      ek_allowlist: [<hex>]         # EKs admitted without a certificate ('mandate node ek' prints one)
      ek_cert_key_types: [rsa, ecc] # EK types admitted by certificate; one TPM has one of each: set one for bans to hold
      pcr_profiles:                 # golden SHA-256 PCR values ('mandate node pcrs' prints a device's)
        edge-v1:
          sha256: {"0": <hex>, "7": <hex>}   # PCRs not listed are not checked
      allowed_profiles: [edge-v1]   # a node must match one of these, tried in order
      challenge_ttl: 1m             # time a device has to answer a challenge
    prune_lapsed_nodes_after: 0s    # evict a node (not banned) whose SVID expired this long ago (0s: never; at least 1h)
  policy:
    dir: ""                         # Rego policy directory replacing the embedded ones (--policy-dir)
    decision_callers: []            # SPIFFE IDs (this or a federated trust domain) that may call /v1/data and AuthZEN
    caller_paths: {}                # decision caller's SPIFFE ID -> data path prefixes it may ask (unlisted callers: any path)
    eval_timeout: 1s                # bound of one evaluation (a runaway policy; not a way to shed load)
    decision_log_mask: []           # JSON pointers (/input/..., /result/...) erased from recorded API decisions (/v1/data, AuthZEN); one outside them is refused
    authzen_path: mandate/authzen/decision   # the document AuthZEN evaluations ask
  audit:
    auditors: []                    # SPIFFE IDs (any trusted trust domain; none under <td>/node/ or <td>/agent/) that may read the audit log
    origin: ""                      # checkpoint origin line (default <trust domain>/audit; never change it)
    public_read_path: false         # serve /checkpoint and /tile/... (C2SP tlog-tiles) to anyone: every entry, in its entry bundles
    group_commit_wait: 2ms          # longest a commit waits for requests under way to record theirs (0s–100ms; 0s: never)
    witness:                        # C2SP tlog-witness of other logs, at POST /v1/witness/add-checkpoint
      logs: []                      # note verifier keys of the logs to witness (a peer's audit/log.vkey); each key's name is its origin
      name: ""                      # the cosigning key's name (default <td>/witness); key in audit/witness.key, verifier key in audit/witness.vkey
    witnesses: []                   # witnesses this log submits its checkpoints to as it grows: {url: https://HOST:PORT/v1/witness, vkey: <its audit/witness.vkey>, trust_domain: <federated TD whose bundle authenticates it; empty: Web PKI>}
  http:
    max_body_bytes: 65536           # request body limit (the delegation endpoints take at least 65536)
    max_connections: 10000          # connections each listener holds open at once; at it, the longest idle one is closed for a new one
    read_timeout: 10s
    write_timeout: 15s
    idle_timeout: 120s
    public_url: ""                  # https URL clients reach the API at (OAuth metadata); default: the Host they used
    server_names: []                # more DNS names and IPs for the server certificate (besides localhost, the listen and public_url hosts)
    metrics_readers: []             # SPIFFE IDs that may read /metrics, with admins (empty: anyone)
    rate_limit:                     # per caller but admins (SPIFFE ID; without one, IP address), on requests that may record: POSTs, Data API GETs
      requests_per_second: 200      # sustained (0: no limit); over it: 429 rate-limited, Retry-After
      burst: 400                    # at once after a quiet time (default twice requests_per_second)
      callers: {}                   # SPIFFE ID -> its own requests_per_second (0: no limit; burst twice it)
`

// serveFlags are the flags of mandate serve; each overrides its config key.
type serveFlags struct {
	config, trustDomain, listen, dataDir, logLevel, policyDir, rateLimit string
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := serveConfig(args, stderr)
	if err != nil {
		return err
	}
	err = serve(ctx, cfg, stdout, stderr)
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil // stopped (SIGTERM, SIGINT) while starting: as asked
	}
	return err
}

// serveConfig is the configuration serve's args ask for: the file's
// (--config), the flags over it, the defaults set, checked.
func serveConfig(args []string, stderr io.Writer) (authority.Config, error) {
	fs := newFlagSet("serve", "serve [flags]", stderr)
	var f serveFlags
	fs.StringVar(&f.config, "config", "", "YAML configuration file (see below)")
	fs.StringVar(&f.trustDomain, "trust-domain", "", "trust domain (default "+authority.DefaultTrustDomain+")")
	fs.StringVar(&f.listen, "listen", "", "HTTPS listen address (default 127.0.0.1:8443)")
	fs.StringVar(&f.dataDir, "data-dir", "", "data directory (default ./mandate-data)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (default info)")
	fs.StringVar(&f.policyDir, "policy-dir", "", "Rego policy directory replacing the embedded policies/ (reloaded on SIGHUP)")
	fs.StringVar(&f.rateLimit, "rate-limit", "", "requests a second each caller but admins may make that record (http.rate_limit.requests_per_second; 0: no limit for any caller, those of http.rate_limit.callers too, as for a benchmark) (default 200)")
	usage := fs.Usage
	fs.Usage = func() { usage(); fmt.Fprint(stderr, serveHelp) }
	if err := parseFlags(fs, args); err != nil {
		return authority.Config{}, err
	}
	return loadServeConfig(fs, f)
}

func loadServeConfig(fs *flag.FlagSet, f serveFlags) (authority.Config, error) {
	cfg := &authority.Config{}
	if f.config != "" {
		var err error
		if cfg, err = authority.LoadConfigFile(f.config); err != nil {
			return authority.Config{}, err
		}
	}
	var empty, bad []string
	fs.Visit(func(fl *flag.Flag) {
		// An empty value would fall back to the default, not keep the
		// config file's: a --trust-domain "$TD" with TD unset is a
		// mistake, never the development trust domain. (--policy-dir ""
		// is the embedded policies, as its default.)
		if fl.Value.String() == "" && fl.Name != "policy-dir" {
			empty = append(empty, "--"+fl.Name)
		}
		switch fl.Name {
		case "trust-domain":
			cfg.TrustDomain = f.trustDomain
		case "listen":
			cfg.Listen = f.listen
		case "data-dir":
			cfg.DataDir = f.dataDir
		case "log-level":
			cfg.LogLevel = f.logLevel
		case "policy-dir":
			cfg.Policy.Dir = f.policyDir
		case "rate-limit":
			n, err := strconv.Atoi(f.rateLimit)
			if err != nil && f.rateLimit != "" {
				bad = append(bad, fmt.Sprintf("--rate-limit %q: not a whole number of requests a second", f.rateLimit))
			}
			cfg.HTTP.RateLimit.RequestsPerSecond = &n
			if n == 0 { // no limit at all: the file's burst and callers' rates go
				cfg.HTTP.RateLimit.Burst, cfg.HTTP.RateLimit.Callers = 0, nil
			}
		}
	})
	if len(empty) > 0 {
		return authority.Config{}, usagef("%s given an empty value: give a value, or leave the flag out for the config file's (or the default)", strings.Join(empty, ", "))
	}
	if len(bad) > 0 {
		return authority.Config{}, usagef("%s", strings.Join(bad, "; "))
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return authority.Config{}, fmt.Errorf("invalid configuration: %w", err)
	}
	return *cfg, nil
}

func newLogger(level string, w io.Writer) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	// A request's log lines say its request_id (the X-Request-Id its
	// caller got).
	return slog.New(api.LogHandler(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})))
}

// gcPercent is the GOGC the server runs with unless GOGC is set: its heap
// is small and short-lived (one request's certificates and JSON), so
// collecting less often buys issuance throughput for a few MiB of memory.
const gcPercent = 400

func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}

func serve(ctx context.Context, cfg authority.Config, stdout, stderr io.Writer) (err error) {
	tuneGC()
	log := newLogger(cfg.LogLevel, stderr)
	// Read (and taken out of the environment) first: a service manager
	// that waits for READY=1 hears of a stop while starting too.
	notify := newSDNotifier(log)
	// SIGHUP is caught from the start: one sent while the authority
	// starts (its store check can take seconds) reloads the policies once
	// it runs, instead of killing it.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// A log or standard output whose reader has gone (a pipe's reader
	// ended, as a Ctrl-C ends "serve | tee") would otherwise end the
	// process at its next line, by SIGPIPE: a stop would then cut the
	// requests in progress at its "stopping" line. The authority goes on
	// without that output instead, and stops as asked.
	signal.Ignore(syscall.SIGPIPE)
	// A stop while it starts (SIGTERM, SIGINT) ends it as asked, and says
	// so: the log of a stop then shows no "serving" line before it.
	serving := false
	defer func() {
		if !serving && ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
			notify.stopping("stopped while starting, as asked")
			log.Info("stopped while starting, as asked")
		}
	}()
	// The listeners (and the https_web certificate) first: a port in use
	// or a missing certificate stops the server before it creates or
	// changes anything.
	ln, err := net.Listen("tcp", cfg.Listen)
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("listen: %w (another process, an authority already running perhaps, listens there: serve on another port with --listen 127.0.0.1:PORT, or 127.0.0.1:0 for any free one)", err)
	}
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer ln.Close()
	var web *webBundle
	if cfg.Federation.WebListen != "" {
		if web, err = listenWebBundle(cfg, log); err != nil {
			return err
		}
		defer web.ln.Close()
	}
	a, err := authority.New(ctx, cfg, authority.Options{Logger: log})
	if err != nil {
		return err
	}
	defer a.Close()
	// The authority (and its audit log) runs before anything is issued and
	// stops only after the listeners have finished their last requests, so
	// every answered request's event is recorded.
	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	runErr := make(chan error, 1)
	go func() {
		err := a.Run(runCtx)
		if err != nil {
			stopServing() // a failing authority stops serving
		}
		runErr <- err
	}()
	finish := func(err error) error {
		stopRun()
		return errors.Join(err, <-runErr)
	}
	if err := a.WriteAdminCredential(serveCtx, false); err != nil {
		return finish(err)
	}
	srv, err := api.New(a)
	if err != nil {
		return finish(err)
	}
	printNextSteps(stdout, a, ln.Addr().String())
	log.Info("serving", servingAttrs(cfg, ln, web, a)...)
	serving = true
	// Ready once the listeners are bound, the store, keys, audit log and
	// policies loaded and the admin credential written: a connection
	// made from now on is answered.
	status := fmt.Sprintf("serving on https://%s, trust domain %s", ln.Addr(), a.TrustDomain())
	notify.ready(fmt.Sprintf("%s; policy revision %s", status, a.PolicyRevision()))
	g, gctx := errgroup.WithContext(serveCtx)
	g.Go(func() error { // said when stopped as asked, and before serve returns
		<-gctx.Done()
		if ctx.Err() != nil {
			notify.stopping("stopping: finishing the requests in progress")
			log.Info("stopping: finishing the requests in progress (a second interrupt stops at once)")
		} else {
			notify.stopping("stopping: the authority failed (the log says why)")
		}
		return nil
	})
	g.Go(func() error { return srv.Serve(gctx, ln) })
	g.Go(func() error { reloadOnHUP(gctx, hup, a, log, notify, status); return nil })
	g.Go(func() error { notify.keepAlive(gctx); return nil })
	if web != nil {
		g.Go(func() error { return web.serve(gctx, srv) })
	}
	err = finish(g.Wait())
	log.Info("stopped")
	return err
}

// servingAttrs are what the server log says once the authority serves:
// what an operator reads to know which process this is and where it
// keeps its state, from the log alone (standard output may be dropped).
func servingAttrs(cfg authority.Config, ln net.Listener, web *webBundle, a *authority.Authority) []any {
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		dataDir = cfg.DataDir
	}
	attrs := []any{"listen", ln.Addr().String()}
	if web != nil {
		attrs = append(attrs, "web_listen", web.ln.Addr().String())
	}
	return append(attrs, "trust_domain", a.TrustDomain().String(), "data_dir", dataDir, "version", versionOf())
}

// reloadOnHUP reloads the policies on SIGHUP, as `mandate policy reload`
// does; a refused revision is logged and the active one stays. A service
// manager hears RELOADING=1 before, and READY=1 after, with a status
// (after status, what serve says of itself) that says which.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, a *authority.Authority, log *slog.Logger, notify *sdNotifier, status string) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Info("SIGHUP: reloading the policies")
			notify.reloading("reloading the policies (SIGHUP)")
			rev, err := a.ReloadPolicyOnSignal(ctx) // which logs what it did: reloaded, or refused and why
			if err != nil {
				notify.ready(fmt.Sprintf("%s; policy reload refused (the log says why), revision %s stays active", status, rev))
			} else {
				notify.ready(fmt.Sprintf("%s; policies reloaded, revision %s", status, rev))
			}
		}
	}
}

// webBundle is the bundle endpoint served with a Web PKI certificate
// (https_web profile): its listener and certificate, ready before the
// authority starts.
type webBundle struct {
	ln   net.Listener
	cert *webCertFiles
	log  *slog.Logger
}

func listenWebBundle(cfg authority.Config, log *slog.Logger) (*webBundle, error) {
	wc := &webCertFiles{certFile: cfg.Federation.WebCertFile, keyFile: cfg.Federation.WebKeyFile, log: log}
	if err := wc.load(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Federation.WebListen)
	if err != nil {
		return nil, fmt.Errorf("federation web bundle endpoint: listen: %w", err)
	}
	return &webBundle{ln: ln, cert: wc, log: log}, nil
}

func (w *webBundle) serve(ctx context.Context, srv *api.Server) error {
	return srv.ServeBundle(ctx, w.ln, w.cert.get)
}

// webCertCheck is how often the https_web certificate files are looked
// at for a renewal (their modification times).
const webCertCheck = 10 * time.Second

// webCertFiles is the https_web certificate, read again from its files when
// they change (a Web PKI certificate is renewed every few months, by
// another tool): a renewal that does not load keeps the last one, and
// says why in the log.
type webCertFiles struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string // the files' modification times when cert was read
	checked time.Time
}

func (c *webCertFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.checked) >= webCertCheck {
		c.checked = time.Now()
		if c.filesStamp() != c.stamp {
			if err := c.loadLocked(); err != nil {
				c.log.Error("https_web certificate not reloaded; the last one is served", "err", err)
			}
		}
	}
	return c.cert, nil
}

func (c *webCertFiles) load() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checked = time.Now()
	return c.loadLocked()
}

func (c *webCertFiles) loadLocked() error {
	stamp := c.filesStamp()
	certPEM, err := os.ReadFile(c.certFile)
	if err != nil {
		return fmt.Errorf("federation.web_cert_file: %w", err)
	}
	keyPEM, err := credfile.ReadPrivate(c.keyFile) // only this user's, as every key
	if err != nil {
		return fmt.Errorf("federation.web_key_file: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("federation web bundle endpoint: %w", err)
	}
	c.cert, c.stamp = &cert, stamp
	return nil
}

// filesStamp names the two files' modification times and sizes.
func (c *webCertFiles) filesStamp() string {
	var b strings.Builder
	for _, f := range []string{c.certFile, c.keyFile} {
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%d/%d;", fi.ModTime().UnixNano(), fi.Size())
		}
	}
	return b.String()
}

func printNextSteps(w io.Writer, a *authority.Authority, addr string) {
	cfg := a.Config()
	p := authority.AdminPaths(cfg.DataDir)
	server := ""
	if addr != "127.0.0.1:8443" {
		server = " --server https://" + addr
	}
	admin := server
	if filepath.Clean(cfg.DataDir) != "mandate-data" {
		admin += " --data-dir " + cfg.DataDir
	}
	bundle := server + " --bundle " + p.Bundle
	agent := "spiffe://" + a.TrustDomain().String() + "/agent/hello"
	_, vkey := authority.AuditPaths(cfg.DataDir)
	caKeys := filepath.Join(cfg.DataDir, "keys")
	if p11 := cfg.CA.PKCS11; p11.Module != "" {
		onDisk := ""
		if n := a.CAKeysOnDisk(); n > 0 {
			onDisk = fmt.Sprintf("; %d made before it still in %s, until their authorities are replaced", n, caKeys)
		}
		caKeys = fmt.Sprintf("in the PKCS#11 token %q of %s (ca.pkcs11)%s", p11.TokenLabel, p11.Module, onDisk)
	}
	fmt.Fprintf(w, `Mandate authority for trust domain %s is serving on https://%s
  admin credential: %s (key %s)
  trust bundle:     %s
  audit log key:    %s (%s)
  CA keys:          %s

Next steps (in another terminal, from this directory, with ./mandate built by
go build -o mandate ./cmd/mandate from the source tree):
  ./mandate admin join-token create%s
  ./mandate node join --token <token>%s
  ./mandate admin agent create --spiffe-id %s --node-id <node spiffe id>%s
  ./mandate svid x509 --spiffe-id %s%s
  ./mandate svid jwt --creds mandate-agent --audience example%s
  ./mandate bundle show%s
`, a.TrustDomain(), addr, p.Cert, p.Key, p.Bundle, a.AuditVerifierKey(), vkey, caKeys, admin, bundle, agent, admin, agent, server, server, bundle)
}
