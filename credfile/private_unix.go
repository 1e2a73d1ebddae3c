//go:build unix

package credfile

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// ownedHere refuses a file another user owns.
func ownedHere(path string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) == os.Geteuid() {
		return nil
	}
	return fmt.Errorf("%w: %s is owned by user %d, not this user (%d)", ErrNotPrivate, path, st.Uid, os.Geteuid())
}

// openNoWait opens path for reading without waiting for a writer, should
// it be a named pipe put there once it was checked.
func openNoWait(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
