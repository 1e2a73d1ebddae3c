package authority

import (
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// openTPM builds the TPM verifier from the configuration, with the key
// that seals challenges into their session ids (see tpmSessionKey).
func (a *Authority) openTPM() error {
	cfg, err := a.cfg.Attestation.TPM.Load()
	if err != nil {
		return err
	}
	if v, err := attest.NewTPMVerifier(cfg); err == nil && v.Enabled() {
		if cfg.SessionKey, err = tpmSessionKey(a.cfg.DataDir); err != nil {
			return err
		}
	}
	a.tpm, err = attest.NewTPMVerifier(cfg)
	if err != nil {
		return fmt.Errorf("authority: %w", err)
	}
	if a.tpm.Enabled() {
		a.log.Info("TPM attestation enabled", "pcrs_sha256", a.tpm.Selection(), "allowed_profiles", cfg.Allowed,
			"ek_roots", len(cfg.EKRoots), "ek_allowlist", len(cfg.EKAllowlist))
	}
	return nil
}

// tpmSessionKeyPath is the file of the key that seals TPM challenges
// into their session ids.
func tpmSessionKeyPath(dataDir string) string { return filepath.Join(dataDir, "tpm", "session.key") }

// tpmSessionKey reads the key that seals TPM challenges, creating it
// (0600, in a directory only this user may write to) on first use. The
// store's lock is held: temporary files left in its directory by a
// crash are removed first. A session sealed with a lost key is unknown.
func tpmSessionKey(dataDir string) ([]byte, error) {
	path := tpmSessionKeyPath(dataDir)
	if err := credfile.PrivateDir(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("authority: TPM session key: %w", err)
	}
	if err := credfile.RemoveTemps(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("authority: %w", err)
	}
	key, err := credfile.ReadPrivate(path)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, attest.SessionKeySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("authority: TPM session key: %w", err)
		}
		err = credfile.CreateFileAtomic(path, key, 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("authority: TPM session key: %w", err)
	}
	if len(key) != attest.SessionKeySize {
		return nil, fmt.Errorf("authority: TPM session key %s is %d bytes, want %d (remove it: a new one is made, and open challenges are asked again)", path, len(key), attest.SessionKeySize)
	}
	return key, nil
}

// TPMChallenge starts a TPM attestation: it checks the EK (trusted by
// certificate or allowlist) and the AK (a restricted signing key fixed to
// its TPM), then returns a challenge: a credential only that TPM can
// activate for that AK, a nonce, and the PCRs to quote. Nothing is
// stored: the challenge's state is sealed into its session id, so asking
// challenges, in any name, takes nothing from anyone.
//
// A caller presenting a node SVID is renewing: the EK must be its own.
func (a *Authority) TPMChallenge(ctx context.Context, c *Caller, ekPublic, ekCert, akPublic []byte) (*attest.Challenge, error) {
	caller := ""
	if c != nil && a.RoleOf(c.ID) == RoleNode {
		caller = c.ID.String()
	}
	ek, err := a.tpm.CheckEK(ekPublic, ekCert)
	if err != nil {
		// Anyone can send any EK: refusals of untrusted keys are logged,
		// not recorded, so that the audit log is no disk anyone can fill;
		// an anonymous caller's at debug level only, as guesses at join
		// tokens, so that a flood of them does not bury the log.
		level := slog.LevelInfo
		if caller == "" {
			level = slog.LevelDebug
		}
		a.log.Log(ctx, level, "TPM challenge refused", "caller", caller, "err", err)
		return nil, err
	}
	nodeID, err := attest.NodeID(a.td, ek.TPMPublic)
	if err != nil {
		return nil, err
	}
	if caller != "" && caller != nodeID.String() {
		return nil, fmt.Errorf("%w: node %s renews with its own EK, not that of %s", ErrForbidden, caller, nodeID)
	}
	ak, err := attest.CheckAK(akPublic)
	if err != nil {
		a.recordUnprovenRefusal(ctx, nodeID, err, map[string]any{"ek_sha256": ek.SHA256Hex(), "stage": "challenge"})
		return nil, err
	}
	// A banned node, or one whose ID is revoked, gets no challenge: none
	// is made for it, nor for one whose record does not read.
	err = a.store.View(ctx, func(tx store.Tx) error {
		switch n, err := registry.GetNode(tx, nodeID.String()); {
		case err == nil && n.Banned:
			return fmt.Errorf("%w: %s", registry.ErrBanned, nodeID)
		case err != nil && !errors.Is(err, registry.ErrNotFound):
			return fmt.Errorf("authority: read node %s: %w", nodeID, err)
		}
		return notRevoked(tx, nodeID.String())
	})
	if err != nil {
		return nil, err
	}
	return a.tpm.NewChallenge(ek, ak, caller, a.now())
}

// TPMVerify completes a TPM attestation. The evidence is checked outside
// any transaction, and the node X509-SVID made for the CSR's key; then
// the commit that logs node.attested uses the session up and records the
// node with its hardware facts (two answers to one challenge cannot both
// win). A refused answer uses the session up only once its activated
// secret matched (the device proved its TPM): a refusal before that (an
// EK no longer trusted, another caller, a bad CSR, a wrong secret)
// writes nothing to the store, so that whoever knows a public EK cannot
// make the authority write, and the device can still answer. A renewal (or any
// attestation of a known node) whose PCRs no longer match an allowed
// profile marks the node drifted: it hosts no agent until an attestation
// matches again. Outcomes are recorded in the audit log: every success,
// every refusal that marks a node drifted, and other refusals at most
// once a minute per EK (see refusalRecordInterval), those after the
// device proved its TPM (the activated secret matched) counted apart
// from those anyone knowing a public EK could cause.
func (a *Authority) TPMVerify(ctx context.Context, c *Caller, sessionID string, ev attest.Evidence, csrPEM []byte) (*ca.X509SVID, error) {
	now := a.now()
	s, err := a.openTPMSession(ctx, sessionID, now)
	if err != nil {
		return nil, err
	}
	nodeID, details := a.tpmAnswerFacts(s)
	// The EK is trusted as configured now (a restart may have removed it
	// from the allowlist, or its maker from the roots).
	if err := a.tpm.CheckSessionTrust(s, now); err != nil {
		return nil, a.refuseTPMAnswer(ctx, s, nodeID, err, false, details, now)
	}
	res, err := a.checkTPMAnswer(c, s, nodeID, ev, csrPEM)
	if res != nil && res.QuoteDigest != "" {
		details["quote_sha256"] = res.QuoteDigest
	}
	if err != nil {
		if res != nil && len(res.PCRs) > 0 {
			details["pcrs_sha256"] = attest.HexPCRs(res.PCRs)
		}
		proven := res != nil && res.Result != nil && res.SecretMatched
		return nil, a.refuseTPMAnswer(ctx, s, nodeID, err, proven, details, now)
	}
	svid, err := a.admitTPMNode(ctx, s, nodeID, res.key, res.Result, now, details)
	if err != nil {
		if lost := errors.Is(err, attest.ErrChallengeUsed) || errors.Is(err, attest.ErrChallengeExpired) && !errors.Is(err, errDriftedSince); !lost {
			// Banned, drifted since the challenge, or the server failed:
			// the answer still uses the challenge up, and is recorded
			// (the device proved its TPM).
			if rerr := a.refuseTPMAnswer(ctx, s, nodeID, err, true, details, now); !errors.Is(rerr, err) {
				return nil, errors.Join(err, rerr)
			}
			return nil, err
		}
		a.log.InfoContext(ctx, "TPM answer lost to another", "session_id", s.ID, "err", err)
		return nil, err
	}
	a.log.InfoContext(ctx, "TPM node attested", "spiffe_id", nodeID.String(), "profile", res.Profile, "renewal", s.Caller != "")
	return svid, nil
}

// TPMAnswerUnreadable refuses an answer whose fields did not decode (bad
// base64, bad hex, a bank not asked): it proves nothing, so the session
// is not used up (the refusal is recorded as other unproven ones are).
// It returns why.
func (a *Authority) TPMAnswerUnreadable(ctx context.Context, sessionID string, why error) error {
	now := a.now()
	s, err := a.openTPMSession(ctx, sessionID, now)
	if errors.Is(err, attest.ErrTPMDisabled) {
		return err
	}
	if err != nil {
		return why
	}
	nodeID, details := a.tpmAnswerFacts(s)
	if err := a.refuseTPMAnswer(ctx, s, nodeID, why, false, details, now); !errors.Is(err, why) {
		return err
	}
	return why
}

// tpmAnswerFacts are the node of session s, and the details the records
// of an answer to it start with.
func (a *Authority) tpmAnswerFacts(s *attest.TPMSession) (spiffeid.ID, map[string]any) {
	return tpmNodeID(a.td, s),
		map[string]any{"ek_sha256": s.EKHash, "ek_trust": s.EKTrust, "session_id": s.ID, "stage": "verify", "renewal": s.Caller != ""}
}

// tpmNodeID is the node of session s's EK.
func tpmNodeID(td spiffeid.TrustDomain, s *attest.TPMSession) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "node", attest.MethodTPM, s.EKHash)
}

// openTPMSession opens a session id and checks that its challenge is
// neither used nor expired. A replayed or late answer is recorded
// (rate-limited per EK); an unknown session only logged.
func (a *Authority) openTPMSession(ctx context.Context, sessionID string, now time.Time) (*attest.TPMSession, error) {
	if !a.tpm.Enabled() {
		// A restart turned TPM attestation off: say so (its session key
		// is not even read, so the session would look unknown).
		return nil, fmt.Errorf("%w: the authority no longer attests TPMs (its operator sets attestation.tpm)", attest.ErrTPMDisabled)
	}
	s, err := a.tpm.OpenSession(sessionID, a.td)
	if err == nil {
		err = a.store.View(ctx, func(tx store.Tx) error { return attest.CheckTPMSession(tx, s, now) })
		if err == nil {
			return s, nil
		}
	}
	if s != nil {
		a.recordUnprovenRefusal(ctx, tpmNodeID(a.td, s), err,
			map[string]any{"ek_sha256": s.EKHash, "session_id": s.ID, "stage": "verify"})
	} else {
		// No session of this authority's: anyone can send these.
		a.log.DebugContext(ctx, "TPM answer refused", "err", err)
	}
	return nil, err
}

// refuseTPMAnswer records a refused answer and returns why. An answer
// that proved its TPM (proven: its activated secret matched) uses the
// session up, and the store's error is returned if it could not be; if
// its PCRs match no allowed profile it also marks a known node drifted
// (see refuseDrifted). An unproven answer writes nothing to the store:
// anyone knowing a public EK can send one, and the device may still
// answer its challenge. A proven answer's changes are made even if the
// request's context ends meanwhile.
func (a *Authority) refuseTPMAnswer(ctx context.Context, s *attest.TPMSession, nodeID spiffeid.ID, why error, proven bool, details map[string]any, now time.Time) error {
	if !proven {
		a.recordUnprovenRefusal(ctx, nodeID, why, details)
		return why
	}
	// What the device proved is written even if its client has hung up:
	// a drift stays marked, a refused answer stays used up.
	ctx = context.WithoutCancel(ctx)
	if errors.Is(why, attest.ErrPCRPolicy) {
		return a.refuseDrifted(ctx, s, nodeID, why, details, now)
	}
	if err := a.useUpTPMSession(ctx, s, now); err != nil {
		return err
	}
	a.recordProvenRefusal(ctx, nodeID, why, details)
	return why
}

// refuseDrifted refuses an answer whose PCRs no longer match an allowed
// profile. The commit that logs the refusal uses the session up and marks
// the node drifted if it is known (node_marked). If the refusal cannot be
// logged, the session is used up and the node marked all the same (fail
// closed: a node whose boot state left the allowed profiles hosts
// nothing), and the server log says that its entry is missing. A node
// evicted between the reading of its record and the commit is one no
// longer known: the refusal is made again as of one never admitted.
func (a *Authority) refuseDrifted(ctx context.Context, s *attest.TPMSession, nodeID spiffeid.ID, why error, details map[string]any, now time.Time) error {
	for range 3 { // a node evicted, attested again and evicted again meanwhile: rarer still
		if err := a.refuseDriftedOnce(ctx, s, nodeID, why, details, now); !errors.Is(err, errEvictedMeanwhile) {
			return err
		}
		delete(details, "node_marked")
	}
	// Refused all the same, for its PCRs: the node went and came back
	// three times as this was recorded.
	a.log.WarnContext(ctx, "TPM attestation refused, not recorded: the node was evicted each time its refusal was", "spiffe_id", nodeID.String(), "err", why)
	return why
}

// errEvictedMeanwhile is a node whose record refuseDriftedOnce read was
// removed (evicted) before its commit.
var errEvictedMeanwhile = errors.New("node evicted meanwhile")

func (a *Authority) refuseDriftedOnce(ctx context.Context, s *attest.TPMSession, nodeID spiffeid.ID, why error, details map[string]any, now time.Time) error {
	reason := why.Error()
	if i := strings.Index(reason, "("); i > 0 {
		reason = "PCRs no longer match an allowed profile " + reason[i:]
	}
	known, wasDrifted := false, false
	if err := a.store.View(ctx, func(tx store.Tx) error {
		n, err := registry.GetNode(tx, nodeID.String())
		if errors.Is(err, registry.ErrNotFound) {
			return nil
		}
		known = err == nil
		wasDrifted = known && n.Drifted
		return err
	}); err != nil {
		return fmt.Errorf("authority: read node %s: %w", nodeID, err)
	}
	// Marking a node drifted is a change of its state: always recorded.
	// The same refusal of a node already drifted, or of one never
	// admitted, changes nothing and is recorded as other proven
	// refusals are, at most once a minute per EK.
	//
	// A known node's mark is dated by this quote, recorded or not: an
	// answer to a challenge made before it (a quote of a good state kept
	// back while the device went back and forth) does not clear it.
	useUpAndMark := func(tx store.Tx) error {
		if err := useUpSession(tx, s, now); err != nil || !known {
			return err
		}
		_, err := registry.MarkDrifted(tx, nodeID.String(), reason, now)
		if errors.Is(err, registry.ErrNotFound) {
			return fmt.Errorf("%w: %s", errEvictedMeanwhile, nodeID)
		}
		return err
	}
	var taken refusalPending // the count this record carries, if limited
	if !known || wasDrifted {
		ok, p := a.allowRefusal(nodeID, true, why, details)
		if !ok {
			if err := a.store.Update(ctx, useUpAndMark); err != nil {
				return fmt.Errorf("authority: use up TPM session %s: %w", s.ID, err)
			}
			if known {
				a.nodeChanged(nodeID.String())
			}
			a.log.InfoContext(ctx, "TPM attestation refused (not recorded: rate limit)", "spiffe_id", nodeID.String(), "err", why)
			return why
		}
		taken = p
	}
	if known { // unless evicted meanwhile (errEvictedMeanwhile)
		details["node_marked"] = "drifted"
	}
	_, err := a.recordWith(ctx, tpmRefusal(nodeID, why, details), useUpAndMark)
	if errors.Is(err, errEvictedMeanwhile) {
		// Nothing recorded: the count this record carried is pending
		// again, and the refusal is made again.
		if taken.subject != "" {
			a.refusals.restore(taken)
		}
		return err
	}
	if err != nil {
		a.giveBack(taken, why)
		a.logNotRecorded(ctx, "audit a refused TPM attestation; the node is marked drifted without its entry", err, "spiffe_id", nodeID.String())
		if uerr := a.store.Update(context.WithoutCancel(ctx), useUpAndMark); uerr != nil {
			return fmt.Errorf("authority: use up TPM session %s: %w", s.ID, uerr)
		}
		if known {
			a.nodeChanged(nodeID.String())
		}
		return errors.Join(why, err)
	}
	a.log.InfoContext(ctx, "TPM attestation refused", "spiffe_id", nodeID.String(), "err", why)
	if known {
		a.nodeChanged(nodeID.String())
		a.log.WarnContext(ctx, "node drifted: its agents get no more credentials", "spiffe_id", nodeID.String(), "reason", reason)
	}
	return why
}

// refusalRecordInterval is how often a refusal that proves nothing about
// the device (a wrong secret, a replay, an unreadable answer) is recorded
// per EK. EK public areas are public, so anyone can cause these; between
// two records they are logged and counted, and the count is recorded
// once the interval ends (see flushTPMRefusals).
const refusalRecordInterval = time.Minute

// maxRefusalReasons bounds the distinct reasons a count of refusals not
// recorded lists; the others are counted under "other".
const maxRefusalReasons = 8

// recordUnprovenRefusal records a refusal at most once per interval per
// EK, with the refusals not recorded since the last one.
func (a *Authority) recordUnprovenRefusal(ctx context.Context, nodeID spiffeid.ID, why error, details map[string]any) {
	a.recordLimitedRefusal(ctx, nodeID, false, why, details)
}

// recordProvenRefusal records a refusal of a device that proved its TPM
// (its activated secret matched) at most once per interval per EK, as
// recordUnprovenRefusal does (counted apart from those): any TPM of a
// trusted maker could otherwise add an entry per attempt, without end.
// A refusal that changes a node's state (marks it drifted) is not
// limited: see refuseDrifted.
func (a *Authority) recordProvenRefusal(ctx context.Context, nodeID spiffeid.ID, why error, details map[string]any) {
	a.recordLimitedRefusal(ctx, nodeID, true, why, details)
}

// recordLimitedRefusal records a refusal of nodeID if the limiter of its
// kind (proven) allows it now, else logs and counts it. A record that
// fails gives its count (with itself) back to the limiter.
func (a *Authority) recordLimitedRefusal(ctx context.Context, nodeID spiffeid.ID, proven bool, why error, details map[string]any) {
	ok, taken := a.allowRefusal(nodeID, proven, why, details)
	if !ok {
		// Unproven refusals can be caused by anyone knowing a public EK,
		// as fast as they like: logged at debug level only (their count
		// is recorded once the interval ends).
		level := slog.LevelInfo
		if !proven {
			level = slog.LevelDebug
		}
		a.log.Log(ctx, level, "TPM attestation refused (not recorded: rate limit)", "spiffe_id", nodeID.String(), "err", why)
		return
	}
	a.log.InfoContext(ctx, "TPM attestation refused", "spiffe_id", nodeID.String(), "err", why)
	if _, err := a.record(ctx, tpmRefusal(nodeID, why, details)); err != nil {
		a.giveBack(taken, why)
		a.logNotRecorded(ctx, "audit a refused TPM attestation", err)
	}
}

// allowRefusal tells whether a refusal of nodeID is to be recorded now;
// if so, the refusals counted since the last record are added to details
// (refusals_not_recorded, refusal_reasons) and returned.
func (a *Authority) allowRefusal(nodeID spiffeid.ID, proven bool, why error, details map[string]any) (bool, refusalPending) {
	ok, pending := a.refusals.allow(nodeID.String(), proven, TPMRefusalType(why), a.now())
	if ok && pending.n > 0 {
		details["refusals_not_recorded"] = pending.n
		details["refusal_reasons"] = pending.reasonMap()
	}
	pending.subject, pending.proven = nodeID.String(), proven
	return ok, pending
}

// giveBack returns to the limiter the count a record that failed carried,
// with the refusal itself (why): counted, for the next count pass.
func (a *Authority) giveBack(taken refusalPending, why error) {
	if taken.subject == "" {
		return // not limited: nothing was taken
	}
	taken.add(TPMRefusalType(why))
	a.refusals.restore(taken)
}

// flushTPMRefusals records the refusals counted but not recorded whose
// interval has ended (all of them when final: at shutdown), one entry
// per node ID and kind, and one per kind for the refusals of node IDs the
// limiter had no room to track; it forgets node IDs with nothing pending
// whose interval has ended. The entries are appended together, so that
// the log commits them in a few group commits, not one each. A count
// that could not be recorded (ctx ended, the log failed) goes back to
// the limiter, for the next pass or the one at shutdown; one still not
// recorded at shutdown is logged. The maintain loop calls it every
// minute.
func (a *Authority) flushTPMRefusals(ctx context.Context, final bool) {
	due := a.refusals.due(a.now(), final)
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxFlushAppends)
	for _, p := range due {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			d := map[string]any{"method": attest.MethodTPM, "stage": "count", "reason": "refusals counted but not recorded",
				"refusals_not_recorded": p.n, "refusal_reasons": p.reasonMap(), "proven": p.proven}
			if p.subject == "" {
				d["untracked"] = true // node IDs beyond maxRefusedTokens, together
			}
			e, err := a.entryOf(event{typ: "node.attestation_refused", subject: p.subject, details: d})
			if err == nil && ctx.Err() == nil { // no change goes with it: the wait ends with ctx
				_, err = a.audit.AppendWith(ctx, e, nil)
			} else if err == nil {
				err = ctx.Err()
			}
			if err != nil {
				// An append whose wait ctx cut short may be in the log
				// anyway: counted again rather than lost.
				a.refusals.restore(p)
				if final {
					a.log.Error("audit TPM refusals not recorded", "subject", p.subject, "count", p.n, "err", err)
				}
			}
		}()
	}
	wg.Wait()
}

// maxFlushAppends bounds the count entries a flush appends at once.
const maxFlushAppends = 64

// refusalLimiter remembers, per node ID and kind (proven or not), when a
// refusal was last recorded and the refusals counted since. It tracks at
// most maxRefusedTokens keys: node IDs with nothing pending whose
// interval has ended are forgotten, and refusals of node IDs beyond the
// bound are counted together (overflow), never dropped.
type refusalLimiter struct {
	mu       sync.Mutex
	m        map[string]*refusalCount
	overflow [2]refusalCount // by kind: unproven, proven
	sweptAt  time.Time
}

type refusalCount struct {
	last time.Time // when a refusal was last recorded
	refusalPending
}

// refusalPending is a count of refusals of a node ID ("" for the
// overflow) not recorded, by reason (the problem type), at most
// maxRefusalReasons of them named.
type refusalPending struct {
	subject string
	proven  bool
	n       int
	reasons []reasonCount
	other   int
}

// take returns the count and clears it.
func (p *refusalPending) take() refusalPending {
	out := *p
	p.n, p.reasons, p.other = 0, nil, 0
	return out
}

type reasonCount struct {
	typ string
	n   int
}

func (p *refusalPending) add(typ string) {
	p.n++
	for i := range p.reasons {
		if p.reasons[i].typ == typ {
			p.reasons[i].n++
			return
		}
	}
	if len(p.reasons) < maxRefusalReasons {
		p.reasons = append(p.reasons, reasonCount{typ, 1})
		return
	}
	p.other++
}

func (p refusalPending) reasonMap() map[string]int {
	m := make(map[string]int, len(p.reasons)+1)
	for _, r := range p.reasons {
		m[r.typ] = r.n
	}
	if p.other > 0 {
		m["other"] += p.other // a reason of its own may be "other" too (TPMRefusalType)
	}
	return m
}

// merge adds q's counts to p's.
func (p *refusalPending) merge(q refusalPending) {
	p.n += q.n
	p.other += q.other
	for _, r := range q.reasons {
		i := slices.IndexFunc(p.reasons, func(x reasonCount) bool { return x.typ == r.typ })
		switch {
		case i >= 0:
			p.reasons[i].n += r.n
		case len(p.reasons) < maxRefusalReasons:
			p.reasons = append(p.reasons, r)
		default:
			p.other += r.n
		}
	}
}

func limiterKey(subject string, proven bool) string {
	if proven {
		return "proven " + subject
	}
	return subject
}

// allow tells whether a refusal (of type typ) of subject is to be
// recorded now: the first one of an interval is, with the count pending
// (returned, and cleared); the others are counted.
func (l *refusalLimiter) allow(subject string, proven bool, typ string, now time.Time) (bool, refusalPending) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]*refusalCount{}
	}
	key := limiterKey(subject, proven)
	c := l.m[key]
	if c == nil {
		if len(l.m) >= maxRefusedTokens && now.Sub(l.sweptAt) >= time.Second {
			l.sweep(now)
		}
		if len(l.m) >= maxRefusedTokens {
			l.overflowOf(proven).add(typ)
			return false, refusalPending{}
		}
		l.m[key] = &refusalCount{last: now, refusalPending: refusalPending{subject: subject, proven: proven}}
		return true, refusalPending{}
	}
	if now.Sub(c.last) < refusalRecordInterval {
		c.add(typ)
		return false, refusalPending{}
	}
	c.last = now
	return true, c.take()
}

// sweep forgets the keys with nothing pending whose interval has ended.
func (l *refusalLimiter) sweep(now time.Time) {
	l.sweptAt = now
	for k, c := range l.m {
		if c.n == 0 && !now.Before(c.last.Add(refusalRecordInterval)) {
			delete(l.m, k)
		}
	}
}

// overflowOf is the count of refusals of the kind proven of node IDs
// beyond the bound.
func (l *refusalLimiter) overflowOf(proven bool) *refusalCount {
	o := &l.overflow[0]
	if proven {
		o = &l.overflow[1]
	}
	o.proven = proven
	return o
}

// due returns the counts pending whose interval has ended (all, when
// final), and the overflow's, clearing them. A key's interval is left as
// it was: the next refusal after it is recorded in full, with its reason
// and evidence, as the first of an interval always is. Keys left with
// nothing pending whose interval has ended are forgotten.
func (l *refusalLimiter) due(now time.Time, final bool) []refusalPending {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []refusalPending
	for _, c := range l.m {
		if c.n > 0 && (final || !now.Before(c.last.Add(refusalRecordInterval))) {
			out = append(out, c.take())
		}
	}
	l.sweep(now)
	for _, proven := range []bool{false, true} {
		if o := l.overflowOf(proven); o.n > 0 {
			out = append(out, o.take())
		}
	}
	return out
}

// restore gives back a count due returned that could not be recorded: it
// is due again at the next pass.
func (l *refusalLimiter) restore(p refusalPending) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.subject != "" {
		if c := l.m[limiterKey(p.subject, p.proven)]; c != nil {
			c.merge(p)
			return
		}
		if l.m != nil && len(l.m) < maxRefusedTokens {
			c := &refusalCount{refusalPending: refusalPending{subject: p.subject, proven: p.proven}}
			c.merge(p)
			l.m[limiterKey(p.subject, p.proven)] = c
			return
		}
	}
	l.overflowOf(p.proven).merge(p) // its subject is no longer told apart, its count kept
}

// TPMRefusalType names the problem type of a TPM refusal (as the API
// answers it), or "other".
func TPMRefusalType(err error) string {
	for _, t := range tpmRefusalTypes {
		if errors.Is(err, t.err) {
			return t.typ
		}
	}
	return "other"
}

// tpmRefusalTypes are the problem types of TPM refusals, in the API's
// order of precedence.
var tpmRefusalTypes = []struct {
	err error
	typ string
}{
	{registry.ErrBanned, "node-banned"},
	{ErrIDRevoked, "spiffe-id-revoked"},
	{ErrForbidden, "forbidden"},
	{ca.ErrWeakKey, "weak-key"},
	{ca.ErrUnsupportedKey, "unsupported-key"},
	{ca.ErrInvalidCSR, "invalid-csr"},
	{ca.ErrCSRIdentity, "csr-identity-mismatch"},
	{attest.ErrTPMDisabled, "tpm-attestation-disabled"},
	{attest.ErrTPMMalformed, "tpm-malformed"},
	{attest.ErrEKUntrusted, "tpm-ek-untrusted"},
	{attest.ErrEKCertInvalid, "tpm-ek-cert-invalid"},
	{attest.ErrAKInvalid, "tpm-ak-invalid"},
	{attest.ErrChallengeUnknown, "tpm-challenge-unknown"},
	{attest.ErrChallengeUsed, "tpm-challenge-used"},
	{attest.ErrChallengeExpired, "tpm-challenge-expired"},
	{attest.ErrCredentialMismatch, "tpm-credential-mismatch"},
	{attest.ErrQuoteInvalid, "tpm-quote-invalid"},
	{attest.ErrQuoteSignature, "tpm-quote-signature-invalid"},
	{attest.ErrNonceMismatch, "tpm-nonce-mismatch"},
	{attest.ErrPCRSelection, "tpm-pcr-selection-mismatch"},
	{attest.ErrPCRDigest, "tpm-pcr-digest-mismatch"},
	{attest.ErrPCRPolicy, "tpm-pcr-policy-mismatch"},
}

// tpmAnswer is a checked answer: what it proved and the CSR's key.
type tpmAnswer struct {
	*attest.Result
	key crypto.PublicKey
}

// checkTPMAnswer checks who answers, the CSR and the evidence. It touches
// no state. The result is returned with an error too when the evidence
// got far enough to have a quote digest or PCR values.
func (a *Authority) checkTPMAnswer(c *Caller, s *attest.TPMSession, nodeID spiffeid.ID, ev attest.Evidence, csrPEM []byte) (*tpmAnswer, error) {
	if s.Caller != "" && (c == nil || c.ID.String() != s.Caller) {
		return nil, fmt.Errorf("%w: this challenge was issued to %s over mTLS; answer it with that SVID", ErrForbidden, s.Caller)
	}
	pub, err := ca.ParseCSR(csrPEM, nodeID)
	if err != nil {
		return nil, err
	}
	res, err := a.tpm.Verify(s, ev)
	return &tpmAnswer{Result: res, key: pub}, err
}

// useUpTPMSession marks a session answered after a refused answer that
// proved its TPM.
func (a *Authority) useUpTPMSession(ctx context.Context, s *attest.TPMSession, now time.Time) error {
	if err := a.store.Update(ctx, func(tx store.Tx) error { return useUpSession(tx, s, now) }); err != nil {
		return fmt.Errorf("authority: use up TPM session %s: %w", s.ID, err)
	}
	return nil
}

// useUpSession marks TPM session s answered in tx; one already used up or
// expired is left as it is.
func useUpSession(tx store.Tx, s *attest.TPMSession, now time.Time) error {
	err := attest.ConsumeTPMSession(tx, s, now)
	if errors.Is(err, attest.ErrChallengeUsed) || errors.Is(err, attest.ErrChallengeExpired) {
		return nil
	}
	return err
}

// admitTPMNode mints the node's SVID, then uses the session up and
// records the node's facts in the commit that logs node.attested (with
// details and the SVID's). A matching attestation clears an earlier
// drift; a ban stays.
func (a *Authority) admitTPMNode(ctx context.Context, s *attest.TPMSession, nodeID spiffeid.ID, pub crypto.PublicKey, res *attest.Result, now time.Time, details map[string]any) (*ca.X509SVID, error) {
	// The SVID is made first (its serial is in the entry); the session is
	// used up and the node stored in the commit that logs node.attested:
	// all durable together, or none. An answer that loses its session to
	// another, or a node banned meanwhile, fails that change only, and
	// this SVID is never handed out.
	svid, err := a.ca.MintX509SVID(ctx, ca.X509Params{ID: nodeID, PublicKey: pub})
	if err != nil {
		return nil, err
	}
	d := maps.Clone(details)
	d["profile"], d["level"], d["method"] = res.Profile, registry.LevelHardware, attest.MethodTPM
	d["serial"], d["expires_at"] = svid.SerialNumber.Text(16), svid.ExpiresAt.UTC()
	_, err = a.recordWith(ctx, event{typ: "node.attested", actor: nodeID.String(), subject: nodeID.String(), details: d}, func(tx store.Tx) error {
		// The challenge as it is at the commit, not at the request's
		// start: one that expired meanwhile is not used.
		if err := attest.ConsumeTPMSession(tx, s, a.now()); err != nil {
			return err
		}
		// Attested again: the SVID it held is the one replaced, unless
		// the node had drifted: every request made with that SVID was
		// refused since, and a copy taken from the device in its drifted
		// state gets nothing back with the recovery.
		prev, rec := "", &registry.Node{}
		if err := notRevoked(tx, nodeID.String()); err != nil {
			return err
		}
		if n, err := registry.GetNode(tx, nodeID.String()); err == nil && n.Banned {
			return fmt.Errorf("%w: %s", registry.ErrBanned, nodeID)
		} else if err != nil && !errors.Is(err, registry.ErrNotFound) {
			return err
		} else if err == nil && n.Drifted && !n.DriftedAt.Before(s.CreatedAt) {
			return fmt.Errorf("%w: %w (%s at %s, the challenge at %s): ask a new challenge",
				attest.ErrChallengeExpired, errDriftedSince, nodeID, n.DriftedAt.UTC().Format(time.RFC3339Nano), s.CreatedAt.UTC().Format(time.RFC3339Nano))
		} else if err == nil {
			rec.NewestSVIDAt = n.NewestSVID()
			if !n.Drifted {
				prev = n.SVIDSerial
			}
		}
		*rec = registry.Node{
			SPIFFEID: nodeID.String(), AttestationMethod: attest.MethodTPM, Level: registry.LevelHardware,
			Selectors: []string{"attestation:" + attest.MethodTPM, "level:" + registry.LevelHardware,
				"tpm:profile:" + res.Profile, "tpm:ek:" + res.EKHash},
			AttestedAt: now, SVIDSerial: svid.SerialNumber.Text(16), PrevSVIDSerial: prev, SVIDExpiresAt: svid.ExpiresAt,
			NewestSVIDAt: rec.NewestSVIDAt,
			TPM: &registry.TPMFacts{EKSHA256: res.EKHash, EKTrust: res.EKTrust, Profile: res.Profile,
				QuoteSHA256: res.QuoteDigest, QuotedAt: now, PCRs: attest.HexPCRs(res.PCRs)},
		}
		rec.IssuedSVIDAt(now)
		return registry.PutNode(tx, rec)
	})
	a.nodeChanged(nodeID.String())
	if err != nil {
		return nil, err
	}
	return svid, nil
}

// errDriftedSince marks (with attest.ErrChallengeExpired) an answer to a
// challenge made before its node was marked drifted: a quote of the
// state from before the drift, kept back, does not clear the mark.
var errDriftedSince = errors.New("a quote showed the node drifted after this challenge was made")

// maxTPMRefusalReason bounds the reason a TPM refusal's entry records.
const maxTPMRefusalReason = 1 << 10

// tpmRefusal is the node.attestation_refused event of a TPM answer
// refused for why. Its reason is cut to maxTPMRefusalReason bytes:
// anyone who knows a trusted EK can have a refusal recorded every
// minute, and the error may quote what was sent (a CSR's URI).
func tpmRefusal(nodeID spiffeid.ID, why error, details map[string]any) event {
	d := map[string]any{"method": attest.MethodTPM, "reason": clipTo(why.Error(), maxTPMRefusalReason)}
	maps.Copy(d, details)
	return event{typ: "node.attestation_refused", subject: nodeID.String(), details: d}
}

// pruneTPMSessions deletes the marks of answered challenges an hour
// after they expired (attest.UsedMarkRetention): an answer to one is then
// late, whatever it was.
func (a *Authority) pruneTPMSessions(ctx context.Context) {
	now := a.now()
	err := a.store.Update(ctx, func(tx store.Tx) error {
		_, err := attest.PruneTPMSessions(tx, now)
		return err
	})
	if err != nil && ctx.Err() == nil { // not merely stopping
		a.log.Error("prune TPM sessions", "err", err)
	}
}
