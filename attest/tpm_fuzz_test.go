package attest_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/attest/tpmdevice"
	"mandate.dev/mandate/attest/tpmtest"
)

// transcript is one honest exchange with a TPM: the seeds of the fuzz
// targets below.
type transcript struct {
	v       *attest.TPMVerifier // trusts the EK by allowlist and certificate
	vCert   *attest.TPMVerifier // by certificate only
	ekPub   []byte
	akPub   []byte
	ekCert  []byte
	session attest.TPMSession
	ev      attest.Evidence
}

// transcriptRecord is what a transcript is made of: what the TPM sent
// and what the verifier asked, with the manufacturer CA that certified
// the EK.
type transcriptRecord struct {
	EKType   string          `json:"ek_type"`
	EKRoot   []byte          `json:"ek_root"` // DER
	EKPublic []byte          `json:"ek_public"`
	AKPublic []byte          `json:"ak_public"`
	EKCert   []byte          `json:"ek_cert"`
	Profile  map[int][]byte  `json:"pcr_profile"`
	Nonce    []byte          `json:"nonce"`
	Evidence attest.Evidence `json:"evidence"`
}

// transcriptsFile holds one recorded transcript per EK type. The fuzz
// targets read it rather than run the simulator: a fuzzing run is one
// coordinator process and several workers, each running the target's
// setup, and the seeds the coordinator made are what every worker is
// given. A transcript made afresh in each process (a random nonce, a new
// manufacturer CA) would make every seed an answer to another process's
// challenge: no mutation of it could get past the nonce check, and no EK
// certificate would chain. Regenerate it with
// go test -run TestTPMTranscripts ./attest -args -update-tpm-transcripts
const transcriptsFile = "testdata/tpm-transcripts.json"

var updateTranscripts = flag.Bool("update-tpm-transcripts", false, "record "+transcriptsFile+" again with the simulator")

// newTranscript is the recorded transcript for the EK type ek.
func newTranscript(f testing.TB, ek string) *transcript {
	f.Helper()
	b, err := os.ReadFile(transcriptsFile)
	if err != nil {
		f.Fatal(err)
	}
	var recs []transcriptRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		f.Fatalf("%s: %v", transcriptsFile, err)
	}
	for _, r := range recs {
		if r.EKType == ek {
			return replay(f, r)
		}
	}
	f.Fatalf("%s has no transcript for EK type %s", transcriptsFile, ek)
	return nil
}

// newBenchTranscript is a fresh transcript with the simulator.
func newBenchTranscript(f testing.TB, ek string) *transcript {
	f.Helper()
	mfr, err := tpmtest.NewCA("fuzz")
	if err != nil {
		f.Fatal(err)
	}
	return replay(f, record(f, ek, mfr))
}

// record runs one exchange with the simulator, its EK certified by mfr.
func record(f testing.TB, ek string, mfr *tpmtest.CA) transcriptRecord {
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
	rec := transcriptRecord{EKType: ek, EKRoot: mfr.Cert.Raw, EKPublic: d.EKPublic(), AKPublic: d.AKPublic(), EKCert: cert, Profile: vals}
	v, _ := verifiers(f, rec)
	ekk, err := v.CheckEK(rec.EKPublic, rec.EKCert)
	if err != nil {
		f.Fatal(err)
	}
	ak, err := attest.CheckAK(rec.AKPublic)
	if err != nil {
		f.Fatal(err)
	}
	ch, err := v.NewChallenge(ekk, ak, "", time.Now())
	if err != nil {
		f.Fatal(err)
	}
	rec.Nonce = ch.Session.Nonce
	rec.Evidence = answer(f, tpm, d, ch)
	return rec
}

// verifiers are the verifier trusting rec's EK by allowlist and by
// certificate, and the one trusting it by certificate only.
func verifiers(f testing.TB, rec transcriptRecord) (v, vCert *attest.TPMVerifier) {
	f.Helper()
	root, err := x509.ParseCertificate(rec.EKRoot)
	if err != nil {
		f.Fatal(err)
	}
	ekp, err := attest.ParseTPM2BPublic("ek", rec.EKPublic)
	if err != nil {
		f.Fatal(err)
	}
	cfg := attest.TPMConfig{EKRoots: []*x509.Certificate{root},
		Profiles: []attest.PCRProfile{{Name: "p", SHA256: rec.Profile}}, Allowed: []string{"p"}}
	if vCert, err = attest.NewTPMVerifier(cfg); err != nil {
		f.Fatal(err)
	}
	cfg.EKAllowlist = []string{ekp.SHA256Hex()}
	if v, err = attest.NewTPMVerifier(cfg); err != nil {
		f.Fatal(err)
	}
	return v, vCert
}

// replay makes rec's challenge session again, as NewChallenge made it
// but with rec's nonce and secret, and checks that rec's evidence
// verifies against it.
func replay(f testing.TB, rec transcriptRecord) *transcript {
	f.Helper()
	v, vCert := verifiers(f, rec)
	ekk, err := v.CheckEK(rec.EKPublic, rec.EKCert)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := vCert.CheckEK(rec.EKPublic, rec.EKCert); err != nil {
		f.Fatalf("the EK certificate is not trusted: %v", err)
	}
	ak, err := attest.CheckAK(rec.AKPublic)
	if err != nil {
		f.Fatal(err)
	}
	sum := sha256.Sum256(rec.Evidence.Secret)
	now := time.Now()
	tr := &transcript{v: v, vCert: vCert, ekPub: rec.EKPublic, akPub: rec.AKPublic, ekCert: rec.EKCert, ev: rec.Evidence,
		session: attest.TPMSession{ID: ekk.SHA256Hex()[:16] + strings.Repeat("0", 32), EKHash: ekk.SHA256Hex(), EKTrust: ekk.Trust,
			AKPublic: tpm2.Marshal(tpm2.TPM2BData{Buffer: ak.Raw}), SecretHash: sum[:], Nonce: rec.Nonce, PCRs: v.Selection(),
			EKType: ekk.Public.Type, EKIssuer: ekk.Issuer, CreatedAt: now, ExpiresAt: now.Add(attest.DefaultChallengeTTL)}}
	if _, err := v.Verify(&tr.session, tr.ev); err != nil {
		f.Fatalf("the honest transcript does not verify: %v", err)
	}
	return tr
}

// TestTPMTranscripts checks the recorded transcripts (each verifies, its
// EK certificate chains) and, with -update-tpm-transcripts, records them
// again with the simulator and a manufacturer CA valid for a century.
func TestTPMTranscripts(t *testing.T) {
	if *updateTranscripts {
		mfr, err := tpmtest.NewCAUntil("fuzz", time.Now().AddDate(100, 0, 0))
		if err != nil {
			t.Fatal(err)
		}
		var recs []transcriptRecord
		for _, ek := range []string{tpmdevice.EKRSA, tpmdevice.EKECC} {
			recs = append(recs, record(t, ek, mfr))
		}
		b, err := json.MarshalIndent(recs, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(transcriptsFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, ek := range []string{tpmdevice.EKRSA, tpmdevice.EKECC} {
		tr := newTranscript(t, ek)
		if ekk, err := tr.vCert.CheckEK(tr.ekPub, tr.ekCert); err != nil || ekk.Trust != "certificate" {
			t.Errorf("%s: the recorded EK certificate: %v", ek, err)
		}
		// Made again, as by a fuzzing worker after its coordinator made
		// the seeds, it is the same exchange: the seeds are honest there.
		again := newTranscript(t, ek)
		if res, err := again.v.Verify(&again.session, tr.ev); err != nil || res.Profile != "p" {
			t.Errorf("%s: the evidence of one transcript does not verify in another: %v", ek, err)
		}
		if _, err := again.vCert.CheckEK(tr.ekPub, tr.ekCert); err != nil {
			t.Errorf("%s: the EK certificate of one transcript does not chain in another: %v", ek, err)
		}
		// The session is the one whose evidence this is: another nonce
		// is refused.
		s := tr.session
		s.Nonce = bytes.Repeat([]byte{1}, len(s.Nonce))
		if _, err := tr.v.Verify(&s, tr.ev); !errors.Is(err, attest.ErrNonceMismatch) {
			t.Errorf("%s: another nonce: %v, want ErrNonceMismatch", ek, err)
		}
	}
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
