package hsm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrModuleNotTrusted is a PKCS#11 module that another user could have
// replaced: the module, or a directory on its path (or on the path of
// the file it links to), that group or others may write to (a directory
// with the sticky bit aside), or that a user other than root and this
// one owns. The module runs in the authority's process: it would have
// the token's PIN, every signature, and the authority's other keys.
var ErrModuleNotTrusted = errors.New("hsm: the PKCS#11 module could be replaced by another user")

// checkModule refuses a module (an absolute path) that is not a regular
// file, or that another user could have replaced (ErrModuleNotTrusted):
// the path as given, each directory above it, and, when it is a
// symbolic link, the file it resolves to and each directory above that.
func checkModule(path string) error {
	path = filepath.Clean(path)
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("hsm: the PKCS#11 module: %w", err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("hsm: the PKCS#11 module: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("hsm: the PKCS#11 module %s is not a regular file", path)
	}
	if err := checkReplaceable(real, fi); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, p := range []string{path, real} {
		for d := filepath.Dir(p); !seen[d]; d = filepath.Dir(d) {
			seen[d] = true
			di, err := os.Lstat(d)
			if err != nil {
				return fmt.Errorf("hsm: the PKCS#11 module's directory: %w", err)
			}
			if di.Mode()&fs.ModeSymlink != 0 {
				// A link on the path: the file it leads to is checked
				// (real) with its own directories; the link's own
				// directory is checked as the loop goes up.
				continue
			}
			if err := checkReplaceable(d, di); err != nil {
				return err
			}
		}
	}
	return nil
}
