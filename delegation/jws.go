package delegation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"

	"github.com/go-jose/go-jose/v4"
)

// compactJWS is a compact JWS split and decoded, its signature not yet
// checked.
type compactJWS struct {
	compact string
	header  jwsHeader
	payload []byte
	// signingInput is the header and payload segments as received: what
	// the signature is over (RFC 7515 §5.2).
	signingInput string
	signature    []byte
}

// jwsHeader is what the verifiers read of a JWS protected header.
type jwsHeader struct {
	Alg   string
	KeyID string
	Type  string
	X5C   []string
}

var b64url = base64.RawURLEncoding.Strict()

// parseCompact splits and decodes a compact JWS: three base64url
// segments (no padding, canonical), the first a protected header read by
// readHeader.
func parseCompact(compact string) (*compactJWS, error) {
	h, rest, ok := strings.Cut(compact, ".")
	p, s, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || strings.Contains(s, ".") {
		return nil, errors.New("not a compact JWS")
	}
	j := &compactJWS{compact: compact, signingInput: compact[:len(h)+1+len(p)]}
	var err error
	if j.header, err = headers.read(h); err != nil {
		return nil, err
	}
	if j.payload, err = b64url.DecodeString(p); err != nil {
		return nil, errors.New("payload is not base64url")
	}
	if j.signature, err = b64url.DecodeString(s); err != nil {
		return nil, errors.New("signature is not base64url")
	}
	return j, nil
}

// headers remembers the protected headers already read, by their base64url
// segment: a hop's statement header (its delegator's x5c chain) and its
// issuer's token header are the same for many tokens.
var headers = &headerMemo{m: map[string]jwsHeader{}}

// maxHeaderMemoBytes bounds the memo by the size of the segments it
// remembers; when full it is emptied.
const maxHeaderMemoBytes = 4 << 20

// headerMemo is guarded by mu.
type headerMemo struct {
	mu    sync.Mutex
	m     map[string]jwsHeader
	bytes int
}

// read returns the header of segment seg (its X5C shared: read only).
func (m *headerMemo) read(seg string) (jwsHeader, error) {
	m.mu.Lock()
	h, ok := m.m[seg]
	m.mu.Unlock()
	if ok {
		return h, nil
	}
	raw, err := b64url.DecodeString(seg)
	if err != nil {
		return h, errors.New("header is not base64url")
	}
	if h, err = readHeader(raw); err != nil {
		return h, fmt.Errorf("header: %v", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bytes+len(seg) > maxHeaderMemoBytes {
		m.m, m.bytes = map[string]jwsHeader{}, 0
	}
	m.m[seg] = h
	m.bytes += len(seg)
	return h, nil
}

// readHeader reads a protected header strictly: a JSON object, no name
// twice (RFC 7515 §4), alg, kid and typ strings and x5c an array of
// strings when present, and no crit (this verifier understands no
// extension, RFC 7515 §4.1.11) nor b64 (RFC 7797). Other members are
// ignored.
func readHeader(raw []byte) (jwsHeader, error) {
	var h jwsHeader
	err := readObject(raw, func(name string, v json.RawMessage) error {
		switch name {
		case "alg":
			return readString(v, &h.Alg)
		case "kid":
			return readString(v, &h.KeyID)
		case "typ":
			return readString(v, &h.Type)
		case "x5c":
			if len(v) == 0 || v[0] != '[' || json.Unmarshal(v, &h.X5C) != nil {
				return errors.New("x5c is not an array of strings")
			}
		case "crit", "b64":
			return fmt.Errorf("%s is not supported", name)
		}
		return nil
	})
	return h, err
}

// checkJWS checks j's signature with key: header typ typ, an algorithm of
// signatureAlgorithms that matches the key. ECDSA signatures (ES256,
// ES384: what SPIFFE authorities and agents sign with) are checked here
// with crypto/ecdsa over the signing input as received; RSA ones (RS256,
// PS256) by go-jose.
func checkJWS(j *compactJWS, key any, typ string) error {
	if j.header.Type != typ {
		return fmt.Errorf("typ %q, not %q", j.header.Type, typ)
	}
	if k, ok := key.(*ecdsa.PublicKey); ok {
		return j.checkECDSA(k)
	}
	jws, err := jose.ParseSignedCompact(j.compact, signatureAlgorithms)
	if err != nil {
		return err
	}
	if len(jws.Signatures) != 1 {
		return fmt.Errorf("%d signatures", len(jws.Signatures))
	}
	if t, _ := jws.Signatures[0].Header.ExtraHeaders[jose.HeaderType].(string); t != typ {
		return fmt.Errorf("typ %q, not %q", t, typ)
	}
	_, err = jws.Verify(key)
	return err
}

// checkECDSA checks an ES256 (P-256 key) or ES384 (P-384 key) signature:
// R and S, big-endian, each the size of the curve's order (RFC 7518
// §3.4).
func (j *compactJWS) checkECDSA(key *ecdsa.PublicKey) error {
	var digest []byte
	var size int
	switch {
	case j.header.Alg == string(jose.ES256) && key.Curve == elliptic.P256():
		d := sha256.Sum256([]byte(j.signingInput))
		digest, size = d[:], 32
	case j.header.Alg == string(jose.ES384) && key.Curve == elliptic.P384():
		d := sha512.Sum384([]byte(j.signingInput))
		digest, size = d[:], 48
	default:
		return fmt.Errorf("algorithm %q does not fit the key", j.header.Alg)
	}
	if len(j.signature) != 2*size {
		return fmt.Errorf("signature of %d bytes, not %d", len(j.signature), 2*size)
	}
	r := new(big.Int).SetBytes(j.signature[:size])
	s := new(big.Int).SetBytes(j.signature[size:])
	if !ecdsa.Verify(key, digest, r, s) {
		return errors.New("signature does not verify")
	}
	return nil
}

// verifyJWS is checkJWS, unless these exact bytes were verified with
// this key before.
func verifyJWS(j *compactJWS, key any, typ string) error {
	k := sigKey{jws: sha256.Sum256([]byte(j.compact)), key: keyHash(key)}
	if k.key == ([32]byte{}) {
		return errors.New("unusable key")
	}
	if verifiedSigs.has(k) {
		return nil
	}
	if err := checkJWS(j, key, typ); err != nil {
		return err
	}
	verifiedSigs.add(k)
	return nil
}

// keyHash identifies a public key: for an ECDSA key the SHA-256 of its
// curve's name and its point, for others of its SPKI (zero for a key that
// has neither, which verifies nothing).
func keyHash(key any) [32]byte {
	if k, ok := key.(*ecdsa.PublicKey); ok {
		if p, err := k.Bytes(); err == nil {
			return sha256.Sum256(append([]byte(k.Curve.Params().Name+":"), p...))
		}
	}
	spki, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return [32]byte{}
	}
	return sha256.Sum256(spki)
}
