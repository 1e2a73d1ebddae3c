//go:build unix

package workload

import (
	"io/fs"
	"os"
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
