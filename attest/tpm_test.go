package attest_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/attest/tpmdevice"
	"mandate.dev/mandate/attest/tpmtest"
)

// openSim starts the simulator for one test (one at a time per process).
func openSim(t *testing.T, seed int64) transport.TPMCloser {
	t.Helper()
	tpm, err := tpmdevice.OpenSimulator(seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	return tpm
}

func openDevice(t *testing.T, tpm transport.TPM, ek string) *tpmdevice.Device {
	t.Helper()
	d, err := tpmdevice.Open(tpm, tpmdevice.Options{EK: ek})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func ekHash(t *testing.T, d *tpmdevice.Device) string {
	t.Helper()
	p, err := attest.ParseTPM2BPublic("ek", d.EKPublic())
	if err != nil {
		t.Fatal(err)
	}
	return p.SHA256Hex()
}

// bootProfile reads the simulator's current PCRs as a profile.
func bootProfile(t *testing.T, tpm transport.TPM, name string, pcrs ...int) attest.PCRProfile {
	t.Helper()
	vals, err := tpmdevice.ReadPCRs(tpm, pcrs)
	if err != nil {
		t.Fatal(err)
	}
	return attest.PCRProfile{Name: name, SHA256: vals}
}

// answer runs the device side of a challenge.
func answer(t testing.TB, tpm transport.TPM, d *tpmdevice.Device, ch *attest.Challenge) attest.Evidence {
	t.Helper()
	secret, err := d.Activate(ch.CredentialBlob, ch.EncryptedSecret)
	if err != nil {
		t.Fatal(err)
	}
	q, sig, err := d.Quote(ch.Session.Nonce, ch.Session.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := tpmdevice.ReadPCRs(tpm, ch.Session.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	pcrs := map[string][]byte{}
	for i, v := range vals {
		pcrs[strconv.Itoa(i)] = v
	}
	return attest.Evidence{Secret: secret, Quote: q, Signature: sig, PCRs: pcrs}
}

func TestTPMProtocolWithSimulator(t *testing.T) {
	for _, ekType := range []string{tpmdevice.EKRSA, tpmdevice.EKECC} {
		t.Run(ekType, func(t *testing.T) {
			tpm := openSim(t, 1)
			d := openDevice(t, tpm, ekType)
			prof := bootProfile(t, tpm, "edge-v1", 0, 1, 2, 3, 4, 5, 6, 7, 16)
			v, err := attest.NewTPMVerifier(attest.TPMConfig{EKAllowlist: []string{ekHash(t, d)},
				Profiles: []attest.PCRProfile{prof}, Allowed: []string{"edge-v1"}})
			if err != nil {
				t.Fatal(err)
			}
			ek, err := v.CheckEK(d.EKPublic(), nil)
			if err != nil {
				t.Fatal(err)
			}
			ak, err := attest.CheckAK(d.AKPublic())
			if err != nil {
				t.Fatal(err)
			}
			ch, err := v.NewChallenge(ek, ak, "", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			ev := answer(t, tpm, d, ch)
			res, err := v.Verify(ch.Session, ev)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			sum := sha256.Sum256(ev.Quote)
			if res.Profile != "edge-v1" || res.EKHash != ekHash(t, d) || !bytes.Equal(mustHex(t, res.QuoteDigest), sum[:]) {
				t.Fatalf("result %+v", res)
			}

			// Drift: one extend later the same evidence shape fails policy.
			if err := tpmdevice.ExtendPCR(tpm, 7, bytes.Repeat([]byte{1}, 32)); err != nil {
				t.Fatal(err)
			}
			ch2, err := v.NewChallenge(ek, ak, "", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Verify(ch2.Session, answer(t, tpm, d, ch2)); !errors.Is(err, attest.ErrPCRPolicy) {
				t.Fatalf("after drift: %v, want ErrPCRPolicy", err)
			}
		})
	}
}

// A challenge asked under other PCR profiles (a restart changed them
// while it was open) that does not quote a PCR the profiles now check is
// stale: refused as expired, never taken for drift.
func TestChallengeUnderOtherProfilesIsStale(t *testing.T) {
	tpm := openSim(t, 3)
	d := openDevice(t, tpm, tpmdevice.EKECC)
	cfg := func(pcrs ...int) *attest.TPMVerifier {
		v, err := attest.NewTPMVerifier(attest.TPMConfig{EKAllowlist: []string{ekHash(t, d)},
			Profiles: []attest.PCRProfile{bootProfile(t, tpm, "p", pcrs...)}, Allowed: []string{"p"}})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	before, after := cfg(0, 1, 2, 7), cfg(0, 1, 2, 7, 8)
	ek, err := before.CheckEK(d.EKPublic(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := attest.CheckAK(d.AKPublic())
	if err != nil {
		t.Fatal(err)
	}
	ch, err := before.NewChallenge(ek, ak, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ev := answer(t, tpm, d, ch)
	if _, err := after.Verify(ch.Session, ev); !errors.Is(err, attest.ErrChallengeExpired) || errors.Is(err, attest.ErrPCRPolicy) {
		t.Fatalf("a challenge asked before PCR 8 was checked: %v, want ErrChallengeExpired (not ErrPCRPolicy)", err)
	}
	// Profiles checking fewer PCRs than were quoted: still decided.
	if _, err := cfg(0, 1).Verify(ch.Session, ev); err != nil {
		t.Fatalf("a challenge quoting more PCRs than now checked: %v", err)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An EK (or any TPM key) is read from its one encoding, as a TPM writes
// it: a node is named by the digest of that encoding, so a key that read
// the same from a modulus with leading zero bytes, or from a coordinate
// short of its curve's size, would come back, banned, as another node.
func TestTPMPublicOneEncoding(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var point []byte // 0x04 || X || Y, X with a leading zero byte
	for point == nil || point[1] != 0 {
		ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if point, err = ecKey.PublicKey.Bytes(); err != nil {
			t.Fatal(err)
		}
	}
	modulus := rsaKey.N.Bytes()
	x, y := point[1:33], point[33:]
	wire := func(pub tpm2.TPMTPublic) []byte { return tpm2.Marshal(tpm2.TPM2BData{Buffer: tpm2.Marshal(pub)}) }
	rsaPub := func(n []byte) []byte {
		pub := tpm2.RSAEKTemplate
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: n})
		return wire(pub)
	}
	eccPub := func(x, y []byte) []byte {
		pub := tpm2.ECCEKTemplate
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y}})
		return wire(pub)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"an RSA modulus of its size", rsaPub(modulus), true},
		{"an RSA modulus with a leading zero byte", rsaPub(append([]byte{0}, modulus...)), false},
		{"ECC coordinates of the curve's size", eccPub(x, y), true},
		{"an ECC coordinate short of it", eccPub(x[1:], y), false},
		{"an ECC coordinate with a leading zero byte more", eccPub(append([]byte{0}, x...), y), false},
	} {
		_, err := attest.ParseTPM2BPublic("ek", tc.b)
		if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, attest.ErrTPMMalformed) {
			t.Errorf("%s: ParseTPM2BPublic = %v, want ok=%v (or ErrTPMMalformed)", tc.name, err, tc.ok)
		}
	}
}

func TestEKCertKeyTypesConfig(t *testing.T) {
	prof := attest.PCRProfile{Name: "p", SHA256: map[int][]byte{0: make([]byte, 32)}}
	for _, tc := range []struct {
		types []string
		want  []string // nil: refused
	}{
		{nil, []string{"rsa", "ecc"}},
		{[]string{"rsa"}, []string{"rsa"}},
		{[]string{"ecc"}, []string{"ecc"}},
		{[]string{"ecc", "rsa"}, []string{"rsa", "ecc"}},
		{[]string{"RSA"}, nil},
		{[]string{"p384"}, nil},
	} {
		v, err := attest.NewTPMVerifier(attest.TPMConfig{EKCertKeyTypes: tc.types, Profiles: []attest.PCRProfile{prof}, Allowed: []string{"p"}})
		switch {
		case tc.want == nil && err == nil:
			t.Errorf("ek_cert_key_types %q accepted", tc.types)
		case tc.want != nil && err != nil:
			t.Errorf("ek_cert_key_types %q: %v", tc.types, err)
		case tc.want != nil && !slices.Equal(v.CertKeyTypes(), tc.want):
			t.Errorf("ek_cert_key_types %q admits %v, want %v", tc.types, v.CertKeyTypes(), tc.want)
		}
	}
}

// An EK is trusted by certificate only if the certificate may certify an
// EK: a manufacturer CA's certificate whose extended key usage limits
// its key to other purposes (a TLS server's, say, for a key kept in
// software) is not one, and with it anyone could answer challenges
// without a TPM.
func TestEKCertificateExtendedKeyUsage(t *testing.T) {
	mfr, err := tpmtest.NewCA("eku")
	if err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub := tpm2.RSAEKTemplate
	pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: key.N.Bytes()})
	ekPub := tpm2.Marshal(tpm2.TPM2BData{Buffer: tpm2.Marshal(pub)})
	v, err := attest.NewTPMVerifier(attest.TPMConfig{EKRoots: []*x509.Certificate{mfr.Cert},
		Profiles: []attest.PCRProfile{{Name: "p", SHA256: map[int][]byte{0: make([]byte, 32)}}}, Allowed: []string{"p"}})
	if err != nil {
		t.Fatal(err)
	}
	tcg := asn1.ObjectIdentifier{2, 23, 133, 8, 1}
	other := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}
	for _, tc := range []struct {
		name    string
		eku     []x509.ExtKeyUsage
		unknown []asn1.ObjectIdentifier
		ok      bool
	}{
		{"tcg-kp-EKCertificate", nil, []asn1.ObjectIdentifier{tcg}, true},
		{"no extended key usage", nil, nil, true},
		{"any usage", []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, nil, true},
		{"TLS server and tcg-kp-EKCertificate", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []asn1.ObjectIdentifier{tcg}, true},
		{"TLS server only", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, nil, false},
		{"another usage only", nil, []asn1.ObjectIdentifier{other}, false},
	} {
		der, err := mfr.IssueCert(&key.PublicKey, tc.eku, tc.unknown)
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.CheckEK(ekPub, der)
		if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, attest.ErrEKCertInvalid) {
			t.Errorf("%s: CheckEK = %v, want ok=%v (or ErrEKCertInvalid)", tc.name, err, tc.ok)
		}
	}
}
