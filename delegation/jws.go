package delegation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"strings"
	"sync"

	"github.com/go-jose/go-jose/v4"

	"mandate.dev/mandate/ca/presented"
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
	// known is set when the header was read from the memo of headers
	// of signatures that verified.
	known bool
}

// jwsHeader is what the verifiers read of a JWS protected header.
type jwsHeader struct {
	Alg   string
	KeyID string
	Type  string
	// Certs is the x5c chain, leaf first (shared by every JWS with the
	// same header: read only).
	Certs []*x509.Certificate
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
	if j.header, j.known = headers.get(h); !j.known {
		raw, err := b64url.DecodeString(h)
		if err != nil {
			return nil, errors.New("header is not base64url")
		}
		if j.header, err = readHeader(raw); err != nil {
			return nil, fmt.Errorf("header: %v", err)
		}
	}
	if j.payload, err = b64url.DecodeString(p); err != nil {
		return nil, errors.New("payload is not base64url")
	}
	if j.signature, err = b64url.DecodeString(s); err != nil {
		return nil, errors.New("signature is not base64url")
	}
	return j, nil
}

// headers remembers the protected headers of signatures that verified,
// by their base64url segment: a hop's statement header (its delegator's
// x5c chain) and its issuer's token header are the same for many tokens.
var headers = newMemo[string, jwsHeader](maxHeaderMemoBytes)

// maxHeaderMemoBytes bounds the memo (see rememberHeader).
const maxHeaderMemoBytes = 8 << 20

// rememberHeader keeps j's header, once its signature has verified
// (counting its segment, and about twice as much again for the parsed
// certificates). The segment is kept as a copy: a slice of j's compact
// form would keep the whole JWS (a token, its parents inside) alive,
// uncounted.
func rememberHeader(j *compactJWS) {
	if j.known {
		return
	}
	seg, _, _ := strings.Cut(j.compact, ".")
	headers.put(strings.Clone(seg), j.header, 3*len(seg)+256)
}

// maxX5C bounds the certificates of an x5c chain.
const maxX5C = 4

// maxRSABits bounds the RSA keys a signature is checked with (as
// crypto/tls bounds a peer's, and Mandate's CA the keys it certifies):
// the cost of an RSA operation grows with the square of the modulus, and
// a certificate in an x5c, or a delegator's SVID issued by another trust
// domain's CA, may hold a key of any size (a 70,000-bit key in a hop of
// a token costs a verifier a quarter of a second, whatever the signature
// is worth). It is the bound of the X509-SVID chains presented elsewhere.
const maxRSABits = presented.MaxRSABits

// minRSABits is the least RSA key a signature is checked with: RFC 7518
// §3.3 and §3.5 require 2048 bits or more for RS256 and PS256, as
// SignStatement requires of a delegator's key, Mandate's CA of the keys
// it certifies, and a federated bundle of its keys. A delegator's SVID
// certified by another trust domain's CA, or a token key of a bundle
// read elsewhere, may hold a smaller one.
const minRSABits = 2048

// checkRSASigningKey refuses an RSA key of fewer than minRSABits, or
// more than maxRSABits, to check a signature with.
func checkRSASigningKey(key any) error {
	if k, ok := key.(*rsa.PublicKey); ok && k.N != nil && k.N.BitLen() < minRSABits {
		return fmt.Errorf("an RSA key of %d bits (at least %d)", k.N.BitLen(), minRSABits)
	}
	return checkRSASize(key)
}

// checkRSASize refuses an RSA key of more than maxRSABits.
func checkRSASize(key any) error {
	if k, ok := key.(*rsa.PublicKey); ok && k.N != nil && k.N.BitLen() > maxRSABits {
		return fmt.Errorf("an RSA key of %d bits (at most %d)", k.N.BitLen(), maxRSABits)
	}
	return nil
}

// readHeader reads a protected header strictly: a JSON object, no name
// twice (RFC 7515 §4), with alg, typ, and optionally kid (strings) and
// x5c (1 to maxX5C base64 DER certificates, no RSA key of more than
// maxRSABits), and nothing else: no crit
// (this verifier understands no extension, RFC 7515 §4.1.11), no b64
// (RFC 7797), no embedded jwk.
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
			var x5c []string
			if len(v) == 0 || v[0] != '[' || json.Unmarshal(v, &x5c) != nil {
				return errors.New("x5c is not an array of strings")
			}
			if len(x5c) == 0 || len(x5c) > maxX5C {
				return fmt.Errorf("x5c holds %d certificates (1 to %d)", len(x5c), maxX5C)
			}
			h.Certs = make([]*x509.Certificate, len(x5c))
			for i, c := range x5c {
				der, err := base64.StdEncoding.Strict().DecodeString(c)
				if err != nil {
					return fmt.Errorf("x5c[%d] is not base64", i)
				}
				if h.Certs[i], err = x509.ParseCertificate(der); err != nil {
					return fmt.Errorf("x5c[%d]: %v", i, err)
				}
				if err := checkRSASize(h.Certs[i].PublicKey); err != nil {
					return fmt.Errorf("x5c[%d]: %v", i, err)
				}
			}
			return nil
		}
		return fmt.Errorf("member %q is not accepted", name)
	})
	return h, err
}

// checkJWS checks j's signature with key: header typ typ, an algorithm of
// signatureAlgorithms that matches the key, an RSA key of minRSABits to
// maxRSABits. ECDSA signatures (ES256,
// ES384: what SPIFFE authorities and agents sign with) are checked here
// with crypto/ecdsa over the signing input as received; RSA ones (RS256,
// PS256) by go-jose.
func checkJWS(j *compactJWS, key any, typ string) error {
	if j.header.Type != typ {
		return fmt.Errorf("typ %q, not %q", j.header.Type, typ)
	}
	if err := checkRSASigningKey(key); err != nil {
		return err
	}
	var err error
	if k, ok := key.(*ecdsa.PublicKey); ok {
		err = j.checkECDSA(k)
	} else {
		err = checkJOSE(j.compact, key, typ)
	}
	if err == nil {
		rememberHeader(j)
	}
	return err
}

// checkJOSE checks compact's signature with go-jose: one signature, an
// algorithm of signatureAlgorithms matching the key, header typ typ.
func checkJOSE(compact string, key any, typ string) error {
	jws, err := jose.ParseSignedCompact(compact, signatureAlgorithms)
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
		digest, size = hashString(sha256.New(), j.signingInput), 32
	case j.header.Alg == string(jose.ES384) && key.Curve == elliptic.P384():
		digest, size = hashString(sha512.New384(), j.signingInput), 48
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

// hashString is the hash h of s, written through a small buffer: a
// token with its parents inside is kilobytes, and copying it whole into a
// new slice costs more than hashing it. The buffer is pooled: written to
// a hash.Hash, it would escape, and be allocated on every call.
func hashString(h hash.Hash, s string) []byte {
	buf := hashBuffers.Get().(*[512]byte)
	for len(s) > 0 {
		n := copy(buf[:], s)
		h.Write(buf[:n])
		s = s[n:]
	}
	hashBuffers.Put(buf)
	return h.Sum(nil)
}

var hashBuffers = sync.Pool{New: func() any { return new([512]byte) }}

// sha256String is the SHA-256 of s (hashString's).
func sha256String(s string) (sum [sha256.Size]byte) {
	copy(sum[:], hashString(sha256.New(), s))
	return sum
}

// verifyJWS is checkJWS, unless these exact bytes were verified with
// this key (whose keyHash is kh) before.
func verifyJWS(j *compactJWS, key any, kh [32]byte, typ string) error {
	k := sigKey{key: kh}
	k.jws = sha256String(j.compact)
	if k.key == ([32]byte{}) {
		return errors.New("unusable key")
	}
	if _, ok := verifiedSigs.get(k); ok {
		return nil
	}
	if err := checkJWS(j, key, typ); err != nil {
		return err
	}
	verifiedSigs.put(k, struct{}{}, 1)
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
