//go:build unix

package workload

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dirInfo is a directory's description, as os.Stat gives it on Unix.
type dirInfo struct {
	mode fs.FileMode
	uid  uint32
}

func (d dirInfo) Name() string       { return "dir" }
func (d dirInfo) Size() int64        { return 0 }
func (d dirInfo) Mode() fs.FileMode  { return fs.ModeDir | d.mode }
func (d dirInfo) ModTime() time.Time { return time.Time{} }
func (d dirInfo) IsDir() bool        { return true }
func (d dirInfo) Sys() any           { return &syscall.Stat_t{Uid: d.uid} }

// The socket's directory is one no other user may change: not one
// others may write to without the sticky bit, and not one another user
// than root or this one owns (its owner may replace the socket, or put
// a link in its place before its mode is set, sticky bit or not).
func TestSocketDirectory(t *testing.T) {
	me := uint32(os.Geteuid())
	other := me + 1
	if other == 0 {
		other++
	}
	for _, tc := range []struct {
		name string
		dir  dirInfo
		want string // "" when taken
	}{
		{"this user's", dirInfo{0o755, me}, ""},
		{"root's", dirInfo{0o755, 0}, ""},
		{"root's, sticky and open to all (/tmp)", dirInfo{0o777 | fs.ModeSticky, 0}, ""},
		{"this user's, open to all", dirInfo{0o777, me}, "without the sticky bit"},
		{"this user's, open to its group", dirInfo{0o775, me}, "without the sticky bit"},
		{"another user's", dirInfo{0o755, other}, "owned by user"},
		{"another user's, sticky and open to all", dirInfo{0o777 | fs.ModeSticky, other}, "owned by user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkSocketDir("dir", tc.dir)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("checkSocketDir = %v, want %q", err, tc.want)
			}
		})
	}
}

// The directories above the socket's are ones no other user may change
// either, as the path is given and as its links lead: who may rename
// one may put a directory of their own in its place, with a socket of
// theirs in it, which the workloads would then connect to.
func TestListenRefusesADirectoryOthersMayReplace(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	safe := filepath.Join(dir, "safe")
	for _, d := range []string{open, filepath.Join(open, "sub"), safe, filepath.Join(safe, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(open, "sub"), filepath.Join(safe, "to-open")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(safe, "sub"), filepath.Join(open, "to-safe")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dir string
		ok        bool
	}{
		{"below no such directory", filepath.Join(safe, "sub"), true},
		{"below one others may write to", filepath.Join(open, "sub"), false},
		{"a link to below one others may write to", filepath.Join(safe, "to-open"), false},
		{"a link in one others may write to", filepath.Join(open, "to-safe"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := Listen(filepath.Join(tc.dir, "api.sock"))
			if ln != nil {
				ln.Close()
			}
			if tc.ok && err != nil || !tc.ok && (err == nil || !strings.Contains(err.Error(), "without the sticky bit")) {
				t.Errorf("Listen = %v; want ok %v", err, tc.ok)
			}
		})
	}
}
