package workload

import (
	"fmt"
	"net"
	"syscall"
)

// callerOf is what the kernel says of the process that opened c
// (SO_PEERCRED, as it was when it connected).
func callerOf(c net.Conn) (Caller, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Caller{}, fmt.Errorf("workload: a %T is not a Unix socket connection", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Caller{}, fmt.Errorf("workload: peer credentials: %w", err)
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return Caller{}, fmt.Errorf("workload: peer credentials: %w", err)
	}
	if credErr != nil {
		return Caller{}, fmt.Errorf("workload: peer credentials: %w", credErr)
	}
	return Caller{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}
