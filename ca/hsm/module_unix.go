//go:build unix

package hsm

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// checkReplaceable refuses (ErrModuleNotTrusted) a file or directory
// at path, described by fi, that group or others may write to (a
// directory with the sticky bit aside: there, others cannot rename or
// remove what they do not own), or that a user other than root and this
// one owns.
func checkReplaceable(path string, fi fs.FileInfo) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: %s is owned by user %d, neither root nor this user (%d)", ErrModuleNotTrusted, path, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o022 != 0 && !(fi.IsDir() && fi.Mode()&fs.ModeSticky != 0) {
		return fmt.Errorf("%w: %s has mode %v: group or others may write to it (chmod go-w %s)", ErrModuleNotTrusted, path, fi.Mode().Perm(), path)
	}
	return nil
}
