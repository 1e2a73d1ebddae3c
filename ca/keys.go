package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
)

// KeyType selects the algorithm of keys the CA generates for its own
// authorities (X.509 CA keys and JWT signing keys).
type KeyType string

// Supported key types.
const (
	KeyTypeECP256 KeyType = "ec-p256" // ECDSA P-256; ES256 for JWTs. Default.
	KeyTypeECP384 KeyType = "ec-p384" // ECDSA P-384; ES384 for JWTs.
)

// KeyManager holds the CA's private keys. The CA only ever sees them as
// crypto.Signer values, so an HSM or cloud KMS implementation can be added
// without touching the CA.
//
// Implementations must be safe for concurrent use and must never put key
// material into errors or logs.
type KeyManager interface {
	// GenerateKey creates a new key under id and returns a signer for it.
	// The key must be durable (survive a crash) before GenerateKey
	// returns. Generating over an existing id is an error.
	GenerateKey(ctx context.Context, id string, kt KeyType) (crypto.Signer, error)
	// GetKey returns the signer for id, or an error wrapping
	// ErrKeyNotFound when there is no such key.
	GetKey(ctx context.Context, id string) (crypto.Signer, error)
	// DeleteKey destroys the key. It returns an error wrapping
	// ErrKeyNotFound when there is no such key.
	DeleteKey(ctx context.Context, id string) error
}

const (
	minRSABits = 2048
	maxRSABits = 8192
	maxKeyID   = 128
)

// Curve is the elliptic curve of a key of type kt.
func (kt KeyType) Curve() (elliptic.Curve, error) {
	switch kt {
	case KeyTypeECP256:
		return elliptic.P256(), nil
	case KeyTypeECP384:
		return elliptic.P384(), nil
	default:
		return nil, fmt.Errorf("ca: unknown key type %q (want %q or %q)", kt, KeyTypeECP256, KeyTypeECP384)
	}
}

// CheckKeyRequest refuses a KeyManager call for id when id is not a key
// id (ValidateKeyID), or ctx is done.
func CheckKeyRequest(ctx context.Context, id string) error {
	if err := ValidateKeyID(id); err != nil {
		return err
	}
	return ctx.Err()
}

// ValidateKeyID reports whether id is acceptable as a KeyManager key id:
// 1 to 128 characters from [A-Za-z0-9._-], not starting with '.' (so it
// can never be a path, a path separator, "." or "..", or a hidden file).
func ValidateKeyID(id string) error {
	if id == "" || len(id) > maxKeyID || id[0] == '.' {
		return fmt.Errorf("ca: invalid key id %q", id)
	}
	for i := 0; i < len(id); i++ {
		ch := id[i]
		ok := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' ||
			ch == '.' || ch == '_' || ch == '-'
		if !ok {
			return fmt.Errorf("ca: invalid key id %q", id)
		}
	}
	return nil
}

// checkAuthorityKey validates a public key used by one of our own
// authorities: ECDSA P-256 or P-384 only.
func checkAuthorityKey(pub crypto.PublicKey) error {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("ca: authority key is %T, want ECDSA P-256 or P-384", pub)
	}
	if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
		return fmt.Errorf("ca: authority key curve %s is not supported, want P-256 or P-384", k.Curve.Params().Name)
	}
	return nil
}

// leafKeyUsage validates the public key of an X509-SVID request and
// returns the key usage its certificate gets: digitalSignature, plus
// keyEncipherment for RSA keys.
func leafKeyUsage(pub crypto.PublicKey) (x509.KeyUsage, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return 0, fmt.Errorf("%w: ecdsa curve %s (want P-256 or P-384)", ErrUnsupportedKey, curveName(k.Curve))
		}
		// Bytes validates that the point is on the curve.
		if _, err := k.Bytes(); err != nil {
			return 0, fmt.Errorf("%w: invalid ecdsa point", ErrUnsupportedKey)
		}
		return x509.KeyUsageDigitalSignature, nil
	case *rsa.PublicKey:
		if k.N == nil {
			return 0, fmt.Errorf("%w: empty rsa key", ErrUnsupportedKey)
		}
		switch bits := k.N.BitLen(); {
		case bits < minRSABits:
			return 0, fmt.Errorf("%w: rsa key has %d bits, minimum is %d", ErrWeakKey, bits, minRSABits)
		case bits > maxRSABits:
			return 0, fmt.Errorf("%w: rsa key has %d bits, maximum is %d", ErrUnsupportedKey, bits, maxRSABits)
		}
		if k.E < 3 || k.E%2 == 0 {
			return 0, fmt.Errorf("%w: invalid rsa public exponent", ErrUnsupportedKey)
		}
		return x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, nil
	case nil:
		return 0, fmt.Errorf("%w: public key is required", ErrInvalidParams)
	default:
		return 0, fmt.Errorf("%w: %T (want ECDSA P-256/P-384 or RSA >= %d bits)", ErrUnsupportedKey, pub, minRSABits)
	}
}

func curveName(c elliptic.Curve) string {
	if c == nil || c.Params() == nil {
		return "unknown"
	}
	return c.Params().Name
}

// publicKeyEqual compares two public keys of the standard library types.
func publicKeyEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && b != nil && ak.Equal(b)
}

// subjectKeyID is the key identifier of pub, made as crypto/x509 makes
// the CA certificates' (RFC 7093, section 2, method 1): the leftmost 160
// bits of the SHA-256 hash of the subjectPublicKey BIT STRING's value.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if rest, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("ca: read the encoded public key: %w", err)
	} else if len(rest) > 0 {
		return nil, errors.New("ca: read the encoded public key: trailing data")
	}
	h := sha256.Sum256(spki.PublicKey.Bytes)
	return h[:20], nil
}

// randomSerial returns a random, non-zero 128-bit certificate serial.
func randomSerial() *big.Int {
	var b [16]byte
	for {
		_, _ = rand.Read(b[:]) // never fails since Go 1.24
		if n := new(big.Int).SetBytes(b[:]); n.Sign() > 0 {
			return n
		}
	}
}

// newKeyID returns a fresh, random KeyManager id such as "x509-3fa1...".
func newKeyID(kind Kind) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return string(kind) + "-" + hex.EncodeToString(b[:])
}
