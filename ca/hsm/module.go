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
// the file it resolves to, each directory above it, and each directory
// above the path as given and above every symbolic link on the way.
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
	// Every link on the way, and the directories each is in: one who
	// may write to such a directory may point its link elsewhere.
	hops := []string{path}
	for p := path; ; {
		li, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("hsm: the PKCS#11 module: %w", err)
		}
		if li.Mode()&fs.ModeSymlink == 0 {
			break
		}
		if len(hops) > 40 {
			return fmt.Errorf("hsm: the PKCS#11 module %s: too many links", path)
		}
		target, err := os.Readlink(p)
		if err != nil {
			return fmt.Errorf("hsm: the PKCS#11 module: %w", err)
		}
		if !filepath.IsAbs(target) {
			dir, err := filepath.EvalSymlinks(filepath.Dir(p))
			if err != nil {
				return fmt.Errorf("hsm: the PKCS#11 module: %w", err)
			}
			target = filepath.Join(dir, target)
		}
		p = filepath.Clean(target)
		hops = append(hops, p)
	}
	seen := map[string]bool{}
	for _, p := range append(hops, real) {
		for d := filepath.Dir(p); !seen[d]; d = filepath.Dir(d) {
			seen[d] = true
			di, err := os.Lstat(d)
			if err != nil {
				return fmt.Errorf("hsm: the PKCS#11 module's directory: %w", err)
			}
			if di.Mode()&fs.ModeSymlink != 0 {
				// A link on the path: the directory it leads to is
				// checked as one of real's.
				continue
			}
			if err := checkReplaceable(d, di); err != nil {
				return err
			}
		}
	}
	return nil
}
