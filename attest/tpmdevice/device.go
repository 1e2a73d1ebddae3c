// Package tpmdevice is the device side of Mandate's TPM 2.0 attestation:
// it drives a TPM (a Linux TPM device, or the reference simulator) with
// github.com/google/go-tpm to produce exactly the structures the authority
// asks for (see docs/attestation.md).
//
// Guarantees:
//   - The endorsement key (EK) and attestation key (AK) are primary keys,
//     re-derived from the TPM's seeds on every Open: the same TPM always
//     yields the same EK, AK and therefore node ID. No key material leaves
//     the TPM.
//   - A Device keeps two objects loaded (EK and AK) and flushes them on
//     Close; the simulator holds only three.
//   - Structures are returned as the TPM marshalled them (TPM2B_PUBLIC,
//     TPMS_ATTEST, TPMT_SIGNATURE), never re-encoded.
package tpmdevice

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// EK key types.
const (
	EKRSA = "rsa"
	EKECC = "ecc"
)

// AKTemplate is the attestation key Mandate creates: an ECDSA P-256
// restricted signing key (SHA-256), fixed to its TPM, generated inside it.
var AKTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		Restricted:          true,
		SignEncrypt:         true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
		CurveID: tpm2.TPMECCNistP256,
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
		Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
	}),
}

// Options choose the keys of a Device.
type Options struct {
	// EK is EKRSA (default) or EKECC: which TCG reference EK template.
	EK string
	// AK overrides AKTemplate (tests use it to offer unacceptable AKs).
	AK *tpm2.TPMTPublic
}

// Device is one TPM with its EK and AK loaded.
type Device struct {
	tpm   transport.TPM
	ek    *tpm2.CreatePrimaryResponse
	ak    *tpm2.CreatePrimaryResponse
	ekPub []byte
	akPub []byte
}

// Open creates (re-derives) the EK and the AK on tpm.
func Open(tpm transport.TPM, opts Options) (*Device, error) {
	tmpl := tpm2.RSAEKTemplate
	switch opts.EK {
	case "", EKRSA:
	case EKECC:
		tmpl = tpm2.ECCEKTemplate
	default:
		return nil, fmt.Errorf("tpmdevice: EK type %q (rsa or ecc)", opts.EK)
	}
	d := &Device{tpm: tpm}
	var err error
	d.ek, err = tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tmpl)}.Execute(tpm)
	if err != nil {
		return nil, fmt.Errorf("tpmdevice: create EK: %w", err)
	}
	akTmpl := AKTemplate
	if opts.AK != nil {
		akTmpl = *opts.AK
	}
	d.ak, err = tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(akTmpl)}.Execute(tpm)
	if err != nil {
		d.flush(d.ek)
		return nil, fmt.Errorf("tpmdevice: create AK: %w", err)
	}
	d.ekPub = tpm2.Marshal(d.ek.OutPublic)
	d.akPub = tpm2.Marshal(d.ak.OutPublic)
	return d, nil
}

func (d *Device) flush(obj *tpm2.CreatePrimaryResponse) error {
	if obj == nil {
		return nil
	}
	_, err := tpm2.FlushContext{FlushHandle: obj.ObjectHandle}.Execute(d.tpm)
	return err
}

// Close flushes the EK and the AK. It does not close the TPM.
func (d *Device) Close() error {
	return errors.Join(d.flush(d.ak), d.flush(d.ek))
}

// EKPublic is the EK as a TPM2B_PUBLIC.
func (d *Device) EKPublic() []byte { return bytes.Clone(d.ekPub) }

// AKPublic is the AK as a TPM2B_PUBLIC.
func (d *Device) AKPublic() []byte { return bytes.Clone(d.akPub) }

// ekPolicy satisfies the TCG reference EK's authorization policy
// (PolicySecret with the endorsement hierarchy).
func ekPolicy(t transport.TPM, handle tpm2.TPMISHPolicy, nonceTPM tpm2.TPM2BNonce) error {
	_, err := tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement, PolicySession: handle, NonceTPM: nonceTPM}.Execute(t)
	return err
}

// Activate runs TPM2_ActivateCredential on a challenge: credentialBlob is
// a TPM2B_ID_OBJECT, encryptedSecret a TPM2B_ENCRYPTED_SECRET. The TPM
// releases the secret only if the credential was made for this EK and
// this AK's name.
func (d *Device) Activate(credentialBlob, encryptedSecret []byte) ([]byte, error) {
	blob, err := tpm2.Unmarshal[tpm2.TPM2BIDObject](credentialBlob)
	if err != nil {
		return nil, fmt.Errorf("tpmdevice: credential_blob: %w", err)
	}
	secret, err := tpm2.Unmarshal[tpm2.TPM2BEncryptedSecret](encryptedSecret)
	if err != nil {
		return nil, fmt.Errorf("tpmdevice: encrypted_secret: %w", err)
	}
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.NamedHandle{Handle: d.ak.ObjectHandle, Name: d.ak.Name},
		KeyHandle: tpm2.AuthHandle{Handle: d.ek.ObjectHandle, Name: d.ek.Name,
			Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16, ekPolicy)},
		CredentialBlob: *blob,
		Secret:         *secret,
	}.Execute(d.tpm)
	if err != nil {
		return nil, fmt.Errorf("tpmdevice: activate credential: %w", err)
	}
	return rsp.CertInfo.Buffer, nil
}

// NumPCRs is the number of PCRs of a PC-client TPM's SHA-256 bank.
const NumPCRs = 24

// checkPCRs refuses a PCR index outside the bank: a selection is sized
// by its highest index (a negative one, read as unsigned, by far more
// than memory holds).
func checkPCRs(pcrs []int) error {
	for _, i := range pcrs {
		if i < 0 || i >= NumPCRs {
			return fmt.Errorf("tpmdevice: PCR %d: the SHA-256 bank has PCRs 0 to %d", i, NumPCRs-1)
		}
	}
	return nil
}

// Selection is a TPML_PCR_SELECTION of the SHA-256 bank. Every index
// must be a PCR of it (0 to NumPCRs-1).
func Selection(pcrs []int) tpm2.TPMLPCRSelection {
	u := make([]uint, len(pcrs))
	for i, p := range pcrs {
		u[i] = uint(p)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(u...),
	}}}
}

// Quote signs the PCRs (SHA-256 bank) with the AK over nonce and returns
// the TPMS_ATTEST and TPMT_SIGNATURE bytes as the TPM produced them.
func (d *Device) Quote(nonce []byte, pcrs []int) (quote, signature []byte, err error) {
	if err := checkPCRs(pcrs); err != nil {
		return nil, nil, err
	}
	rsp, err := tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: d.ak.ObjectHandle, Name: d.ak.Name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      Selection(pcrs),
	}.Execute(d.tpm)
	if err != nil {
		return nil, nil, fmt.Errorf("tpmdevice: quote: %w", err)
	}
	return bytes.Clone(rsp.Quoted.Bytes()), tpm2.Marshal(rsp.Signature), nil
}

// ReadPCRs reads PCRs of the SHA-256 bank.
func ReadPCRs(tpm transport.TPM, pcrs []int) (map[int][]byte, error) {
	if err := checkPCRs(pcrs); err != nil {
		return nil, err
	}
	out := make(map[int][]byte, len(pcrs))
	for _, i := range pcrs {
		rsp, err := tpm2.PCRRead{PCRSelectionIn: Selection([]int{i})}.Execute(tpm)
		if err != nil {
			return nil, fmt.Errorf("tpmdevice: read PCR %d: %w", i, err)
		}
		if len(rsp.PCRValues.Digests) != 1 {
			return nil, fmt.Errorf("tpmdevice: PCR %d: the TPM has no SHA-256 value for it", i)
		}
		out[i] = bytes.Clone(rsp.PCRValues.Digests[0].Buffer)
	}
	return out, nil
}

// ExtendPCR extends PCR i of the SHA-256 bank with digest (32 bytes), as
// a boot component measuring the next would.
func ExtendPCR(tpm transport.TPM, i int, digest []byte) error {
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(i), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: digest}}},
	}.Execute(tpm)
	if err != nil {
		return fmt.Errorf("tpmdevice: extend PCR %d: %w", i, err)
	}
	return nil
}

// ReadPCRs reads PCRs of the SHA-256 bank of the device's TPM.
func (d *Device) ReadPCRs(pcrs []int) (map[int][]byte, error) { return ReadPCRs(d.tpm, pcrs) }

// CertifyAK has the AK certify itself over nonce (TPM2_Certify): a
// TPM-signed TPMS_ATTEST of type certify, not a quote. Tests use it to
// show that only quotes are accepted as quotes.
func (d *Device) CertifyAK(nonce []byte) (attest, signature []byte, err error) {
	ak := tpm2.AuthHandle{Handle: d.ak.ObjectHandle, Name: d.ak.Name, Auth: tpm2.PasswordAuth(nil)}
	rsp, err := tpm2.Certify{ObjectHandle: ak, SignHandle: ak, QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme: tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull}}.Execute(d.tpm)
	if err != nil {
		return nil, nil, fmt.Errorf("tpmdevice: certify: %w", err)
	}
	return bytes.Clone(rsp.CertifyInfo.Bytes()), tpm2.Marshal(rsp.Signature), nil
}
