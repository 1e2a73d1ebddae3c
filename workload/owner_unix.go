//go:build unix

package workload

import (
	"io/fs"
	"syscall"
)

// ownerOf is the user id that owns the file fi describes.
func ownerOf(fi fs.FileInfo) (uid int, known bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}
