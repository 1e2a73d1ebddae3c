package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MethodTPM names TPM 2.0 attestation in node records and node SPIFFE IDs.
const MethodTPM = "tpm"

// DefaultChallengeTTL is how long a TPM challenge may be answered.
const DefaultChallengeTTL = time.Minute

// NumPCRs is the number of PCRs of a PC-client TPM's bank.
const NumPCRs = 24

// Errors of TPM attestation a caller branches on. Each says why a device
// was refused; none carries a secret.
var (
	ErrTPMDisabled        = errors.New("attest: TPM attestation is not configured")
	ErrEKUntrusted        = errors.New("attest: endorsement key not trusted")
	ErrEKCertInvalid      = errors.New("attest: endorsement key certificate invalid")
	ErrAKInvalid          = errors.New("attest: attestation key not acceptable")
	ErrChallengeUnknown   = errors.New("attest: TPM challenge unknown")
	ErrChallengeUsed      = errors.New("attest: TPM challenge already answered")
	ErrChallengeExpired   = errors.New("attest: TPM challenge expired")
	ErrTooManyChallenges  = errors.New("attest: too many open TPM challenges for this endorsement key")
	ErrCredentialMismatch = errors.New("attest: activated credential does not match")
	ErrQuoteInvalid       = errors.New("attest: quote is not a TPM-generated quote")
	ErrQuoteSignature     = errors.New("attest: quote signature invalid")
	ErrNonceMismatch      = errors.New("attest: quote is not over the challenge's nonce")
	ErrPCRSelection       = errors.New("attest: quote covers other PCRs than asked")
	ErrPCRDigest          = errors.New("attest: reported PCR values do not match the quote")
	ErrPCRPolicy          = errors.New("attest: PCR values match no allowed profile")
)

// PCRProfile is a named set of golden PCR values (SHA-256 bank). PCRs not
// listed are not checked.
type PCRProfile struct {
	Name   string
	SHA256 map[int][]byte
}

// TPMConfig is the operator's trust in TPM devices.
type TPMConfig struct {
	// EKRoots are manufacturer CA certificates an EK certificate must chain
	// to (intermediates may be listed too).
	EKRoots []*x509.Certificate
	// EKAllowlist holds hex SHA-256 digests of EK TPMT_PUBLIC bytes
	// admitted without a certificate.
	EKAllowlist []string
	// EKCertKeyTypes limits the EKs certificate trust admits to these
	// key types: EKRSA ("rsa", the RSA 2048 template) and EKECC ("ecc",
	// the ECC P-256 one). Empty admits both. A TPM usually holds a
	// certified EK of each type, hence two node IDs: admitting one type
	// only makes a ban of its node hold for the TPM.
	EKCertKeyTypes []string
	// Profiles are the PCR profiles known; Allowed names those a node may
	// match to be admitted.
	Profiles []PCRProfile
	Allowed  []string
	// ChallengeTTL bounds the time to answer a challenge (default
	// DefaultChallengeTTL), at most MaxChallengeTTL.
	ChallengeTTL time.Duration
	// SessionKey (SessionKeySize bytes) seals the challenges' state into
	// their session ids. Without one, a random key is drawn: sessions
	// then do not outlive the verifier.
	SessionKey []byte
}

// TPMVerifier checks TPM evidence against a TPMConfig. It is safe for
// concurrent use and holds no state of its own: a challenge's state is
// sealed into its session id, and the mark of an answered one lives in
// the store (see ConsumeTPMSession).
type TPMVerifier struct {
	roots     *x509.CertPool
	rootSums  map[[sha256.Size]byte]*x509.Certificate // the roots by SHA-256
	certTypes map[tpm2.TPMAlgID]bool                  // EK key types certificate trust admits
	allow     map[string]bool
	allowed   []PCRProfile // in the order configured
	selection []int        // union of the allowed profiles' PCRs, ascending
	ttl       time.Duration
	sealer    sessionSealer
}

// NewTPMVerifier validates cfg. A verifier with no allowed profile, or no
// way to trust an EK, refuses every device with ErrTPMDisabled.
func NewTPMVerifier(cfg TPMConfig) (*TPMVerifier, error) {
	v := &TPMVerifier{allow: map[string]bool{}, ttl: cfg.ChallengeTTL, sealer: sessionSealer{key: cfg.SessionKey}}
	if v.ttl == 0 {
		v.ttl = DefaultChallengeTTL
	}
	if v.ttl < 0 || v.ttl > MaxChallengeTTL {
		// VoidTPMChallenges keeps its mark as long as a challenge can
		// live: a longer-lived one would outlive it.
		return nil, fmt.Errorf("attest: challenge TTL %s: must be between 0 (the default, %s) and %s", v.ttl, DefaultChallengeTTL, MaxChallengeTTL)
	}
	if v.sealer.key == nil {
		v.sealer.key = make([]byte, SessionKeySize)
		if _, err := rand.Read(v.sealer.key); err != nil {
			return nil, fmt.Errorf("attest: random: %w", err)
		}
	}
	if len(v.sealer.key) != SessionKeySize {
		return nil, fmt.Errorf("attest: session key is %d bytes, want %d", len(v.sealer.key), SessionKeySize)
	}
	if len(cfg.EKRoots) > 0 {
		v.roots = x509.NewCertPool()
		v.rootSums = map[[sha256.Size]byte]*x509.Certificate{}
		for _, c := range cfg.EKRoots {
			v.roots.AddCert(c)
			v.rootSums[sha256.Sum256(c.Raw)] = c
		}
	}
	v.certTypes = map[tpm2.TPMAlgID]bool{tpm2.TPMAlgRSA: true, tpm2.TPMAlgECC: true}
	if len(cfg.EKCertKeyTypes) > 0 {
		v.certTypes = map[tpm2.TPMAlgID]bool{}
		for _, typ := range cfg.EKCertKeyTypes {
			switch typ {
			case EKRSA:
				v.certTypes[tpm2.TPMAlgRSA] = true
			case EKECC:
				v.certTypes[tpm2.TPMAlgECC] = true
			default:
				return nil, fmt.Errorf("attest: ek_cert_key_types: %q is not a key type (rsa or ecc)", typ)
			}
		}
	}
	for _, h := range cfg.EKAllowlist {
		h = strings.ToLower(strings.TrimSpace(h))
		if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("attest: ek_allowlist entry %q is not a hex SHA-256", h)
		}
		v.allow[h] = true
	}
	byName := map[string]PCRProfile{}
	for _, p := range cfg.Profiles {
		if p.Name == "" {
			return nil, errors.New("attest: a PCR profile has no name")
		}
		if len(p.SHA256) == 0 {
			return nil, fmt.Errorf("attest: PCR profile %q lists no PCR", p.Name)
		}
		for i, val := range p.SHA256 {
			if i < 0 || i >= NumPCRs {
				return nil, fmt.Errorf("attest: PCR profile %q: PCR %d out of range 0-%d", p.Name, i, NumPCRs-1)
			}
			if len(val) != sha256.Size {
				return nil, fmt.Errorf("attest: PCR profile %q: PCR %d is %d bytes, want %d", p.Name, i, len(val), sha256.Size)
			}
		}
		byName[p.Name] = p
	}
	sel := map[int]bool{}
	for _, name := range cfg.Allowed {
		p, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("attest: allowed profile %q is not defined", name)
		}
		v.allowed = append(v.allowed, p)
		for i := range p.SHA256 {
			sel[i] = true
		}
	}
	v.selection = slices.Sorted(maps.Keys(sel))
	return v, nil
}

// Enabled reports whether any device could be admitted.
func (v *TPMVerifier) Enabled() bool {
	return v != nil && len(v.allowed) > 0 && (v.roots != nil || len(v.allow) > 0)
}

// Selection is the PCRs (SHA-256 bank) every quote must cover.
func (v *TPMVerifier) Selection() []int { return slices.Clone(v.selection) }

// NodeID is the SPIFFE ID of the node whose EK is ek.
func NodeID(td spiffeid.TrustDomain, ek *TPMPublic) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "node", MethodTPM, ek.SHA256Hex())
}

// EK is an endorsement key the verifier trusts, and why.
type EK struct {
	*TPMPublic
	Trust string // "certificate" or "allowlist"
	// Issuer is the SHA-256 of the configured certificate that issued
	// the EK's certificate (certificate trust).
	Issuer []byte
}

// CheckEK decodes an EK (TPM2B_PUBLIC) and decides whether to trust it: its
// digest is on the allowlist, or certDER (optional) is a certificate for
// this very key that chains to a configured manufacturer root.
func (v *TPMVerifier) CheckEK(ekPublic, certDER []byte) (*EK, error) {
	if !v.Enabled() {
		return nil, fmt.Errorf("%w: the authority trusts no EK or allows no PCR profile (its operator sets attestation.tpm: ek_allowlist or ek_ca_roots, pcr_profiles and allowed_profiles)", ErrTPMDisabled)
	}
	pub, err := ParseTPM2BPublic("ek_public", ekPublic)
	if err != nil {
		return nil, err
	}
	a := pub.Public.ObjectAttributes
	if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.Restricted || !a.Decrypt || a.SignEncrypt {
		return nil, fmt.Errorf("%w: not an endorsement key: it must be a fixedTPM, fixedParent, restricted decryption key generated in the TPM", ErrEKUntrusted)
	}
	if err := checkEKParams(pub.Public); err != nil {
		return nil, err
	}
	var certKeyErr error
	var issuer []byte
	if len(certDER) > 0 {
		issuer, certKeyErr = v.checkEKCert(pub, certDER)
	}
	if v.allow[pub.SHA256Hex()] {
		// An allowlisted EK needs no certificate, but one that is sent
		// must at least be a certificate for this key.
		if certKeyErr != nil && !errors.Is(certKeyErr, errCertNotVerified) {
			return nil, certKeyErr
		}
		return &EK{TPMPublic: pub, Trust: "allowlist"}, nil
	}
	if len(certDER) == 0 {
		return nil, fmt.Errorf("%w: EK %s is not on the allowlist and no EK certificate was sent", ErrEKUntrusted, pub.SHA256Hex())
	}
	if certKeyErr != nil {
		return nil, certKeyErr
	}
	// A certificate names a key, not a public area: were any other field
	// free, one TPM could present many public areas, hence many node IDs,
	// for one certified key. So an EK trusted by certificate must be the
	// TCG default template exactly, but for its key.
	if !isTCGDefaultEK(pub) {
		return nil, fmt.Errorf("%w: an EK trusted by certificate must be the TCG default EK template (RSA 2048 or ECC P-256, low range) apart from its key; allowlist other EKs by digest", ErrEKUntrusted)
	}
	if !v.certTypes[pub.Public.Type] {
		return nil, fmt.Errorf("%w: this authority admits by certificate only EKs of type %s (attestation.tpm.ek_cert_key_types), not %s; use the device's EK of that type, or allowlist this one by digest",
			ErrEKUntrusted, strings.Join(v.CertKeyTypes(), ", "), keyTypeName(pub.Public.Type))
	}
	return &EK{TPMPublic: pub, Trust: "certificate", Issuer: issuer}, nil
}

// The EK key types of EKCertKeyTypes, as mandate node attest --ek names
// them.
const (
	EKRSA = "rsa"
	EKECC = "ecc"
)

// CertKeyTypes names the EK key types certificate trust admits.
func (v *TPMVerifier) CertKeyTypes() []string {
	var out []string
	for _, t := range []tpm2.TPMAlgID{tpm2.TPMAlgRSA, tpm2.TPMAlgECC} {
		if v.certTypes[t] {
			out = append(out, keyTypeName(t))
		}
	}
	return out
}

func keyTypeName(t tpm2.TPMAlgID) string {
	switch t {
	case tpm2.TPMAlgRSA:
		return EKRSA
	case tpm2.TPMAlgECC:
		return EKECC
	}
	return fmt.Sprintf("%#x", uint16(t))
}

// checkEKParams refuses public areas no credential can be made for: a
// name algorithm other than SHA-256 or SHA-384, or a symmetric scheme
// other than AES-128 or AES-256 in CFB mode.
func checkEKParams(pub *tpm2.TPMTPublic) error {
	if pub.NameAlg != tpm2.TPMAlgSHA256 && pub.NameAlg != tpm2.TPMAlgSHA384 {
		return fmt.Errorf("%w: EK name algorithm %#x (SHA-256 or SHA-384 accepted)", ErrTPMMalformed, uint16(pub.NameAlg))
	}
	var sym *tpm2.TPMTSymDefObject
	if p, err := pub.Parameters.RSADetail(); err == nil {
		sym = &p.Symmetric
	} else if p, err := pub.Parameters.ECCDetail(); err == nil {
		sym = &p.Symmetric
	}
	if sym == nil || sym.Algorithm != tpm2.TPMAlgAES {
		return fmt.Errorf("%w: EK symmetric algorithm must be AES", ErrTPMMalformed)
	}
	bits, err1 := sym.KeyBits.AES()
	mode, err2 := sym.Mode.AES()
	if err1 != nil || err2 != nil || (*bits != 128 && *bits != 256) || *mode != tpm2.TPMAlgCFB {
		return fmt.Errorf("%w: EK symmetric scheme must be AES-128 or AES-256 in CFB mode", ErrTPMMalformed)
	}
	if _, err := tpm2.ImportEncapsulationKey(pub); err != nil {
		return fmt.Errorf("%w: ek_public: cannot encrypt a credential to it: %v", ErrTPMMalformed, err)
	}
	return nil
}

// isTCGDefaultEK reports whether pub is the TCG EK Credential Profile's
// default (low range) RSA 2048 or ECC P-256 template with its own key.
func isTCGDefaultEK(pub *TPMPublic) bool {
	for _, tmpl := range []tpm2.TPMTPublic{tpm2.RSAEKTemplate, tpm2.ECCEKTemplate} {
		if tmpl.Type != pub.Public.Type {
			continue
		}
		tmpl.Unique = pub.Public.Unique
		if bytes.Equal(tpm2.Marshal(tmpl), pub.Raw) {
			return true
		}
	}
	return false
}

var (
	errCertOtherKey    = fmt.Errorf("%w: the certificate is for another key", ErrEKCertInvalid)
	errCertNotVerified = fmt.Errorf("%w: the certificate does not chain to ek_ca_roots", ErrEKCertInvalid)
)

// oidSAN is the subjectAltName extension. TPM EK certificates carry it
// critical with only a directoryName (TPM manufacturer, model, version,
// per the TCG EK Credential Profile), which crypto/x509 leaves unhandled
// and so refuses in Verify. Like SPIRE and step-ca, Mandate accepts it.
var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}

// oidEKCertificate is tcg-kp-EKCertificate, the extended key usage of an
// EK certificate (TCG EK Credential Profile).
var oidEKCertificate = asn1.ObjectIdentifier{2, 23, 133, 8, 1}

// isEKUsage reports whether cert may certify an EK as far as its
// extended key usage goes: it has none, or it names tcg-kp-EKCertificate
// or any usage. One whose issuer limited its key to other purposes (TLS,
// code signing; RFC 5280 §4.2.1.12) is not an EK certificate, even from
// a manufacturer's CA.
func isEKUsage(cert *x509.Certificate) bool {
	if len(cert.ExtKeyUsage) == 0 && len(cert.UnknownExtKeyUsage) == 0 {
		return true
	}
	return slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageAny) ||
		slices.ContainsFunc(cert.UnknownExtKeyUsage, oidEKCertificate.Equal)
}

// checkEKCert checks that der is a certificate for ek chaining to the
// configured certificates, and returns the SHA-256 of the configured one
// that issued it. Errors that say only that it does not chain wrap
// errCertNotVerified.
func (v *TPMVerifier) checkEKCert(ek *TPMPublic, der []byte) ([]byte, error) {
	if len(der) > 8<<10 {
		return nil, fmt.Errorf("%w: %d bytes", ErrEKCertInvalid, len(der))
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEKCertInvalid, err)
	}
	if !samePublicKey(cert.PublicKey, ek.Key) {
		return nil, errCertOtherKey
	}
	if v.roots == nil {
		return nil, fmt.Errorf("%w: no EK CA roots are configured", errCertNotVerified)
	}
	if !isEKUsage(cert) {
		return nil, fmt.Errorf("%w: its extended key usage names neither tcg-kp-EKCertificate nor any usage: not an EK certificate", errCertNotVerified)
	}
	cert.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(cert.UnhandledCriticalExtensions),
		func(o asn1.ObjectIdentifier) bool { return o.Equal(oidSAN) })
	chains, err := cert.Verify(x509.VerifyOptions{Roots: v.roots, Intermediates: v.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCertNotVerified, err)
	}
	// Every certificate configured is an anchor (Roots holds them all):
	// the EK certificate's issuer in the chain is one of them.
	chain := chains[0]
	sum := sha256.Sum256(chain[min(1, len(chain)-1)].Raw)
	return sum[:], nil
}

// CheckSessionTrust checks, when a challenge is answered, that its EK is
// still trusted as configured now (the configuration may have changed
// since it was asked): on the allowlist, or, trusted by certificate, of a
// key type ek_cert_key_types admits, its certificate's issuer still among
// ek_ca_roots and not expired. It fails with ErrTPMDisabled or
// ErrEKUntrusted.
func (v *TPMVerifier) CheckSessionTrust(s *TPMSession, now time.Time) error {
	if !v.Enabled() {
		return fmt.Errorf("%w: the authority no longer trusts any EK or allows no PCR profile", ErrTPMDisabled)
	}
	// On the allowlist now, however it was trusted when asked.
	if v.allow[s.EKHash] {
		return nil
	}
	if s.EKTrust == "allowlist" {
		return fmt.Errorf("%w: EK %s is no longer on the allowlist", ErrEKUntrusted, s.EKHash)
	}
	if !v.certTypes[s.EKType] {
		return fmt.Errorf("%w: EKs of type %s are no longer admitted by certificate (attestation.tpm.ek_cert_key_types)", ErrEKUntrusted, keyTypeName(s.EKType))
	}
	var sum [sha256.Size]byte
	copy(sum[:], s.EKIssuer)
	if c := v.rootSums[sum]; len(s.EKIssuer) != sha256.Size || c == nil || now.After(c.NotAfter) {
		return fmt.Errorf("%w: the EK certificate's issuer is no longer among ek_ca_roots", ErrEKUntrusted)
	}
	return nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// AK is an attestation key that passed CheckAK.
type AK struct {
	*TPMPublic
	name []byte
}

// CheckAK decodes an AK (TPM2B_PUBLIC) and checks, on the exact bytes
// received, that it is a restricted signing key that never leaves its TPM
// (fixedTPM, fixedParent, sensitiveDataOrigin), with an accepted
// algorithm: ECDSA on P-256/P-384 or RSASSA/RSA-PSS, 2048 bits or more,
// with SHA-256 or SHA-384, and a SHA-256 or SHA-384 name algorithm.
func CheckAK(akPublic []byte) (*AK, error) {
	pub, err := ParseTPM2BPublic("ak_public", akPublic)
	if err != nil {
		return nil, err
	}
	a := pub.Public.ObjectAttributes
	switch {
	case !a.Restricted || !a.SignEncrypt || a.Decrypt:
		return nil, fmt.Errorf("%w: it must be a restricted signing key", ErrAKInvalid)
	case !a.FixedTPM || !a.FixedParent:
		return nil, fmt.Errorf("%w: it must be fixedTPM and fixedParent", ErrAKInvalid)
	case !a.SensitiveDataOrigin:
		return nil, fmt.Errorf("%w: it must be generated in the TPM (sensitiveDataOrigin)", ErrAKInvalid)
	}
	if _, err := akScheme(pub.Public); err != nil {
		return nil, err
	}
	name, err := pub.Name()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAKInvalid, err)
	}
	return &AK{TPMPublic: pub, name: name}, nil
}

// sigScheme is an AK's signing scheme and its hash.
type sigScheme struct {
	scheme  tpm2.TPMAlgID
	HashAlg tpm2.TPMIAlgHash
}

// akScheme returns the AK's signing scheme and hash.
func akScheme(pub *tpm2.TPMTPublic) (sigScheme, error) {
	var scheme tpm2.TPMAlgID
	var details *tpm2.TPMSSchemeHash
	switch pub.Type {
	case tpm2.TPMAlgECC:
		if parms, err := pub.Parameters.ECCDetail(); err == nil {
			scheme = parms.Scheme.Scheme
			if d, err := parms.Scheme.Details.ECDSA(); err == nil && scheme == tpm2.TPMAlgECDSA {
				details = (*tpm2.TPMSSchemeHash)(d)
			}
		}
	case tpm2.TPMAlgRSA:
		if parms, err := pub.Parameters.RSADetail(); err == nil {
			scheme = parms.Scheme.Scheme
			switch scheme {
			case tpm2.TPMAlgRSASSA:
				if d, err := parms.Scheme.Details.RSASSA(); err == nil {
					details = (*tpm2.TPMSSchemeHash)(d)
				}
			case tpm2.TPMAlgRSAPSS:
				if d, err := parms.Scheme.Details.RSAPSS(); err == nil {
					details = (*tpm2.TPMSSchemeHash)(d)
				}
			}
		}
	}
	if details == nil {
		return sigScheme{}, fmt.Errorf("%w: signing scheme %#x (ECDSA, RSASSA and RSA-PSS accepted)", ErrAKInvalid, uint16(scheme))
	}
	if _, err := cryptoHash(details.HashAlg); err != nil {
		return sigScheme{}, fmt.Errorf("%w: %v", ErrAKInvalid, err)
	}
	return sigScheme{scheme: scheme, HashAlg: details.HashAlg}, nil
}

// Challenge is what a device must answer: a credential only its TPM can
// activate (for this EK and AK), and a nonce to quote.
type Challenge struct {
	// SessionID is what the device sends back: the ID and the sealed
	// session, at most MaxSessionIDLen characters.
	SessionID       string
	Session         *TPMSession
	CredentialBlob  []byte // TPM2B_ID_OBJECT
	EncryptedSecret []byte // TPM2B_ENCRYPTED_SECRET
}

// NewChallenge makes a credential for (ek, ak) around a fresh random
// secret (TPM2_MakeCredential, computed here) and a fresh nonce. The
// session keeps only the secret's digest, and is sealed into the session
// id: nothing is stored. caller is the node renewing, or empty.
func (v *TPMVerifier) NewChallenge(ek *EK, ak *AK, caller string, now time.Time) (*Challenge, error) {
	secret := make([]byte, 32)
	nonce := make([]byte, 32)
	rnd := make([]byte, 16)
	for _, b := range [][]byte{secret, nonce, rnd} {
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("attest: random: %w", err)
		}
	}
	kem, err := tpm2.ImportEncapsulationKey(ek.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: ek_public: %v", ErrTPMMalformed, err)
	}
	idObject, encSecret, err := tpm2.CreateCredential(rand.Reader, kem, ak.name, secret)
	if err != nil {
		return nil, fmt.Errorf("%w: ek_public: cannot make a credential for it: %v", ErrTPMMalformed, err)
	}
	ekHash := ek.SHA256Hex()
	sum := sha256.Sum256(secret)
	s := &TPMSession{
		ID:         ekHash[:16] + hex.EncodeToString(rnd),
		EKHash:     ekHash,
		EKTrust:    ek.Trust,
		AKPublic:   tpm2.Marshal(tpm2.TPM2BData{Buffer: ak.Raw}),
		SecretHash: sum[:],
		Nonce:      nonce,
		PCRs:       v.Selection(),
		Caller:     caller,
		EKType:     ek.Public.Type,
		EKIssuer:   ek.Issuer,
		CreatedAt:  now,
		ExpiresAt:  now.Add(v.ttl),
	}
	id, err := v.sealer.seal(s)
	if err != nil {
		return nil, err
	}
	return &Challenge{
		SessionID:       id,
		Session:         s,
		CredentialBlob:  tpm2.Marshal(tpm2.TPM2BData{Buffer: idObject}),
		EncryptedSecret: tpm2.Marshal(tpm2.TPM2BData{Buffer: encSecret}),
	}, nil
}

// Evidence is a device's answer to a challenge.
type Evidence struct {
	Secret    []byte            // the activated credential
	Quote     []byte            // TPMS_ATTEST
	Signature []byte            // TPMT_SIGNATURE
	PCRs      map[string][]byte // SHA-256 bank: PCR index (decimal) → value
}

// Result is what an accepted attestation proved.
type Result struct {
	EKHash      string
	EKTrust     string
	Profile     string
	QuoteDigest string // hex SHA-256 of the TPMS_ATTEST bytes
	PCRs        map[int][]byte
	// SecretMatched says the activated credential matched: the answer
	// comes from the TPM holding the EK (and the AK), whatever else in
	// it failed.
	SecretMatched bool
}

// Verify checks ev against an open session: the secret proves the AK
// lives in the EK's TPM; the quote is a TPM-generated TPMS_ATTEST of type
// quote, signed by that AK, over the session's nonce and exactly the
// session's PCRs, whose digest the reported values reproduce; and those
// values match an allowed profile. It returns what it could establish
// even when it fails (the quote digest, and the profile check's PCRs) so
// that a refusal can be recorded with them.
//
// ErrPCRPolicy is the only refusal that comes after the device is proven:
// everything before it says the evidence itself is bad.
func (v *TPMVerifier) Verify(s *TPMSession, ev Evidence) (*Result, error) {
	res := &Result{EKHash: s.EKHash, EKTrust: s.EKTrust}
	if len(ev.Quote) > 0 && len(ev.Quote) <= maxAttestSize {
		sum := sha256.Sum256(ev.Quote)
		res.QuoteDigest = hex.EncodeToString(sum[:])
	}
	sum := sha256.Sum256(ev.Secret)
	if subtle.ConstantTimeCompare(sum[:], s.SecretHash) != 1 {
		return res, ErrCredentialMismatch
	}
	res.SecretMatched = true
	ak, err := s.ak()
	if err != nil {
		return res, err
	}
	// magic (4 bytes) and type (2 bytes) lead a TPMS_ATTEST: check them
	// before decoding the rest, so a non-quote is named as such.
	if len(ev.Quote) < 6 || binary.BigEndian.Uint32(ev.Quote) != uint32(tpm2.TPMGeneratedValue) {
		return res, fmt.Errorf("%w: no TPM_GENERATED_VALUE magic", ErrQuoteInvalid)
	}
	if typ := binary.BigEndian.Uint16(ev.Quote[4:]); typ != uint16(tpm2.TPMSTAttestQuote) {
		return res, fmt.Errorf("%w: attestation type %#x, not a quote (%#x)", ErrQuoteInvalid, typ, uint16(tpm2.TPMSTAttestQuote))
	}
	attest, err := ParseAttest(ev.Quote)
	if err != nil {
		return res, err
	}
	sig, err := ParseSignature(ev.Signature)
	if err != nil {
		return res, err
	}
	hashAlg, err := verifySignature(ak, ev.Quote, sig)
	if err != nil {
		return res, err
	}
	if subtle.ConstantTimeCompare(attest.ExtraData.Buffer, s.Nonce) != 1 {
		return res, ErrNonceMismatch
	}
	info, err := attest.Attested.Quote()
	if err != nil {
		return res, fmt.Errorf("%w: %v", ErrQuoteInvalid, err)
	}
	var selected []int
	for _, sel := range info.PCRSelect.PCRSelections {
		idx := pcrIndexes(sel.PCRSelect)
		if len(idx) == 0 {
			continue
		}
		if sel.Hash != tpm2.TPMAlgSHA256 || selected != nil {
			return res, fmt.Errorf("%w: only the SHA-256 bank is asked", ErrPCRSelection)
		}
		selected = idx
	}
	if !slices.Equal(selected, s.PCRs) {
		return res, fmt.Errorf("%w: quoted %v, asked %v", ErrPCRSelection, selected, s.PCRs)
	}
	values, err := parsePCRValues(ev.PCRs, s.PCRs)
	if err != nil {
		return res, err
	}
	res.PCRs = values
	h, err := hashFor(hashAlg)
	if err != nil {
		return res, err
	}
	for _, i := range s.PCRs {
		h.Write(values[i])
	}
	if !bytes.Equal(h.Sum(nil), info.PCRDigest.Buffer) {
		return res, ErrPCRDigest
	}
	// A challenge asked under other PCR profiles (before a restart that
	// changed them) did not quote every PCR the profiles now check: it is
	// stale, not proof of drift.
	for _, i := range v.selection {
		if !slices.Contains(s.PCRs, i) {
			return res, fmt.Errorf("%w: asked before the PCR profiles changed (it quotes %v; PCR %d is now checked): ask a new challenge", ErrChallengeExpired, s.PCRs, i)
		}
	}
	profile, err := v.match(values)
	if err != nil {
		return res, err
	}
	res.Profile = profile
	return res, nil
}

// match returns the first allowed profile (in configured order) that the
// values satisfy.
func (v *TPMVerifier) match(values map[int][]byte) (string, error) {
	var why []string
	for _, p := range v.allowed {
		var bad []string
		for _, i := range slices.Sorted(maps.Keys(p.SHA256)) {
			if !bytes.Equal(values[i], p.SHA256[i]) {
				bad = append(bad, strconv.Itoa(i))
			}
		}
		if len(bad) == 0 {
			return p.Name, nil
		}
		why = append(why, fmt.Sprintf("%s: PCR %s differ", p.Name, strings.Join(bad, ",")))
	}
	return "", fmt.Errorf("%w (%s)", ErrPCRPolicy, strings.Join(why, "; "))
}

// parsePCRValues decodes the reported SHA-256 bank: exactly the PCRs
// asked, each 32 bytes.
func parsePCRValues(in map[string][]byte, want []int) (map[int][]byte, error) {
	if len(in) != len(want) {
		return nil, fmt.Errorf("%w: %d PCR values reported, %d asked", ErrPCRSelection, len(in), len(want))
	}
	out := make(map[int][]byte, len(in))
	for k, val := range in {
		i, err := strconv.Atoi(k)
		if err != nil || strconv.Itoa(i) != k || !slices.Contains(want, i) {
			return nil, fmt.Errorf("%w: PCR %s was not asked", ErrPCRSelection, QuotedCut(k))
		}
		if len(val) != sha256.Size {
			return nil, fmt.Errorf("%w: PCR %d value is %d bytes, want %d", ErrTPMMalformed, i, len(val), sha256.Size)
		}
		out[i] = val
	}
	return out, nil
}

// verifySignature checks sig over the exact quote bytes with the AK, in
// the AK's own scheme, and returns the scheme's hash algorithm.
func verifySignature(ak *TPMPublic, msg []byte, sig *tpm2.TPMTSignature) (tpm2.TPMIAlgHash, error) {
	want, err := akScheme(ak.Public)
	if err != nil {
		return 0, err
	}
	var sigHash tpm2.TPMIAlgHash
	var ok bool
	switch key := ak.Key.(type) {
	case *ecdsa.PublicKey:
		s, err := sig.Signature.ECDSA()
		if err != nil || sig.SigAlg != tpm2.TPMAlgECDSA {
			return 0, fmt.Errorf("%w: not an ECDSA signature", ErrQuoteSignature)
		}
		sigHash = s.Hash
		digest, err := digestOf(s.Hash, msg)
		if err != nil {
			return 0, err
		}
		r := new(big.Int).SetBytes(s.SignatureR.Buffer)
		ss := new(big.Int).SetBytes(s.SignatureS.Buffer)
		ok = ecdsa.Verify(key, digest, r, ss)
	case *rsa.PublicKey:
		var s *tpm2.TPMSSignatureRSA
		switch sig.SigAlg {
		case tpm2.TPMAlgRSASSA:
			s, err = sig.Signature.RSASSA()
		case tpm2.TPMAlgRSAPSS:
			s, err = sig.Signature.RSAPSS()
		default:
			err = errors.New("scheme")
		}
		if err != nil {
			return 0, fmt.Errorf("%w: not an RSA signature", ErrQuoteSignature)
		}
		sigHash = s.Hash
		digest, err := digestOf(s.Hash, msg)
		if err != nil {
			return 0, err
		}
		h, _ := cryptoHash(s.Hash)
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			ok = rsa.VerifyPKCS1v15(key, h, digest, s.Sig.Buffer) == nil
		} else {
			ok = rsa.VerifyPSS(key, h, digest, s.Sig.Buffer, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil
		}
	default:
		return 0, fmt.Errorf("%w: unsupported AK key", ErrAKInvalid)
	}
	if sig.SigAlg != want.scheme {
		return 0, fmt.Errorf("%w: signature scheme %#x, the AK's is %#x", ErrQuoteSignature, uint16(sig.SigAlg), uint16(want.scheme))
	}
	if sigHash != want.HashAlg {
		return 0, fmt.Errorf("%w: signed with hash %#x, the AK's scheme says %#x", ErrQuoteSignature, uint16(sigHash), uint16(want.HashAlg))
	}
	if !ok {
		return 0, ErrQuoteSignature
	}
	return sigHash, nil
}

func digestOf(alg tpm2.TPMIAlgHash, msg []byte) ([]byte, error) {
	h, err := hashFor(alg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrQuoteSignature, err)
	}
	h.Write(msg)
	return h.Sum(nil), nil
}

// HexPCRs formats PCR values as decimal index → hex, for records.
func HexPCRs(values map[int][]byte) map[string]string {
	out := make(map[string]string, len(values))
	for i, v := range values {
		out[strconv.Itoa(i)] = hex.EncodeToString(v)
	}
	return out
}
