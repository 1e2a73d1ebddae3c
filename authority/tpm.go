package authority

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// openTPM builds the TPM verifier from the configuration.
func (a *Authority) openTPM() error {
	cfg, err := a.cfg.Attestation.TPM.Load()
	if err != nil {
		return err
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

// TPMChallenge starts a TPM attestation: it checks the EK (trusted by
// certificate or allowlist) and the AK (a restricted signing key fixed to
// its TPM), then stores and returns a challenge: a credential only that
// TPM can activate for that AK, a nonce, and the PCRs to quote.
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
		// not recorded, so that the audit log is no disk anyone can fill.
		a.log.InfoContext(ctx, "TPM challenge refused", "caller", caller, "err", err)
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
		if a.firstRefusal("ak:" + ek.SHA256Hex()) {
			a.refuseTPM(ctx, nodeID, err, map[string]any{"ek_sha256": ek.SHA256Hex(), "stage": "challenge"})
		}
		return nil, err
	}
	ch, err := a.tpm.NewChallenge(ek, ak, caller, a.now())
	if err != nil {
		return nil, err
	}
	err = a.store.Update(ctx, func(tx store.Tx) error {
		if n, err := registry.GetNode(tx, nodeID.String()); err == nil && n.Banned {
			return fmt.Errorf("%w: %s", registry.ErrBanned, nodeID)
		}
		return attest.PutTPMSession(tx, ch.Session, a.tpm.MaxOpenChallenges())
	})
	if err != nil {
		return nil, err
	}
	return ch, nil
}

// TPMVerify completes a TPM attestation. The evidence is checked outside
// any transaction; then one transaction uses the session up and, on
// success, records the node with its hardware facts and mints its node
// X509-SVID for the CSR's key (two answers to one challenge cannot both
// win). A failed answer uses the session up too. A renewal (or any
// attestation of a known node) whose PCRs no longer match an allowed
// profile marks the node drifted: it hosts no agent until an attestation
// matches again. Every outcome after the session is found is recorded in
// the audit log.
func (a *Authority) TPMVerify(ctx context.Context, c *Caller, sessionID string, ev attest.Evidence, csrPEM []byte) (*ca.X509SVID, error) {
	now := a.now()
	var s *attest.TPMSession
	err := a.store.View(ctx, func(tx store.Tx) error {
		var err error
		s, err = attest.GetTPMSession(tx, sessionID, now)
		return err
	})
	if err != nil {
		if s != nil && a.firstRefusal("tpm:"+s.ID) {
			a.refuseTPM(ctx, spiffeid.ID{}, err, map[string]any{"ek_sha256": s.EKHash, "session_id": s.ID, "stage": "verify"})
		} else {
			a.log.InfoContext(ctx, "TPM verify refused", "err", err)
		}
		return nil, err
	}
	nodeID := spiffeid.RequireFromSegments(a.td, "node", attest.MethodTPM, s.EKHash)
	details := map[string]any{"ek_sha256": s.EKHash, "ek_trust": s.EKTrust, "session_id": s.ID, "stage": "verify", "renewal": s.Caller != ""}
	res, err := a.checkTPMAnswer(c, s, nodeID, ev, csrPEM)
	if res != nil && res.QuoteDigest != "" {
		details["quote_sha256"] = res.QuoteDigest
	}
	if err != nil {
		drifted := errors.Is(err, attest.ErrPCRPolicy)
		if res != nil && len(res.PCRs) > 0 {
			details["pcrs_sha256"] = attest.SortedPCRs(res.PCRs)
		}
		if a.useUpTPMSession(ctx, s.ID, nodeID, drifted, err, now) {
			details["node_marked"] = "drifted"
		}
		a.refuseTPM(ctx, nodeID, err, details)
		return nil, err
	}
	svid, err := a.admitTPMNode(ctx, s.ID, nodeID, res.key, res.Result, now)
	if err != nil {
		if errors.Is(err, registry.ErrBanned) || errors.Is(err, attest.ErrChallengeUsed) {
			a.refuseTPM(ctx, nodeID, err, details)
		}
		return nil, err
	}
	details["profile"] = res.Profile
	details["level"] = registry.LevelHardware
	details["serial"] = svid.SerialNumber.Text(16)
	details["expires_at"] = svid.ExpiresAt.UTC()
	details["method"] = attest.MethodTPM
	if _, err := a.record(ctx, event{typ: "node.attested", actor: nodeID.String(), subject: nodeID.String(), details: details}); err != nil {
		return nil, err
	}
	a.log.InfoContext(ctx, "TPM node attested", "spiffe_id", nodeID.String(), "profile", res.Profile, "renewal", s.Caller != "")
	return svid, nil
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

// useUpTPMSession marks a session answered after a refused answer, and
// the node (if known) drifted if the refusal was its PCR policy. It
// reports whether a node was marked.
func (a *Authority) useUpTPMSession(ctx context.Context, id string, nodeID spiffeid.ID, drifted bool, why error, now time.Time) bool {
	reason := why.Error()
	if i := strings.Index(reason, "("); i > 0 {
		reason = "PCRs no longer match an allowed profile " + reason[i:]
	}
	marked := false
	err := a.store.Update(ctx, func(tx store.Tx) error {
		if _, err := attest.ConsumeTPMSession(tx, id, now); err != nil && !errors.Is(err, attest.ErrChallengeUsed) {
			return err
		}
		if !drifted {
			return nil
		}
		_, err := registry.MarkDrifted(tx, nodeID.String(), reason, now)
		if errors.Is(err, registry.ErrNotFound) {
			return nil
		}
		marked = err == nil
		return err
	})
	if err != nil {
		a.log.ErrorContext(ctx, "use up a TPM session", "session_id", id, "err", err)
		return false
	}
	if marked {
		a.hosting.invalidate()
		a.log.WarnContext(ctx, "node drifted: its agents get no more credentials", "spiffe_id", nodeID.String(), "reason", reason)
	}
	return marked
}

// admitTPMNode uses the session up, records the node's facts and mints
// its SVID in one transaction. A matching attestation clears an earlier
// drift; a ban stays.
func (a *Authority) admitTPMNode(ctx context.Context, sessionID string, nodeID spiffeid.ID, pub crypto.PublicKey, res *attest.Result, now time.Time) (*ca.X509SVID, error) {
	var svid *ca.X509SVID
	err := a.store.Update(ctx, func(tx store.Tx) error {
		if _, err := attest.ConsumeTPMSession(tx, sessionID, now); err != nil {
			return err
		}
		if n, err := registry.GetNode(tx, nodeID.String()); err == nil && n.Banned {
			return fmt.Errorf("%w: %s", registry.ErrBanned, nodeID)
		} else if err != nil && !errors.Is(err, registry.ErrNotFound) {
			return err
		}
		var err error
		svid, err = a.ca.MintX509SVID(ctx, ca.X509Params{ID: nodeID, PublicKey: pub})
		if err != nil {
			return err
		}
		return registry.PutNode(tx, &registry.Node{
			SPIFFEID: nodeID.String(), AttestationMethod: attest.MethodTPM, Level: registry.LevelHardware,
			Selectors: []string{"attestation:" + attest.MethodTPM, "level:" + registry.LevelHardware,
				"tpm:profile:" + res.Profile, "tpm:ek:" + res.EKHash},
			AttestedAt: now, SVIDSerial: svid.SerialNumber.Text(16), SVIDExpiresAt: svid.ExpiresAt,
			TPM: &registry.TPMFacts{EKSHA256: res.EKHash, EKTrust: res.EKTrust, Profile: res.Profile,
				QuoteSHA256: res.QuoteDigest, QuotedAt: now, PCRs: attest.SortedPCRs(res.PCRs)},
		})
	})
	if errors.Is(err, registry.ErrBanned) {
		// Refused, but the answer still uses the challenge up.
		_ = a.useUpTPMSession(ctx, sessionID, nodeID, false, err, now)
	}
	a.hosting.invalidate()
	return svid, err
}

// refuseTPM records a refused TPM attestation.
func (a *Authority) refuseTPM(ctx context.Context, nodeID spiffeid.ID, why error, details map[string]any) {
	a.log.InfoContext(ctx, "TPM attestation refused", "spiffe_id", nodeID.String(), "err", why)
	d := map[string]any{"method": attest.MethodTPM, "reason": why.Error()}
	for k, v := range details {
		d[k] = v
	}
	subject := ""
	if !nodeID.IsZero() {
		subject = nodeID.String()
	} else if h, ok := details["ek_sha256"].(string); ok {
		subject = spiffeid.RequireFromSegments(a.td, "node", attest.MethodTPM, h).String()
	}
	if _, err := a.record(ctx, event{typ: "node.attestation_refused", subject: subject, details: d}); err != nil {
		a.log.ErrorContext(ctx, "audit a refused TPM attestation", "err", err)
	}
}

func (a *Authority) pruneTPMSessions(ctx context.Context) {
	cutoff := a.now().Add(-time.Hour)
	err := a.store.Update(ctx, func(tx store.Tx) error {
		_, err := attest.PruneTPMSessions(tx, cutoff)
		return err
	})
	if err != nil {
		a.log.Error("prune TPM sessions", "err", err)
	}
}
