package attest_test

import (
	"testing"
	"time"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/attest/tpmdevice"
)

// BenchmarkTPMChallenge is the server's first half: trust the EK, check
// the AK, make the credential (MakeCredential in Go).
func BenchmarkTPMChallenge(b *testing.B) {
	for _, ek := range []string{tpmdevice.EKRSA, tpmdevice.EKECC} {
		b.Run(ek, func(b *testing.B) {
			tr := newBenchTranscript(b, ek)
			for b.Loop() {
				e, err := tr.v.CheckEK(tr.ekPub, nil)
				if err != nil {
					b.Fatal(err)
				}
				ak, err := attest.CheckAK(tr.akPub)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := tr.v.NewChallenge(e, ak, "", time.Now()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTPMVerify is the second half: secret, quote, signature, PCRs,
// policy.
func BenchmarkTPMVerify(b *testing.B) {
	for _, ek := range []string{tpmdevice.EKRSA, tpmdevice.EKECC} {
		b.Run(ek, func(b *testing.B) {
			tr := newBenchTranscript(b, ek)
			for b.Loop() {
				s := tr.session
				if _, err := tr.v.Verify(&s, tr.ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
