package api

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"mandate.dev/mandate/attest"
)

// tpmChallengeRequest is the body of POST /v1/nodes/attest/tpm/challenge.
// Binary fields are standard padded base64 of the TPM's own structures.
type tpmChallengeRequest struct {
	EKPublic string `json:"ek_public"` // TPM2B_PUBLIC
	EKCert   string `json:"ek_cert"`   // DER, optional
	AKPublic string `json:"ak_public"` // TPM2B_PUBLIC
}

// tpmChallengeAnswer is its answer.
type tpmChallengeAnswer struct {
	SessionID       string           `json:"session_id"`
	CredentialBlob  string           `json:"credential_blob"`  // TPM2B_ID_OBJECT
	EncryptedSecret string           `json:"encrypted_secret"` // TPM2B_ENCRYPTED_SECRET
	Nonce           string           `json:"nonce"`
	PCRSelection    map[string][]int `json:"pcr_selection"`
	ExpiresAt       time.Time        `json:"expires_at"`
}

// tpmVerifyRequest is the body of POST /v1/nodes/attest/tpm/verify.
type tpmVerifyRequest struct {
	SessionID string                       `json:"session_id"`
	Secret    string                       `json:"secret"`
	Quote     string                       `json:"quote"`     // TPMS_ATTEST
	Signature string                       `json:"signature"` // TPMT_SIGNATURE
	PCRs      map[string]map[string]string `json:"pcrs"`      // {"sha256": {"0": hex}}
	CSR       string                       `json:"csr"`
}

// b64 decodes a required (or, with optional, possibly empty) base64 field.
func b64(field, s string, optional bool) ([]byte, error) {
	if s == "" {
		if optional {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %s is required", attest.ErrTPMMalformed, field)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not standard padded base64", attest.ErrTPMMalformed, field)
	}
	return b, nil
}

func (s *Server) tpmChallenge(w http.ResponseWriter, r *http.Request) {
	var req tpmChallengeRequest
	if err := decodeJSON(r, &req); err != nil {
		s.metrics.attestations.WithLabelValues("tpm", refusedOrError(err)).Inc()
		writeError(w, r, s.log, err)
		return
	}
	ek, err := b64("ek_public", req.EKPublic, false)
	var cert, ak []byte
	if err == nil {
		cert, err = b64("ek_cert", req.EKCert, true)
	}
	if err == nil {
		ak, err = b64("ak_public", req.AKPublic, false)
	}
	if err != nil {
		s.metrics.attestations.WithLabelValues("tpm", refusedOrError(err)).Inc()
		writeError(w, r, s.log, err)
		return
	}
	ch, err := s.a.TPMChallenge(r.Context(), callerOf(r), ek, cert, ak)
	if err != nil {
		s.metrics.attestations.WithLabelValues("tpm", refusedOrError(err)).Inc()
		writeError(w, r, s.log, err)
		return
	}
	enc := base64.StdEncoding.EncodeToString
	writeJSON(w, http.StatusOK, tpmChallengeAnswer{
		SessionID: ch.SessionID, CredentialBlob: enc(ch.CredentialBlob), EncryptedSecret: enc(ch.EncryptedSecret),
		Nonce: enc(ch.Session.Nonce), PCRSelection: map[string][]int{"sha256": ch.Session.PCRs}, ExpiresAt: ch.Session.ExpiresAt.UTC(),
	})
}

func (s *Server) tpmVerify(w http.ResponseWriter, r *http.Request) {
	var req tpmVerifyRequest
	if err := decodeJSON(r, &req); err != nil {
		s.metrics.attestations.WithLabelValues("tpm", refusedOrError(err)).Inc()
		writeError(w, r, s.log, err)
		return
	}
	ev, err := req.evidence()
	if err != nil {
		// An unreadable answer proves nothing: refused, the challenge
		// left as it was.
		err = s.a.TPMAnswerUnreadable(r.Context(), req.SessionID, err)
		s.metrics.attestations.WithLabelValues("tpm", refusedOrError(err)).Inc()
		writeError(w, r, s.log, err)
		return
	}
	svid, err := s.a.TPMVerify(r.Context(), callerOf(r), req.SessionID, ev, []byte(req.CSR))
	if err != nil {
		s.metrics.attestations.WithLabelValues("tpm", refusedOrError(err)).Inc()
		writeError(w, r, s.log, err)
		return
	}
	s.metrics.attestations.WithLabelValues("tpm", "admitted").Inc()
	s.metrics.issued.WithLabelValues("x509", "node").Inc()
	writeJSON(w, http.StatusOK, s.svidAnswer(svid))
}

func (req *tpmVerifyRequest) evidence() (attest.Evidence, error) {
	var ev attest.Evidence
	var err error
	if ev.Secret, err = b64("secret", req.Secret, false); err != nil {
		return ev, err
	}
	if ev.Quote, err = b64("quote", req.Quote, false); err != nil {
		return ev, err
	}
	if ev.Signature, err = b64("signature", req.Signature, false); err != nil {
		return ev, err
	}
	for bank, vals := range req.PCRs {
		if bank != "sha256" {
			return ev, fmt.Errorf("%w: pcrs: bank %s (only sha256 is asked)", attest.ErrPCRSelection, attest.QuotedCut(bank))
		}
		if len(vals) > attest.NumPCRs {
			return ev, fmt.Errorf("%w: pcrs: more than %d values", attest.ErrPCRSelection, attest.NumPCRs)
		}
		ev.PCRs = make(map[string][]byte, len(vals))
		for k, v := range vals {
			b, err := hex.DecodeString(v)
			if err != nil {
				return ev, fmt.Errorf("%w: pcrs.sha256[%s] is not hex", attest.ErrTPMMalformed, attest.QuotedCut(k))
			}
			ev.PCRs[k] = b
		}
	}
	return ev, nil
}
