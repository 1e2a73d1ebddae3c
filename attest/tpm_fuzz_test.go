package attest_test

import (
	"bytes"
	"crypto/x509"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/attest/tpmdevice"
	"mandate.dev/mandate/attest/tpmtest"
)

// transcript is one honest exchange with the simulator: the seeds of the
// fuzz targets below.
type transcript struct {
	v       *attest.TPMVerifier // trusts the EK by allowlist and certificate
	vCert   *attest.TPMVerifier // by certificate only
	ekPub   []byte
	akPub   []byte
	ekCert  []byte
	session attest.TPMSession
	ev      attest.Evidence
}

func newTranscript(f *testing.F, ek string) *transcript { return newBenchTranscript(f, ek) }

func newBenchTranscript(f testing.TB, ek string) *transcript {
	f.Helper()
	tpm, err := tpmdevice.OpenSimulator(3)
	if err != nil {
		f.Fatal(err)
	}
	defer tpm.Close()
	d, err := tpmdevice.Open(tpm, tpmdevice.Options{EK: ek})
	if err != nil {
		f.Fatal(err)
	}
	defer d.Close()
	mfr, err := tpmtest.NewCA("fuzz")
	if err != nil {
		f.Fatal(err)
	}
	ekp, err := attest.ParseTPM2BPublic("ek", d.EKPublic())
	if err != nil {
		f.Fatal(err)
	}
	cert, err := mfr.IssueEKCert(ekp.Key)
	if err != nil {
		f.Fatal(err)
	}
	vals, err := d.ReadPCRs([]int{0, 7, 16})
	if err != nil {
		f.Fatal(err)
	}
	cfg := attest.TPMConfig{EKRoots: []*x509.Certificate{mfr.Cert},
		Profiles: []attest.PCRProfile{{Name: "p", SHA256: vals}}, Allowed: []string{"p"}}
	vCert, err := attest.NewTPMVerifier(cfg)
	if err != nil {
		f.Fatal(err)
	}
	cfg.EKAllowlist = []string{ekp.SHA256Hex()}
	v, err := attest.NewTPMVerifier(cfg)
	if err != nil {
		f.Fatal(err)
	}
	ekk, err := v.CheckEK(d.EKPublic(), cert)
	if err != nil {
		f.Fatal(err)
	}
	ak, err := attest.CheckAK(d.AKPublic())
	if err != nil {
		f.Fatal(err)
	}
	ch, err := v.NewChallenge(ekk, ak, "", time.Now())
	if err != nil {
		f.Fatal(err)
	}
	tr := &transcript{v: v, vCert: vCert, ekPub: d.EKPublic(), akPub: d.AKPublic(), ekCert: cert, session: *ch.Session,
		ev: answer(f, tpm, d, ch)}
	if _, err := v.Verify(&tr.session, tr.ev); err != nil {
		f.Fatalf("the honest transcript does not verify: %v", err)
	}
	return tr
}

// FuzzTPMPublic feeds arbitrary bytes to the TPM2B_PUBLIC parser and to
// the EK and AK checks: no panic, and whatever parses is canonical.
func FuzzTPMPublic(f *testing.F) {
	tr := newTranscript(f, tpmdevice.EKRSA)
	tr2 := newTranscript(f, tpmdevice.EKECC)
	for _, s := range [][]byte{tr.ekPub, tr.akPub, tr2.ekPub, {}, {0, 0}, {0, 1, 0}, {0xff, 0xff}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := attest.ParseTPM2BPublic("x", b)
		if err == nil {
			if !bytes.Equal(tpm2.Marshal(tpm2.TPM2BData{Buffer: p.Raw}), b) {
				t.Fatalf("parsed bytes are not the input")
			}
			if _, err := p.Name(); err != nil && p.Public.NameAlg == tpm2.TPMAlgSHA256 {
				t.Fatalf("Name: %v", err)
			}
		}
		_, _ = attest.CheckAK(b)
		_, _ = tr.v.CheckEK(b, nil)
		_, _ = tr.v.CheckEK(b, tr.ekCert)
	})
}

// FuzzTPMAttest feeds arbitrary bytes to the TPMS_ATTEST and
// TPMT_SIGNATURE parsers.
func FuzzTPMAttest(f *testing.F) {
	tr := newTranscript(f, tpmdevice.EKECC)
	f.Add(tr.ev.Quote, tr.ev.Signature)
	f.Add([]byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18}, []byte{0, 0x18})
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, quote, sig []byte) {
		if a, err := attest.ParseAttest(quote); err == nil && !bytes.Equal(tpm2.Marshal(*a), quote) {
			t.Fatal("ParseAttest accepted non-canonical bytes")
		}
		if s, err := attest.ParseSignature(sig); err == nil && !bytes.Equal(tpm2.Marshal(*s), sig) {
			t.Fatal("ParseSignature accepted non-canonical bytes")
		}
	})
}

// FuzzTPMEvidence mutates an honest answer: Verify must never panic, and
// must accept nothing but a quote whose bytes are the honest one's (the
// only message the AK signed over this nonce).
func FuzzTPMEvidence(f *testing.F) {
	for _, ek := range []string{tpmdevice.EKRSA, tpmdevice.EKECC} {
		tr := newTranscript(f, ek)
		f.Add(tr.ev.Secret, tr.ev.Quote, tr.ev.Signature, tr.ev.PCRs["0"], tr.ev.PCRs["7"], tr.ev.PCRs["16"])
	}
	tr := newTranscript(f, tpmdevice.EKECC)
	f.Fuzz(func(t *testing.T, secret, quote, sig, p0, p7, p16 []byte) {
		s := tr.session
		ev := attest.Evidence{Secret: secret, Quote: quote, Signature: sig, PCRs: map[string][]byte{"0": p0, "7": p7, "16": p16}}
		// The fuzzer's secret rarely matches; use the honest one half the
		// time so that the quote checks are reached.
		if len(secret) > 0 && secret[0]&1 == 0 {
			ev.Secret = tr.ev.Secret
		}
		res, err := tr.v.Verify(&s, ev)
		if err == nil && (!bytes.Equal(quote, tr.ev.Quote) || res.Profile != "p") {
			t.Fatalf("accepted a quote that is not the signed one")
		}
		// Proven (what lets a refusal use the challenge up and write to
		// the store) exactly when the activated secret is the TPM's.
		if res.SecretMatched != bytes.Equal(ev.Secret, tr.ev.Secret) {
			t.Fatalf("SecretMatched = %v for a secret that is the TPM's: %v", res.SecretMatched, bytes.Equal(ev.Secret, tr.ev.Secret))
		}
	})
}

// FuzzEKCertificate feeds arbitrary DER as the EK certificate.
func FuzzEKCertificate(f *testing.F) {
	tr := newTranscript(f, tpmdevice.EKRSA)
	f.Add(tr.ekCert)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x01})
	f.Fuzz(func(t *testing.T, der []byte) {
		if _, err := tr.vCert.CheckEK(tr.ekPub, der); err == nil && !bytes.Equal(der, tr.ekCert) {
			t.Fatal("accepted a certificate the manufacturer did not issue")
		}
	})
}
