package tpmdevice

import (
	"strings"
	"testing"
)

// A PCR index outside the SHA-256 bank is an error, never a panic nor a
// selection sized by the index.
func TestPCROutsideTheBankIsRefused(t *testing.T) {
	tpm, err := OpenSimulator(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	d, err := Open(tpm, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	for _, pcrs := range [][]int{{-1}, {0, NumPCRs}, {1 << 40}} {
		if _, _, err := d.Quote(make([]byte, 32), pcrs); err == nil || !strings.Contains(err.Error(), "the SHA-256 bank has PCRs 0 to 23") {
			t.Errorf("Quote of PCRs %v: %v; want the bank's bounds", pcrs, err)
		}
		if _, err := d.ReadPCRs(pcrs); err == nil || !strings.Contains(err.Error(), "the SHA-256 bank has PCRs 0 to 23") {
			t.Errorf("ReadPCRs of PCRs %v: %v; want the bank's bounds", pcrs, err)
		}
	}
	if _, _, err := d.Quote(make([]byte, 32), []int{0, NumPCRs - 1}); err != nil {
		t.Fatalf("Quote of PCRs 0 and %d: %v", NumPCRs-1, err)
	}
}
