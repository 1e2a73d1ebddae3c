package tpmdevice

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpmutil"

	"mandate.dev/mandate/credfile"
)

// Simulator names the reference TPM simulator in place of a device path.
const Simulator = "simulator"

// OpenTPM opens a TPM: a device path such as /dev/tpmrm0 (the kernel's
// resource manager), or Simulator. A simulator is seeded from seedFile
// (created with a random seed if missing), so that one development
// "device" keeps its EK across runs; its PCRs start from a fresh boot
// every time. Only one simulator can be open in a process at a time: a
// second OpenTPM(Simulator) blocks until the first is closed.
func OpenTPM(path, seedFile string) (transport.TPMCloser, error) {
	if path != Simulator {
		t, err := openDevice(path)
		if err != nil {
			return nil, fmt.Errorf("tpmdevice: open %s: %w", path, err)
		}
		return t, nil
	}
	seed, err := loadSeed(seedFile)
	if err != nil {
		return nil, err
	}
	return OpenSimulator(seed)
}

// OpenSimulator starts the reference TPM simulator with hierarchy seeds
// derived from seed: the same seed, the same EK. For development and tests
// only: the seed is not secret.
func OpenSimulator(seed int64) (transport.TPMCloser, error) {
	sim, err := simulator.GetWithFixedSeedInsecure(seed)
	if err != nil {
		return nil, fmt.Errorf("tpmdevice: start simulator: %w", err)
	}
	return &simTPM{sim: sim}, nil
}

type simTPM struct{ sim io.ReadWriteCloser }

func (t *simTPM) Send(cmd []byte) ([]byte, error) { return tpmutil.RunCommandRaw(t.sim, cmd) }
func (t *simTPM) Close() error                    { return t.sim.Close() }

func loadSeed(path string) (int64, error) {
	if path == "" {
		return 0, errors.New("tpmdevice: the simulator needs a seed file")
	}
	b, err := os.ReadFile(path)
	if err == nil && len(b) == 8 {
		return int64(binary.BigEndian.Uint64(b)), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("tpmdevice: read simulator seed: %w", err)
	}
	if err == nil {
		return 0, fmt.Errorf("tpmdevice: simulator seed %s is not 8 bytes", path)
	}
	var s [8]byte
	if _, err := rand.Read(s[:]); err != nil {
		return 0, err
	}
	// Created whole or not at all, and never over another's: two first
	// runs at once agree on the seed (the second reads the first's), and
	// a crash never leaves a short file.
	err = credfile.CreateFileAtomic(path, s[:], 0o600)
	if errors.Is(err, fs.ErrExist) {
		return loadSeed(path)
	}
	if err != nil {
		return 0, fmt.Errorf("tpmdevice: write simulator seed: %w", err)
	}
	return int64(binary.BigEndian.Uint64(s[:])), nil
}
