package tpmdevice

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// FuzzChallengeAnswer feeds a device arbitrary challenges, as a node
// reads them from the authority (or from whatever answers in its name):
// the credential blob and encrypted secret to activate, the nonce and
// PCRs to quote. Never a panic; a blob made for another key, or no blob
// at all, is an error; and after every challenge, answered or refused,
// the device still answers an honest one: a hostile challenge leaves
// none of the TPM's few object and session slots taken.
func FuzzChallengeAnswer(f *testing.F) {
	tpm, err := OpenSimulator(1)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { tpm.Close() })
	d, err := Open(tpm, Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close() })
	ekPub, err := d.ek.OutPublic.Contents()
	if err != nil {
		f.Fatal(err)
	}
	kem, err := tpm2.ImportEncapsulationKey(ekPub)
	if err != nil {
		f.Fatal(err)
	}
	// honest is a challenge the authority would make for d, of secret.
	honest := func(t testing.TB, secret []byte) (blob, encSecret []byte) {
		idObject, enc, err := tpm2.CreateCredential(rand.Reader, kem, d.ak.Name.Buffer, secret)
		if err != nil {
			t.Fatal(err)
		}
		return tpm2.Marshal(tpm2.TPM2BData{Buffer: idObject}), tpm2.Marshal(tpm2.TPM2BData{Buffer: enc})
	}
	blob, enc := honest(f, bytes.Repeat([]byte{7}, 32))
	other, _ := honest(f, bytes.Repeat([]byte{8}, 32))
	nonce := bytes.Repeat([]byte{1}, 32)
	for _, s := range []struct {
		blob, enc, nonce, pcrs []byte
	}{
		{blob, enc, nonce, []byte{0, 1, 7}},
		{other, enc, nonce, []byte{0}},
		{blob[:len(blob)-1], enc, nonce, []byte{23}},
		{append(bytes.Clone(blob), 0), enc, nonce, []byte{}},
		{blob, enc[:2], nil, []byte{0, 0}},
		{[]byte{0xff, 0xff}, []byte{0, 0}, bytes.Repeat([]byte{1}, 65), []byte{24}},
		{nil, nil, nil, nil},
	} {
		f.Add(s.blob, s.enc, s.nonce, s.pcrs)
	}
	f.Fuzz(func(t *testing.T, blob, enc, nonce, pcrBytes []byte) {
		secret, err := d.Activate(blob, enc)
		if err == nil && len(secret) == 0 {
			t.Fatalf("Activate(%x, %x) released an empty secret", blob, enc)
		}
		if len(blob) < 2 && err == nil {
			t.Fatalf("Activate of no credential blob (%x) = %x", blob, secret)
		}
		pcrs := make([]int, len(pcrBytes))
		for i, b := range pcrBytes {
			pcrs[i] = int(b)
		}
		_, _, _ = d.Quote(nonce, pcrs)
		want := bytes.Repeat([]byte{9}, 32)
		hb, he := honest(t, want)
		if got, err := d.Activate(hb, he); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("after the challenge (%x, %x), an honest one: %x, %v", blob, enc, got, err)
		}
		if _, _, err := d.Quote(bytes.Repeat([]byte{2}, 32), []int{0}); err != nil {
			t.Fatalf("after the challenge (%x, %x, %x, %v), an honest quote: %v", blob, enc, nonce, pcrs, err)
		}
	})
}
