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

// TryLock takes an exclusive lock on the file at path (made, 0600, if
// missing) for one run of a command, or fails at once with ErrLocked
// while another holds it. unlock removes the file and releases the lock;
// a holder that ends without it (a crash) releases the lock with its
// descriptor, and the file it left is locked again by the next run.
func TryLock(path string) (unlock func(), err error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("credfile: lock %s: %w", path, err)
		}
		for {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			if !errors.Is(err, syscall.EINTR) {
				break
			}
		}
		if err != nil {
			_ = f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, ErrLocked
			}
			return nil, fmt.Errorf("credfile: lock %s: %w", path, err)
		}
		// The file locked must still be the one at path: a holder that
		// was done, between its opening and its locking here, removed it
		// (and another run may lock the file now at path).
		held, err := f.Stat()
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("credfile: lock %s: %w", path, err)
		}
		now, err := os.Lstat(path)
		if err == nil && os.SameFile(held, now) {
			return func() { _ = os.Remove(path); _ = f.Close() }, nil
		}
		_ = f.Close()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("credfile: lock %s: %w", path, err)
		}
	}
}
