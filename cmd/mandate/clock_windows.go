package main

import (
	"syscall"
	"time"
)

// cpuTime is this process's user plus kernel CPU time.
func cpuTime() time.Duration {
	var creation, exit, kernel, user syscall.Filetime
	h, err := syscall.GetCurrentProcess()
	if err != nil {
		return 0
	}
	if err := syscall.GetProcessTimes(h, &creation, &exit, &kernel, &user); err != nil {
		return 0
	}
	ticks := func(f syscall.Filetime) int64 { return int64(f.HighDateTime)<<32 | int64(f.LowDateTime) }
	return time.Duration(ticks(kernel)+ticks(user)) * 100 // 100 ns units
}

// monotonicUsec is zero: there is no systemd to order a reload's
// messages by it.
func monotonicUsec() uint64 { return 0 }
