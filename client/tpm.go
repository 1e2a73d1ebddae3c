package client

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// TPMChallenge is the authority's challenge to a TPM device.
type TPMChallenge struct {
	SessionID       string           `json:"session_id"`
	CredentialBlob  []byte           `json:"credential_blob"`  // TPM2B_ID_OBJECT
	EncryptedSecret []byte           `json:"encrypted_secret"` // TPM2B_ENCRYPTED_SECRET
	Nonce           []byte           `json:"nonce"`
	PCRSelection    map[string][]int `json:"pcr_selection"`
	ExpiresAt       time.Time        `json:"expires_at"`
}

// TPMEvidence answers a TPMChallenge.
type TPMEvidence struct {
	Secret    []byte         // the activated credential
	Quote     []byte         // TPMS_ATTEST
	Signature []byte         // TPMT_SIGNATURE
	PCRs      map[int][]byte // SHA-256 bank
}

// RequestTPMChallenge starts a TPM attestation (or, over mTLS with a node
// SVID, a renewal). ekPublic and akPublic are TPM2B_PUBLIC bytes, ekCert
// DER (optional).
func (c *Client) RequestTPMChallenge(ctx context.Context, ekPublic, ekCert, akPublic []byte) (*TPMChallenge, error) {
	enc := base64.StdEncoding.EncodeToString
	req := map[string]string{"ek_public": enc(ekPublic), "ak_public": enc(akPublic)}
	if len(ekCert) > 0 {
		req["ek_cert"] = enc(ekCert)
	}
	return call[TPMChallenge](ctx, c, http.MethodPost, "/v1/nodes/attest/tpm/challenge", req)
}

// AnswerTPMChallenge sends the evidence and a CSR for the node SVID. An
// answer that carries no X509-SVID is an error, as for Join.
func (c *Client) AnswerTPMChallenge(ctx context.Context, sessionID string, ev TPMEvidence, csrPEM []byte) (*SVIDAnswer, error) {
	enc := base64.StdEncoding.EncodeToString
	pcrs := map[string]string{}
	for i, v := range ev.PCRs {
		pcrs[strconv.Itoa(i)] = hex.EncodeToString(v)
	}
	req := map[string]any{"session_id": sessionID, "secret": enc(ev.Secret), "quote": enc(ev.Quote),
		"signature": enc(ev.Signature), "pcrs": map[string]any{"sha256": pcrs}, "csr": string(csrPEM)}
	return c.svid(ctx, "/v1/nodes/attest/tpm/verify", req)
}

// TPM is what AttestTPM needs of a device (tpmdevice.Device has it).
type TPM interface {
	EKPublic() []byte
	AKPublic() []byte
	Activate(credentialBlob, encryptedSecret []byte) ([]byte, error)
	Quote(nonce []byte, pcrs []int) (quote, signature []byte, err error)
	ReadPCRs(pcrs []int) (map[int][]byte, error)
}

// AttestTPM runs the whole exchange with a device: challenge, credential
// activation, quote of the PCRs asked, verify.
func (c *Client) AttestTPM(ctx context.Context, dev TPM, ekCert, csrPEM []byte) (*SVIDAnswer, error) {
	ch, err := c.RequestTPMChallenge(ctx, dev.EKPublic(), ekCert, dev.AKPublic())
	if err != nil {
		return nil, err
	}
	ev, err := Answer(dev, ch)
	if err != nil {
		return nil, err
	}
	return c.AnswerTPMChallenge(ctx, ch.SessionID, ev, csrPEM)
}

// Answer computes a device's evidence for a challenge.
func Answer(dev TPM, ch *TPMChallenge) (TPMEvidence, error) {
	pcrs, ok := ch.PCRSelection["sha256"]
	if !ok || len(ch.PCRSelection) != 1 {
		return TPMEvidence{}, fmt.Errorf("the challenge asks for PCR banks %v; this client quotes only sha256", ch.PCRSelection)
	}
	if err := checkPCRSelection(pcrs); err != nil {
		return TPMEvidence{}, err
	}
	secret, err := dev.Activate(ch.CredentialBlob, ch.EncryptedSecret)
	if err != nil {
		return TPMEvidence{}, err
	}
	quote, sig, err := dev.Quote(ch.Nonce, pcrs)
	if err != nil {
		return TPMEvidence{}, err
	}
	vals, err := dev.ReadPCRs(pcrs)
	if err != nil {
		return TPMEvidence{}, err
	}
	return TPMEvidence{Secret: secret, Quote: quote, Signature: sig, PCRs: vals}, nil
}

// numPCRs is the number of PCRs of a PC-client TPM's SHA-256 bank.
const numPCRs = 24

// checkPCRSelection refuses a selection no TPM quotes: no PCR, one
// outside the bank, or one listed twice. The authority's answer is read
// before the device is asked anything: a selection is sized by its
// highest index, and every entry is a PCR read.
func checkPCRSelection(pcrs []int) error {
	if len(pcrs) == 0 {
		return fmt.Errorf("the challenge asks for no PCR")
	}
	var seen [numPCRs]bool
	for _, i := range pcrs {
		switch {
		case i < 0 || i >= numPCRs:
			return fmt.Errorf("the challenge asks for PCR %d: the SHA-256 bank has PCRs 0 to %d", i, numPCRs-1)
		case seen[i]:
			return fmt.Errorf("the challenge asks for PCR %d twice", i)
		}
		seen[i] = true
	}
	return nil
}
