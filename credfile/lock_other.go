//go:build !(darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd)

package credfile

// lockDir locks nothing where Go's syscall package has no flock (Windows,
// AIX, Solaris, ...): writers of one credential must then not run at
// once.
func lockDir(string) (func(), error) { return func() {}, nil }

// TryLock locks nothing where Go's syscall package has no flock: runs of
// a command must then not overlap.
func TryLock(string) (func(), error) { return func() {}, nil }
