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
		a.refuseTPM(ctx, nodeID, "ak:"+ek.SHA256Hex(), err, map[string]any{"ek_sha256": ek.SHA256Hex(), "stage": "challenge"})
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

// TPMVerify completes a TPM attestation: the session is used up first
// (right or wrong, an answer is accepted once), then the evidence is
// checked; on success the node is recorded with its hardware facts and
// gets a node X509-SVID for the CSR's key. A renewal whose PCRs no longer
// match an allowed profile marks the node drifted: it hosts no agent
// until an attestation matches again. Every outcome after the session is
// found is recorded in the audit log.
func (a *Authority) TPMVerify(ctx context.Context, c *Caller, sessionID string, ev attest.Evidence, csrPEM []byte) (*ca.X509SVID, error) {
	now := a.now()
	var s *attest.TPMSession
	err := a.store.Update(ctx, func(tx store.Tx) error {
		var err error
		s, err = attest.ConsumeTPMSession(tx, sessionID, now)
		return err
	})
	if err != nil {
		if s != nil && a.firstRefusal("tpm:"+s.ID) {
			a.refuseTPM(ctx, spiffeid.ID{}, "", err, map[string]any{"ek_sha256": s.EKHash, "session_id": s.ID, "stage": "verify"})
		} else {
			a.log.InfoContext(ctx, "TPM verify refused", "err", err)
		}
		return nil, err
	}
	nodeID := spiffeid.RequireFromSegments(a.td, "node", attest.MethodTPM, s.EKHash)
	details := map[string]any{"ek_sha256": s.EKHash, "ek_trust": s.EKTrust, "session_id": s.ID, "stage": "verify", "renewal": s.Caller != ""}
	if s.Caller != "" && (c == nil || c.ID.String() != s.Caller) {
		err := fmt.Errorf("%w: this challenge was issued to %s over mTLS; answer it with that SVID", ErrForbidden, s.Caller)
		a.refuseTPM(ctx, nodeID, "", err, details)
		return nil, err
	}
	pub, err := ca.ParseCSR(csrPEM, nodeID)
	if err != nil {
		a.refuseTPM(ctx, nodeID, "", err, details)
		return nil, err
	}
	res, err := a.tpm.Verify(s, ev)
	details["quote_sha256"] = res.QuoteDigest
	if err != nil {
		if len(res.PCRs) > 0 {
			details["pcrs_sha256"] = attest.SortedPCRs(res.PCRs)
		}
		if errors.Is(err, attest.ErrPCRPolicy) {
			// The device proved it is this TPM; its measured state moved.
			a.markDrifted(ctx, nodeID, err, now, details)
		}
		a.refuseTPM(ctx, nodeID, "", err, details)
		return nil, err
	}
	svid, err := a.admitTPMNode(ctx, nodeID, pub, res, now)
	if err != nil {
		if errors.Is(err, registry.ErrBanned) {
			a.refuseTPM(ctx, nodeID, "", err, details)
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

// admitTPMNode records the node's facts and mints its SVID in one
// transaction. A matching attestation clears an earlier drift; a ban
// stays.
func (a *Authority) admitTPMNode(ctx context.Context, nodeID spiffeid.ID, pub crypto.PublicKey, res *attest.Result, now time.Time) (*ca.X509SVID, error) {
	var svid *ca.X509SVID
	err := a.store.Update(ctx, func(tx store.Tx) error {
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
	a.hosting.invalidate()
	return svid, err
}

// markDrifted flags a known node whose quote no longer matches policy.
func (a *Authority) markDrifted(ctx context.Context, nodeID spiffeid.ID, why error, now time.Time, details map[string]any) {
	reason := why.Error()
	if i := strings.Index(reason, "("); i > 0 {
		reason = "PCRs no longer match an allowed profile " + reason[i:]
	}
	err := a.store.Update(ctx, func(tx store.Tx) error {
		_, err := registry.MarkDrifted(tx, nodeID.String(), reason, now)
		return err
	})
	a.hosting.invalidate()
	switch {
	case err == nil:
		details["node_marked"] = "drifted"
		a.log.WarnContext(ctx, "node drifted: its agents get no more credentials", "spiffe_id", nodeID.String(), "reason", reason)
	case errors.Is(err, registry.ErrNotFound):
	default:
		a.log.ErrorContext(ctx, "mark node drifted", "spiffe_id", nodeID.String(), "err", err)
	}
}

// refuseTPM records a refused TPM attestation. With a non-empty once key,
// only the first refusal under that key since start is recorded.
func (a *Authority) refuseTPM(ctx context.Context, nodeID spiffeid.ID, once string, why error, details map[string]any) {
	a.log.InfoContext(ctx, "TPM attestation refused", "spiffe_id", nodeID.String(), "err", why)
	if once != "" && !a.firstRefusal(once) {
		return
	}
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
