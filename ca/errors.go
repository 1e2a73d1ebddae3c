package ca

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap one of these (with
// %w) wherever a caller is expected to branch on the cause, for example to
// map a refusal to an HTTP 400.
var (
	// ErrKeyNotFound is returned by KeyManager.GetKey and
	// KeyManager.DeleteKey when no key has the given id.
	ErrKeyNotFound = errors.New("ca: key not found")

	// ErrUnsupportedKey is returned when a public key presented for an
	// X509-SVID is of a type or curve the CA does not issue for.
	ErrUnsupportedKey = errors.New("ca: unsupported public key")

	// ErrWeakKey is returned when a public key is of a supported type but
	// too small (RSA below 2048 bits). It wraps ErrUnsupportedKey, so
	// errors.Is(err, ErrUnsupportedKey) also holds.
	ErrWeakKey = fmt.Errorf("%w: too weak", ErrUnsupportedKey)

	// ErrInvalidParams is returned for malformed minting requests: a
	// SPIFFE ID that is zero, has no path or belongs to another trust
	// domain, an empty audience, a negative TTL, a bad DNS name, or an
	// expiry beyond the signing key's own expiry.
	ErrInvalidParams = errors.New("ca: invalid parameters")

	// ErrUnknownAuthority is returned by Revoke for an id no authority
	// of the CA has.
	ErrUnknownAuthority = errors.New("ca: no such authority")

	// ErrAuthorityInUse is returned by Revoke for the active authority:
	// only one replaced (old) or prepared is revoked.
	ErrAuthorityInUse = errors.New("ca: authority in use")

	// ErrInvalidConfig is returned by New when the Config is unusable.
	ErrInvalidConfig = errors.New("ca: invalid config")

	// ErrAuthorityExpired is returned when minting is attempted while the
	// active authority has already expired, which only happens when
	// rotation (Rotate/Run) has not been running.
	ErrAuthorityExpired = errors.New("ca: active authority expired")

	// ErrAuthorityNotYetValid is returned when an X509-SVID would be
	// valid at no instant: the clock reads earlier than the active X.509
	// CA's NotBefore by at least the SVID's lifetime (it was stepped
	// back after the CA was made, or is not yet set).
	ErrAuthorityNotYetValid = errors.New("ca: active authority not yet valid")
)
