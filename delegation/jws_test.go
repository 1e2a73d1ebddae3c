package delegation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"math/big"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"
	"weak"

	"github.com/go-jose/go-jose/v4"
)

// jwsKey is the P-256 key the JWS tests sign with; certB64 a
// self-signed certificate of it, base64 (as in x5c).
var (
	jwsKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	certB64   = func() string {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &jwsKey.PublicKey, jwsKey)
		if err != nil {
			panic(err)
		}
		return base64.StdEncoding.EncodeToString(der)
	}()
)

// signRaw signs header and payload as given (no re-encoding) with ES256
// under key, r and s each 32 bytes.
func signRaw(t testing.TB, key *ecdsa.PrivateKey, header, payload string) string {
	t.Helper()
	in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	d := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// joseAccepts is the reference: what go-jose says of compact, with the
// same algorithms and typ.
func joseAccepts(compact string, key any, typ string) bool {
	jws, err := jose.ParseSignedCompact(compact, signatureAlgorithms)
	if err != nil || len(jws.Signatures) != 1 {
		return false
	}
	if tt, _ := jws.Signatures[0].Header.ExtraHeaders[jose.HeaderType].(string); tt != typ {
		return false
	}
	_, err = jws.Verify(key)
	return err == nil
}

func parseAndCheck(compact string, key any, typ string) error {
	j, err := parseCompact(compact)
	if err != nil {
		return err
	}
	return checkJWS(j, key, typ)
}

// TestCheckJWS checks the ECDSA verifier on what a verifier must refuse
// and on what it must accept, each time against go-jose's answer.
func TestCheckJWS(t *testing.T) {
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	good := signRaw(t, jwsKey, `{"alg":"ES256","typ":"t"}`, "payload")
	hdr, rest, _ := strings.Cut(good, ".")
	payload, sig, _ := strings.Cut(rest, ".")
	rawSig, _ := base64.RawURLEncoding.DecodeString(sig)
	// s replaced by n - s: the same signature in its other form.
	n := elliptic.P256().Params().N
	s := new(big.Int).SetBytes(rawSig[32:])
	flipped := append(append([]byte{}, rawSig[:32]...), new(big.Int).Sub(n, s).FillBytes(make([]byte, 32))...)
	for _, tc := range []struct {
		name    string
		compact string
		key     any
		ok      bool
	}{
		{"ES256", good, &jwsKey.PublicKey, true},
		{"kid and x5c", signRaw(t, jwsKey, `{"alg":"ES256","typ":"t","kid":"k","x5c":["`+certB64+`"]}`, "p"), &jwsKey.PublicKey, true},
		{"another member", signRaw(t, jwsKey, `{"alg":"ES256","typ":"t","zzz":1}`, "p"), &jwsKey.PublicKey, false},
		{"a number go-jose cannot read", signRaw(t, jwsKey, `{"alg":"ES256","typ":"t","zzz":1e400}`, "p"), &jwsKey.PublicKey, false},
		{"nonce", signRaw(t, jwsKey, `{"alg":"ES256","typ":"t","nonce":1}`, "p"), &jwsKey.PublicKey, false},
		{"embedded jwk", signRaw(t, jwsKey, `{"alg":"ES256","typ":"t","jwk":{"kty":"EC"}}`, "p"), &jwsKey.PublicKey, false},
		{"empty x5c", signRaw(t, jwsKey, `{"alg":"ES256","typ":"t","x5c":[]}`, "p"), &jwsKey.PublicKey, false},
		{"x5c not a certificate", signRaw(t, jwsKey, `{"alg":"ES256","typ":"t","x5c":["AAAA"]}`, "p"), &jwsKey.PublicKey, false},
		{"x5c not base64", signRaw(t, jwsKey, `{"alg":"ES256","typ":"t","x5c":["not base64!"]}`, "p"), &jwsKey.PublicKey, false},
		{"kid null", signRaw(t, jwsKey, `{"alg":"ES256","typ":"t","kid":null}`, "p"), &jwsKey.PublicKey, false},
		{"the other form of the same signature", hdr + "." + payload + "." + base64.RawURLEncoding.EncodeToString(flipped), &jwsKey.PublicKey, true},
		{"another key", good, &other.PublicKey, false},
		{"a P-384 key for ES256", good, &p384.PublicKey, false},
		{"ES384 claimed over a P-256 key", signRaw(t, jwsKey, `{"alg":"ES384","typ":"t"}`, "p"), &jwsKey.PublicKey, false},
		{"alg none", signRaw(t, jwsKey, `{"alg":"none","typ":"t"}`, "p"), &jwsKey.PublicKey, false},
		{"HS256", signRaw(t, jwsKey, `{"alg":"HS256","typ":"t"}`, "p"), &jwsKey.PublicKey, false},
		{"no alg", signRaw(t, jwsKey, `{"typ":"t"}`, "p"), &jwsKey.PublicKey, false},
		{"alg in other case", signRaw(t, jwsKey, `{"ALG":"ES256","typ":"t"}`, "p"), &jwsKey.PublicKey, false},
		{"typ in other case", signRaw(t, jwsKey, `{"alg":"ES256","TYP":"t"}`, "p"), &jwsKey.PublicKey, false},
		{"another typ", signRaw(t, jwsKey, `{"alg":"ES256","typ":"u"}`, "p"), &jwsKey.PublicKey, false},
		{"alg twice", signRaw(t, jwsKey, `{"alg":"HS256","typ":"t","alg":"ES256"}`, "p"), &jwsKey.PublicKey, false},
		{"typ twice", signRaw(t, jwsKey, `{"alg":"ES256","typ":"u","typ":"t"}`, "p"), &jwsKey.PublicKey, false},
		{"crit", signRaw(t, jwsKey, `{"alg":"ES256","typ":"t","crit":["exp"],"exp":1}`, "p"), &jwsKey.PublicKey, false},
		{"b64 false", signRaw(t, jwsKey, `{"alg":"ES256","typ":"t","b64":false,"crit":["b64"]}`, "p"), &jwsKey.PublicKey, false},
		{"alg not a string", signRaw(t, jwsKey, `{"alg":["ES256"],"typ":"t"}`, "p"), &jwsKey.PublicKey, false},
		{"header not an object", signRaw(t, jwsKey, `["alg","ES256"]`, "p"), &jwsKey.PublicKey, false},
		{"data after the header", signRaw(t, jwsKey, `{"alg":"ES256","typ":"t"}{}`, "p"), &jwsKey.PublicKey, false},
		{"signature cut short", hdr + "." + payload + "." + sig[:len(sig)-2], &jwsKey.PublicKey, false},
		{"signature in DER", hdr + "." + payload + "." + base64.RawURLEncoding.EncodeToString(derSig(t, hdr+"."+payload)), &jwsKey.PublicKey, false},
		{"payload changed", hdr + "." + base64.RawURLEncoding.EncodeToString([]byte("payloae")) + "." + sig, &jwsKey.PublicKey, false},
		{"padded base64", hdr + "." + payload + "." + sig + "==", &jwsKey.PublicKey, false},
		{"four segments", good + ".x", &jwsKey.PublicKey, false},
		{"zero signature", hdr + "." + payload + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 64)), &jwsKey.PublicKey, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := parseAndCheck(tc.compact, tc.key, "t")
			if (err == nil) != tc.ok {
				t.Errorf("checkJWS = %v, want ok %v", err, tc.ok)
			}
			if err == nil && !joseAccepts(tc.compact, tc.key, "t") {
				t.Errorf("accepted what go-jose refuses")
			}
		})
	}
}

func derSig(t *testing.T, in string) []byte {
	d := sha256.Sum256([]byte(in))
	b, err := ecdsa.SignASN1(rand.Reader, jwsKey, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzCheckJWS checks that the ECDSA verifier never accepts what go-jose,
// the reference, refuses: any header, any payload, signed for real or
// with the signature bytes given.
func FuzzCheckJWS(f *testing.F) {
	f.Add(`{"alg":"ES256","typ":"t"}`, "payload", true, []byte{})
	f.Add(`{"alg":"ES256","typ":"t","kid":"k"}`, `{"sub":"x"}`, true, []byte{})
	f.Add(`{"alg":"ES384","typ":"t"}`, "p", true, []byte{})
	f.Add(`{"alg":"none","typ":"t"}`, "p", false, []byte{})
	f.Add(`{"alg":"ES256","typ":"t","crit":["b64"],"b64":false}`, "p", true, []byte{})
	f.Add(`{"alg":"ES256","typ":"t"}`, "p", false, make([]byte, 64))
	f.Add(`{"alg":"ES256","typ":"t","x5c":["`+certB64+`"]}`, "p", true, []byte{})
	f.Add(`{"alg":"ES256","typ":"t","x5c":["AAAA"]}`, "p", true, []byte{})
	f.Add(`{"alg":"ES256","typ":"t","nonce":1}`, "p", true, []byte{})
	f.Add(`{"alg":"ES256","typ":"t","jwk":{"kty":"EC"}}`, "p", true, []byte{})
	f.Add(`{"alg":"ES256","typ":"t","zzz":1e400}`, "p", true, []byte{})
	f.Fuzz(func(t *testing.T, header, payload string, sign bool, sig []byte) {
		compact := signRaw(t, jwsKey, header, payload)
		if !sign {
			in, _, _ := strings.Cut(compact, ".")
			rest := strings.TrimPrefix(compact, in+".")
			p, _, _ := strings.Cut(rest, ".")
			compact = in + "." + p + "." + base64.RawURLEncoding.EncodeToString(sig)
		}
		if parseAndCheck(compact, &jwsKey.PublicKey, "t") == nil && !joseAccepts(compact, &jwsKey.PublicKey, "t") {
			t.Fatalf("accepted %q, which go-jose refuses", compact)
		}
	})
}

// TestHeaderMemo checks that a header is remembered only once a
// signature under it has verified: a caller cannot fill the memo with
// headers of its own.
func TestHeaderMemo(t *testing.T) {
	header := `{"alg":"ES256","typ":"memo-test"}`
	seg := base64.RawURLEncoding.EncodeToString([]byte(header))
	good := signRaw(t, jwsKey, header, "p")
	bad := good[:strings.LastIndexByte(good, '.')+1] + base64.RawURLEncoding.EncodeToString(make([]byte, 64))
	if parseAndCheck(bad, &jwsKey.PublicKey, "memo-test") == nil {
		t.Fatal("a zero signature verified")
	}
	if _, ok := headers.get(seg); ok {
		t.Fatal("the header of a signature that did not verify was remembered")
	}
	if err := parseAndCheck(good, &jwsKey.PublicKey, "memo-test"); err != nil {
		t.Fatal(err)
	}
	if _, ok := headers.get(seg); !ok {
		t.Fatal("the header of a signature that verified was not remembered")
	}
	if err := parseAndCheck(good, &jwsKey.PublicKey, "memo-test"); err != nil {
		t.Fatalf("with the header remembered: %v", err)
	}
}

// TestHeaderMemoKeepsOnlyTheHeader: the memo of headers keeps a header's
// own bytes, not the whole JWS it came in: a token with its parents
// inside is up to MaxTokenSize bytes, and the memo counts (and is
// bounded by) its headers' sizes alone.
func TestHeaderMemoKeepsOnlyTheHeader(t *testing.T) {
	// A header not remembered yet, whatever ran before.
	header := fmt.Sprintf(`{"alg":"ES256","kid":"%s","typ":"memo-keep-test"}`, rand.Text())
	compact := strings.Clone(signRaw(t, jwsKey, header, strings.Repeat("p", 16<<10)))
	jws := weak.Make(unsafe.StringData(compact))
	if err := parseAndCheck(compact, &jwsKey.PublicKey, "memo-keep-test"); err != nil {
		t.Fatal(err)
	}
	if _, ok := headers.get(base64.RawURLEncoding.EncodeToString([]byte(header))); !ok {
		t.Fatal("the header was not remembered")
	}
	runtime.GC()
	if jws.Value() != nil {
		t.Fatal("the memo of headers keeps the whole JWS its header came in alive")
	}
}

// TestRSAKeySizeIsBounded: an RSA key of more than maxRSABits, in a
// certificate of an x5c header or as the key a signature is checked
// with, is refused before any RSA operation with it (whose cost grows
// with the square of its size: a hostile issuer's CA may certify any
// key), and a key of maxRSABits is not.
func TestRSAKeySizeIsBounded(t *testing.T) {
	rsaKey := func(bits int) *rsa.PublicKey {
		n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), uint(bits)))
		if err != nil {
			t.Fatal(err)
		}
		n.SetBit(n, bits-1, 1)
		n.SetBit(n, 0, 1)
		return &rsa.PublicKey{N: n, E: 65537}
	}
	for _, tc := range []struct {
		bits    int
		refused bool
	}{
		{maxRSABits, false},
		{maxRSABits + 8, true},
		{4 * maxRSABits, true},
	} {
		t.Run(fmt.Sprint(tc.bits), func(t *testing.T) {
			key := rsaKey(tc.bits)
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key, jwsKey)
			if err != nil {
				t.Fatal(err)
			}
			header := `{"alg":"RS256","typ":"size-test","x5c":["` + base64.StdEncoding.EncodeToString(der) + `"]}`
			sig := make([]byte, (tc.bits+7)/8)
			sig[len(sig)-1] = 3
			compact := base64.RawURLEncoding.EncodeToString([]byte(header)) + ".cA." + base64.RawURLEncoding.EncodeToString(sig)
			_, err = parseCompact(compact)
			if got := err != nil && strings.Contains(err.Error(), "RSA key of"); got != tc.refused {
				t.Errorf("parseCompact with an x5c certificate of a %d-bit RSA key = %v, want refused for its size: %v", tc.bits, err, tc.refused)
			}
			j := &compactJWS{compact: compact, header: jwsHeader{Alg: "RS256", Type: "size-test"}, signingInput: compact[:strings.LastIndexByte(compact, '.')], signature: sig}
			err = checkJWS(j, key, "size-test")
			if err == nil {
				t.Fatal("a made-up signature verified")
			}
			if got := strings.Contains(err.Error(), "RSA key of"); got != tc.refused {
				t.Errorf("checkJWS with a %d-bit RSA key = %v, want refused for its size: %v", tc.bits, err, tc.refused)
			}
		})
	}
}
