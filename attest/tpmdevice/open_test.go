package tpmdevice

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestSimulatorSeedIsCreatedOnceAndKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tpm-sim.seed")
	// Several first runs at once: every one gets the seed the file keeps.
	const n = 16
	seeds := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { seeds[i], errs[i] = loadSeed(path) })
	}
	wg.Wait()
	again, err := loadSeed(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("run %d: %v", i, errs[i])
		}
		if seeds[i] != again {
			t.Fatalf("run %d used seed %d, the file keeps %d: the same simulator would show two EKs", i, seeds[i], again)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != 8 {
		t.Fatalf("seed file mode %v size %d, want 0600 and 8 bytes", fi.Mode().Perm(), fi.Size())
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".tmp-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestSimulatorSeedRefusesAShortFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tpm-sim.seed")
	if err := os.WriteFile(path, []byte{1, 2, 3}, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSeed(path); err == nil {
		t.Fatal("a 3-byte seed file was used")
	}
	if b, _ := os.ReadFile(path); len(b) != 3 {
		t.Fatalf("the seed file was rewritten (%d bytes): another EK would follow", len(b))
	}
}
