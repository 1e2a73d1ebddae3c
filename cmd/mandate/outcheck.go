package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"mandate.dev/mandate/credfile"
)

// outWriting, when set (tests), is called with the --out file a command
// is about to write what the authority issued to, once issued.
var outWriting func(path string)

// writeIssued writes b, what the authority issued, to the --out file
// path (0600) that checkOutFile passed.
func writeIssued(path string, b []byte) error {
	if outWriting != nil {
		outWriting(path)
	}
	return credfile.WriteFileAtomic(path, b, 0o600)
}

// checkOutFile refuses, before anything is asked of the authority, an
// output file (given with flag) that could not be written: one whose
// directory is missing or no directory, one that is a directory, or one
// in a directory this user cannot create files in. What the authority
// issues and logs (a token, a delegation) would be lost otherwise. It
// leaves nothing behind.
func checkOutFile(flag, path string) error {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("%s %s: %s (nothing was asked of the authority)", flag, path, fmt.Sprintf(format, a...))
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fail("is a directory: give the file to write")
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail("directory %s does not exist", dir)
	case err != nil:
		return fail("directory %s: %v", dir, pathless(err))
	case !fi.IsDir():
		return fail("%s is not a directory", dir)
	}
	if err := canCreateIn(dir, path); err != nil {
		return fail("%v", err)
	}
	return nil
}

// checkOutDir is checkOutFile for a credential directory, made with its
// missing parents when written: the directory, or its nearest parent
// that exists, must be a directory this user can create files in, and an
// existing one must be private to this user, as credfile.Write requires.
func checkOutDir(flag, dir string) error {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("%s %s: %s (nothing was asked of the authority)", flag, dir, fmt.Sprintf(format, a...))
	}
	d := dir
	fi, err := os.Stat(d)
	for errors.Is(err, fs.ErrNotExist) && filepath.Dir(d) != d {
		d = filepath.Dir(d)
		fi, err = os.Stat(d)
	}
	switch {
	case err != nil:
		return fail("%v", pathless(err))
	case !fi.IsDir():
		return fail("%s is not a directory", d)
	}
	if d == dir {
		if err := credfile.CheckOwnWritable(dir, fi); err != nil {
			return fail("%s", strings.TrimPrefix(err.Error(), "credfile: "))
		}
	}
	// In the directory itself, the probe is named as the temporary
	// files of the certificate written there, which that write clears.
	probe := dir
	if d == dir {
		probe = credfile.In(dir).Cert
	}
	if err := canCreateIn(d, probe); err != nil {
		return fail("%v", err)
	}
	return nil
}

// canCreateIn checks that a file can be created in dir, by creating one
// and removing it at once. It is named as credfile's temporary files for
// path are, which a later write to path clears should this one be left
// (the process killed in between).
func canCreateIn(dir, path string) error {
	f, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return fmt.Errorf("cannot create a file in %s: %v", dir, pathless(err))
	}
	name := f.Name()
	cerr := f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("cannot remove a file from %s: %v", dir, pathless(err))
	}
	if cerr != nil {
		return fmt.Errorf("cannot write a file in %s: %v", dir, pathless(cerr))
	}
	return nil
}

// pathless is a file system error without the path (said already).
func pathless(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
