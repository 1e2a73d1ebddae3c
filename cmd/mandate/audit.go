package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/delegation"
)

const auditUsage = `Usage: mandate audit <command> [flags]

Commands (mTLS as an auditor or admin: --creds DIR, default <data-dir>/admin):
  checkpoint                 print the latest signed checkpoint (a line
                             that is not printable text quoted)
  tail [-n N] [--json]       print the last N entries (default 10), proofs checked
  search [--spiffe-id ID] [--type T] [--since RFC3339] [--until RFC3339]
         [--decision-id D] [--delegation-id D] [--limit N] [--json]
                             print matching entries (all pages, in log order:
                             a hit out of order or that does not match, a
                             page token given twice or more pages in a row
                             without a hit than the log has entries end the
                             search with an error), proofs checked
  show INDEX [--json]        print an entry after checking its inclusion proof
                             (tail, search, show and prove: the checkpoints
                             the entries were proven against must be one
                             history, with each other, with the one chain
                             remembered in --remember and with the one
                             verify remembered in --state, both read and
                             never written here; a fork fails, tail, show
                             and prove before printing anything, search
                             after what it printed as it found it)
  prove INDEX [--out FILE]   write the entry's offline proof (C2SP tlog-proof:
                             the entry in "extra", its inclusion proof and the
                             checkpoint with the log's signature only; one
                             whose text is not printable is refused)
  check-proof FILE           verify an offline proof (no server needed) and
                             print its entry
  chain ID [--verify] [--peer TD=https://HOST:PORT,ROOTS.pem,LOG.vkey ...]
           [--serial-only-svids] [--remember DIR]
                             the accountability chain of a delegation: every
                             hop from the principal down, each proven in its
                             issuer's log (other authorities' logs followed
                             with --peer), its links to the hop above, and
                             each delegator's signature (by the SVID whose
                             issuance, serial and SHA-256, that log proves
                             before the hop), with the decision and the
                             accountable parties of each hop; the
                             checkpoints each log showed must agree, with
                             each other and with the latest one an earlier
                             run showed (kept in --remember, default
                             mandate-audit.logs; "" keeps none). A hop
                             revoked (itself, one of its parties at its
                             issuer, or a hop above) is shown REVOKED with
                             the delegation.revoked entry that proves it
                             (found by each log's search: its absence is
                             not proven)
  verify [--full] [--witness KEY ...] [--witnesses N] [--witness-max-age D]
                             check the checkpoint's signature and that it is
                             consistent with the last one this auditor saw
                             (kept in --state; and the one chain keeps in
                             --remember, read only) before anything else;
                             fails loudly on a fork, with both checkpoints,
                             and on a checkpoint older than the one
                             remembered (a stale answer, or entries
                             withheld: not a fork when the log proves the
                             two consistent). --full also downloads every
                             entry, recomputes the root and names the first
                             entry that does not match. --witness KEY
                             (repeatable; --witnesses N of them, default
                             all) verifies instead the latest checkpoint
                             N of those witnesses cosigned (of those the
                             log keeps for its audit.witnesses: the
                             latest each cosigned, and older ones others
                             cosigned together), and requires their
                             cosignatures, printing when each witness
                             cosigned it (--witness-max-age D: only those
                             made within D count): a log that
                             showed this auditor a fork could not have had
                             it cosigned (it may be older than the one
                             remembered: it must be proven consistent with
                             it, and the larger is kept)

Every check uses the log's verifier key (--vkey: the key, or a file holding
it, default <data-dir>/audit/log.vkey) and code independent of the server:
golang.org/x/mod/sumdb/note and transparency-dev/merkle.
`

// auditFlags are the flags of every audit command.
type auditFlags struct {
	cf                   clientFlags
	dataDir, vkey, state string
	remember             string // chain: directory of each log's latest checkpoint
	out                  string
	asJSON, full, verify bool
	serialOnly           bool
	peers                stringList
	witnessKeys          stringList    // verify: witnesses' cosignature/v1 keys (or files)
	quorum               int           // verify: cosignatures needed (0: every witness given)
	witnessMaxAge        time.Duration // verify: a cosignature older than this counts for nothing (0: any age)
	witnesses            []note.Verifier
	witnessPubs          [][]byte    // their public keys
	logKey               string      // the log's verifier key (--vkey's)
	cosignedBy           []string    // verify: the witnesses that cosigned the checkpoint verified
	cosignedAt           []time.Time // verify: when each of them cosigned it (the time it signed)
	n                    int
	q                    struct {
		spiffeID, typ, since, until, decision, delegation string
		limit                                             int
	}
}

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmds := map[string]func(context.Context, *auditFlags, *client.Client, note.Verifier, []string, io.Writer) error{
		"checkpoint": auditCheckpointCmd, "show": auditShow, "verify": auditVerify,
		"prove": auditProve, "check-proof": auditCheckProof,
		"tail": auditTail, "search": auditSearch, "chain": auditChain,
	}
	if helpAsked(args, auditUsage, stdout) {
		return nil
	}
	if len(args) == 0 || cmds[args[0]] == nil {
		fmt.Fprint(stderr, auditUsage)
		return usagef("audit: unknown or missing command")
	}
	operand := map[string]string{"show": " INDEX", "prove": " INDEX", "check-proof": " FILE", "chain": " ID"}[args[0]]
	fs := newFlagSet("audit "+args[0], "audit "+args[0]+operand+" [flags]", stderr)
	f := &auditFlags{}
	// Each command lists (and accepts) only the flags it uses.
	on := func(cmds ...string) bool { return slices.Contains(cmds, args[0]) }
	fs.StringVar(&f.dataDir, "data-dir", "mandate-data", "the authority's data directory (admin credential, verifier key)")
	if !on("check-proof") { // offline: no server
		f.cf.register(fs, "", "auditor credential directory (default <data-dir>/admin)")
	}
	fs.StringVar(&f.vkey, "vkey", "", "the log's verifier key, or a file holding it (default <data-dir>/audit/log.vkey)")
	if on("verify") {
		fs.StringVar(&f.state, "state", "mandate-audit.state", "file keeping the last checkpoint this auditor verified (written 0600; refused, nothing read, if group or others may write to it or another user owns it)")
		fs.BoolVar(&f.full, "full", false, "also download every entry (256 to a request, in the log's entry bundles), recompute the root and name the first entry that does not match")
		fs.Var(&f.witnessKeys, "witness", "a witness's cosignature/v1 verifier key, or a file holding it (a Mandate witness's audit/witness.vkey): verify the latest checkpoint the witnesses cosigned (GET /v1/audit/checkpoint/witnessed) instead of the latest, and require their cosignatures (repeatable)")
		fs.IntVar(&f.quorum, "witnesses", 0, "how many of the --witness keys must have cosigned (0: all of them)")
		fs.DurationVar(&f.witnessMaxAge, "witness-max-age", 0, "with --witness: count only cosignatures made within this long before now (by the time each signs), so that a log that stopped having its checkpoints witnessed, or keeps serving an old witnessed one, fails; a Mandate log has its checkpoint cosigned again every 10 minutes while it does not grow, so give more than that (0: any age)")
	}
	switch {
	case on("tail", "search"):
		fs.BoolVar(&f.asJSON, "json", false, "print each entry as one line of JSON, as the log holds it (JSON Lines; C1 controls and DEL written as \\u escapes)")
	case on("show"):
		fs.BoolVar(&f.asJSON, "json", false, "print the entry as JSON, as the log holds it (C1 controls and DEL written as \\u escapes)")
	case on("chain"):
		fs.BoolVar(&f.asJSON, "json", false, "print the chain as one JSON document")
	}
	if on("tail") {
		fs.IntVar(&f.n, "n", 10, "how many entries")
	}
	if on("search") {
		fs.StringVar(&f.q.spiffeID, "spiffe-id", "", "SPIFFE ID as actor, subject or accountable party")
		fs.StringVar(&f.q.typ, "type", "", "event type")
		fs.StringVar(&f.q.since, "since", "", "from this time (RFC 3339)")
		fs.StringVar(&f.q.until, "until", "", "before this time (RFC 3339)")
		fs.StringVar(&f.q.decision, "decision-id", "", "decision id")
		fs.StringVar(&f.q.delegation, "delegation-id", "", "delegation id")
		fs.IntVar(&f.q.limit, "limit", 0, "at most this many entries (0: all); also the size of the pages asked for (at most 500)")
	}
	if on("prove") {
		fs.StringVar(&f.out, "out", "", "write the proof to this file instead of standard output")
	}
	if on("chain") {
		fs.BoolVar(&f.verify, "verify", false, "fail unless every hop is proven in its issuer's log")
		fs.BoolVar(&f.serialOnly, "serial-only-svids", false, "accept a delegator's svid.issued entry that names the certificate's serial but not its SHA-256 (logged by an authority before it recorded it), and say so for the hop")
		fs.StringVar(&f.remember, "remember", "mandate-audit.logs", "directory keeping the latest checkpoint of each log the chain was proven in (made 0700; neither read nor written in if group or others may write to it, or another user owns it: the run then fails); a later run must prove each log consistent with it (empty: remember nothing)")
		fs.Var(&f.peers, "peer", "another authority, TRUST_DOMAIN=https://HOST:PORT,ROOTS.pem,LOG.vkey, to follow its hops (repeatable)")
	}
	if on("show", "tail", "search", "prove", "verify") {
		fs.StringVar(&f.remember, "remember", "mandate-audit.logs", "directory where audit chain keeps each log's latest checkpoint: read (never written), and the log proven consistent with it; refused if group or others may write to it, or another user owns it (empty: none)")
	}
	if on("show", "tail", "search", "prove", "chain") {
		fs.StringVar(&f.state, "state", "mandate-audit.state", "file where audit verify keeps the last checkpoint it verified: read (never written), and the log proven consistent with it; refused if group or others may write to it, or another user owns it (empty: none)")
	}
	rest, err := splitFlags(fs, args[1:])
	if err != nil {
		return err
	}
	// A search filter given empty (--spiffe-id "$ID" with ID unset) is
	// refused, not taken for no filter: it would print the whole log.
	var empty error
	fs.Visit(func(fl *flag.Flag) {
		if on("search") && empty == nil && fl.Value.String() == "" && slices.Contains([]string{"spiffe-id", "type", "since", "until", "decision-id", "delegation-id"}, fl.Name) {
			empty = usagef("--%s is empty: leave it out to search without it", fl.Name)
		}
	})
	if empty != nil {
		return empty
	}
	if f.q.delegation != "" {
		if err := checkDelegationID("--delegation-id", f.q.delegation); err != nil {
			return err
		}
	}
	if operand == "" {
		if err := noArgs(rest); err != nil {
			return err
		}
	} else if len(rest) != 1 {
		// Said before the verifier key and the credential are looked for.
		return usagef("want exactly one argument:%s", operand)
	}
	if (args[0] == "show" || args[0] == "prove") && !isUint(rest[0]) {
		return usagef("INDEX must be an unsigned integer")
	}
	if args[0] == "chain" {
		if err := checkDelegationID("ID", rest[0]); err != nil {
			return err
		}
	}
	if f.cf.creds == "" {
		f.cf.creds = filepath.Join(f.dataDir, "admin")
	}
	v, err := loadVerifier(f)
	if err != nil {
		return err
	}
	if err := loadWitnesses(f); err != nil {
		return err
	}
	if args[0] == "check-proof" { // offline: no server
		return auditCheckProof(ctx, f, nil, v, rest, stdout)
	}
	if f.out != "" {
		if err := checkOutFile("--out", f.out); err != nil {
			return err
		}
	}
	c, err := f.cf.dial(true)
	if err != nil {
		return err
	}
	return cmds[args[0]](ctx, f, c, v, rest, stdout)
}

// isUint reports whether s is an unsigned decimal integer.
func isUint(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

func loadVerifier(f *auditFlags) (note.Verifier, error) {
	key := f.vkey
	if key == "" {
		key = filepath.Join(f.dataDir, "audit", "log.vkey")
	}
	if b, err := os.ReadFile(key); err == nil {
		key = strings.TrimSpace(string(b))
	} else if f.vkey == "" || !strings.Contains(f.vkey, "+") {
		return nil, fmt.Errorf("verifier key: %w (give --vkey: the log's key, or a file holding it, as the authority's <data dir>/audit/log.vkey or GET /v1/audit/verifier-key)", err)
	}
	v, err := note.NewVerifier(key)
	if err != nil {
		return nil, fmt.Errorf("verifier key: %w", err)
	}
	f.logKey = key
	return v, nil
}

// loadWitnesses reads the --witness keys (each the key, or a file
// holding it) and checks --witnesses.
func loadWitnesses(f *auditFlags) error {
	for _, k := range f.witnessKeys {
		key := k
		if b, err := os.ReadFile(k); err == nil {
			key = strings.TrimSpace(string(b))
		} else if !strings.Contains(k, "+") {
			return fmt.Errorf("--witness %s: %w (give the witness's cosignature/v1 verifier key, or a file holding it, as a Mandate witness's <data dir>/audit/witness.vkey or GET /v1/witness/verifier-key)", k, err)
		}
		wv, err := fnote.NewVerifierForCosignatureV1(key)
		if err != nil {
			return fmt.Errorf("--witness %s: not a cosignature/v1 verifier key: %w", shown(k), err)
		}
		// The log holds its own key: its "cosignatures" would vouch for
		// nothing (a cosignature/v1 does not sign its name, and a key of
		// type 0x01 is taken as one).
		if pub := vkeyPublic(key); pub != nil && bytes.Equal(pub, vkeyPublic(f.logKey)) {
			return usagef("--witness %s is the log's own key (--vkey): the log could cosign its own checkpoints", wv.Name())
		}
		// One key is one witness, whatever its name: a cosignature/v1
		// does not sign the name, so a line copied under a second name
		// would count twice towards --witnesses.
		pub := vkeyPublic(key)
		for i, o := range f.witnesses {
			if o.Name() == wv.Name() && o.KeyHash() == wv.KeyHash() || pub != nil && bytes.Equal(pub, f.witnessPubs[i]) {
				return usagef("--witness %s is given twice (the same key)", wv.Name())
			}
		}
		f.witnesses, f.witnessPubs = append(f.witnesses, wv), append(f.witnessPubs, pub)
	}
	if f.quorum < 0 || f.quorum > len(f.witnesses) || f.quorum > 0 && len(f.witnesses) == 0 {
		return usagef("--witnesses %d: from 1 to the number of --witness keys (%d); 0: all of them", f.quorum, len(f.witnesses))
	}
	if f.quorum == 0 {
		f.quorum = len(f.witnesses)
	}
	if f.witnessMaxAge < 0 || f.witnessMaxAge > 0 && len(f.witnesses) == 0 {
		return usagef("--witness-max-age %s: a duration above 0, with --witness", f.witnessMaxAge)
	}
	return nil
}

// vkeyPublic is the public key of the Ed25519 note verifier key vkey
// (of type 0x01 or 0x04), or nil.
func vkeyPublic(vkey string) []byte {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(b) != 1+ed25519.PublicKeySize || b[0] != 0x01 && b[0] != 0x04 {
		return nil
	}
	return b[1:]
}

// fetchWitnessed fetches the latest checkpoint that f.quorum of the
// log's witnesses named by f.witnesses cosigned, verifies the log's
// signature and their cosignatures, and returns them, with the names of
// the witnesses that cosigned it and when each did (the timestamp its
// cosignature signed, f.cosignedAt).
func fetchWitnessed(ctx context.Context, f *auditFlags, c *client.Client, v note.Verifier) ([]byte, *log.Checkpoint, []string, error) {
	q := url.Values{"cosignatures": {strconv.Itoa(f.quorum)}}
	for _, wv := range f.witnesses {
		q.Add("witness", wv.Name())
	}
	raw, err := c.GetRaw(ctx, "/v1/audit/checkpoint/witnessed?"+q.Encode())
	if p := (*client.Problem)(nil); errors.As(err, &p) && p.Name() == "checkpoint-not-witnessed" {
		return nil, nil, nil, fmt.Errorf("the log serves no checkpoint cosigned by %d of the %d witnesses given (--witnesses; %s): %w", f.quorum, len(f.witnesses), shown(strings.Join(names(f.witnesses), ", ")), err)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	cp, err := openCheckpoint(raw, v)
	if err != nil {
		return nil, nil, nil, err
	}
	var by, stale []string
	f.cosignedAt = nil
	for _, wv := range f.witnesses {
		n, err := note.Open(raw, note.VerifierList(wv))
		if err != nil {
			continue
		}
		at, err := fnote.CoSigV1Timestamp(n.Sigs[0])
		if err != nil {
			continue
		}
		if f.witnessMaxAge > 0 && time.Since(at) > f.witnessMaxAge {
			stale = append(stale, fmt.Sprintf("%s at %s", wv.Name(), at.UTC().Format(time.RFC3339)))
			continue
		}
		by, f.cosignedAt = append(by, wv.Name()), append(f.cosignedAt, at)
	}
	if len(by) < f.quorum {
		old := ""
		if len(stale) > 0 {
			old = fmt.Sprintf("; older than --witness-max-age %s: %s", f.witnessMaxAge, strings.Join(stale, ", "))
		}
		return nil, nil, nil, fmt.Errorf("the witnessed checkpoint (size %d) is cosigned by %d of the %d witnesses given (%s), fewer than the %d asked (--witnesses)%s",
			cp.Size, len(by), len(f.witnesses), shown(strings.Join(by, ", ")), f.quorum, shown(old))
	}
	return raw, cp, by, nil
}

// names lists the names of vs.
func names(vs []note.Verifier) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Name())
	}
	return out
}

// fetchCheckpoint fetches the latest checkpoint and verifies it.
func fetchCheckpoint(ctx context.Context, c *client.Client, v note.Verifier) ([]byte, *log.Checkpoint, error) {
	raw, err := c.AuditCheckpoint(ctx)
	if err != nil {
		return nil, nil, err
	}
	cp, err := openCheckpoint(raw, v)
	return raw, cp, err
}

func openCheckpoint(raw []byte, v note.Verifier) (*log.Checkpoint, error) {
	n, err := note.Open(raw, note.VerifierList(v))
	if err != nil {
		var une *note.UnverifiedNoteError
		if errors.As(err, &une) {
			var by []string
			for _, sig := range une.Note.UnverifiedSigs {
				by = append(by, fmt.Sprintf("%s+%08x", sig.Name, sig.Hash))
			}
			origin, _, _ := strings.Cut(une.Note.Text, "\n")
			given := "--vkey"
			if gv, ok := v.(givenVerifier); ok {
				given = gv.given
			}
			return nil, fmt.Errorf("checkpoint signature does not verify with the verifier key %s+%08x: the checkpoint of the log %s is signed by %s (is %s that log's key?)",
				v.Name(), v.KeyHash(), shown(origin), shown(strings.Join(by, ", ")), given)
		}
		return nil, fmt.Errorf("checkpoint signature does not verify: %w", err)
	}
	cp := new(log.Checkpoint)
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	// One spelling of each tree (C2SP tlog-checkpoint): the size in
	// decimal without leading zeroes, the root a SHA-256 hash in
	// standard base64, the empty tree's root for no entries. A root no
	// tree has proves nothing, and two spellings of one size would be two
	// checkpoints of one tree.
	lines := strings.SplitN(n.Text, "\n", 4)
	switch {
	case lines[1] != strconv.FormatUint(cp.Size, 10):
		return nil, fmt.Errorf("checkpoint: its size %s is not in canonical form (decimal, no leading zeroes)", strconv.Quote(lines[1]))
	case len(cp.Hash) != sha256.Size || lines[2] != base64.StdEncoding.EncodeToString(cp.Hash):
		return nil, fmt.Errorf("checkpoint: its root %s is not a SHA-256 hash in standard base64", strconv.Quote(lines[2]))
	case cp.Size == 0 && !bytes.Equal(cp.Hash, rfc6962.DefaultHasher.EmptyRoot()):
		return nil, errors.New("checkpoint: a tree of no entries with another root than the empty tree's")
	}
	// The key names the log it signs for (its origin): a key that signed
	// for several logs does not make one's checkpoint another's.
	if cp.Origin != v.Name() {
		return nil, fmt.Errorf("checkpoint of the log %q, not %q", cp.Origin, v.Name())
	}
	return cp, nil
}

func auditCheckpointCmd(ctx context.Context, _ *auditFlags, c *client.Client, v note.Verifier, _ []string, w io.Writer) error {
	raw, _, err := fetchCheckpoint(ctx, c, v)
	if err != nil {
		return err
	}
	// Line by line as shown shows text: a signed note may also carry
	// signature lines of keys the auditor does not know, whose names
	// are anyone's (a bidirectional override, a C1 control), and lines
	// of the log's own text. A log's honest checkpoint prints as it is.
	_, err = io.WriteString(w, client.PrintableLines(string(raw)))
	return err
}

func auditShow(ctx context.Context, f *auditFlags, c *client.Client, v note.Verifier, args []string, w io.Writer) error {
	p, err := fetchRecalled(ctx, f, c, v, args)
	if err != nil {
		return err
	}
	if !f.asJSON {
		fmt.Fprintf(w, "entry %d of %d (inclusion proof verified)\n", p.index, p.cp.Size)
	}
	return printEntry(w, p, f.asJSON)
}

// errFork is returned when the log's checkpoints contradict each other.
var errFork = errors.New("audit: the log is not consistent with the checkpoint seen before (a fork, or history rewritten)")

func auditVerify(ctx context.Context, f *auditFlags, c *client.Client, v note.Verifier, _ []string, w io.Writer) error {
	if f.state == "" {
		return usagef("--state is empty: audit verify keeps the checkpoint it verified there, to hold the log to it next time")
	}
	// A checkpoint older than the one remembered may be another run's
	// doing: one that remembered a newer checkpoint between this run's
	// fetch and its reading of the memory. The log is asked once more
	// before that is said of it.
	raw, cp, prev, err := verifyAgainstMemory(ctx, f, c, v)
	if errors.Is(err, errStale) {
		raw, cp, prev, err = verifyAgainstMemory(ctx, f, c, v)
	}
	if err != nil {
		return err
	}
	if len(f.witnesses) > 0 {
		fmt.Fprintf(w, "checkpoint size %d is cosigned by %d of %d witnesses (%s)\n", cp.Size, len(f.cosignedBy), len(f.witnesses), shown(strings.Join(f.cosignedBy, ", ")))
		// The log chooses which cosigned checkpoint it serves: how old
		// each cosignature is tells one it kept serving from one it
		// should long have replaced.
		for i, name := range f.cosignedBy {
			fmt.Fprintf(w, "  %s cosigned it at %s\n", shown(name), f.cosignedAt[i].UTC().Format(time.RFC3339))
		}
	}
	if f.full {
		if err := verifyFull(ctx, c, cp); err != nil {
			return err
		}
		fmt.Fprintf(w, "all %d entries match the signed root\n", cp.Size)
	}
	// Said once it is so: a memory that cannot be written (or that
	// another run filled with a fork meanwhile) fails the run.
	if err := keepState(ctx, c, v, f.state, cp, raw); err != nil {
		return err
	}
	if prev == nil {
		fmt.Fprintf(w, "first checkpoint seen: size %d; remembered in %s\n", cp.Size, f.state)
	} else {
		fmt.Fprintf(w, "checkpoint size %d is consistent with the remembered size %d\n", cp.Size, prev.Size)
	}
	return nil
}

// errStale: the log served a checkpoint older than one this auditor
// remembers, and proved the two one history.
var errStale = errors.New("audit: the log did not show its latest entries")

// verifyAgainstMemory fetches the log's checkpoint and proves it one
// history with those this auditor remembers (its --state, and audit
// chain's memory of this log in --remember, read only), before anything
// else is said of the log. It returns the checkpoint (and its signed
// note) and the one --state held (nil when none).
func verifyAgainstMemory(ctx context.Context, f *auditFlags, c *client.Client, v note.Verifier) ([]byte, *log.Checkpoint, *log.Checkpoint, error) {
	var raw []byte
	var cp *log.Checkpoint
	var err error
	if len(f.witnesses) > 0 {
		raw, cp, f.cosignedBy, err = fetchWitnessed(ctx, f, c, v)
	} else {
		raw, cp, err = fetchCheckpoint(ctx, c, v)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	views := newLogViews()
	views.of(v, c)(cp, raw)
	if f.remember != "" {
		if err := views.recall(f.remember); err != nil {
			return nil, nil, nil, err
		}
	}
	prev, prevRaw, err := views.recallState(f.state, v, true)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := views.check(ctx); err != nil {
		if !errors.Is(err, errFork) {
			return nil, nil, nil, err // the proof could not be had (the server or the network failed): not evidence of a fork
		}
		// Evidence: the checkpoints that contradict each other.
		evidence := ""
		if prev != nil {
			evidence += fmt.Sprintf("\n--- remembered checkpoint (%s) ---\n%s", f.state, prevRaw)
		}
		if r, ok := views.recalled[logKey(v)]; ok {
			evidence += fmt.Sprintf("\n--- remembered checkpoint (%s) ---\n%s", views.file(logKey(v)), r.raw)
		}
		return nil, nil, nil, fmt.Errorf("%w%s\n--- served checkpoint ---\n%s", err, evidence, raw)
	}
	largest := prev
	if r, ok := views.recalled[logKey(v)]; ok && (largest == nil || r.cp.Size > largest.Size) {
		largest = r.cp
	}
	// The witnessed checkpoint may be older than one remembered from
	// the log itself: it is the latest the witnesses cosigned.
	if largest != nil && cp.Size < largest.Size && len(f.witnesses) == 0 {
		return nil, nil, nil, fmt.Errorf("%w: it served a checkpoint of size %d, older than the size %d this auditor remembers; "+
			"the two are consistent (not a fork): a stale answer (a cache), or entries withheld", errStale, cp.Size, largest.Size)
	}
	return raw, cp, prev, nil
}

// keepState writes the checkpoint cp (signed note raw) to file, audit
// verify's memory. Another run may have written there since this one
// read it: a larger checkpoint is kept, once proven consistent with cp;
// one of the same size must have cp's root, and a smaller one must be
// proven consistent with cp before cp replaces it (anything else is a
// fork, shown to two runs at once).
func keepState(ctx context.Context, c *client.Client, v note.Verifier, file string, cp *log.Checkpoint, raw []byte) error {
	nowRaw, err := readRemembered(file)
	if errors.Is(err, credfile.ErrNotPrivate) {
		return stateNotPrivate(err)
	}
	if err == nil {
		now, err := openCheckpoint(nowRaw, v)
		if err != nil {
			return fmt.Errorf("the checkpoint remembered in %s (--state): %w", file, err)
		}
		switch {
		case now.Size > cp.Size:
			if err := checkConsistent(ctx, c, cp, now); err != nil {
				return fmt.Errorf("%s, written by another run meanwhile: %w", file, err)
			}
			return nil
		case now.Size == cp.Size && !bytes.Equal(now.Hash, cp.Hash):
			return fmt.Errorf("%w: %s, written by another run meanwhile, has another root for size %d than this run was shown\n--- remembered checkpoint ---\n%s--- served checkpoint ---\n%s",
				errFork, file, cp.Size, nowRaw, raw)
		case now.Size < cp.Size:
			if err := checkConsistent(ctx, c, now, cp); err != nil {
				return fmt.Errorf("%s, written by another run meanwhile: %w", file, err)
			}
		}
	}
	return credfile.WriteFileAtomic(file, raw, 0o600)
}

// checkConsistent proves cur consistent with prev. Evidence against it
// wraps errFork; a failure to obtain the proof does not.
func checkConsistent(ctx context.Context, c *client.Client, prev, cur *log.Checkpoint) error {
	ans, err := c.AuditConsistency(ctx, prev.Size, cur.Size)
	if err != nil {
		if p, ok := errors.AsType[*client.Problem](err); ok && p.Name() == "invalid-tree-size" {
			// The log's own word that a size it signed is beyond it.
			return fmt.Errorf("%w: the log shrank: it signed a checkpoint of size %d, and now answers that it holds fewer entries (%v)", errFork, cur.Size, err)
		}
		return fmt.Errorf("fetch the consistency proof: %w", err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, prev.Size, cur.Size, ans.Proof, prev.Hash, cur.Hash); err != nil {
		return fmt.Errorf("%w: the log gives no proof that size %d (root %s) and size %d (root %s) are one history",
			errFork, prev.Size, base64.StdEncoding.EncodeToString(prev.Hash), cur.Size, base64.StdEncoding.EncodeToString(cur.Hash))
	}
	return nil
}

// verifyFull downloads every entry of the tree the checkpoint signs,
// recomputes the root from the entries alone (RFC 6962, with
// transparency-dev/merkle's compact ranges) and compares it. The entries
// are read 256 at a time, in the log's entry bundles (C2SP tlog-tiles,
// which auditors may read): one request per bundle, not per entry, so
// that a log of millions of entries is read in minutes. A bundle that
// cannot be had or read whole (a server without the tiles path, or one
// larger than the client reads) is read an entry at a time instead. On
// a mismatch, each entry is asked for with its inclusion proof to name
// the first one that fails.
func verifyFull(ctx context.Context, c *client.Client, cp *log.Checkpoint) error {
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r := rf.NewEmptyRange(0)
	for n := uint64(0); n*bundleWidth < cp.Size; n++ {
		w := min(bundleWidth, cp.Size-n*bundleWidth)
		entries, err := entryBundle(ctx, c, n, w)
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			if entries, err = entriesOneByOne(ctx, c, n*bundleWidth, w, cp.Size); err != nil {
				return err
			}
		}
		for _, e := range entries {
			if err := r.Append(rfc6962.DefaultHasher.HashLeaf(e), nil); err != nil {
				return err
			}
		}
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		return err
	}
	if cp.Size == 0 {
		root = rfc6962.DefaultHasher.EmptyRoot()
	}
	if bytes.Equal(root, cp.Hash) {
		return nil
	}
	firstBad, err := firstBadEntry(ctx, c, cp)
	if err != nil {
		// What was read contradicts the signed root whatever the server
		// answers now: said first, with why no entry could be named.
		return fmt.Errorf("audit: the entries do not hash to the signed root of size %d; the first bad entry could not be found: %w", cp.Size, err)
	}
	if firstBad < 0 {
		return fmt.Errorf("audit: the entry bundles do not hash to the signed root of size %d, though each entry asked for alone matches it: the log serves two versions of its entries", cp.Size)
	}
	return fmt.Errorf("audit: the entries do not hash to the signed root of size %d: first bad entry %d", cp.Size, firstBad)
}

// bundleWidth is the number of entries of a full entry bundle.
const bundleWidth = 1 << audit.TileHeight

// entryBundle fetches the entry bundle n of width w (w < bundleWidth: a
// partial one) and returns its entries, exactly w of them.
func entryBundle(ctx context.Context, c *client.Client, n, w uint64) ([][]byte, error) {
	path := audit.TilePath(tlog.Tile{H: audit.TileHeight, L: -1, N: int64(n), W: int(w)})
	b, err := c.GetRaw(ctx, "/"+path)
	if err != nil {
		return nil, err
	}
	entries, err := audit.ParseEntryBundle(b, int(w))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return entries, nil
}

// entriesOneByOne fetches the entries first to first+n-1 of the tree of
// size treeSize, a request each.
func entriesOneByOne(ctx context.Context, c *client.Client, first, n, treeSize uint64) ([][]byte, error) {
	entries := make([][]byte, 0, n)
	for i := first; i < first+n; i++ {
		e, _, err := entryOfTree(ctx, c, i, treeSize)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// firstBadEntry asks for every entry with its inclusion proof for the
// checkpoint and returns the index of the first whose proof fails (-1
// if none does).
func firstBadEntry(ctx context.Context, c *client.Client, cp *log.Checkpoint) (int64, error) {
	for i := range cp.Size {
		e, inclusion, err := entryOfTree(ctx, c, i, cp.Size)
		if err != nil {
			return 0, err
		}
		leaf := rfc6962.DefaultHasher.HashLeaf(e)
		if proof.VerifyInclusion(rfc6962.DefaultHasher, i, cp.Size, leaf, inclusion, cp.Hash) != nil {
			return int64(i), nil
		}
	}
	return -1, nil
}

// entryOfTree fetches entry i and its inclusion proof in the tree of
// size treeSize.
func entryOfTree(ctx context.Context, c *client.Client, i, treeSize uint64) ([]byte, [][]byte, error) {
	ans, err := c.AuditEntry(ctx, i, treeSize)
	if err != nil {
		return nil, nil, fmt.Errorf("entry %d: %w", i, err)
	}
	return ans.EntryB64, ans.InclusionProof, nil
}

// provenEntry is an entry with its inclusion proof, checked against a
// signed checkpoint.
type provenEntry struct {
	index      uint64
	entry      []byte
	proof      [][]byte
	checkpoint []byte
	cp         *log.Checkpoint
}

func (p *provenEntry) verify(v note.Verifier) error {
	cp, err := openCheckpoint(p.checkpoint, v)
	if err != nil {
		return err
	}
	p.cp = cp
	leaf := rfc6962.DefaultHasher.HashLeaf(p.entry)
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, p.index, cp.Size, leaf, p.proof, cp.Hash); err != nil {
		return fmt.Errorf("entry %d: inclusion proof does not verify against the signed checkpoint: %w", p.index, err)
	}
	return nil
}

func fetchProven(ctx context.Context, c *client.Client, v note.Verifier, idx string) (*provenEntry, error) {
	n, err := strconv.ParseUint(idx, 10, 64)
	if err != nil {
		return nil, usagef("INDEX must be an unsigned integer")
	}
	ans, err := c.AuditEntry(ctx, n, 0)
	if err != nil {
		return nil, err
	}
	if ans.Index != n {
		return nil, fmt.Errorf("asked for entry %d, the server answered entry %d", n, ans.Index)
	}
	p := &provenEntry{index: ans.Index, entry: ans.EntryB64, proof: ans.InclusionProof, checkpoint: []byte(ans.Checkpoint)}
	if err := p.verify(v); err != nil {
		return nil, err
	}
	if p.cp.Size != ans.TreeSize {
		return nil, fmt.Errorf("entry %d: proof for tree size %d, checkpoint for %d", ans.Index, ans.TreeSize, p.cp.Size)
	}
	return p, nil
}

// fetchRecalled fetches and proves the entry that args name (one index),
// then holds the checkpoint it was proven against to the history this
// auditor recalls of the log (mandate-audit.logs/): an entry of another
// history is refused.
func fetchRecalled(ctx context.Context, f *auditFlags, c *client.Client, v note.Verifier, args []string) (*provenEntry, error) {
	idx, err := oneArg(args, "the entry index")
	if err != nil {
		return nil, err
	}
	p, err := fetchProven(ctx, c, v, idx)
	if err != nil {
		return nil, err
	}
	views := newLogViews()
	views.of(v, c)(p.cp, p.checkpoint)
	if err := views.checkRecalled(ctx, f, v); err != nil {
		return nil, err
	}
	return p, nil
}

const tlogProofHeader = "c2sp.org/tlog-proof@v1"

// marshalProof writes p in the C2SP tlog-proof format, the entry's bytes
// as the "extra" data.
func (p *provenEntry) marshalProof() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\nextra %s\nindex %d\n", tlogProofHeader, base64.StdEncoding.EncodeToString(p.entry), p.index)
	for _, h := range p.proof {
		b.WriteString(base64.StdEncoding.EncodeToString(h) + "\n")
	}
	b.WriteString("\n")
	b.Write(p.checkpoint)
	return []byte(b.String())
}

// parseProof reads a tlog-proof written by marshalProof.
func parseProof(data []byte) (*provenEntry, error) {
	head, cp, ok := strings.Cut(string(data), "\n\n")
	if !ok {
		return nil, errors.New("proof: no blank line before the checkpoint")
	}
	lines := strings.Split(head, "\n")
	if len(lines) < 3 || lines[0] != tlogProofHeader {
		return nil, fmt.Errorf("proof: not a %s document", tlogProofHeader)
	}
	extra, ok := strings.CutPrefix(lines[1], "extra ")
	if !ok {
		return nil, errors.New("proof: no extra line (the entry)")
	}
	p := &provenEntry{checkpoint: []byte(cp)}
	var err error
	if p.entry, err = base64.StdEncoding.DecodeString(extra); err != nil {
		return nil, fmt.Errorf("proof: extra: %w", err)
	}
	idx, ok := strings.CutPrefix(lines[2], "index ")
	if !ok {
		return nil, errors.New("proof: no index line")
	}
	if p.index, err = strconv.ParseUint(idx, 10, 64); err == nil && strconv.FormatUint(p.index, 10) != idx {
		err = errors.New("not in canonical form (no leading zeroes)") // c2sp.org/tlog-proof
	}
	if err != nil {
		return nil, fmt.Errorf("proof: index: %w", err)
	}
	for _, l := range lines[3:] {
		h, err := base64.StdEncoding.DecodeString(l)
		if err != nil || len(h) != 32 {
			return nil, errors.New("proof: a proof line is not a base64 SHA-256 hash")
		}
		p.proof = append(p.proof, h)
	}
	return p, nil
}

func auditProve(ctx context.Context, f *auditFlags, c *client.Client, v note.Verifier, args []string, w io.Writer) error {
	// A proof against a checkpoint of another history than the one this
	// auditor holds the log to proves nothing: none is written.
	p, err := fetchRecalled(ctx, f, c, v, args)
	if err != nil {
		return err
	}
	if p.checkpoint, err = logSignedOnly(p.checkpoint, v); err != nil {
		return err
	}
	if f.out != "" {
		if err := credfile.WriteFileAtomic(f.out, p.marshalProof(), 0o644); err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "wrote %s: entry %d, proven in the log of size %d\n", f.out, p.index, p.cp.Size)
		return err
	}
	_, err = w.Write(p.marshalProof())
	return err
}

// logSignedOnly is the signed checkpoint raw (verified with v) with the
// signature lines of v's key only: those of other keys (whose names are
// anyone's, a terminal control or a bidirectional override among them)
// vouch for nothing a proof is checked with, and are not written. A
// checkpoint whose text is not printable lines is refused: a Mandate
// log writes none.
func logSignedOnly(raw []byte, v note.Verifier) ([]byte, error) {
	n, err := note.Open(raw, note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("checkpoint signature does not verify: %w", err)
	}
	if strings.IndexFunc(n.Text, func(r rune) bool { return r != '\n' && !strconv.IsPrint(r) }) >= 0 {
		return nil, fmt.Errorf("the log's checkpoint holds text that is not printable (%s): no proof written", strconv.Quote(n.Text))
	}
	out := []byte(n.Text + "\n")
	for _, sig := range n.Sigs {
		out = fmt.Appendf(out, "— %s %s\n", sig.Name, sig.Base64)
	}
	return out, nil
}

func auditCheckProof(_ context.Context, _ *auditFlags, _ *client.Client, v note.Verifier, args []string, w io.Writer) error {
	file, err := oneArg(args, "the proof file")
	if err != nil {
		return err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	p, err := parseProof(data)
	if err != nil {
		return err
	}
	if err := p.verify(v); err != nil {
		return err
	}
	if err := p.isAuditEntry(); err != nil {
		return err
	}
	// The entry as JSON, with what a terminal would act on (a C1 control,
	// a bidirectional override) escaped: a proof file is anyone's text.
	fmt.Fprintf(w, "entry %d is in the log of size %d (inclusion proof and checkpoint signature verified)\n%s\n", p.index, p.cp.Size, printableJSON(p.entry))
	return nil
}

// printEntry prints a verified entry, human-readable or as its JSON.
// Proven is not plain: a log may have logged any text, and its fields
// are printed as shown says.
func printEntry(w io.Writer, p *provenEntry, asJSON bool) error {
	if err := p.isAuditEntry(); err != nil {
		return err
	}
	if asJSON {
		// The logged bytes as they are, once they are JSON on one line
		// in UTF-8 (as every entry a log encodes is): a log's bytes that
		// are not would print lines of their own (a second "entry" in
		// JSON Lines) or terminal controls (ESC, or 0x9b, an 8-bit CSI,
		// which encoding/json takes inside a string).
		if !utf8.Valid(p.entry) || !json.Valid(p.entry) || bytes.IndexFunc(p.entry, func(r rune) bool { return r < 0x20 }) >= 0 {
			return fmt.Errorf("entry %d is not JSON on one line in UTF-8, as a log's entries are: not printed", p.index)
		}
		// A log's encoding escapes the ASCII controls, not the C1 ones
		// (U+0080 to U+009F, and DEL), which it writes as they were
		// logged (any party's words may hold them: a decision's input):
		// U+009B is CSI to a terminal that reads C1 controls in UTF-8.
		// They can only be in strings, where \u00XX is the same JSON.
		_, err := fmt.Fprintf(w, "%s\n", escapeC1(p.entry))
		return err
	}
	// Each field as the log holds it: numbers as written (1e400, a
	// 30-digit serial), never through a float64.
	var e map[string]json.RawMessage
	if err := json.Unmarshal(p.entry, &e); err != nil {
		return err
	}
	field := func(k string) string {
		var s string
		if json.Unmarshal(e[k], &s) != nil {
			return "-" // absent (the log's entries hold strings here)
		}
		return shownName(s)
	}
	fmt.Fprintf(w, "#%d %s %s actor=%s subject=%s\n", p.index, field("time"), field("type"), field("actor"), field("subject"))
	for _, k := range []string{"accountable", "decision_id", "policy_revision", "delegation_id", "details"} {
		if val, ok := e[k]; ok {
			dec := json.NewDecoder(bytes.NewReader(val))
			dec.UseNumber()
			var v any
			if err := dec.Decode(&v); err != nil {
				return err
			}
			b, err := json.Marshal(v) // compact, strings unescaped, numbers as written
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "    %s: %s\n", k, printableJSON(b))
		}
	}
	return nil
}

// escapeC1 is the JSON b with each C1 control and DEL written as a
// \u escape: the same JSON value, which no terminal acts on. b is
// returned as is when it holds none.
func escapeC1(b []byte) []byte {
	if bytes.IndexFunc(b, unicode.IsControl) < 0 {
		return b
	}
	out := make([]byte, 0, len(b)+32)
	for _, r := range string(b) {
		if unicode.IsControl(r) {
			out = fmt.Appendf(out, `\u%04x`, r)
			continue
		}
		out = utf8.AppendRune(out, r)
	}
	return out
}

// isAuditEntry refuses an entry whose bytes are not an audit entry as a
// log encodes them (audit.Decode: one encoding of each entry). Bytes
// that are JSON may still read one way here and another elsewhere (a key
// given twice, a key that differs only in case): printed, they would say
// one thing of an entry that search, chain or another reader takes for
// another.
func (p *provenEntry) isAuditEntry() error {
	if _, err := audit.Decode(p.entry); err != nil {
		return fmt.Errorf("entry %d is proven in the log, but is not an audit entry as a log encodes them (%w): not printed (audit prove %d writes its bytes)", p.index, err, p.index)
	}
	return nil
}

// printableJSON is JSON that json.Marshal wrote, with every character
// that is not printable (strconv.IsPrint: format characters such as
// bidirectional overrides or zero-width spaces, which json.Marshal
// writes as they are) escaped as \uXXXX: the same JSON, shown as it
// reads. Such characters only ever stand inside its strings.
func printableJSON(b []byte) string {
	var out strings.Builder
	for _, r := range string(b) {
		if strconv.IsPrint(r) {
			out.WriteRune(r)
			continue
		}
		if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
			fmt.Fprintf(&out, "\\u%04x\\u%04x", r1, r2)
		} else {
			fmt.Fprintf(&out, "\\u%04x", r)
		}
	}
	return out.String()
}

// shown is text an authority or a log sent (proven or not) as it may be
// printed: client.Printable, so that it can neither start a line of its
// own nor move the cursor or hide what follows.
func shown(s string) string { return client.Printable(s) }

// shownName is shown for a name (an id, a SPIFFE ID, a scope): quoted
// also when it holds a space, so that it cannot pass for more of the
// line than itself.
func shownName(s string) string {
	if strings.ContainsRune(s, ' ') {
		return strconv.Quote(s)
	}
	return shown(s)
}

func auditTail(ctx context.Context, f *auditFlags, c *client.Client, v note.Verifier, _ []string, w io.Writer) error {
	if f.n < 1 {
		return usagef("-n must be at least 1")
	}
	raw, cp, err := fetchCheckpoint(ctx, c, v)
	if err != nil {
		return err
	}
	views := newLogViews()
	seen := views.of(v, c)
	seen(cp, raw)
	from := uint64(0)
	if cp.Size > uint64(f.n) {
		from = cp.Size - uint64(f.n)
	}
	// At most n entries: proven, and their checkpoints proven one
	// history, before any is printed.
	var proven []*provenEntry
	for i := from; i < cp.Size; i++ {
		p, err := fetchProven(ctx, c, v, strconv.FormatUint(i, 10))
		if err != nil {
			return err
		}
		if p.cp.Size < cp.Size {
			return fmt.Errorf("entry %d proven against a checkpoint of size %d, older than the one just fetched (%d)", i, p.cp.Size, cp.Size)
		}
		if err := p.isAuditEntry(); err != nil {
			return err
		}
		seen(p.cp, p.checkpoint)
		proven = append(proven, p)
	}
	if err := views.checkRecalled(ctx, f, v); err != nil {
		return err
	}
	for _, p := range proven {
		if err := printEntry(w, p, f.asJSON); err != nil {
			return err
		}
	}
	return nil
}

func auditSearch(ctx context.Context, f *auditFlags, c *client.Client, v note.Verifier, _ []string, w io.Writer) error {
	if f.q.limit < 0 {
		return usagef("--limit must be 0 (all) or more")
	}
	// What every hit must match: the log's search is its word, the
	// entries it answers are checked.
	want := audit.Query{SPIFFEID: f.q.spiffeID, Type: f.q.typ, DecisionID: f.q.decision, DelegationID: f.q.delegation}
	for _, t := range []struct {
		flag, val string
		to        *time.Time
	}{{"since", f.q.since, &want.Since}, {"until", f.q.until, &want.Until}} {
		if t.val == "" {
			continue
		}
		var err error
		if *t.to, err = time.Parse(time.RFC3339Nano, t.val); err != nil {
			return usagef("--%s must be an RFC 3339 time", t.flag)
		}
	}
	// The zero time leaves an end of the search open: as --until, the
	// earliest time there is, it would select every entry, not none.
	if f.q.until != "" && want.Until.IsZero() {
		return usagef("--until %s selects no entry (leave it out to search without it)", f.q.until)
	}
	q := client.AuditQuery{SPIFFEID: want.SPIFFEID, Type: want.Type, DecisionID: want.DecisionID, DelegationID: want.DelegationID,
		Since: want.Since, Until: want.Until}
	if f.q.limit > 0 { // pages no larger than asked for
		q.Limit = min(f.q.limit, audit.MaxSearchLimit)
	}
	// Printed as found (a search may find more than fits in memory); the
	// checkpoints they were proven against are then proven one history,
	// or the search fails.
	printed := 0
	views := newLogViews()
	seen := views.of(v, c)
	if err := searchProven(ctx, c, v, q, seen, func(p *provenEntry) error {
		e, err := audit.Decode(p.entry)
		if err != nil {
			return fmt.Errorf("%w: the log's search found entry %d, which is not an audit entry: %v", errSearchOrder, p.index, err)
		}
		if !want.Matches(e) {
			return fmt.Errorf("%w: the log's search found entry %d, which does not match the search", errSearchOrder, p.index)
		}
		seen(p.cp, p.checkpoint)
		if err := printEntry(w, p, f.asJSON); err != nil {
			return err
		}
		if printed++; f.q.limit > 0 && printed >= f.q.limit {
			return errStopSearch
		}
		return nil
	}); err != nil {
		return err
	}
	if err := views.checkRecalled(ctx, f, v); err != nil {
		return fmt.Errorf("the entries printed above are not to be trusted: %w", err)
	}
	return nil
}

// errStopSearch, from searchProven's fn, ends the search without error.
var errStopSearch = errors.New("stop the search")

// errSearchOrder: a log's search answered out of log order, in a loop,
// with no end in sight, or (audit search) with an entry that does not
// match it.
var errSearchOrder = errors.New("audit search refused")

// searchProven calls fn with every entry a search of c's log (q, every
// page) finds, each proven against a checkpoint signed with v. A log's
// hits come in log order, page after page: an entry at or before one
// already found is refused, so a log cannot replay hits. A page token it
// gave since the last hit is refused, and so are more pages in a row
// without a hit than the log has entries (its size as a checkpoint
// signed with v says it; a log's search moves on at least one entry a
// page), so it cannot keep the search going round or on forever. The
// tokens are remembered by their SHA-256: a log that gives pages of
// megabytes of token cannot make the auditor hold them all. The
// checkpoint asked for its size is one the log showed, given to seen
// (when not nil) as those of the hits are to be, for the caller to prove
// them one history.
func searchProven(ctx context.Context, c *client.Client, v note.Verifier, q client.AuditQuery, seen seenFunc, fn func(*provenEntry) error) error {
	var last *uint64
	tokens := map[[sha256.Size]byte]bool{} // given since the last hit
	var empty, size uint64                 // pages in a row without a hit; the log's size, once asked
	for {
		page, err := c.SearchAudit(ctx, q)
		if err != nil {
			return err
		}
		for _, h := range page.Entries {
			if last != nil && h.Index <= *last {
				return fmt.Errorf("%w: the log's search found entry %d after entry %d (hits come in log order)", errSearchOrder, h.Index, *last)
			}
			p := &provenEntry{index: h.Index, entry: h.EntryB64, proof: h.InclusionProof, checkpoint: []byte(h.Checkpoint)}
			if err := p.verify(v); err != nil {
				return err
			}
			last = &h.Index
			if err := fn(p); errors.Is(err, errStopSearch) {
				return nil
			} else if err != nil {
				return err
			}
		}
		if page.NextPageToken == "" {
			return nil
		}
		if len(page.Entries) > 0 {
			clear(tokens)
			empty = 0
		} else if empty++; empty > size {
			// Ask how large the log is now (it may have grown).
			raw, cp, err := fetchCheckpoint(ctx, c, v)
			if err != nil {
				return err
			}
			if seen != nil {
				seen(cp, raw)
			}
			if size = cp.Size; empty > size {
				return fmt.Errorf("%w: the log's search gave %d pages in a row without a hit, more than the %d entries of the log", errSearchOrder, empty, size)
			}
		}
		sum := sha256.Sum256([]byte(page.NextPageToken))
		if tokens[sum] {
			return fmt.Errorf("%w: the log's search gave page token %.64q again", errSearchOrder, page.NextPageToken)
		}
		tokens[sum] = true
		q.PageToken = page.NextPageToken
	}
}

// checkDelegationID refuses a value given as a delegation id (what
// names it) that is not one, without repeating it: given in its place,
// the token itself (a bearer credential) would otherwise be sent in a
// URL, and shown again in the error of a call that found no authority.
func checkDelegationID(what, id string) error {
	if !delegation.ValidID(id) {
		return usagef("%s is the delegation's id (its token's jti: 1 to %d characters of A-Z a-z 0-9 . _ -), not the token", what, delegation.MaxIDLen)
	}
	return nil
}
