//go:build !cgo

package hsm

import (
	"context"
	"crypto"
	"errors"

	"mandate.dev/mandate/ca"
)

// errNoCgo is Open's answer in a build without cgo: a PKCS#11 module is a
// C library.
var errNoCgo = errors.New("hsm: this mandate was built without cgo, and cannot load a PKCS#11 module: build it with CGO_ENABLED=1")

// KeyManager is a ca.KeyManager whose keys are in a PKCS#11 token; a
// build without cgo has none.
type KeyManager struct{}

var _ ca.KeyManager = (*KeyManager)(nil)

// Open says that a build without cgo cannot load a PKCS#11 module.
func Open(cfg Config) (*KeyManager, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return nil, errNoCgo
}

func (*KeyManager) Close() error { return errNoCgo }

func (*KeyManager) GenerateKey(context.Context, string, ca.KeyType) (crypto.Signer, error) {
	return nil, errNoCgo
}

func (*KeyManager) GetKey(context.Context, string) (crypto.Signer, error) { return nil, errNoCgo }

func (*KeyManager) DeleteKey(context.Context, string) error { return errNoCgo }
