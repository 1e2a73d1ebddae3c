//go:build !linux

package workload

import (
	"errors"
	"net"
	"os"
)

// readProcess knows nothing of a caller's process: reading it is
// written for Linux only, and a selector that asks it matches no
// caller.
func readProcess(net.Conn, int32, procNeeds) *process {
	return &process{err: errors.New("a caller's process is read on Linux only")}
}

func keyOf(os.FileInfo) fileKey { return fileKey{} }
