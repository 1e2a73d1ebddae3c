// Package hsmtest makes SoftHSM tokens for tests: a real PKCS#11 module
// (Debian's softhsm2 package, which test.sh installs), its tokens kept in
// the test's temporary directory.
package hsmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"mandate.dev/mandate/ca/hsm"
)

// Module is where Debian's softhsm2 package installs SoftHSM's PKCS#11
// module.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

// Token makes a SoftHSM token labelled label, with its own token
// directory under t.TempDir (SOFTHSM2_CONF, set for the test), and
// returns how to open it.
func Token(t testing.TB, label string) hsm.Config {
	t.Helper()
	if _, err := os.Stat(Module); err != nil {
		t.Fatalf("SoftHSM's PKCS#11 module: %v (install the softhsm2 package; test.sh does)", err)
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	const pin = "4716-user"
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", "9052-so").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return hsm.Config{Module: Module, TokenLabel: label, PIN: pin}
}
