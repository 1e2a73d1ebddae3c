package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/registry"
)

// chainHop is one hop of GET /v1/audit/chains/{id}, and what the
// auditor proved of it.
type chainHop struct {
	authority.ChainHop

	verifiedBy     string // the log that proved it, once verified
	parentID       string // from the proven entry
	parentIss      string
	parentLink     *authority.LogLink
	purpose        string
	expiresAt      time.Time
	entryTime      time.Time
	signature      string                // the delegator's signature over the hop
	signerSVID     *authority.SVIDEntry  // where the SVID it signed with was logged
	signedBy       string                // once the signature and that entry are verified
	signerCert     string                // x5t#S256 of the certificate that signed, once verified
	host           string                // the node that hosted its delegator, from the proven entry
	delegateeHosts []string              // the nodes its delegatee may hold it on, from the proven entry
	boundTo        string                // the certificate the token is bound to, from the proven entry
	ancestors      []delegation.Ancestor // the hops above, as the proven entry names them

	// Revoked is the revocation of this hop, or of one above it, that a
	// proven delegation.revoked entry of its issuer's log (or of the
	// issuer above) records.
	Revoked *hopRevocation `json:"revoked,omitempty"`
}

// UnmarshalJSON reads a hop as an authority answers it. What the auditor
// proves of it (Revoked, the unexported fields) is never read from an
// answer: an authority cannot claim it.
func (h *chainHop) UnmarshalJSON(b []byte) error {
	*h = chainHop{}
	return json.Unmarshal(b, &h.ChainHop)
}

// hopRevocation is a revocation an auditor proved, as it bears on a hop.
type hopRevocation struct {
	Of        string    `json:"of"`              // the delegation id or SPIFFE ID revoked
	Above     string    `json:"above,omitempty"` // the hop above, revoked, that revokes this one
	Log       string    `json:"log"`             // whose log proved it
	Index     uint64    `json:"index"`           // the delegation.revoked entry
	RevokedAt time.Time `json:"revoked_at"`
	RevokedBy string    `json:"revoked_by"`
	Reason    string    `json:"reason"`
}

// logAccess is how an auditor reads one authority's log.
type logAccess struct {
	c *client.Client
	v note.Verifier
}

// auditChain is "mandate audit chain ID": the accountability chain of a
// delegation, every hop proven in its issuer's log (following the other
// authorities' logs with --peer), printed as a tree.
func auditChain(ctx context.Context, f *auditFlags, c *client.Client, v note.Verifier, args []string, w io.Writer) error {
	id, err := oneArg(args, "the delegation id")
	if err != nil {
		return err
	}
	// The id was checked with the flags (checkDelegationID).
	hops, err := fetchChain(ctx, c, "/v1/audit/chains/"+url.PathEscape(id))
	if err != nil {
		return err
	}
	peers, err := parsePeers(f.peers)
	if err != nil {
		return err
	}
	if len(hops) == 0 {
		return fmt.Errorf("the authority returned no hop for %s", id)
	}
	var unverified []string
	views := newLogViews()
	logs := map[string]logAccess{c.TrustDomain().IDString(): {c, v}}
	for i := range hops {
		h := &hops[i]
		switch {
		case h.Index != nil:
			if err := verifyHop(h, v, c.TrustDomain().IDString(), views.of(v, c)); err != nil {
				return err
			}
			if err := verifySigner(ctx, h, c, v, views.of(v, c), f.serialOnly); err != nil {
				return err
			}
			// A proven hop's log_url is where it was proven, not what
			// the answer said (--json).
			h.LogURL = chainURLAt(c.Server(), h.ID)
		case h.LogURL != "":
			pc, err := followHop(ctx, f, h, peers, views)
			if pc != nil {
				defer pc.c.CloseIdle()
				if _, ok := logs[h.Issuer]; !ok {
					logs[h.Issuer] = *pc
				}
			}
			if err != nil {
				if f.verify {
					return err
				}
				unverified = append(unverified, fmt.Sprintf("%s (%v)", h.ID, err))
			}
		default:
			unverified = append(unverified, h.ID+" (no log to ask)")
		}
	}
	if len(unverified) == 0 {
		if err := checkLinks(hops, id); err != nil {
			return err
		}
	}
	if err := findRevocations(ctx, hops, logs, views); err != nil {
		if f.verify {
			return err
		}
		unverified = append(unverified, err.Error())
	}
	// Every log showed one history: the checkpoints it proved hops
	// against are consistent with each other, and with the one this
	// auditor remembers from an earlier run.
	if err := views.checkRecalled(ctx, f, v); err != nil {
		return err
	}
	// What this run proved is printed even when it cannot be remembered.
	var kept []string
	var keepErr error
	if f.remember != "" {
		if kept, keepErr = views.keep(); errors.Is(keepErr, errFork) {
			return keepErr
		}
	}
	if f.asJSON {
		out := map[string]any{"hops": hops, "unverified": unverified}
		if len(kept) > 0 {
			out["remembered"] = kept
		}
		if keepErr != nil {
			out["not_remembered"] = keepErr.Error()
		}
		if err := printJSON(w, out); err != nil {
			return err
		}
	} else {
		printChain(w, hops)
		if len(kept) > 0 {
			fmt.Fprintf(w, "remembered in %s (a later run must prove these logs consistent with it): %s\n", f.remember, strings.Join(kept, ", "))
		}
		if keepErr != nil {
			fmt.Fprintf(w, "not remembered: %v\n", keepErr)
		}
	}
	if len(unverified) > 0 {
		if f.verify {
			return fmt.Errorf("not every hop is proven: %s", strings.Join(unverified, "; "))
		}
		fmt.Fprintf(w, "not proven: %s\n", shown(strings.Join(unverified, "; ")))
	}
	return nil
}

func fetchChain(ctx context.Context, c *client.Client, path string) ([]chainHop, error) {
	var answer json.RawMessage
	if err := c.Do(ctx, http.MethodGet, path, nil, &answer); err != nil {
		return nil, err
	}
	return readChainAnswer(answer)
}

// readChainAnswer reads a chain answer, from this authority or a peer's:
// at most delegation.MaxDepth hops, each well formed.
func readChainAnswer(answer []byte) ([]chainHop, error) {
	var ans struct {
		Hops []chainHop `json:"hops"`
	}
	if err := json.Unmarshal(answer, &ans); err != nil {
		return nil, fmt.Errorf("the authority's chain answer: %w", err)
	}
	// No chain is deeper than delegation.MaxDepth: a longer answer is
	// refused before any hop costs a request.
	if len(ans.Hops) > delegation.MaxDepth {
		return nil, fmt.Errorf("the authority's chain answer has %d hops; no chain has more than %d", len(ans.Hops), delegation.MaxDepth)
	}
	for i := range ans.Hops {
		if err := ans.Hops[i].wellFormed(); err != nil {
			return nil, fmt.Errorf("the authority's chain answer: %w", err)
		}
	}
	return ans.Hops, nil
}

// wellFormed refuses a hop whose names are not what an authority issues:
// a delegation id, an issuer spelled spiffe://<trust domain>, two SPIFFE
// IDs, a principal and scopes. The auditor names hops by these in what
// it prints and in its errors, proven or not: an answer that bends them
// (a line break, a terminal escape) is refused before any is shown.
func (h *chainHop) wellFormed() error {
	if !delegation.ValidID(h.ID) {
		return fmt.Errorf("a hop's id %s is not a delegation id", strconv.Quote(h.ID))
	}
	if td, err := spiffeid.TrustDomainFromString(h.Issuer); err != nil || td.IDString() != h.Issuer {
		return fmt.Errorf("hop %s: its issuer %s is not spiffe://<trust domain>", h.ID, strconv.Quote(h.Issuer))
	}
	for _, id := range []string{h.Delegator, h.Delegatee} {
		if _, err := spiffeid.FromString(id); err != nil {
			return fmt.Errorf("hop %s: %s is not a SPIFFE ID", h.ID, strconv.Quote(id))
		}
	}
	if err := delegation.CheckPrincipal(h.Principal); err != nil {
		return fmt.Errorf("hop %s: principal %s: %v", h.ID, strconv.Quote(h.Principal), err)
	}
	if len(h.Scopes) == 0 {
		return fmt.Errorf("hop %s: no scope", h.ID)
	}
	for _, sc := range h.Scopes {
		// Any length: another issuer's registrations may allow longer.
		if !registry.IsScope(sc) {
			return fmt.Errorf("hop %s: %s is not a scope", h.ID, strconv.Quote(sc))
		}
	}
	return nil
}

// verifyHop checks a hop's log entry: its inclusion proof against the
// checkpoint, the checkpoint's signature with the issuer's log key
// (seen, for the consistency of what the log shows), and that the entry
// is this hop's issuance, saying what the hop says, by a delegator of
// the issuer's own trust domain.
func verifyHop(h *chainHop, v note.Verifier, issuer string, seen seenFunc) error {
	if h.Issuer != issuer {
		return fmt.Errorf("hop %s: issued by %s, proven by %s's log", h.ID, h.Issuer, issuer)
	}
	p := &provenEntry{index: *h.Index, entry: h.EntryB64, proof: h.InclusionProof, checkpoint: []byte(h.Checkpoint)}
	if err := p.verify(v); err != nil {
		return fmt.Errorf("hop %s: %w", h.ID, err)
	}
	seen(p.cp, p.checkpoint)
	if h.TreeSize != p.cp.Size || h.LeafHash != hex.EncodeToString(rfc6962.DefaultHasher.HashLeaf(h.EntryB64)) {
		return fmt.Errorf("hop %s: its tree size or leaf hash is not the proven entry's", h.ID)
	}
	// The proven bytes, read as the log's canonical encoding.
	e, err := audit.Decode(h.EntryB64)
	if err != nil || e.DelegationID != h.ID {
		return fmt.Errorf("hop %s: the logged entry does not say what the chain says", h.ID)
	}
	d, err := authority.ReadIssued(e)
	if err != nil || d.Delegator != h.Delegator || d.Delegatee != h.Delegatee || d.Principal != h.Principal ||
		!slices.Equal(d.Scopes, h.Scopes) {
		return fmt.Errorf("hop %s: the logged entry does not say what the chain says", h.ID)
	}
	// An authority issues hops for its own agents only: a hop it logged
	// for another trust domain's agent is not that agent's act.
	if del, err := spiffeid.FromString(d.Delegator); err != nil || del.TrustDomain().IDString() != issuer {
		return fmt.Errorf("hop %s: logged by %s for a delegator of another trust domain, %s", h.ID, issuer, d.Delegator)
	}
	// What is printed and linked comes from the proven entry, not from
	// the server's account of it.
	h.Scopes, h.Depth, h.parentID, h.parentIss, h.parentLink = d.Scopes, d.Depth, d.ParentID, d.ParentIssuer, d.ParentLink
	h.purpose, h.expiresAt, h.entryTime, h.signature, h.signerSVID = d.Purpose, d.ExpiresAt, e.Time, d.Signature, d.SignerSVID
	h.host, h.delegateeHosts, h.boundTo, h.ancestors = d.DelegatorHost, d.DelegateeHosts, d.BoundTo, d.Ancestors
	if h.Decision, h.Accountability, err = d.ChainView(e); err != nil {
		return fmt.Errorf("hop %s: %w", h.ID, err)
	}
	// A hop is issued only on a decision that allowed it: one logged with
	// no decision, or with a deny, was issued against its policy.
	if e.DecisionID == "" || !d.Decision.Allow {
		return fmt.Errorf("hop %s: logged without a policy decision that allowed it (decision %q: %s)", h.ID, e.DecisionID, h.Decision.Result)
	}
	h.verifiedBy = issuer
	return nil
}

// verifySigner checks a proven hop's delegator signature: over the hop
// as its entry says it, by an X509-SVID of the delegator valid then,
// whose issuance is an svid.issued entry logged before the hop's in the
// same log (proven against a checkpoint signed with v, asked of c, the
// hop's issuer) for the delegator, with that certificate's serial and
// SHA-256. No CA roots are needed: the log vouches for the SVID.
//
// With serialOnly, an svid.issued entry without certificate_sha256 (as
// logged before Mandate recorded it) is accepted by serial alone, and
// the hop says so.
func verifySigner(ctx context.Context, h *chainHop, c *client.Client, v note.Verifier, seen seenFunc, serialOnly bool) error {
	if h.signature == "" || h.signerSVID == nil {
		return fmt.Errorf("hop %s: its entry has no delegator signature", h.ID)
	}
	st := delegation.Statement{Delegator: h.Delegator, Delegatee: h.Delegatee, Principal: h.Principal, Scopes: h.Scopes,
		Parent: h.parentID, ParentIssuer: h.parentIss, Purpose: h.purpose}
	cert, signed, err := delegation.CheckStatementSignedBy(h.signature, st, h.entryTime)
	if err != nil {
		return fmt.Errorf("hop %s: %w", h.ID, err)
	}
	// The hop lasts no longer than its delegator signed for, and is
	// bound as it signed.
	if signed.NotAfter != 0 && h.expiresAt.Unix() > signed.NotAfter {
		return fmt.Errorf("hop %s: logged as expiring at %s, after the not_after its delegator signed (%s)", h.ID,
			h.expiresAt.UTC().Format(time.RFC3339), time.Unix(signed.NotAfter, 0).UTC().Format(time.RFC3339))
	}
	if signed.Cnf != nil && h.boundTo != signed.Cnf.X5tS256 {
		return fmt.Errorf("hop %s: logged as bound to %q, not to the certificate its delegator signed for (%s)", h.ID, h.boundTo, signed.Cnf.X5tS256)
	}
	serial := cert.SerialNumber.Text(16)
	if serial != h.signerSVID.Serial {
		return fmt.Errorf("hop %s: signed with the SVID %s, its entry names %s", h.ID, serial, h.signerSVID.Serial)
	}
	if h.signerSVID.LogIndex >= *h.Index {
		return fmt.Errorf("hop %s: its delegator's SVID is logged at %d, not before the hop (%d)", h.ID, h.signerSVID.LogIndex, *h.Index)
	}
	p, err := fetchProven(ctx, c, v, strconv.FormatUint(h.signerSVID.LogIndex, 10))
	if err != nil {
		return fmt.Errorf("hop %s: the entry of its delegator's SVID: %w", h.ID, err)
	}
	seen(p.cp, p.checkpoint)
	// The proven bytes, read as the log's canonical encoding.
	e, err := audit.Decode(p.entry)
	if err != nil {
		return fmt.Errorf("hop %s: log entry %d: %w", h.ID, h.signerSVID.LogIndex, err)
	}
	var d struct {
		Kind   string `json:"kind"`
		Serial string `json:"serial"`
		SHA256 string `json:"certificate_sha256"`
	}
	sum, legacy := authority.CertificateSHA256(cert), ""
	if e.ReadDetails(&d) == nil && d.SHA256 == "" && e.Type == "svid.issued" && e.Subject == h.Delegator && d.Serial == serial {
		if !serialOnly {
			return fmt.Errorf("hop %s: log entry %d names the delegator's X509-SVID %s by serial only (an authority's entry from before it recorded certificate_sha256); --serial-only-svids accepts that, less strictly",
				h.ID, h.signerSVID.LogIndex, serial)
		}
		d.SHA256, legacy = sum, " (the entry names its serial only)"
	}
	if e.Type != "svid.issued" || e.Subject != h.Delegator || d.Kind != "x509" || d.Serial != serial || d.SHA256 != sum {
		return fmt.Errorf("hop %s: log entry %d does not record issuing the X509-SVID %s (SHA-256 %s) to %s",
			h.ID, h.signerSVID.LogIndex, serial, sum, h.Delegator)
	}
	h.signedBy = fmt.Sprintf("signed by the delegator's X509-SVID %s, issued in entry %d%s", serial, h.signerSVID.LogIndex, legacy)
	h.signerCert = delegation.Thumbprint(cert)
	return nil
}

// checkLinks checks that proven hops form one chain from the principal
// down to id: a root first, each next hop logged as the child of the one
// before (its id, its issuer, and the index and leaf hash of the entry
// proven for it), delegated by its delegatee, for the same principal, one
// level deeper, with no scope its parent lacks and no later expiry, and,
// below a hop bound to a certificate, signed with that certificate's key
// (as delegation.Verify holds a chain to it: only the holder continues a
// bound hop, whatever its issuer logs).
func checkLinks(hops []chainHop, id string) error {
	if last := hops[len(hops)-1]; last.ID != id {
		return fmt.Errorf("the chain ends at %s, not at %s", last.ID, id)
	}
	for i, h := range hops {
		if i == 0 {
			if h.Depth != 1 || h.parentID != "" {
				return fmt.Errorf("the chain does not start at a root hop (%s has depth %d, parent %q)", h.ID, h.Depth, h.parentID)
			}
			continue
		}
		p := hops[i-1]
		switch {
		case h.parentID != p.ID || h.parentIss != p.Issuer:
			return fmt.Errorf("hop %s is logged below %s of %s, not below %s of %s", h.ID, h.parentID, h.parentIss, p.ID, p.Issuer)
		case h.parentLink == nil || p.Index == nil || h.parentLink.LogIndex != *p.Index ||
			h.parentLink.LeafHash != hex.EncodeToString(rfc6962.DefaultHasher.HashLeaf(p.EntryB64)):
			return fmt.Errorf("hop %s does not point at the log entry proven for its parent %s", h.ID, p.ID)
		case h.Delegator != p.Delegatee:
			return fmt.Errorf("hop %s is delegated by %s, but %s was given to %s", h.ID, h.Delegator, p.ID, p.Delegatee)
		case h.Principal != p.Principal:
			return fmt.Errorf("hop %s acts for %q, its parent for %q", h.ID, h.Principal, p.Principal)
		case h.Depth != p.Depth+1 || h.Depth > delegation.MaxDepth:
			return fmt.Errorf("hop %s has depth %d below depth %d (at most %d)", h.ID, h.Depth, p.Depth, delegation.MaxDepth)
		case h.expiresAt.After(p.expiresAt):
			return fmt.Errorf("hop %s expires after its parent %s", h.ID, p.ID)
		case p.boundTo != "" && h.signerCert != p.boundTo:
			return fmt.Errorf("hop %s continues %s, bound to the certificate %s, but its delegator signed it with another (%s): not its holder", h.ID, p.ID, p.boundTo, h.signerCert)
		}
		for _, s := range h.Scopes {
			if !slices.Contains(p.Scopes, s) {
				return fmt.Errorf("hop %s has the scope %q, which its parent %s does not", h.ID, s, p.ID)
			}
		}
	}
	return nil
}

// logViews are the checkpoints each log (by its key: name and hash)
// showed during one run, and where to ask it for consistency proofs;
// with a memory (recall, keep), also the latest one it showed in an
// earlier run.
type logViews struct {
	seen      map[string][]*log.Checkpoint
	clients   map[string]*client.Client
	verifiers map[string]note.Verifier
	latest    map[string]signedCheckpoint // the largest checkpoint each log showed
	recalled  map[string]signedCheckpoint // the one remembered from an earlier run
	dir       string                      // where they are remembered ("": nowhere)
	stateOf   map[string]string           // audit verify's --state file read for a log
}

// signedCheckpoint is a checkpoint and the signed note it was read from.
type signedCheckpoint struct {
	cp  *log.Checkpoint
	raw []byte
}

// seenFunc records a checkpoint a log showed, verified, with the signed
// note it was read from.
type seenFunc func(cp *log.Checkpoint, raw []byte)

func newLogViews() *logViews {
	return &logViews{seen: map[string][]*log.Checkpoint{}, clients: map[string]*client.Client{}, verifiers: map[string]note.Verifier{},
		latest: map[string]signedCheckpoint{}, recalled: map[string]signedCheckpoint{}, stateOf: map[string]string{}}
}

// logKey names a log by its verifier key: its name and key hash.
func logKey(v note.Verifier) string { return fmt.Sprintf("%s+%08x", v.Name(), v.KeyHash()) }

// of records the checkpoints a log, verified with v and asked through c,
// shows.
func (lv *logViews) of(v note.Verifier, c *client.Client) seenFunc {
	key := logKey(v)
	return func(cp *log.Checkpoint, raw []byte) {
		lv.seen[key] = append(lv.seen[key], cp)
		lv.clients[key], lv.verifiers[key] = c, v
		if l, ok := lv.latest[key]; !ok || cp.Size > l.cp.Size {
			lv.latest[key] = signedCheckpoint{cp, raw}
		}
	}
}

// recall adds to the checkpoints of every log seen in this run the one
// an earlier run kept in dir (see keep), so that check proves this run's
// consistent with it.
//
// A memory another user could change is none: one of them could have
// put back an older checkpoint (validly signed), so that this run proves
// the logs consistent with less than this auditor saw. A directory, or a
// checkpoint file in it, that group or others may write to, or that
// another user owns, is refused (credfile.ErrNotPrivate), nothing read.
func (lv *logViews) recall(dir string) error {
	lv.dir = dir
	notPrivate := func(err error) error {
		return fmt.Errorf("--remember: %w; what it remembers is not read, as another user could have rolled it back (--remember \"\" remembers nothing)", err)
	}
	if fi, err := os.Stat(dir); err == nil {
		if err := credfile.CheckOwnWritable(dir, fi); err != nil {
			return notPrivate(err)
		}
	}
	for key, v := range lv.verifiers {
		file := lv.file(key)
		raw, err := readRemembered(file)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if errors.Is(err, credfile.ErrNotPrivate) {
			return notPrivate(err)
		}
		if err != nil {
			return fmt.Errorf("%w (--remember \"\" remembers nothing)", err)
		}
		cp, err := openCheckpoint(raw, v)
		if err != nil {
			return fmt.Errorf("the checkpoint remembered in %s: %w", file, err)
		}
		lv.recalled[key] = signedCheckpoint{cp, raw}
		lv.seen[key] = append(lv.seen[key], cp)
	}
	return nil
}

// readRemembered reads a checkpoint an earlier run kept in file (a
// --remember file, or --state): an error matching os.ErrNotExist if
// there is none, and credfile.ErrNotPrivate, nothing read, if group or
// others may write to it or another user owns it. A memory another user
// could change is none: one of them could have put back an older
// checkpoint (validly signed), so that this run proves the log
// consistent with less than this auditor saw.
func readRemembered(file string) ([]byte, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	if err := credfile.CheckOwnWritable(file, fi); err != nil {
		return nil, err
	}
	return os.ReadFile(file)
}

// stateNotPrivate is the refusal of a --state file others may write to.
func stateNotPrivate(err error) error {
	return fmt.Errorf("--state: %w; the checkpoint it remembers is not read, as another user could have rolled it back (--state \"\" reads none)", err)
}

// recallState adds to the checkpoints of the log verified with v, when
// this run saw it, the one audit verify keeps in file (its --state; ""
// or no such file: none), so that check proves this run's consistent with
// it too. It returns that checkpoint (nil when none). Unless strict (audit
// verify's own memory), a file holding another log's checkpoint (another
// origin: an auditor of several authorities in one directory) is passed
// over.
func (lv *logViews) recallState(file string, v note.Verifier, strict bool) (*log.Checkpoint, []byte, error) {
	key := logKey(v)
	if _, ok := lv.verifiers[key]; !ok || file == "" {
		return nil, nil, nil
	}
	raw, err := readRemembered(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if errors.Is(err, credfile.ErrNotPrivate) {
		return nil, nil, stateNotPrivate(err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w (--state \"\" reads none)", err)
	}
	if origin, _, _ := bytes.Cut(raw, []byte("\n")); !strict && string(origin) != v.Name() {
		return nil, nil, nil
	}
	cp, err := openCheckpoint(raw, v)
	if err != nil {
		return nil, nil, fmt.Errorf("the checkpoint remembered in %s (--state): %w", file, err)
	}
	lv.stateOf[key] = file
	lv.seen[key] = append(lv.seen[key], cp)
	return cp, raw, nil
}

// keep writes, in the directory recall read (made 0700 with its missing
// parents; refused, credfile.ErrNotPrivate, when group or others may
// write to it or another user owns it), the largest checkpoint each
// log showed in this run when that is larger than the one remembered
// (when recall read it, and again just before writing: another run may
// have written since; two runs that write at the same moment can still
// leave the smaller one), and says what it wrote ("ORIGIN at size N"). A
// checkpoint found there for the same size with another root is a fork
// (errFork). Call it once check passed.
func (lv *logViews) keep() ([]string, error) {
	var kept []string
	if lv.dir == "" {
		return nil, nil // recall was not asked: nothing is remembered
	}
	for key, l := range lv.latest {
		if r, had := lv.recalled[key]; had && l.cp.Size <= r.cp.Size {
			continue
		}
		file := lv.file(key)
		if raw, err := os.ReadFile(file); err == nil {
			if now, err := openCheckpoint(raw, lv.verifiers[key]); err == nil && now.Size >= l.cp.Size {
				if now.Size == l.cp.Size && !bytes.Equal(now.Hash, l.cp.Hash) {
					return kept, fmt.Errorf("%w: %s remembered in %s has another root for size %d than this run was shown", errFork, key, file, now.Size)
				}
				continue
			}
		}
		// Only this user's to change: others could remove or roll back
		// what it remembers. Made durable with the checkpoint.
		if err := credfile.PrivateDir(lv.dir); err != nil {
			return kept, err
		}
		if err := credfile.WriteFileAtomic(file, l.raw, 0o600); err != nil {
			return kept, err
		}
		kept = append(kept, fmt.Sprintf("%s at size %d", l.cp.Origin, l.cp.Size))
	}
	slices.Sort(kept)
	return kept, nil
}

// file is where the checkpoint of the log with key is remembered.
func (lv *logViews) file(key string) string { return filepath.Join(lv.dir, memoryFile(key)) }

// memoryFile is the file a log's checkpoint is remembered in, named
// after its key (name and hash), every character outside [A-Za-z0-9.-]
// replaced by _.
func memoryFile(key string) string {
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, key)
}

// checkRecalled is check, with what this auditor remembers recalled
// first: the checkpoints audit chain keeps in f.remember (when not ""),
// and the one audit verify keeps in f.state of the log verified with v
// (when not ""). Only recall, of f.remember, is remembered later by keep:
// show, tail, search and prove read both memories and write neither.
func (lv *logViews) checkRecalled(ctx context.Context, f *auditFlags, v note.Verifier) error {
	if f.remember != "" {
		if err := lv.recall(f.remember); err != nil {
			return err
		}
	}
	if _, _, err := lv.recallState(f.state, v, false); err != nil {
		return err
	}
	return lv.check(ctx)
}

// check proves, for every log, the checkpoints it showed consistent with
// each other and with the one remembered from an earlier run (one
// history: the same root for the same size, and a consistency proof
// between sizes); anything else is a fork.
func (lv *logViews) check(ctx context.Context) error {
	for name, cps := range lv.seen {
		slices.SortFunc(cps, func(a, b *log.Checkpoint) int { return cmp.Compare(a.Size, b.Size) })
		var memories []string
		if _, ok := lv.recalled[name]; ok {
			memories = append(memories, lv.file(name))
		}
		if file, ok := lv.stateOf[name]; ok {
			memories = append(memories, file)
		}
		where := name
		if len(memories) > 0 {
			where = fmt.Sprintf("%s (with the checkpoint remembered in %s)", name, strings.Join(memories, " and the one in "))
		}
		for i := 1; i < len(cps); i++ {
			prev, cur := cps[i-1], cps[i]
			if prev.Size == cur.Size {
				if !bytes.Equal(prev.Hash, cur.Hash) {
					return fmt.Errorf("%w: %s showed two roots for size %d", errFork, where, cur.Size)
				}
				continue
			}
			if err := checkConsistent(ctx, lv.clients[name], prev, cur); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
		}
	}
	return nil
}

// peer is what an auditor needs of another authority: where it answers,
// its bundle (to authenticate its server) and its log's verifier key.
type peer struct {
	url       string
	roots     string // PEM file of its X.509 roots
	rootCerts []*x509.Certificate
	vkey      note.Verifier
}

// givenVerifier is a log key given elsewhere than --vkey: a checkpoint
// it does not verify names where it was given (a --peer), not --vkey.
type givenVerifier struct {
	note.Verifier
	given string
}

// parsePeers reads --peer TD=URL,ROOTS_PEM,VKEY_FILE values.
func parsePeers(vals []string) (map[string]peer, error) {
	out := map[string]peer{}
	for _, v := range vals {
		td, rest, ok := strings.Cut(v, "=")
		parts := strings.Split(rest, ",")
		if !ok || len(parts) != 3 {
			return nil, usagef("--peer %q: want TRUST_DOMAIN=https://HOST:PORT,ROOTS.pem,LOG.vkey", v)
		}
		base, roots, vkeyFile := parts[0], parts[1], parts[2]
		if u, err := url.Parse(base); err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, usagef("--peer %q: %q is not an https URL", v, base)
		}
		t, err := spiffeid.TrustDomainFromString(td)
		if err != nil {
			return nil, usagef("--peer %q: %v", v, err)
		}
		b, err := os.ReadFile(vkeyFile)
		if err != nil {
			return nil, fmt.Errorf("--peer %s: %w", td, err)
		}
		vk, err := note.NewVerifier(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("--peer %s: verifier key: %w", td, err)
		}
		pem, err := os.ReadFile(roots)
		if err != nil {
			return nil, fmt.Errorf("--peer %s: its roots: %w", td, err)
		}
		certs, err := credfile.ParseCertsPEM(pem)
		if err != nil {
			return nil, fmt.Errorf("--peer %s: its roots, %s: %w", td, roots, err)
		}
		out[t.IDString()] = peer{url: strings.TrimRight(base, "/"), roots: roots, rootCerts: certs,
			vkey: givenVerifier{vk, "the LOG.vkey of --peer " + t.Name()}}
	}
	return out, nil
}

// chainURLAt is where the authority at base answers for the chain of
// delegation id: what its API gives as a hop's log_url.
func chainURLAt(base, id string) string {
	return strings.TrimRight(base, "/") + "/v1/audit/chains/" + url.PathEscape(id)
}

// followHop asks the hop's issuer for it (with this auditor's credential,
// which that authority must accept as an auditor's) and verifies it
// against that issuer's log. It returns how it read that log (nil if it
// could not connect), for the caller to close.
func followHop(ctx context.Context, f *auditFlags, h *chainHop, peers map[string]peer, views *logViews) (*logAccess, error) {
	p, ok := peers[h.Issuer]
	if !ok {
		return nil, fmt.Errorf("no --peer for %s (give --peer %s=https://HOST:PORT,ROOTS.pem,LOG.vkey: its address, its trust bundle and its log's key)", h.Issuer, strings.TrimPrefix(h.Issuer, "spiffe://"))
	}
	// The auditor's credential goes only where --peer says the issuer is,
	// whatever log_url the first authority gave.
	chain, key, _, err := credfile.Load(credfile.In(f.cf.creds))
	if err != nil {
		return nil, err
	}
	td, _ := spiffeid.TrustDomainFromString(h.Issuer)
	c, err := client.New(client.Config{Server: p.url, TrustDomain: td, Bundle: p.rootCerts, SVID: chain, Key: key, BundleFrom: p.roots, SVIDFrom: f.cf.creds})
	if err != nil {
		return nil, fmt.Errorf("--peer %s: %w", td.Name(), err)
	}
	acc := &logAccess{c, p.vkey}
	theirs, err := fetchChain(ctx, c, "/v1/audit/chains/"+url.PathEscape(h.ID))
	if err != nil {
		return acc, fmt.Errorf("asking %s: %w", h.Issuer, err)
	}
	for i := range theirs {
		t := &theirs[i]
		if t.ID != h.ID {
			continue
		}
		if t.Index == nil {
			return acc, errors.New("its issuer has no log entry for it")
		}
		if t.Delegator != h.Delegator || t.Delegatee != h.Delegatee || t.Principal != h.Principal {
			return acc, errors.New("its issuer's log says another hop than the token did")
		}
		if err := verifyHop(t, p.vkey, h.Issuer, views.of(p.vkey, c)); err != nil {
			return acc, err
		}
		if err := verifySigner(ctx, t, c, p.vkey, views.of(p.vkey, c), f.serialOnly); err != nil {
			return acc, err
		}
		*h = *t
		h.LogURL = chainURLAt(p.url, h.ID) // proven there, whatever the answer said
		return acc, nil
	}
	return acc, errors.New("its issuer does not return it")
}

// maxRevocationEntries bounds the delegation.revoked entries an auditor
// reads for one hop or party.
const maxRevocationEntries = 1000

// findRevocations looks, in the log of each proven hop's issuer, for
// delegation.revoked entries that revoke it: of the hop itself, or of a
// SPIFFE ID that is its party there (its delegator, its delegatee, its
// delegator's host, or the delegator or delegatee of a hop above, as its
// proven entry names them). Each
// entry found is proven like the hops (views keeps its checkpoint); the
// earliest is the hop's, and a hop below a revoked one is revoked with
// it. A log's search is its authority's word: an entry it leaves out is
// not found (only a revocation is proven, never its absence). A hop whose
// log fails to answer, or answers what it cannot prove, does not keep
// the others from being looked up: the error names every such hop.
func findRevocations(ctx context.Context, hops []chainHop, logs map[string]logAccess, views *logViews) error {
	var errs []error
	for k := range hops {
		h := &hops[k]
		acc, ok := logs[h.Issuer]
		if h.verifiedBy == "" || !ok {
			continue
		}
		if err := findHopRevocation(ctx, hops, k, acc, views); err != nil {
			errs = append(errs, fmt.Errorf("hop %s: revocations in %s's log: %w", h.ID, h.Issuer, err))
		}
	}
	inheritRevocations(hops)
	return errors.Join(errs...)
}

// findHopRevocation looks for the revocations of hops[k] in its issuer's
// log (acc), within a minute.
func findHopRevocation(ctx context.Context, hops []chainHop, k int, acc logAccess, views *logViews) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	h := &hops[k]
	// The search parameter and the value each lookup asks for.
	asks := [][2]string{{"delegation_id", h.ID}}
	var parties []string
	for _, p := range append([]string{h.Delegator, h.Delegatee, h.host}, h.delegateeHosts...) {
		parties = appendNew(parties, p)
	}
	// The parties above as the hop's proven entry names them (as its
	// issuer holds the hop to them); for an entry that names none (logged
	// before it did), those of the proven hops above: an unproven hop's
	// are only the chain answer's word (without --verify, where it is
	// printed).
	for _, an := range h.ancestors {
		parties = appendNew(appendNew(parties, an.Delegator), an.Delegatee)
	}
	if len(h.ancestors) == 0 {
		for _, above := range hops[:k] {
			if above.verifiedBy != "" {
				parties = appendNew(appendNew(parties, above.Delegator), above.Delegatee)
			}
		}
	}
	for _, p := range parties {
		asks = append(asks, [2]string{"spiffe_id", p})
	}
	seen := views.of(acc.v, acc.c)
	for _, ask := range asks {
		q, asked, n := client.AuditQuery{Type: "delegation.revoked"}, ask[1], 0
		if ask[0] == "spiffe_id" {
			q.SPIFFEID = asked
		} else {
			q.DelegationID = asked
		}
		err := searchProven(ctx, acc.c, acc.v, q, seen, func(p *provenEntry) error {
			if n++; n > maxRevocationEntries {
				return fmt.Errorf("more than %d delegation.revoked entries", maxRevocationEntries)
			}
			seen(p.cp, p.checkpoint)
			e, err := audit.Decode(p.entry)
			if err != nil {
				return fmt.Errorf("log entry %d: %w", p.index, err)
			}
			d, err := authority.ReadRevoked(e)
			if err != nil {
				return fmt.Errorf("log entry %d: %w", p.index, err)
			}
			of := d.DelegationID
			if of == "" {
				of = d.SPIFFEID
			}
			if of != asked {
				return nil // an entry that names it otherwise (as who revoked, say)
			}
			if h.Revoked == nil || e.Time.Before(h.Revoked.RevokedAt) {
				h.Revoked = &hopRevocation{Of: of, Log: h.Issuer, Index: p.index, RevokedAt: e.Time, RevokedBy: e.Actor, Reason: d.Reason}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// inheritRevocations revokes what is below a revoked hop with it, unless
// it was revoked earlier on its own.
func inheritRevocations(hops []chainHop) {
	for k := 1; k < len(hops); k++ {
		if above := hops[k-1].Revoked; above != nil && (hops[k].Revoked == nil || above.RevokedAt.Before(hops[k].Revoked.RevokedAt)) {
			r := *above
			if r.Above == "" {
				r.Above = hops[k-1].ID
			}
			hops[k].Revoked = &r
		}
	}
}

// appendNew appends s to list unless it is empty or there already.
func appendNew(list []string, s string) []string {
	if s == "" || slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// printChain prints the chain as a tree, root first.
func printChain(w io.Writer, hops []chainHop) {
	if len(hops) == 0 {
		return
	}
	fmt.Fprintf(w, "on behalf of %s\n", shown(hops[0].Principal))
	for i, h := range hops {
		indent := strings.Repeat("   ", i)
		proof := "NOT PROVEN"
		if h.verifiedBy != "" {
			proof = fmt.Sprintf("proven in %s's log, entry %d", shownName(strings.TrimPrefix(h.verifiedBy, "spiffe://")), *h.Index)
		}
		scopes := make([]string, len(h.Scopes))
		for j, sc := range h.Scopes {
			scopes[j] = shownName(sc)
		}
		fmt.Fprintf(w, "%s└─ %s → %s  [%s]\n", indent, shownName(h.Delegator), shownName(h.Delegatee), strings.Join(scopes, " "))
		fmt.Fprintf(w, "%s   delegation %s, issued by %s; %s\n", indent, shownName(h.ID), shownName(strings.TrimPrefix(h.Issuer, "spiffe://")), proof)
		if h.purpose != "" {
			// From the proven entry, as its delegator signed it (verifySigner).
			fmt.Fprintf(w, "%s   purpose: %s\n", indent, shown(h.purpose))
		}
		if h.signedBy != "" {
			fmt.Fprintf(w, "%s   %s\n", indent, shown(h.signedBy))
		}
		if r := h.Revoked; r != nil {
			of := r.Of
			switch {
			case r.Above != "":
				of = "with the hop above, " + r.Above
			case r.Of == h.ID:
				of = "this hop"
			}
			if !h.expiresAt.IsZero() && !r.RevokedAt.Before(h.expiresAt) {
				of += ", after it expired"
			}
			fmt.Fprintf(w, "%s   REVOKED at %s by %s: %q (%s; %s's log, entry %d)\n", indent, r.RevokedAt.UTC().Format(time.RFC3339),
				shownName(r.RevokedBy), r.Reason, shown(of), shownName(strings.TrimPrefix(r.Log, "spiffe://")), r.Index)
		}
		if d := h.Decision; d != nil {
			fmt.Fprintf(w, "%s   decision %s: %s (policy revision %s)\n", indent, shownName(d.ID), shownName(d.Result), shownName(fmt.Sprintf("%.12s", d.PolicyRevision)))
		}
		for _, role := range []string{"delegator", "delegatee"} {
			if a := h.Accountability[role]; a != nil {
				field := func(k string) string { // - for a field the registration left blank, "-" for one that says -
					switch v, _ := a[k].(string); v {
					case "":
						return "-"
					case "-":
						return `"-"`
					default:
						return shown(v)
					}
				}
				model := field("model_provider") + "/" + field("model")
				if model == "-/-" {
					model = "-"
				}
				fmt.Fprintf(w, "%s   %s accountable: operator %s, model %s, responsible %s\n", indent, role, field("operator"), model, field("responsible_party"))
			}
		}
	}
}
