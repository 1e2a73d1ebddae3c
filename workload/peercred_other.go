//go:build !linux

package workload

import (
	"errors"
	"net"
)

// callerOf refuses every caller: reading a peer's credentials is
// written for Linux only, and a caller not identified gets nothing.
func callerOf(net.Conn) (Caller, error) {
	return Caller{}, errors.New("workload: peer credentials are read on Linux only")
}
