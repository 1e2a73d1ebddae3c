package credfile_test

import (
	"bytes"
	"testing"

	"mandate.dev/mandate/credfile"
)

// FuzzParseCertsPEM feeds arbitrary bytes to the PEM certificate reader
// (a delegatee_x509_svid field is such bytes from the network): no
// panic, and what it returns encodes back to certificates it reads the
// same.
func FuzzParseCertsPEM(f *testing.F) {
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		certs, err := credfile.ParseCertsPEM(b)
		if err != nil {
			return
		}
		again, err := credfile.ParseCertsPEM(credfile.EncodeCertsPEM(certs))
		if err != nil || len(again) != len(certs) {
			t.Fatalf("re-reading %d certificates: %d, %v", len(certs), len(again), err)
		}
		for i := range certs {
			if !bytes.Equal(certs[i].Raw, again[i].Raw) {
				t.Fatalf("certificate %d changed", i)
			}
		}
	})
}
