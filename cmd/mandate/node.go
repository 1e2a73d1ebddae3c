package main

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
)

const nodeUsage = `Usage:
  mandate node join --token TOKEN [flags]   join this host with a join token (level token;
                                            --token-file FILE, - for stdin, keeps it off the
                                            command line)
  mandate node attest --tpm PATH [flags]    attest this host with its TPM 2.0 (level hardware), or
                                            renew its TPM node SVID with a fresh quote
  mandate node run --tpm PATH [flags]       attest, then renew with a fresh quote at 40 to 50% of
                                            each SVID's lifetime (at random), until stopped
  mandate node run [--out DIR] [flags]      renew a join-token node's credential at once, then at
                                            40 to 50% of each SVID's lifetime (at random), until
                                            stopped (its agents get SVIDs only while it is), or
                                            until the authority refuses it for good (banned or
                                            evicted) or the credential expires unrenewed
  mandate node run ... --workload-api SOCKET --workload SELECTOR[,SELECTOR...]=SPIFFE-ID
                                            also serve the SPIFFE Workload API to the workloads of
                                            this host: the agents' SVIDs, to the callers all of an
                                            entry's selectors pick (uid:N, gid:N, user:NAME,
                                            group:NAME, supplementary_gid:N, supplementary_group:NAME,
                                            path:PATH of the executable, sha256:HEX of its contents);
                                            synced with the authority every 30 s, or at the bundle's
                                            refresh hint when shorter (agents deleted are served no
                                            more; federations and keys added reach the workloads; a
                                            node banned, or a join-token node evicted, stops node
                                            run; a TPM node the authority no longer knows, evicted,
                                            attests again)
  mandate node ek --tpm PATH [flags]        print the EK digest (for attestation.tpm.ek_allowlist)
  mandate node pcrs --tpm PATH [flags]      print the current PCRs as a pcr_profiles entry

PATH is a TPM device such as /dev/tpmrm0, or "simulator" (development).
`

func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if helpAsked(args, nodeUsage, stdout) {
		return nil
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, nodeUsage)
		return usagef("node: missing command")
	}
	switch args[0] {
	case "join":
		return nodeJoin(ctx, args[1:], stdout, stderr)
	case "attest":
		return nodeAttest(ctx, args[1:], stdout, stderr, false)
	case "run":
		return nodeAttest(ctx, args[1:], stdout, stderr, true)
	case "ek":
		return nodeEK(ctx, args[1:], stdout, stderr)
	case "pcrs":
		return nodePCRs(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, nodeUsage)
	return unknownCommand("node", args[0])
}

func nodeJoin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("node join", "node join (--token TOKEN | --token-file FILE) [flags]", stderr)
	var cf clientFlags
	var token, tokenFile, out string
	var quiet bool
	cf.registerServer(fs)
	fs.StringVar(&token, "token", "", "join token from 'mandate admin join-token create' (or --token-file)")
	fs.StringVar(&tokenFile, "token-file", "", "file holding the join token, - for standard input (keeps it out of the command line, which other local users can read)")
	fs.StringVar(&cf.bundle, "bundle", "mandate-data/admin/bundle.pem", "PEM trust bundle to authenticate the authority")
	fs.StringVar(&out, "out", "mandate-node", "directory for the node credential (svid.pem, svid.key 0600, bundle.pem, bundles.json); join.key holds the key until the answer is written: if the answer is lost, or its writing cut short, run the same command again; a join holds credential.lock there while it runs, and refuses to start while another command writing a credential does")
	fs.BoolVar(&quiet, "quiet", false, "print only the node's SPIFFE ID")
	if err := parseSome(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		// Not echoed: it is most likely the token, given without
		// --token, and errors end up in logs.
		return usagef("unexpected argument (not shown: it may be a join token): give the token with --token or --token-file; this command takes flags only")
	case (token == "") == (tokenFile == ""):
		return usagef("give the join token with --token or --token-file (one of them)")
	case tokenFile != "":
		var b []byte
		var err error
		if tokenFile == "-" {
			if b, err = io.ReadAll(io.LimitReader(os.Stdin, 4096)); err != nil {
				return fmt.Errorf("--token-file: %w", err)
			}
		} else if b, err = readTokenFile("--token-file", tokenFile, "give it with --token"); err != nil {
			return err
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return usagef("--token-file %s holds no token", tokenFile)
		}
	}
	c, err := cf.dial(false)
	if err != nil {
		return err
	}
	// One command at a time writing in --out, from its check to its
	// write (and one join's join.key never another's).
	unlock, err := lockOut(out)
	if err != nil {
		return err
	}
	defer unlock()
	// A join makes a new node: it replaces no credential, but the one
	// its own write left when cut short (finished by asking again with
	// join.key). A join.key an expired credential holds is an old join's:
	// never asked with again.
	digest := tokenDigest(token)
	held, stale := pendingJoin(out, digest)
	if stale {
		if err := os.Remove(filepath.Join(out, "join.key")); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
	}
	if err := checkOut(out, "--out", func(spiffeid.ID) bool { return held }); err != nil {
		return err
	}
	key, pending, err := joinKey(out, digest)
	if err != nil {
		return err
	}
	csr, err := client.CSRFor(key, spiffeid.ID{})
	if err != nil {
		return err
	}
	ans, err := c.Join(ctx, token, csr)
	if err != nil {
		return joinError(err, pending)
	}
	if err := saveAnswer(out, ans, key, c.TrustDomain(), joinNodeID(c.TrustDomain())); err != nil {
		return err
	}
	_ = os.Remove(pending) // svid.key holds it now
	if quiet {
		_, err = fmt.Fprintln(stdout, ans.SPIFFEID)
		return err
	}
	return printJSON(stdout, map[string]any{"spiffe_id": ans.SPIFFEID, "expires_at": ans.ExpiresAt, "credential": out})
}

// outLock is the file in a credential directory (--out) that a command
// writing a credential there holds locked from its check of the
// directory to its write (removed when it is done): node join, node
// attest, each attestation of node run --tpm, each renewal of a
// join-token node's node run, and svid x509.
const outLock = "credential.lock"

// errOutBusy is lockOut's refusal: another command holds --out.
var errOutBusy = errors.New("another command is writing a credential there")

// lockOut makes dir (private, as credfile.Write requires) and locks it
// for one command writing a credential there, or says that another
// holds it. Two at once would both find --out free, and the later write
// replace the credential the earlier reported, its key with it.
func lockOut(dir string) (unlock func(), err error) {
	if err := checkOutDir("--out", dir); err != nil {
		return nil, err
	}
	if err := credfile.PrivateDir(dir); err != nil {
		return nil, fmt.Errorf("--out: %w", err)
	}
	unlock, err = credfile.TryLock(filepath.Join(dir, outLock))
	if errors.Is(err, credfile.ErrLocked) {
		return nil, fmt.Errorf("--out %s: %w (a node join, node attest, node run or svid x509, which holds %s): wait for it to end, or give another --out (nothing was asked of the authority)", dir, errOutBusy, outLock)
	}
	return unlock, err
}

// joinError is err, a join that failed, saying what to do: for a token
// the authority refused (unknown, used, expired or withdrawn), ask for
// a new one, as a token joins one host, once, while it is valid; for a
// join that got no answer (the connection cut, the call's time up), run
// it again, as the authority may have taken the token, and answers
// again a join asked with it and the key kept in pending (join.key).
func joinError(err error, pending string) error {
	var p *client.Problem
	switch {
	case errors.As(err, &p) && strings.HasPrefix(p.Name(), "join-token-"):
		return fmt.Errorf("%w: ask an administrator for a new join token (mandate admin join-token create)", err)
	case errors.As(err, &p):
		return err
	}
	return fmt.Errorf("%w: if the authority got the join, it may have taken the token: run the same command again while the token is valid (%s keeps the key it joins with)", err, pending)
}

// pendingJoin reports how the credential in dir stands to the key a join
// with the token of tokenDigest left in dir/join.key: held, a valid
// credential with that key (the join was answered and its write cut
// short before join.key was removed), or stale, an expired one with that
// key (join.key outlived its join). A join.key of another token is
// neither.
func pendingJoin(dir, tokenDigest string) (held, stale bool) {
	key, digest, err := readJoinKey(filepath.Join(dir, "join.key"))
	if err != nil || !sameJoin(digest, tokenDigest) {
		return false, false
	}
	chain, _, _, err := credfile.Load(credfile.In(dir))
	if err != nil || len(chain) == 0 {
		return false, false
	}
	if !credfile.KeyMatches(key, chain[0]) {
		return false, false
	}
	valid := time.Now().Before(chain[0].NotAfter)
	return valid, !valid
}

// tokenDigest names a join token in join.key: its SHA-256, hex.
func tokenDigest(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// sameJoin reports whether a join.key naming the token of digest is the
// key of a join with the token of tokenDigest: a join.key that names
// none was written by a version before this rule, for a join that may be
// this one, and is kept as that version kept it.
func sameJoin(digest, tokenDigest string) bool { return digest == "" || digest == tokenDigest }

// joinTokenHeader is the PEM header of join.key naming, by its SHA-256,
// the token the key joins with.
const joinTokenHeader = "Join-Token-SHA256"

// encodeJoinKey is join.key's content: key, for the token of tokenDigest.
func encodeJoinKey(key crypto.Signer, tokenDigest string) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: map[string]string{joinTokenHeader: tokenDigest}, Bytes: der}), nil
}

// readJoinKey reads join.key: the key, and the digest of its token.
func readJoinKey(path string) (crypto.Signer, string, error) {
	b, err := credfile.ReadPrivate(path)
	if err != nil {
		return nil, "", err
	}
	key, err := credfile.ParseKeyPEM(b)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w (remove it to join with a new key)", path, err)
	}
	blk, _ := pem.Decode(b)
	return key, blk.Headers[joinTokenHeader], nil
}

// joinKey returns the key a join with the token of tokenDigest asks
// with, and the file keeping it until the credential is written:
// dir/join.key, made (0600, in dir made private) before the authority is
// asked. So a directory that cannot be written to is found before the
// token is spent, and a join whose answer was lost is asked again, by
// running the same command, with the same key: the authority then
// answers it again (until the token expires). A join.key of another
// token (an attempt given up) is replaced: no two nodes share a key.
func joinKey(dir, tokenDigest string) (crypto.Signer, string, error) {
	path := filepath.Join(dir, "join.key")
	if err := credfile.PrivateDir(dir); err != nil {
		return nil, path, fmt.Errorf("--out: %w", err)
	}
	key, digest, err := readJoinKey(path)
	switch {
	case err == nil && sameJoin(digest, tokenDigest):
		return key, path, nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, path, err
	}
	key, _, err = client.NewKeyAndCSR()
	if err != nil {
		return nil, path, err
	}
	b, err := encodeJoinKey(key, tokenDigest)
	if err != nil {
		return nil, path, err
	}
	if err := credfile.WriteFileAtomic(path, b, 0o600); err != nil {
		return nil, path, fmt.Errorf("--out: %w", err)
	}
	return key, path, nil
}

// checkOut refuses, before anything is asked of the authority, to write a
// credential into dir where it could not be written (checkOutDir), or
// while it holds an unexpired one that keeps (would not be replaced by)
// the identity replaces reports: replacing it would lose a credential,
// its key among it, that another identity still uses. The credential
// held is told by its certificate, with a key file beside it: one that
// does not load as it is (its key readable by others, its bundle
// damaged) is held all the same, as it is usable again once mended, and
// so is one whose certificate is no X509-SVID (it names no identity that
// replaces could report).
func checkOut(dir, flag string, replaces func(spiffeid.ID) bool) error {
	if err := checkOutDir(flag, dir); err != nil {
		return err
	}
	p := credfile.In(dir)
	cb, err := os.ReadFile(p.Cert)
	if err != nil {
		return nil // nothing there
	}
	chain, err := credfile.ParseCertsPEM(cb)
	if err != nil || !time.Now().Before(chain[0].NotAfter) {
		return nil // nothing usable
	}
	if _, err := os.Lstat(p.Key); err != nil {
		return nil // a certificate without its key
	}
	// A certificate that is no X509-SVID is no identity a command may
	// replace: whose it is, and what uses its key, is not known here.
	held, err := x509svid.IDFromCert(chain[0])
	if err != nil {
		return fmt.Errorf("%w: %s %s holds a certificate that is not an X509-SVID (%v), still valid until %s; give another %s, or remove %s first",
			errOutHeld, flag, dir, err, chain[0].NotAfter.UTC().Format(time.RFC3339), flag, dir)
	}
	if replaces(held) {
		return nil
	}
	why := ""
	if _, _, _, err := credfile.Load(p); err != nil {
		why = fmt.Sprintf(" (it does not load as it is: %v)", err)
	}
	return fmt.Errorf("%w: %s %s holds the credential of %s, still valid until %s%s; give another %s, or remove %s first",
		errOutHeld, flag, dir, held, chain[0].NotAfter.UTC().Format(time.RFC3339), why, flag, dir)
}

// errOutHeld is checkOut's refusal.
var errOutHeld = errors.New("a credential still valid is in the way")

// minRenewalWait is the least node run waits after a renewal or
// attestation, whatever the SVID's life (one cut short at an upstream
// CA's expiry): never faster than every few seconds.
const minRenewalWait = 5 * time.Second

// renewJoinNode is "mandate node run" without a TPM: it renews the node
// credential in out with itself, at 40 to 50% of each SVID's lifetime, until
// ctx ends. A renewal that failed for a passing reason (the authority
// unreachable, its own fault) is tried again while the credential is
// valid; one the authority refuses for good (the node banned, its SVID
// superseded, the node attested no longer, its credential refused at the
// handshake: its CA revoked) stops it at once, and so does an expired
// credential (join again). notify (node run's) is told once the first
// renewal is done, or failed for a passing reason: the credential is
// valid, and not refused.
func renewJoinNode(ctx context.Context, cf *clientFlags, out string, stderr io.Writer, notify *nodeNotifier) error {
	cf.creds = out
	var failed error // the last renewal's error, while none has succeeded since
	for {
		chain, id, err := joinNodeCredential(out)
		if err != nil {
			return err
		}
		if !time.Now().Before(chain[0].NotAfter) {
			return expiredJoinNode(id, out, chain[0].NotAfter, failed)
		}
		wait, err := renewNodeOnce(ctx, cf, out, id)
		if ctx.Err() != nil {
			return nil
		}
		failed = err
		var p *client.Problem
		switch {
		case err != nil && (errors.As(err, &p) && refusedForGood(p) || errors.Is(err, client.ErrCredentialRefused)):
			return joinAgainHint(fmt.Errorf("node run stopped: the authority refuses to renew %s: %w", id, err))
		case err != nil && !time.Now().Before(chain[0].NotAfter):
			return expiredJoinNode(id, out, chain[0].NotAfter, err)
		case err != nil:
			notify.held(id.String())
			left := time.Until(chain[0].NotAfter)
			wait = heedRetryAfter(err, renewalRetryWait(left), left/2)
			fmt.Fprintf(stderr, "%s renewal failed (retrying in %s): %v\n", time.Now().UTC().Format(time.RFC3339), wait.Round(time.Second), err)
		default:
			notify.held(id.String())
			wait = max(wait, minRenewalWait)
			fmt.Fprintf(stderr, "%s renewed %s; next renewal in %s\n", time.Now().UTC().Format(time.RFC3339), id, wait.Round(time.Second))
		}
		if goOn, _ := sleep(ctx, wait, time.Now, wallPoll, nil); !goOn {
			return nil
		}
	}
}

// expiredJoinNode is why node run stops once the join-token node id's
// credential in out has expired (at notAfter) unrenewed: the authority
// renews a join-token node only with a valid credential, so the host
// joins again. failed is the last renewal's error, if one was tried.
func expiredJoinNode(id spiffeid.ID, out string, notAfter time.Time, failed error) error {
	last := ""
	if failed != nil {
		last = fmt.Sprintf(" (the last renewal failed: %v)", failed)
	}
	return fmt.Errorf("node run stopped: the credential of %s in %s expired at %s before a renewal succeeded%s; a join-token node cannot renew an expired credential: join again with a new join token (mandate node join --out %s), under a new ID",
		id, out, notAfter.UTC().Format(time.RFC3339), last, out)
}

// joinNodeCredential is the join-token node credential in out (its
// chain, its SPIFFE ID), or why there is none that node run can renew.
func joinNodeCredential(out string) ([]*x509.Certificate, spiffeid.ID, error) {
	chain, _, _, err := credfile.Load(credfile.In(out))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, spiffeid.ID{}, fmt.Errorf("no node credential in %s (%w): join first (mandate node join --out %s)", out, err, out)
	case err != nil: // there, but unusable as it is (a key others may read): its error says why
		return nil, spiffeid.ID{}, fmt.Errorf("load the node credential in %s: %w", out, err)
	}
	id, err := x509svid.IDFromCert(chain[0])
	switch {
	case err != nil:
		return nil, spiffeid.ID{}, fmt.Errorf("%s holds no SPIFFE credential (%w): give the node's --out", out, err)
	case isTPMNode(chain[0]):
		return nil, spiffeid.ID{}, usagef("%s holds a TPM node's credential: it renews with a fresh quote (mandate node run --tpm PATH --out %s)", out, out)
	case !strings.HasPrefix(id.Path(), "/node/"+attest.MethodJoinToken+"/"):
		return nil, spiffeid.ID{}, usagef("%s holds the credential of %s, not of a join-token node: give the node's --out", out, id)
	}
	return chain, id, nil
}

// wallPoll is how often sleep reads the wall clock.
const wallPoll = time.Minute

// sleep waits d, or less if the wall clock (now) passes d from when it
// began first, reading it every poll, or until a receive from wake (nil:
// never), which it reports (woken); it reports false if ctx ended
// first. Go's timers count no time while the host is suspended: a
// renewal timed by one alone would come that much later after a resume,
// perhaps after the credential expired (the wall clock had counted
// it); and a clock stepped forward brings expiries closer.
func sleep(ctx context.Context, d time.Duration, now func() time.Time, poll time.Duration, wake <-chan struct{}) (goOn, woken bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	end := now().Round(0).Add(d) // the wall clock's reading alone
	for {
		select {
		case <-ctx.Done():
			return false, false
		case <-t.C:
			return true, false
		case <-wake:
			return true, true
		case <-tick.C:
			if !now().Round(0).Before(end) {
				return true, false
			}
		}
	}
}

// refusedForGood reports whether a renewal the authority refused with p
// would be refused again, whatever is retried.
func refusedForGood(p *client.Problem) bool {
	switch p.Name() {
	case "node-banned", "node-not-attested", "svid-superseded", "forbidden", "node-drifted", "spiffe-id-revoked":
		return true
	}
	return false
}

// joinAgainHint adds to err, a join-token node's refusal, what to do
// when the authority no longer knows the node (node-not-attested: it
// was evicted, or its SVID lapsed), or refuses its credential at the
// handshake (client.ErrCredentialRefused: its CA revoked): its token is
// spent, so it joins again with a new one, under a new ID. Any other
// err is returned as is.
func joinAgainHint(err error) error {
	var p *client.Problem
	var node string
	switch {
	case errors.Is(err, client.ErrCredentialRefused):
		node = "whose credential the authority refuses (signed by an X.509 CA revoked since)"
	case errors.As(err, &p) && p.Name() == "node-not-attested":
		node = "the authority no longer knows (evicted, or not renewed in time)"
	default:
		return err
	}
	return fmt.Errorf("%w; a join-token node %s cannot renew: join again with a new join token (mandate node join), into another --out or after removing this one", err, node)
}

// renewNodeOnce renews the node id's credential in out, and says how
// long to wait before the next renewal (renewalWait).
func renewNodeOnce(ctx context.Context, cf *clientFlags, out string, id spiffeid.ID) (time.Duration, error) {
	c, err := cf.dial(true)
	if err != nil {
		return 0, err
	}
	defer c.CloseIdle()
	// A command writing in --out meanwhile (node attest, svid x509) is
	// waited for: this renewal fails, and is tried again.
	unlock, err := lockOut(out)
	if err != nil {
		return 0, err
	}
	defer unlock()
	ans, key, err := c.NewX509SVID(ctx, id)
	if err != nil {
		return 0, err
	}
	if err := saveAnswer(out, ans, key, c.TrustDomain(), exactID(id)); err != nil {
		return 0, err
	}
	return renewalWait(ans), nil
}

// renewalWait is how long node run waits before renewing the SVID of
// ans: half of its life, or of what is left of it as this host counts,
// if less, jittered (40 to 50% of it). Not half of the time until its
// expiry alone: from an authority whose clock is ahead of this host's,
// that comes after the SVID expired at the authority.
func renewalWait(ans *client.SVIDAnswer) time.Duration {
	left := time.Until(ans.ExpiresAt)
	if chain, err := ans.Certificates(); err == nil {
		left = min(time.Until(chain[0].NotAfter), chain[0].NotAfter.Sub(chain[0].NotBefore))
	}
	return jittered(left / 2)
}

// renewalRetryWait is how long a failed renewal waits before it is tried
// again, with left of the credential's life: again before the
// credential expires, however short its life, but never sooner than a
// second later (a credential about to expire would make it try again at
// once, over and over).
func renewalRetryWait(left time.Duration) time.Duration {
	return max(time.Second, jittered(min(30*time.Second, left/4)))
}

// heedRetryAfter is wait, or the time the authority asked not to be
// asked again for, when its refusal err said so (Retry-After: a 429
// rate-limited), and that is longer; but no longer than limit: half of
// what is left of the node's credential, so that it is renewed still
// before it expires.
func heedRetryAfter(err error, wait, limit time.Duration) time.Duration {
	var p *client.Problem
	if errors.As(err, &p) {
		return max(wait, min(p.RetryAfter, limit))
	}
	return wait
}

// jittered is d less a random part of at most a fifth of it: nodes
// renewed together (a fleet joined at once, or every node retrying
// until an authority came back) spread out, rather than renewing, or
// retrying, together ever after.
func jittered(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - rand.N(d/5+1)
}

// wantID is the identity an answer must carry: one ok accepts, which
// name says in an error.
type wantID struct {
	ok   func(spiffeid.ID) bool
	name string
}

// exactID wants id itself: a renewal's, an agent's, a TPM node's (its
// EK names it).
func exactID(id spiffeid.ID) wantID {
	return wantID{ok: func(got spiffeid.ID) bool { return got == id }, name: id.String()}
}

// joinNodeID wants a join-token node of td,
// spiffe://<td>/node/join/<token id>: the token's id is the authority's
// to tell, but no other kind of identity is what a join makes.
func joinNodeID(td spiffeid.TrustDomain) wantID {
	ok := func(got spiffeid.ID) bool {
		tokenID, found := strings.CutPrefix(got.Path(), "/node/"+attest.MethodJoinToken+"/")
		return got.TrustDomain() == td && found && attest.ValidJoinTokenID(tokenID)
	}
	return wantID{ok: ok, name: "a join-token node (spiffe://" + td.Name() + "/node/" + attest.MethodJoinToken + "/<token id>)"}
}

// saveAnswer writes an SVID answer as a credential directory: the chain,
// the key, the own trust domain's roots, and every bundle as bundles.json.
// Only an X509-SVID of the identity the answer names, which is one
// asked for (want), in td, that the answer's own bundle of td verifies,
// and that bundle authenticating the authority that answered, is
// written: anything else would be a credential other than the one
// reported or asked for (a join answered with an administrator's SVID),
// or none that works.
func saveAnswer(dir string, ans *client.SVIDAnswer, key crypto.Signer, td spiffeid.TrustDomain, want wantID) error {
	chain, err := ans.Certificates()
	if err != nil {
		return err
	}
	bundles, err := ans.ParseBundles()
	if err != nil {
		return err
	}
	own, ok := bundles[td]
	if !ok {
		return fmt.Errorf("the answer carries no bundle for %s", td)
	}
	// Verified at this host's time, or at the certificate's NotBefore
	// if that is still to come here: an authority whose clock is ahead
	// of this host's (beyond the SVID's ten seconds of backdating)
	// answers with a certificate it takes, checked with its clock.
	at := time.Now()
	if nb := chain[0].NotBefore; at.Before(nb) {
		at = nb
	}
	id, _, err := x509svid.Verify(chain, x509bundle.FromX509Authorities(td, own.X509Authorities()), x509svid.WithTime(at))
	if err != nil {
		return fmt.Errorf("the authority's answer: its certificate is no X509-SVID its own trust bundle verifies: %w", err)
	}
	if id.String() != ans.SPIFFEID || !want.ok(id) {
		return fmt.Errorf("the authority's answer names %s and carries a certificate of %s, asked for %s: nothing written", client.Printable(ans.SPIFFEID), id, want.name)
	}
	// The bundle written is the one the credential reaches the
	// authority with from now on (a renewal, an agent's SVID): one that
	// does not authenticate the authority that sent it would cut the
	// node off.
	if len(ans.Server) > 0 {
		if _, _, err := x509svid.Verify(ans.Server, x509bundle.FromX509Authorities(td, own.X509Authorities())); err != nil {
			return fmt.Errorf("the authority's answer: its trust bundle does not authenticate the authority's own certificate (%w), so the credential could not reach it again: nothing written", err)
		}
	}
	if err := credfile.Write(credfile.In(dir), chain, key, own.X509Authorities()); err != nil {
		return err
	}
	doc, err := json.MarshalIndent(ans.Bundles, "", "  ")
	if err != nil {
		return err
	}
	return credfile.WriteFileAtomic(filepath.Join(dir, "bundles.json"), doc, 0o644)
}
