package hsm

import (
	"errors"
	"path/filepath"
)

// Config names a PKCS#11 token and how to log in to it.
type Config struct {
	// Module is the absolute path of the PKCS#11 module (a shared
	// library), as its vendor installs it: /usr/lib/softhsm/libsofthsm2.so
	// for SoftHSM on Debian. It runs in this process: one that another
	// user could have replaced is refused (ErrModuleNotTrusted).
	Module string
	// TokenLabel is the label of the token (CKA_LABEL of its slot's
	// token, as softhsm2-util --init-token --label sets it).
	TokenLabel string
	// PIN is the token's user PIN.
	PIN string
}

func (c Config) check() error {
	switch {
	case c.Module == "" || !filepath.IsAbs(c.Module):
		return errors.New("hsm: the PKCS#11 module must be an absolute path")
	case c.TokenLabel == "":
		return errors.New("hsm: the token's label is required")
	case c.PIN == "":
		return errors.New("hsm: the token's user PIN is required")
	}
	return checkModule(c.Module)
}
