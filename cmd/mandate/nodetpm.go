package main

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/attest/tpmdevice"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
)

// tpmFlags choose and open the TPM of the node commands.
type tpmFlags struct {
	path, ek, out string
	extend        intList
}

func (f *tpmFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.path, "tpm", "", `TPM device (e.g. /dev/tpmrm0), or "simulator" for development (required)`)
	fs.StringVar(&f.ek, "ek", tpmdevice.EKRSA, "endorsement key type: rsa or ecc (the TCG reference templates); each names a node of its own: give every command of one --out the same")
	fs.StringVar(&f.out, "out", "mandate-node", "node directory: its credential (svid.pem, svid.key 0600, bundle.pem, bundles.json), and the simulator's seed; an attestation or a renewal holds credential.lock there while it runs, and node attest refuses to start while another command writing a credential does (node run tries again later)")
	fs.Var(&f.extend, "simulator-extend-pcr", "simulator only: extend this PCR first, as a changed boot would (repeatable)")
}

// open opens the TPM and its EK and AK. close releases both.
func (f *tpmFlags) open() (dev *tpmdevice.Device, tpm transport.TPM, closeFn func(), err error) {
	if f.path == "" {
		return nil, nil, nil, usagef("--tpm is required (a device such as /dev/tpmrm0, or simulator)")
	}
	if len(f.extend) > 0 && f.path != tpmdevice.Simulator {
		return nil, nil, nil, usagef("--simulator-extend-pcr works only with --tpm simulator")
	}
	seed := ""
	if f.path == tpmdevice.Simulator {
		if err := os.MkdirAll(f.out, 0o700); err != nil {
			return nil, nil, nil, err
		}
		seed = filepath.Join(f.out, "tpm-simulator.seed")
	}
	t, err := tpmdevice.OpenTPM(f.path, seed)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, i := range f.extend {
		if err := tpmdevice.ExtendPCR(t, i, make([]byte, 32)); err != nil {
			t.Close()
			return nil, nil, nil, err
		}
	}
	d, err := tpmdevice.Open(t, tpmdevice.Options{EK: f.ek})
	if err != nil {
		t.Close()
		return nil, nil, nil, err
	}
	return d, t, func() { d.Close(); t.Close() }, nil
}

// intList is a repeatable integer flag.
type intList []int

func (l *intList) String() string { return fmt.Sprint([]int(*l)) }
func (l *intList) Set(s string) error {
	i, err := strconv.Atoi(s)
	if err != nil || i < 0 || i >= attest.NumPCRs {
		return fmt.Errorf("PCR %q: want 0 to %d", s, attest.NumPCRs-1)
	}
	*l = append(*l, i)
	return nil
}

// nodeAttest is "mandate node attest": one attestation, or a renewal
// over mTLS when a valid TPM node credential is already in --out.
func nodeAttest(ctx context.Context, args []string, stdout, stderr io.Writer, loop bool) (err error) {
	name := "node attest"
	if loop {
		name = "node run"
	}
	synopsis := name + " --tpm PATH [flags]"
	if loop {
		synopsis = name + " [--tpm PATH] [flags]"
	}
	fs := newFlagSet(name, synopsis, stderr)
	var tf tpmFlags
	var cf clientFlags
	var ekCertFile string
	var quiet bool
	var wf workloadFlags
	tf.register(fs)
	if loop {
		wf.register(fs)
		fs.Lookup("tpm").Usage = `TPM device (e.g. /dev/tpmrm0), or "simulator" for development; without it, the join-token node credential in --out is renewed with itself (then only --out, --server, --trust-domain, --workload-api and --workload apply)`
	}
	cf.registerServer(fs)
	fs.StringVar(&cf.bundle, "bundle", "mandate-data/admin/bundle.pem", "PEM trust bundle to authenticate the authority the first time (an attestation after the node's credential in --out has expired, or with one the authority refuses (its CA revoked), also trusts the bundle.pem that came with it, brought up to date by every renewal; with no --bundle given and no file at its default, that one alone)")
	fs.StringVar(&ekCertFile, "ek-cert", "", "EK certificate (DER or PEM) from the TPM's manufacturer, if the authority trusts EKs by certificate")
	if !loop { // node run prints nothing but its log
		fs.BoolVar(&quiet, "quiet", false, "print only the node's SPIFFE ID")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var notify *nodeNotifier
	if loop {
		// Its log is written by the renewals, the Workload API and the
		// notifier at once, one line at a time.
		stderr = &lineWriter{w: stderr}
		// Read (and taken out of the environment) first, as serve does:
		// a service manager waiting for READY=1 hears of a stop while
		// starting too.
		life, end := context.WithCancel(context.WithoutCancel(ctx))
		defer end()
		notify = &nodeNotifier{sdNotifier: newSDNotifier(slog.New(slog.NewTextHandler(stderr, nil))), life: life, first: make(chan struct{})}
		// A stop asked for (SIGTERM, SIGINT) is said when it begins;
		// any other, when node run ends.
		unwatch := context.AfterFunc(ctx, func() { notify.stop(true, nil) })
		defer func() {
			unwatch()
			notify.stop(ctx.Err() != nil, err)
		}()
	}
	fs.Visit(func(f *flag.Flag) { cf.bundleGiven = cf.bundleGiven || f.Name == "bundle" })
	if err := wf.check(); err != nil {
		return err
	}
	if loop {
		// A log whose reader has gone (a pipe's reader ended) would
		// otherwise end node run at its next line, by SIGPIPE, and with
		// it the Workload API its host's workloads ask: it goes on
		// without that output instead, as serve does.
		signal.Ignore(syscall.SIGPIPE)
	}
	if loop && tf.path == "" {
		// Without a TPM: keep a join-token node's credential renewed.
		var tpmOnly []string
		fs.Visit(func(f *flag.Flag) {
			if !slices.Contains([]string{"out", "server", "trust-domain", "workload-api", "workload"}, f.Name) {
				tpmOnly = append(tpmOnly, "--"+f.Name)
			}
		})
		if len(tpmOnly) > 0 {
			return usagef("%s: only with --tpm (a join-token node is renewed with --out, --server and --trust-domain, and serves the Workload API with --workload-api and --workload)", strings.Join(tpmOnly, ", "))
		}
		if wf.socket != "" {
			// No Workload API is said to be served for a node that cannot
			// run.
			if _, _, err := joinNodeCredential(tf.out); err != nil {
				return err
			}
		}
		return wf.around(ctx, cf, tf.out, stderr, notify, func(ctx context.Context) error { return renewJoinNode(ctx, &cf, tf.out, stderr, notify) })
	}
	var ekCert []byte
	if ekCertFile != "" {
		b, err := os.ReadFile(ekCertFile)
		if err != nil {
			return fmt.Errorf("--ek-cert: %w", err)
		}
		if blk, _ := pem.Decode(b); blk != nil {
			b = blk.Bytes
		}
		ekCert = b
	}
	// Refused before the TPM is opened: opening the simulator writes
	// its seed in --out.
	if _, err := checkAttestOut(tf.out, nil); err != nil {
		return err
	}
	dev, _, closeFn, err := tf.open()
	if err != nil {
		return err
	}
	defer closeFn()
	ek, err := attest.ParseTPM2BPublic("ek_public", dev.EKPublic())
	if err != nil {
		return err
	}
	own := &ownEK{ek: ek, path: "/node/" + attest.MethodTPM + "/" + ek.SHA256Hex(), typ: tf.ek}
	if !loop {
		return attestLoop(ctx, dev, &cf, tf.out, ekCert, own, false, quiet, stdout, stderr, nil, nil)
	}
	wf.attests, wf.unknown = true, make(chan struct{}, 1)
	return wf.around(ctx, cf, tf.out, stderr, notify, func(ctx context.Context) error {
		return attestLoop(ctx, dev, &cf, tf.out, ekCert, own, true, false, stdout, stderr, wf.unknown, notify)
	})
}

// attestLoop attests the node once (loop false), or until ctx ends; a
// receive from unknown (the Workload API's sync was told the authority
// does not know the node, evicted or restored from an older backup, or
// refuses its credential, signed by a CA revoked since) has it attest
// again at once, unless its latest attestation failed: that one is
// retried at its time. notify (node run's) is told once the node holds
// a valid credential: attested, or its own still valid while an
// attestation failed for a passing reason.
func attestLoop(ctx context.Context, dev *tpmdevice.Device, cf *clientFlags, out string, ekCert []byte, own *ownEK, loop, quiet bool, stdout, stderr io.Writer, unknown <-chan struct{}, notify *nodeNotifier) error {
	for {
		ans, renewal, err := attestOnce(ctx, dev, cf, out, ekCert, own)
		if err == nil {
			// A sync answered before this attestation says nothing of
			// the node now.
			select {
			case <-unknown:
			default:
			}
		}
		if !loop {
			if err != nil {
				return err
			}
			if quiet {
				_, err = fmt.Fprintln(stdout, ans.SPIFFEID)
				return err
			}
			return printJSON(stdout, map[string]any{"spiffe_id": ans.SPIFFEID, "expires_at": ans.ExpiresAt, "credential": out, "renewal": renewal})
		}
		if ctx.Err() != nil {
			return nil // stopped, as asked: what it cut short is no failure
		}
		wait := jittered(30 * time.Second)
		if errors.Is(err, errOutHeld) {
			return err // the operator's to settle: retrying changes nothing
		}
		var p *client.Problem
		if errors.As(err, &p) && refusedForGood(p) {
			return fmt.Errorf("node run stopped: the authority refuses to attest this node: %w", err)
		}
		if err == nil {
			notify.held(ans.SPIFFEID)
		} else if chain, ok := tpmCredential(out); ok && chain[0].URIs[0].Path == own.path {
			notify.held(chain[0].URIs[0].String())
			wait = heedRetryAfter(err, wait, time.Until(chain[0].NotAfter)/2)
		} else {
			wait = heedRetryAfter(err, wait, 24*time.Hour) // no credential to lose
		}
		if err != nil {
			fmt.Fprintf(stderr, "%s attestation failed (retrying in %s): %v\n", time.Now().UTC().Format(time.RFC3339), wait.Round(time.Second), err)
		} else {
			wait = max(renewalWait(ans), minRenewalWait)
			fmt.Fprintf(stderr, "%s attested %s (renewal %v); next quote in %s\n", time.Now().UTC().Format(time.RFC3339), ans.SPIFFEID, renewal, wait.Round(time.Second))
		}
		// A failed attestation is retried when it says: the syncs failing
		// meanwhile (at 1, 2, 4… s at first) tell it nothing it did not
		// know, and would each have it attest again at once.
		wake := unknown
		if err != nil {
			wake = nil
		}
		goOn, woken := sleep(ctx, wait, time.Now, wallPoll, wake)
		if !goOn {
			return nil
		}
		if woken {
			fmt.Fprintf(stderr, "%s the authority no longer takes this node's credential (the node evicted, the authority restored from a backup older than its attestation, or the credential's CA revoked): attesting again now\n", time.Now().UTC().Format(time.RFC3339))
		}
	}
}

// ownEK is the TPM's EK, the node it names (its SPIFFE ID's path), and
// the --ek that opened it.
type ownEK struct {
	ek        *attest.TPMPublic
	path, typ string
}

// checkAttestOut refuses an --out that cannot be written (checkOutDir),
// or that holds a still valid credential that is not this TPM node's: the
// node's own is renewed; any other is another node's. Before the TPM is
// opened (own nil), any TPM node's is taken as the node's own. renewal
// says whether out holds the node's own credential (to be renewed).
//
// A TPM node's credential of another EK (--ek switched between rsa and
// ecc, whose EKs name two nodes) is not renewed: the authority renews a
// node with its own EK only, and replacing it with a new node's would
// change this host's identity under its agents without a word.
func checkAttestOut(out string, own *ownEK) (renewal bool, err error) {
	if err := checkOutDir("--out", out); err != nil {
		return false, err
	}
	chain, ok := tpmCredential(out)
	switch {
	case ok && (own == nil || chain[0].URIs[0].Path == own.path):
		return true, nil
	case ok:
		held := chain[0].URIs[0].String()
		return false, fmt.Errorf("%w: --out %s holds the credential of %s, still valid until %s, and this TPM's --ek %s names another node (%s%s): give the --ek it attested with; or, for this host to be the node of --ek %s, remove its credential first (svid.pem and svid.key in %s)",
			errOutHeld, out, held, chain[0].NotAfter.UTC().Format(time.RFC3339), own.typ, strings.TrimSuffix(held, chain[0].URIs[0].Path), own.path, own.typ, out)
	}
	// A TPM node's credential that does not load as it is (its key
	// readable by others) is attested anew, as one that does is renewed.
	return false, checkOut(out, "--out", func(id spiffeid.ID) bool {
		return strings.HasPrefix(id.Path(), "/node/"+attest.MethodTPM+"/")
	})
}

// attestOnce runs the exchange: over mTLS with the node's current SVID if
// it has a valid one from TPM attestation, else anonymously.
func attestOnce(ctx context.Context, dev *tpmdevice.Device, cf *clientFlags, out string, ekCert []byte, own *ownEK) (*client.SVIDAnswer, bool, error) {
	// Another command writing in --out (a join) is waited for by node
	// run (tried again later), and refuses node attest.
	unlock, err := lockOut(out)
	if err != nil {
		return nil, false, err
	}
	defer unlock()
	renewal, err := checkAttestOut(out, own)
	if err != nil {
		return nil, false, err
	}
	cf.creds = out
	cf.missing = "give --out, the node's credential directory"
	// A node that lapsed (off, or cut off, for longer than its SVID's
	// life) attests anew: the --bundle it first attested with may be
	// outdated by CA rotations since, its lapsed credential's is not.
	cf.lapsed = nil
	if !renewal {
		cf.lapsed = lapsedRoots(out)
	}
	c, err := cf.dial(renewal)
	if err != nil {
		return nil, false, err
	}
	defer c.CloseIdle()
	key, csr, err := client.NewKeyAndCSR()
	if err != nil {
		return nil, false, err
	}
	ans, err := c.AttestTPM(ctx, dev, ekCert, csr)
	if renewal && errors.Is(err, client.ErrCredentialRefused) {
		// A credential signed by an X.509 CA revoked since: attest
		// anew, as a node that lapsed does, trusting the bundle.pem that
		// came with it (brought up to date by every renewal) too.
		c.CloseIdle()
		renewal, cf.lapsed = false, heldRootsIn(out)
		if c, err = cf.dial(false); err != nil {
			return nil, false, err
		}
		defer c.CloseIdle()
		ans, err = c.AttestTPM(ctx, dev, ekCert, csr)
	}
	if err != nil {
		return nil, renewal, err
	}
	// The answer is for this TPM: the node its EK names.
	id, err := attest.NodeID(c.TrustDomain(), own.ek)
	if err != nil {
		return nil, renewal, err
	}
	return ans, renewal, saveAnswer(out, ans, key, c.TrustDomain(), exactID(id))
}

// lapsedRoots returns the trust bundle of the expired TPM node
// credential in dir (nil if there is none): the authority's roots as it
// handed them out with that credential, and with every renewal before it
// lapsed.
func lapsedRoots(dir string) *heldRoots {
	chain, _, _, err := credfile.Load(credfile.In(dir))
	if err != nil || time.Now().Before(chain[0].NotAfter) {
		return nil
	}
	return heldRootsIn(dir)
}

// heldRootsIn returns the trust bundle of the TPM node credential in dir
// (nil if there is none), expired or not.
func heldRootsIn(dir string) *heldRoots {
	chain, _, bundle, err := credfile.Load(credfile.In(dir))
	if err != nil || !isTPMNode(chain[0]) {
		return nil
	}
	id, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return nil
	}
	return &heldRoots{td: id.TrustDomain(), roots: bundle}
}

// tpmCredential returns the chain of the unexpired TPM node SVID in dir,
// if it holds one.
func tpmCredential(dir string) ([]*x509.Certificate, bool) {
	chain, _, _, err := credfile.Load(credfile.In(dir))
	if err != nil || len(chain) == 0 || !time.Now().Before(chain[0].NotAfter) || !isTPMNode(chain[0]) {
		return nil, false
	}
	return chain, true
}

func isTPMNode(c *x509.Certificate) bool {
	return len(c.URIs) == 1 && strings.HasPrefix(c.URIs[0].Path, "/node/"+attest.MethodTPM+"/")
}

// nodeEK is "mandate node ek": the EK digest an operator allowlists.
func nodeEK(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("node ek", "node ek --tpm PATH [flags]", stderr)
	var tf tpmFlags
	var quiet bool
	tf.register(fs)
	fs.BoolVar(&quiet, "quiet", false, "print only the digest")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dev, _, closeFn, err := tf.open()
	if err != nil {
		return err
	}
	defer closeFn()
	ek, err := attest.ParseTPM2BPublic("ek_public", dev.EKPublic())
	if err != nil {
		return err
	}
	if quiet {
		_, err = fmt.Fprintln(stdout, ek.SHA256Hex())
		return err
	}
	return printJSON(stdout, map[string]any{"ek_sha256": ek.SHA256Hex(), "ek_type": tf.ek,
		"ek_public": base64.StdEncoding.EncodeToString(dev.EKPublic()), "node_path": "/node/tpm/" + ek.SHA256Hex()})
}

// nodePCRs is "mandate node pcrs": the device's current PCR values as a
// pcr_profiles entry of the authority's configuration.
func nodePCRs(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("node pcrs", "node pcrs --tpm PATH [flags]", stderr)
	var tf tpmFlags
	var list, profile string
	tf.register(fs)
	fs.StringVar(&list, "pcrs", "0-7,16", "PCRs to read: comma-separated indexes and ranges")
	fs.StringVar(&profile, "profile", "edge-v1", "profile name to print")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	pcrs, err := parsePCRList(list)
	if err != nil {
		return usagef("--pcrs: %v", err)
	}
	dev, _, closeFn, err := tf.open()
	if err != nil {
		return err
	}
	defer closeFn()
	vals, err := dev.ReadPCRs(pcrs)
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# under attestation.tpm.pcr_profiles:\n%s:\n  sha256:\n", profile)
	for _, i := range pcrs {
		fmt.Fprintf(&b, "    %q: %s\n", strconv.Itoa(i), hex.EncodeToString(vals[i]))
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}

// parsePCRList reads "0-7,16" as [0 1 2 3 4 5 6 7 16].
func parsePCRList(s string) ([]int, error) {
	set := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b >= attest.NumPCRs {
			return nil, fmt.Errorf("%q is not a PCR or range of PCRs 0-%d", part, attest.NumPCRs-1)
		}
		for i := a; i <= b; i++ {
			set[i] = true
		}
	}
	out := make([]int, 0, len(set))
	for i := range set {
		out = append(out, i)
	}
	slices.Sort(out)
	if len(out) == 0 {
		return nil, errors.New("no PCR")
	}
	return out, nil
}
