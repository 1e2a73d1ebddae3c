//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package credfile

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockDir holds an exclusive lock on dir until unlock is called: the
// directory itself is locked (flock), so no file is added to it. Two
// writers of one credential, in one process or two, take turns. (Only
// where Go's syscall package has flock: not on AIX nor Solaris.)
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("credfile: lock %s: %w", dir, err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("credfile: lock %s: %w", dir, err)
	}
	return func() { _ = f.Close() }, nil // the lock ends with the descriptor
}
