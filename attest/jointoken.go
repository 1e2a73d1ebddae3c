package attest

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/store"
)

// BucketJoinTokens holds join-token records keyed by the secret's SHA-256.
const BucketJoinTokens = "join_tokens"

// MethodJoinToken names the join-token attestation method in node records
// and node SPIFFE IDs.
const MethodJoinToken = "join"

// Token lifetime bounds.
const (
	DefaultJoinTokenTTL = 10 * time.Minute
	MaxJoinTokenTTL     = 7 * 24 * time.Hour
	maxSecretLen        = 128
)

// Errors a caller branches on. None of them carries the secret.
var (
	ErrTokenUnknown = errors.New("attest: join token unknown")
	ErrTokenUsed    = errors.New("attest: join token already used")
	ErrTokenExpired = errors.New("attest: join token expired")
	ErrTokenTTL     = errors.New("attest: join token ttl out of range")
	// ErrTokenWithdrawn is a token an administrator withdrew before it
	// was used.
	ErrTokenWithdrawn = errors.New("attest: join token withdrawn")
)

// JoinToken is the stored record of a join token (never the secret).
type JoinToken struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	ExpiresAt time.Time `json:"expires_at"`
	UsedAt    time.Time `json:"used_at,omitzero"`
	UsedBy    string    `json:"used_by,omitempty"`
	// UsedKey is the KeyDigest of the key the token was used with: a
	// join whose answer was lost may be asked again with the same token
	// and key until the token expires (RetryJoinToken).
	UsedKey string `json:"used_key_sha256,omitempty"`
	// WithdrawnAt and WithdrawnBy say who withdrew the token, unused
	// (WithdrawJoinToken): no join is accepted with it since.
	WithdrawnAt time.Time `json:"withdrawn_at,omitzero"`
	WithdrawnBy string    `json:"withdrawn_by,omitempty"`
}

// KeyDigest names a public key: the hex SHA-256 of its PKIX encoding.
func KeyDigest(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("attest: key digest: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// NodeID is the SPIFFE ID of the node that joins with this token.
func (t *JoinToken) NodeID(td spiffeid.TrustDomain) (spiffeid.ID, error) {
	id, err := spiffeid.FromSegments(td, "node", MethodJoinToken, t.ID)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("attest: join token %q: node id: %w", t.ID, err)
	}
	return id, nil
}

// NewJoinToken creates a token: the secret to hand to the host, and the
// record to store with PutJoinToken.
func NewJoinToken(now time.Time, ttl time.Duration, createdBy string) (secret string, rec *JoinToken, err error) {
	if ttl == 0 {
		ttl = DefaultJoinTokenTTL
	}
	if ttl < time.Second || ttl > MaxJoinTokenTTL {
		return "", nil, fmt.Errorf("%w: must be between 1s and %s", ErrTokenTTL, MaxJoinTokenTTL)
	}
	// Never beginning with "-": given where a command takes an argument
	// (an id, say), such a token would be read as an unknown flag, and
	// the flag error would show it.
	for secret == "" || secret[0] == '-' {
		var raw [32]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return "", nil, fmt.Errorf("attest: generate join token: %w", err)
		}
		secret = base64.RawURLEncoding.EncodeToString(raw[:])
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", nil, fmt.Errorf("attest: generate join token id: %w", err)
	}
	rec = &JoinToken{ID: hex.EncodeToString(id[:]), CreatedAt: now, CreatedBy: createdBy, ExpiresAt: now.Add(ttl)}
	return secret, rec, nil
}

// ValidJoinTokenID reports whether id has the form of a join token's id
// (NewJoinToken's): 16 lowercase hex digits.
func ValidJoinTokenID(id string) bool {
	if len(id) != 16 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !isLowerHex(id[i]) {
			return false
		}
	}
	return true
}

func tokenKey(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// PutJoinToken stores the record of a new token.
func PutJoinToken(tx store.Tx, secret string, rec *JoinToken) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("attest: encode join token: %w", err)
	}
	return tx.Put(BucketJoinTokens, tokenKey(secret), b)
}

// ConsumeJoinToken marks the token used by nodeID-to-be with the key
// keyDigest names (KeyDigest) and returns its record. It fails with
// ErrTokenUnknown, ErrTokenUsed or ErrTokenExpired. The caller must run
// it inside an Update transaction together with the node's creation, so
// that a failure later in the join keeps the token.
func ConsumeJoinToken(tx store.Tx, secret string, td spiffeid.TrustDomain, now time.Time, keyDigest string) (*JoinToken, error) {
	rec, err := PeekJoinToken(tx, secret, td, now)
	if err != nil {
		return rec, err
	}
	nodeID, _ := rec.NodeID(td) // checked by PeekJoinToken
	rec.UsedAt, rec.UsedBy, rec.UsedKey = now, nodeID.String(), keyDigest
	return rec, PutJoinToken(tx, secret, rec)
}

// RetryJoinToken checks that a join may be asked again: the token was
// used with the key keyDigest names, and has not expired. Whoever asks
// again holds the secret and proves the key (the CSR is signed with
// it): the host whose answer was lost, nobody else. It fails with
// ErrTokenUnknown, or ErrTokenUsed (unused; used with another key; or
// used, and expired since).
func RetryJoinToken(tx store.Tx, secret string, td spiffeid.TrustDomain, now time.Time, keyDigest string) (*JoinToken, error) {
	rec, err := PeekJoinToken(tx, secret, td, now)
	switch {
	case err == nil:
		return rec, fmt.Errorf("%w: not used yet", ErrTokenUsed) // unreachable through JoinNode
	case !errors.Is(err, ErrTokenUsed):
		return rec, err
	case rec.UsedKey == "" || rec.UsedKey != keyDigest || !now.Before(rec.ExpiresAt):
		return rec, err // used
	}
	if _, err := rec.NodeID(td); err != nil {
		return nil, err
	}
	return rec, nil
}

// RejoinableTokens returns the ids of the tokens a join may be asked
// again with at now (RetryJoinToken): used with a key, and not expired.
func RejoinableTokens(tx store.Tx, now time.Time) (map[string]bool, error) {
	ids := map[string]bool{}
	err := tx.Scan(BucketJoinTokens, nil, nil, func(_, v []byte) error {
		var r JoinToken
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("attest: decode join token: %w", err)
		}
		if !r.UsedAt.IsZero() && r.UsedKey != "" && now.Before(r.ExpiresAt) {
			ids[r.ID] = true
		}
		return nil
	})
	return ids, err
}

// PeekJoinToken is ConsumeJoinToken without using the token up (in a
// read transaction): its record, and the same errors.
func PeekJoinToken(tx store.Tx, secret string, td spiffeid.TrustDomain, now time.Time) (*JoinToken, error) {
	if secret == "" || len(secret) > maxSecretLen {
		return nil, ErrTokenUnknown
	}
	key := tokenKey(secret)
	b, err := tx.Get(BucketJoinTokens, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrTokenUnknown
	}
	if err != nil {
		return nil, fmt.Errorf("attest: read join token: %w", err)
	}
	rec := new(JoinToken)
	if err := json.Unmarshal(b, rec); err != nil {
		return nil, fmt.Errorf("attest: decode join token: %w", err)
	}
	if err := checkUsable(rec, now); err != nil {
		return rec, err
	}
	if _, err := rec.NodeID(td); err != nil {
		return nil, err
	}
	return rec, nil
}

func checkUsable(rec *JoinToken, now time.Time) error {
	if !rec.WithdrawnAt.IsZero() {
		return fmt.Errorf("%w (token %s, at %s)", ErrTokenWithdrawn, rec.ID, rec.WithdrawnAt.Format(time.RFC3339))
	}
	if !rec.UsedAt.IsZero() {
		return fmt.Errorf("%w (token %s, at %s)", ErrTokenUsed, rec.ID, rec.UsedAt.Format(time.RFC3339))
	}
	if !now.Before(rec.ExpiresAt) {
		return fmt.Errorf("%w (token %s, at %s)", ErrTokenExpired, rec.ID, rec.ExpiresAt.Format(time.RFC3339))
	}
	return nil
}

// WithdrawJoinToken withdraws the unused token whose id is id, by "by":
// no join is accepted with it after the transaction commits. It fails
// with ErrTokenUnknown (no such token, or pruned), ErrTokenUsed (a node
// joined with it: ban the node instead) or ErrTokenWithdrawn (withdrawn
// already). An expired token may be withdrawn: it is then refused as
// withdrawn, which says more than expired.
func WithdrawJoinToken(tx store.Tx, id, by string, now time.Time) (*JoinToken, error) {
	var key []byte
	var rec *JoinToken
	err := tx.Scan(BucketJoinTokens, nil, nil, func(k, v []byte) error {
		var r JoinToken
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("attest: decode join token: %w", err)
		}
		if r.ID != id {
			return nil
		}
		key, rec = k, &r
		return store.ErrStopScan
	})
	switch {
	case err != nil:
		return nil, err
	case rec == nil:
		return nil, fmt.Errorf("%w (token %s)", ErrTokenUnknown, id)
	case !rec.WithdrawnAt.IsZero():
		return rec, fmt.Errorf("%w already (token %s, at %s)", ErrTokenWithdrawn, rec.ID, rec.WithdrawnAt.Format(time.RFC3339))
	case !rec.UsedAt.IsZero():
		return rec, fmt.Errorf("%w (token %s, at %s, by %s): ban the node instead", ErrTokenUsed, rec.ID, rec.UsedAt.Format(time.RFC3339), rec.UsedBy)
	}
	rec.WithdrawnAt, rec.WithdrawnBy = now, by
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("attest: encode join token: %w", err)
	}
	return rec, tx.Put(BucketJoinTokens, key, b)
}

// PruneJoinTokens deletes records of tokens that expired before cutoff and
// reports how many it removed. Used tokens are kept until then as well, so
// a replay is told "used" rather than "unknown".
func PruneJoinTokens(tx store.Tx, cutoff time.Time) (int, error) {
	return pruneExpired(tx, BucketJoinTokens, cutoff, func(v []byte) (time.Time, error) {
		var rec JoinToken
		err := json.Unmarshal(v, &rec)
		return rec.ExpiresAt, err
	})
}
