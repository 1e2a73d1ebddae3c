package tpmtest

import (
	"testing"

	"mandate.dev/mandate/attest/tpmdevice"
)

// Device is a device on a new TPM simulator seeded with seed (one at a
// time per process), opened with opts; both are closed at the test's
// end.
func Device(t testing.TB, seed int64, opts tpmdevice.Options) *tpmdevice.Device {
	t.Helper()
	tpm, err := tpmdevice.OpenSimulator(seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	dev, err := tpmdevice.Open(tpm, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return dev
}
