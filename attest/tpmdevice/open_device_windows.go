package tpmdevice

import (
	"errors"

	"github.com/google/go-tpm/tpm2/transport"
)

// openDevice refuses: Windows reaches its TPM through TBS, not a device
// path, and a node does not speak TBS.
func openDevice(string) (transport.TPMCloser, error) {
	return nil, errors.New("TPM device paths are Linux's: Windows reaches its TPM through TBS, which a node does not speak")
}
