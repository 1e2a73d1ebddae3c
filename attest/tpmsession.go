package attest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/store"
)

// BucketTPMSessions holds the marks of answered TPM challenges (answers
// whose activated secret matched), keyed by the challenge's ID, each
// kept until UsedMarkRetention after the challenge expires. Challenges
// themselves are not stored: their state travels sealed in the session
// id (see SealSession).
const BucketTPMSessions = "tpm_sessions"

// TPMSession is the state of one challenge, sealed into its session id.
// It keeps the secret's SHA-256, never the secret.
type TPMSession struct {
	// ID names the challenge: the first 16 hex digits of its EK hash and
	// 32 random ones. Records (the audit log, the used mark) name it so.
	ID         string
	EKHash     string
	EKTrust    string
	AKPublic   []byte // TPM2B_PUBLIC
	SecretHash []byte
	Nonce      []byte
	PCRs       []int // SHA-256 bank, ascending
	Caller     string
	// EKType is the EK's key type (TPM_ALG_RSA or TPM_ALG_ECC), and
	// EKIssuer the SHA-256 of the configured certificate its certificate
	// chained to (certificate trust): with them the EK's trust is checked
	// again when the challenge is answered.
	EKType    tpm2.TPMAlgID
	EKIssuer  []byte
	CreatedAt time.Time
	ExpiresAt time.Time
}

func (s *TPMSession) ak() (*TPMPublic, error) {
	ak, err := CheckAK(s.AKPublic)
	if err != nil {
		return nil, fmt.Errorf("attest: sealed AK of session %s: %w", s.ID, err)
	}
	return ak.TPMPublic, nil
}

// MaxSessionIDLen bounds a session id: none is longer (an RSA 4096 AK
// makes one of 1,025 characters with certificate trust, the largest AK
// public area decoded, 1,024 bytes, one of 1,673), and a longer one read
// from the network is unknown without more work.
const MaxSessionIDLen = 2048

// sessionIDLen is the length of a challenge's ID (TPMSession.ID).
const sessionIDLen = 48

// SessionKeySize is the size of the key that seals session ids.
const SessionKeySize = 32

const (
	sealVersion  = 1
	sealSaltSize = 24
	sealLabel    = "mandate tpm session v1"
)

// sessionSealer seals a challenge's state into its session id and opens
// it: AES-256-GCM under a key derived, for each session, from the
// authority's session key and a random salt (HMAC-SHA256), so that no
// key ever seals two sessions (no nonce to repeat however many are
// asked). The ID is authenticated with it.
type sessionSealer struct{ key []byte }

func (k sessionSealer) aead(salt []byte) (cipher.AEAD, error) {
	m := hmac.New(sha256.New, k.key)
	m.Write([]byte(sealLabel))
	m.Write(salt)
	block, err := aes.NewCipher(m.Sum(nil))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal returns the session id of s: its ID, a dot, and the sealed state
// (base64url, unpadded).
func (k sessionSealer) seal(s *TPMSession) (string, error) {
	salt := make([]byte, sealSaltSize)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("attest: random: %w", err)
	}
	aead, err := k.aead(salt)
	if err != nil {
		return "", fmt.Errorf("attest: session key: %w", err)
	}
	plain, err := encodeSession(s)
	if err != nil {
		return "", err
	}
	out := append([]byte{sealVersion}, salt...)
	out = aead.Seal(out, make([]byte, aead.NonceSize()), plain, []byte(s.ID))
	return s.ID + "." + base64.RawURLEncoding.EncodeToString(out), nil
}

// open returns the state sealed in a session id, or ErrChallengeUnknown
// for one this key did not seal (or too long, or altered, or not written
// exactly as seal writes it: lower-case hex, a dot, base64url). It does
// not check the expiry.
func (k sessionSealer) open(id string) (*TPMSession, error) {
	if len(id) > MaxSessionIDLen {
		return nil, ErrChallengeUnknown
	}
	name, sealed, ok := strings.Cut(id, ".")
	if !ok || len(name) != sessionIDLen || !canonical(name, isLowerHex) || !canonical(sealed, isBase64URL) {
		// Only the form seal makes: the base64 decoder would skip CR and
		// LF, and hex takes upper case, so other strings would open too.
		return nil, ErrChallengeUnknown
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(sealed)
	if err != nil || len(b) < 1+sealSaltSize || b[0] != sealVersion {
		return nil, ErrChallengeUnknown
	}
	aead, err := k.aead(b[1 : 1+sealSaltSize])
	if err != nil {
		return nil, fmt.Errorf("attest: session key: %w", err)
	}
	plain, err := aead.Open(nil, make([]byte, aead.NonceSize()), b[1+sealSaltSize:], []byte(name))
	if err != nil {
		return nil, ErrChallengeUnknown
	}
	s, err := decodeSession(plain)
	if err != nil || !strings.HasPrefix(s.EKHash, name[:16]) {
		// Sealed by this key, yet not readable: a bug, not an attack.
		return nil, fmt.Errorf("%w: %v", ErrChallengeUnknown, err)
	}
	s.ID = name
	return s, nil
}

func canonical(s string, ok func(byte) bool) bool {
	for i := range len(s) {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func isLowerHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

func isBase64URL(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_'
}

// encodeSession writes the state sealed in a session id: EK hash (32),
// trust (1: allowlist, 2: certificate), EK type (2), issuer digest
// (length 1, then 0 or 32 bytes), secret digest (32), nonce (32), PCR
// bitmap (4), created and expires (Unix ns, 8 each), renewal (1), then
// the AK's TPM2B_PUBLIC.
func encodeSession(s *TPMSession) ([]byte, error) {
	ek, err := hex.DecodeString(s.EKHash)
	if err != nil || len(ek) != sha256.Size || len(s.SecretHash) != sha256.Size || len(s.Nonce) != 32 ||
		(len(s.EKIssuer) != 0 && len(s.EKIssuer) != sha256.Size) || len(s.AKPublic) > maxTPMPublicSize {
		return nil, errors.New("attest: session state out of bounds")
	}
	b := make([]byte, 0, 160+len(s.AKPublic))
	b = append(b, ek...)
	trust := byte(1)
	if s.EKTrust == "certificate" {
		trust = 2
	}
	b = append(b, trust)
	b = binary.BigEndian.AppendUint16(b, uint16(s.EKType))
	b = append(b, byte(len(s.EKIssuer)))
	b = append(b, s.EKIssuer...)
	b = append(b, s.SecretHash...)
	b = append(b, s.Nonce...)
	var pcrs uint32
	for _, i := range s.PCRs {
		if i < 0 || i >= NumPCRs {
			return nil, errors.New("attest: session state out of bounds")
		}
		pcrs |= 1 << i
	}
	b = binary.BigEndian.AppendUint32(b, pcrs)
	b = binary.BigEndian.AppendUint64(b, uint64(s.CreatedAt.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, uint64(s.ExpiresAt.UnixNano()))
	renewal := byte(0)
	if s.Caller != "" {
		renewal = 1
	}
	b = append(b, renewal)
	return append(b, s.AKPublic...), nil
}

func decodeSession(b []byte) (*TPMSession, error) {
	bad := errors.New("attest: sealed session state does not decode")
	take := func(n int) []byte {
		if len(b) < n {
			b = nil
			return nil
		}
		out := b[:n]
		b = b[n:]
		return out
	}
	s := &TPMSession{}
	ek := take(32)
	trust := take(1)
	typ := take(2)
	n := take(1)
	if n == nil || (n[0] != 0 && n[0] != sha256.Size) {
		return nil, bad
	}
	issuer := take(int(n[0]))
	secret, nonce, pcrs := take(32), take(32), take(4)
	created, expires, renewal := take(8), take(8), take(1)
	if renewal == nil || len(b) == 0 {
		return nil, bad
	}
	s.EKHash = hex.EncodeToString(ek)
	s.EKTrust = "allowlist"
	if trust[0] == 2 {
		s.EKTrust = "certificate"
	}
	s.EKType = tpm2.TPMAlgID(binary.BigEndian.Uint16(typ))
	if len(issuer) > 0 {
		s.EKIssuer = issuer
	}
	s.SecretHash, s.Nonce = secret, nonce
	bits := binary.BigEndian.Uint32(pcrs)
	for i := range NumPCRs {
		if bits&(1<<i) != 0 {
			s.PCRs = append(s.PCRs, i)
		}
	}
	s.CreatedAt = time.Unix(0, int64(binary.BigEndian.Uint64(created))).UTC()
	s.ExpiresAt = time.Unix(0, int64(binary.BigEndian.Uint64(expires))).UTC()
	if renewal[0] == 1 {
		s.Caller = "renewal" // OpenSession names the node
	}
	s.AKPublic = b
	return s, nil
}

// OpenSession returns the challenge a session id holds, sealed by this
// verifier's key: ErrChallengeUnknown if it holds none (not sealed with
// this key, altered, too long). A renewal challenge's Caller is the node
// of its EK in td. Whether it is used or expired is CheckTPMSession's
// to say.
func (v *TPMVerifier) OpenSession(id string, td spiffeid.TrustDomain) (*TPMSession, error) {
	s, err := v.sealer.open(id)
	if err != nil {
		return nil, err
	}
	if s.Caller != "" {
		s.Caller = spiffeid.RequireFromSegments(td, "node", MethodTPM, s.EKHash).String()
	}
	return s, nil
}

// usedMark is what BucketTPMSessions holds of an answered challenge.
type usedMark struct {
	ID        string    `json:"id"`
	EKHash    string    `json:"ek_sha256"`
	ExpiresAt time.Time `json:"expires_at"`
	UsedAt    time.Time `json:"used_at"`
}

// UsedMarkRetention is how long the mark of a used challenge is kept
// after the challenge expires: a clock stepped back by up to that much
// after a prune cannot reopen it.
const UsedMarkRetention = time.Hour

// SessionClockSkew is how far before a challenge's creation an answer is
// still taken: an earlier one means the clock went back, and is refused
// (the used mark may be gone).
const SessionClockSkew = 5 * time.Second

// MaxChallengeTTL bounds the life of a TPM challenge (the configured
// TTL).
const MaxChallengeTTL = time.Hour

// voidedKey is the key, in BucketTPMSessions, of the mark that voids the
// challenges of EK ekHash made up to a time (VoidTPMChallenges): no
// session ID (hex digits only) is one.
func voidedKey(ekHash string) []byte { return []byte("voided/" + ekHash) }

// VoidTPMChallenges voids every challenge of the EK whose SHA-256 is
// ekHash made at or before at (its node evicted then): an answer to one
// is ErrChallengeExpired, so that a quote kept back from before cannot
// admit the node again. The mark is pruned as a used challenge's is, once
// every challenge it voids has expired.
func VoidTPMChallenges(tx store.Tx, ekHash string, at time.Time) error {
	b, err := json.Marshal(usedMark{ID: string(voidedKey(ekHash)), EKHash: ekHash, ExpiresAt: at.Add(MaxChallengeTTL), UsedAt: at})
	if err != nil {
		return fmt.Errorf("attest: encode TPM challenges' void mark: %w", err)
	}
	return tx.Put(BucketTPMSessions, voidedKey(ekHash), b)
}

// CheckTPMSession tells whether an opened session may be answered: it
// fails with ErrChallengeUsed (an answer was taken) or
// ErrChallengeExpired (expired, voided by VoidTPMChallenges, or now is
// before the challenge was made, less SessionClockSkew: the clock went
// back). A used challenge is told so until its mark is pruned
// (UsedMarkRetention after it expires).
func CheckTPMSession(tx store.Tx, s *TPMSession, now time.Time) error {
	switch b, err := tx.Get(BucketTPMSessions, voidedKey(s.EKHash)); {
	case err == nil:
		var m usedMark
		if err := json.Unmarshal(b, &m); err != nil || !s.CreatedAt.After(m.UsedAt) {
			return fmt.Errorf("%w: made before its node was evicted (at %s): ask a new challenge", ErrChallengeExpired, m.UsedAt.Format(time.RFC3339))
		}
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("attest: read TPM challenges' void mark: %w", err)
	}
	b, err := tx.Get(BucketTPMSessions, []byte(s.ID))
	switch {
	case err == nil:
		var m usedMark
		if json.Unmarshal(b, &m) == nil && !m.UsedAt.IsZero() {
			return fmt.Errorf("%w (at %s)", ErrChallengeUsed, m.UsedAt.Format(time.RFC3339))
		}
		return fmt.Errorf("%w (at %s)", ErrChallengeUsed, s.ExpiresAt.Format(time.RFC3339))
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("attest: read TPM session: %w", err)
	}
	if !now.Before(s.ExpiresAt) {
		return fmt.Errorf("%w (at %s)", ErrChallengeExpired, s.ExpiresAt.Format(time.RFC3339))
	}
	if now.Before(s.CreatedAt.Add(-SessionClockSkew)) {
		return fmt.Errorf("%w: made at %s, after now (the authority's clock went back): ask a new challenge", ErrChallengeExpired, s.CreatedAt.Format(time.RFC3339))
	}
	return nil
}

// ConsumeTPMSession marks a session answered, failing as CheckTPMSession
// does. An answer whose activated secret matched uses the challenge up,
// accepted or refused: the caller commits this with the answer's outcome
// (the node admitted, or nothing else), and two answers to one challenge
// cannot both be accepted. An answer that proved nothing (a wrong
// secret) is not to be marked: anyone can send one.
func ConsumeTPMSession(tx store.Tx, s *TPMSession, now time.Time) error {
	if err := CheckTPMSession(tx, s, now); err != nil {
		return err
	}
	b, err := json.Marshal(usedMark{ID: s.ID, EKHash: s.EKHash, ExpiresAt: s.ExpiresAt, UsedAt: now})
	if err != nil {
		return fmt.Errorf("attest: encode TPM session mark: %w", err)
	}
	return tx.Put(BucketTPMSessions, []byte(s.ID), b)
}

// PruneTPMSessions deletes the marks of challenges that expired more
// than UsedMarkRetention before now (an answer to them is then told it
// is late, not used), and any record that does not decode.
func PruneTPMSessions(tx store.Tx, now time.Time) (int, error) {
	return pruneExpired(tx, BucketTPMSessions, now.Add(-UsedMarkRetention), func(v []byte) (time.Time, error) {
		var m usedMark
		err := json.Unmarshal(v, &m)
		return m.ExpiresAt, err
	})
}

// pruneExpired deletes the records of bucket that expired before cutoff,
// and those that do not decode.
func pruneExpired(tx store.Tx, bucket string, cutoff time.Time, expiry func([]byte) (time.Time, error)) (int, error) {
	var stale [][]byte
	err := tx.Scan(bucket, nil, nil, func(k, v []byte) error {
		if exp, err := expiry(v); err != nil || exp.Before(cutoff) {
			stale = append(stale, k)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, k := range stale {
		if err := tx.Delete(bucket, k); err != nil {
			return 0, err
		}
	}
	return len(stale), nil
}
