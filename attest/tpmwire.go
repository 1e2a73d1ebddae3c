package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	_ "crypto/sha512" // crypto.SHA384
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math/big"

	"github.com/google/go-tpm/tpm2"

	"mandate.dev/mandate/echo"
)

// Wire limits: no TPM structure Mandate accepts is larger.
const (
	maxTPMPublicSize = 1024 // TPM2B_PUBLIC of an RSA-4096 key is < 700 bytes
	maxAttestSize    = 1024 // TPMS_ATTEST of a quote
	maxSignatureSize = 1024 // TPMT_SIGNATURE, RSA-4096 at most
)

// ErrTPMMalformed is returned for bytes that are not the TPM structure a
// field must hold (bad size prefixes, trailing bytes, unknown algorithms,
// a non-canonical encoding).
var ErrTPMMalformed = errors.New("attest: malformed TPM structure")

// unmarshalStrict decodes exactly one T from b: every byte must be used,
// and the bytes must be T's canonical encoding (the TPM's own), so that
// what is hashed and signed is what was checked. go-tpm's decoder is
// reflection-based; a panic in it is reported as malformed input.
func unmarshalStrict[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](what string, b []byte) (t *T, err error) {
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, fmt.Errorf("%w: %s: undecodable", ErrTPMMalformed, what)
		}
	}()
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: %s is empty", ErrTPMMalformed, what)
	}
	t, err = tpm2.Unmarshal[T, P](b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrTPMMalformed, what, err)
	}
	if !bytes.Equal(tpm2.Marshal(*t), b) {
		return nil, fmt.Errorf("%w: %s has trailing or non-canonical bytes", ErrTPMMalformed, what)
	}
	return t, nil
}

// TPMPublic is a TPMT_PUBLIC as received: the exact bytes (without the
// TPM2B size prefix), their decoding, and the public key they hold.
type TPMPublic struct {
	Raw    []byte
	Public *tpm2.TPMTPublic
	Key    crypto.PublicKey // *rsa.PublicKey or *ecdsa.PublicKey
}

// SHA256Hex is the hex SHA-256 of the TPMT_PUBLIC bytes: a TPM node's id.
func (p *TPMPublic) SHA256Hex() string {
	sum := sha256.Sum256(p.Raw)
	return hex.EncodeToString(sum[:])
}

// Name is the TPM object name: nameAlg (2 bytes, big-endian) followed by
// the nameAlg digest of the TPMT_PUBLIC bytes, computed here from the
// bytes received rather than taken from the client.
func (p *TPMPublic) Name() ([]byte, error) {
	h, err := hashFor(p.Public.NameAlg)
	if err != nil {
		return nil, err
	}
	h.Write(p.Raw)
	name := binary.BigEndian.AppendUint16(nil, uint16(p.Public.NameAlg))
	return h.Sum(name), nil
}

// ParseTPM2BPublic decodes a TPM2B_PUBLIC (two-byte size, then the
// TPMT_PUBLIC) of an RSA or ECC key.
func ParseTPM2BPublic(what string, b []byte) (*TPMPublic, error) {
	if len(b) < 2 || len(b) > maxTPMPublicSize {
		return nil, fmt.Errorf("%w: %s: %d bytes", ErrTPMMalformed, what, len(b))
	}
	size := int(binary.BigEndian.Uint16(b))
	if size != len(b)-2 {
		return nil, fmt.Errorf("%w: %s: size prefix %d, %d bytes follow", ErrTPMMalformed, what, size, len(b)-2)
	}
	raw := bytes.Clone(b[2:])
	pub, err := unmarshalStrict[tpm2.TPMTPublic](what, raw)
	if err != nil {
		return nil, err
	}
	key, err := publicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrTPMMalformed, what, err)
	}
	return &TPMPublic{Raw: raw, Public: pub, Key: key}, nil
}

// publicKey returns the RSA or ECDSA key of pub, checking that an RSA
// modulus has the declared size and an ECC point is on its curve. Both
// are held to their one encoding, as a TPM writes them: a modulus of
// exactly its declared size in bytes, coordinates of exactly the
// curve's (no leading zero bytes added, none left out). A node is named
// by the digest of its EK's encoding: a key that read the same from
// several encodings would be several nodes, and a banned TPM could come
// back as another.
func publicKey(pub *tpm2.TPMTPublic) (crypto.PublicKey, error) {
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		parms, err := pub.Parameters.RSADetail()
		if err != nil {
			return nil, err
		}
		n, err := pub.Unique.RSA()
		if err != nil {
			return nil, err
		}
		e := int(parms.Exponent)
		if e == 0 {
			e = 65537
		}
		if e < 3 || e%2 == 0 {
			return nil, fmt.Errorf("RSA exponent %d", parms.Exponent)
		}
		if len(n.Buffer)*8 != int(parms.KeyBits) {
			return nil, fmt.Errorf("RSA modulus of %d bytes, declared %d bits", len(n.Buffer), parms.KeyBits)
		}
		key := &rsa.PublicKey{N: new(big.Int).SetBytes(n.Buffer), E: e}
		if key.N.BitLen() != int(parms.KeyBits) {
			return nil, fmt.Errorf("RSA modulus of %d bits, declared %d", key.N.BitLen(), parms.KeyBits)
		}
		if key.N.BitLen() < 2048 || key.N.BitLen() > 4096 {
			return nil, fmt.Errorf("RSA key of %d bits (2048 to 4096 accepted)", key.N.BitLen())
		}
		return key, nil
	case tpm2.TPMAlgECC:
		parms, err := pub.Parameters.ECCDetail()
		if err != nil {
			return nil, err
		}
		pt, err := pub.Unique.ECC()
		if err != nil {
			return nil, err
		}
		var curve elliptic.Curve
		var size int
		switch parms.CurveID {
		case tpm2.TPMECCNistP256:
			curve, size = elliptic.P256(), 32
		case tpm2.TPMECCNistP384:
			curve, size = elliptic.P384(), 48
		default:
			return nil, fmt.Errorf("ECC curve %#x (P-256 and P-384 accepted)", uint16(parms.CurveID))
		}
		if len(pt.X.Buffer) != size || len(pt.Y.Buffer) != size {
			return nil, fmt.Errorf("ECC point coordinates of %d and %d bytes, not %d", len(pt.X.Buffer), len(pt.Y.Buffer), size)
		}
		enc := make([]byte, 1+2*size)
		enc[0] = 4
		copy(enc[1+size-len(pt.X.Buffer):1+size], pt.X.Buffer)
		copy(enc[1+2*size-len(pt.Y.Buffer):], pt.Y.Buffer)
		key, err := ecdsa.ParseUncompressedPublicKey(curve, enc)
		if err != nil {
			return nil, fmt.Errorf("ECC point: %v", err)
		}
		return key, nil
	default:
		return nil, fmt.Errorf("key type %#x (RSA and ECC accepted)", uint16(pub.Type))
	}
}

// hashFor returns a new hash for a TPM hash algorithm Mandate accepts.
func hashFor(alg tpm2.TPMIAlgHash) (hash.Hash, error) {
	h, err := cryptoHash(alg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTPMMalformed, err)
	}
	return h.New(), nil
}

func cryptoHash(alg tpm2.TPMIAlgHash) (crypto.Hash, error) {
	switch alg {
	case tpm2.TPMAlgSHA256:
		return crypto.SHA256, nil
	case tpm2.TPMAlgSHA384:
		return crypto.SHA384, nil
	default:
		return 0, fmt.Errorf("hash algorithm %#x (SHA-256 and SHA-384 accepted)", uint16(alg))
	}
}

// ParseAttest decodes a TPMS_ATTEST (without a TPM2B size prefix: the
// bytes the TPM signed).
func ParseAttest(b []byte) (*tpm2.TPMSAttest, error) {
	if len(b) > maxAttestSize {
		return nil, fmt.Errorf("%w: quote: %d bytes", ErrTPMMalformed, len(b))
	}
	return unmarshalStrict[tpm2.TPMSAttest]("quote", b)
}

// ParseSignature decodes a TPMT_SIGNATURE.
func ParseSignature(b []byte) (*tpm2.TPMTSignature, error) {
	if len(b) > maxSignatureSize {
		return nil, fmt.Errorf("%w: signature: %d bytes", ErrTPMMalformed, len(b))
	}
	return unmarshalStrict[tpm2.TPMTSignature]("signature", b)
}

// maxQuoted bounds what an error quotes of a name the caller chose (a
// PCR index, a bank): refusals are logged and recorded.
const maxQuoted = 16

// QuotedCut is s as a Go string literal, cut to its first maxQuoted bytes
// (and marked as cut) when longer.
func QuotedCut(s string) string { return echo.Quote(s, maxQuoted) }

// pcrIndexes lists the PCRs a TPMS_PCR_SELECTION bitmap selects, in
// ascending order.
func pcrIndexes(bitmap []byte) []int {
	var out []int
	for i, b := range bitmap {
		for bit := 0; bit < 8; bit++ {
			if b&(1<<bit) != 0 {
				out = append(out, i*8+bit)
			}
		}
	}
	return out
}
