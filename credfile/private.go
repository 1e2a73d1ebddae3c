package credfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// ErrNotPrivate is a key file, or a directory of keys, that another user
// may read or may have written: its mode lets group or others in, or
// another user owns it.
var ErrNotPrivate = errors.New("credfile: not private to this user")

// ErrLocked is TryLock's refusal: another run holds the lock.
var ErrLocked = errors.New("credfile: locked by another run")

// ReadPrivate reads a private file (a key): a regular file that only
// this user may access (mode without group or other bits, owned by this
// user; Windows modes say nothing of it and are not checked). A key
// another user could read is no longer secret, and one another user
// could have written is not this one's: both are refused
// (ErrNotPrivate), with what to do about it. What is read is the file
// checked, through the descriptor opened to check it: a file put in its
// place meanwhile (a pipe among them) is never read.
func ReadPrivate(path string) ([]byte, error) {
	// Checked by its path first: a special file is refused without
	// being opened, and another user's is said to be theirs (not that
	// it cannot be opened).
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrNotPrivate, path)
	}
	if err := CheckPrivate(path, fi); err != nil {
		return nil, err
	}
	f, err := openNoWait(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrNotPrivate, path)
	}
	if err := CheckPrivate(path, fi); err != nil {
		return nil, err
	}
	if privateChecked != nil {
		privateChecked(path)
	}
	return io.ReadAll(f)
}

// privateChecked, when set (tests), is called by ReadPrivate between its
// check of the file at path and its reading.
var privateChecked func(path string)

// PrivateDir creates dir (0700) if needed, with its missing parents, and
// makes each directory it creates durable (its parent fsynced), so that
// a file written in it and synced survives a power loss with the
// directory. An existing one that group or others may write to, or that
// another user owns, is refused (ErrNotPrivate): they could replace what
// is put in it. (One they may only read is kept as it is: the keys in it
// are 0600, and its mode is its owner's choice.)
func PrivateDir(dir string) error {
	missing := missingDirs(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, d := range missing {
		// A parent this user may write to but not read cannot be
		// opened to be synced: its entry is then as durable as the
		// file system makes it.
		if err := syncDir(filepath.Dir(d)); err != nil && !errors.Is(err, fs.ErrPermission) {
			return err
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrNotPrivate, dir)
	}
	return checkOwnWritable(dir, fi, "replace the files in it")
}

// CheckOwnWritable refuses (ErrNotPrivate) a file at path, described by
// fi, that group or others may write to, or that another user owns: a
// store whose records they could change. (One they may only read is its
// owner's choice.)
func CheckOwnWritable(path string, fi fs.FileInfo) error {
	return checkOwnWritable(path, fi, "change it")
}

func checkOwnWritable(path string, fi fs.FileInfo, could string) error {
	if err := ownedHere(path, fi); err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o022 != 0 {
		return fmt.Errorf("%w: %s has mode %v: group or others may %s (chmod go-w %s)", ErrNotPrivate, path, perm, could, path)
	}
	return nil
}

// CheckPrivate is ReadPrivate's check of the file at path, described by
// fi: no group or other bits in its mode, owned by this user.
func CheckPrivate(path string, fi fs.FileInfo) error {
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %v: group or others may access it (chmod 600 %s)", ErrNotPrivate, path, perm, path)
	}
	return ownedHere(path, fi)
}

// missingDirs returns dir and those of its parents that do not exist,
// deepest first.
func missingDirs(dir string) []string {
	var missing []string
	for d := filepath.Clean(dir); ; {
		if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
			return missing
		}
		missing = append(missing, d)
		parent := filepath.Dir(d)
		if parent == d {
			return missing
		}
		d = parent
	}
}
