package workload

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// readProcess reads what need asks of the process pid that opened c
// (its executable, its supplementary groups, its cgroup) from /proc, and checks it
// read that process and not another given its pid since (a pid is
// reused once its process has exited): with a pidfd of the process
// that connected (SO_PEERPIDFD, Linux 6.5 and later), which must still
// name pid, and not have exited, once all is read; else (an older
// kernel) with its start time, the same before and after, and the
// connection still open. What cannot be read or checked is p.err: the
// caller then matches no selector that asks it.
func readProcess(c net.Conn, pid int32, need procNeeds) *process {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return &process{err: fmt.Errorf("a %T is not a Unix socket connection", c)}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return &process{err: err}
	}
	var pidfd int
	var fdErr error
	if err := raw.Control(func(fd uintptr) {
		pidfd, fdErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	}); err != nil {
		return &process{err: err}
	}
	var same func() error
	switch {
	case fdErr == nil:
		defer unix.Close(pidfd)
		if err := samePIDFD(pidfd, pid); err != nil {
			return &process{err: err}
		}
		same = func() error { return samePIDFD(pidfd, pid) }
	case errors.Is(fdErr, unix.ENOPROTOOPT):
		start, err := startTime(pid)
		if err != nil {
			return &process{err: err}
		}
		same = func() error { return sameStart(raw, pid, start) }
	default:
		return &process{err: fmt.Errorf("no pidfd of the caller (SO_PEERPIDFD): %w", fdErr)}
	}
	p := readProc(pid, need)
	if err := same(); err != nil {
		p.close()
		return &process{err: err}
	}
	return p
}

// samePIDFD checks that pidfd still names pid, a process that has not
// exited: pid is then not reused by another.
func samePIDFD(pidfd int, pid int32) error {
	info, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(pidfd))
	if err != nil {
		return fmt.Errorf("the caller's pidfd: %w", err)
	}
	var named string
	for line := range strings.Lines(string(info)) {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			named = strings.TrimSpace(v)
		}
	}
	if named != strconv.Itoa(int(pid)) {
		return fmt.Errorf("the process that connected (pid %d) has exited (its pidfd names pid %q)", pid, named)
	}
	// A pidfd is readable once its process has exited.
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	switch {
	case err != nil:
		return fmt.Errorf("the caller's pidfd: %w", err)
	case n > 0:
		return fmt.Errorf("the process that connected (pid %d) has exited", pid)
	}
	return nil
}

// startTime is when process pid started, in clock ticks after boot
// (/proc/PID/stat's starttime).
func startTime(pid int32) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("the caller's start time: %w", err)
	}
	// Its command's name, in parentheses, may hold anything: the fields
	// are those after the last ')', state (the third) first.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 20 {
		return 0, fmt.Errorf("the caller's start time: /proc/%d/stat is not as Linux writes it", pid)
	}
	t, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("the caller's start time: %w", err)
	}
	return t, nil
}

// sameStart checks, without a pidfd, that process pid is the one that
// started at start, and that the connection raw is still open: a
// process that started since has the pid of one that exited, and a
// connection whose process exited (and passed it to no other) is
// closed.
func sameStart(raw syscall.RawConn, pid int32, start uint64) error {
	now, err := startTime(pid)
	if err != nil {
		return err
	}
	if now != start {
		return fmt.Errorf("the process that connected (pid %d) has exited: pid %d is another process's since", pid, pid)
	}
	var n int
	var peekErr error
	if err := raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, peekErr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	}); err != nil {
		return err
	}
	if n == 0 && peekErr == nil {
		return fmt.Errorf("the process that connected (pid %d) closed the connection", pid)
	}
	if peekErr != nil && !errors.Is(peekErr, unix.EAGAIN) {
		return fmt.Errorf("the connection: %w", peekErr)
	}
	return nil
}

// readProc reads what need asks of process pid from /proc, not yet
// checked to be of the process that connected.
func readProc(pid int32, need procNeeds) *process {
	p := &process{}
	dir := "/proc/" + strconv.Itoa(int(pid))
	if need.groups {
		b, err := os.ReadFile(dir + "/status")
		if err == nil {
			p.groups, err = groupsOf(b)
		}
		if err != nil {
			return &process{err: fmt.Errorf("the caller's groups: %w", err)}
		}
	}
	if need.cgroup {
		b, err := os.ReadFile(dir + "/cgroup")
		if err != nil {
			return &process{err: fmt.Errorf("the caller's cgroup: %w", err)}
		}
		p.cgroup, p.cgroupErr = unifiedCgroup(b)
	}
	if !need.exe {
		return p
	}
	exe, err := os.Readlink(dir + "/exe")
	if err != nil {
		return &process{err: fmt.Errorf("the caller's executable: %w", err)}
	}
	// The executable the process runs, whatever its path names now.
	f, err := os.Open(dir + "/exe")
	if err != nil {
		return &process{err: fmt.Errorf("the caller's executable: %w", err)}
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return &process{err: fmt.Errorf("the caller's executable %s is not a regular file (%v)", exe, err)}
	}
	p.key = keyOf(fi)
	// Its path, only while it names that file: one deleted, replaced
	// (" (deleted)") or out of this mount namespace's sight names
	// nothing the process runs.
	if at, err := os.Stat(exe); err != nil || !os.SameFile(at, fi) {
		p.pathErr = fmt.Errorf("the caller's executable is no longer at %q (deleted, replaced, or in another mount namespace)", exe)
	} else {
		p.exe = exe
	}
	if need.file {
		p.fileErr = contentsReadable(f)
	}
	if p.fileErr == nil && need.file {
		p.file = f
	} else {
		f.Close()
	}
	return p
}

// contentsReadable refuses an executable whose contents the digest's
// reading may not get as the process runs them: one on a FUSE file
// system, whose server (any user may run one) sees who reads and may
// answer the digest's reading with a trusted program's bytes while
// the process runs others.
func contentsReadable(f *os.File) error {
	raw, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("the caller's executable: %w", err)
	}
	var st unix.Statfs_t
	var statErr error
	if err := raw.Control(func(fd uintptr) { statErr = unix.Fstatfs(int(fd), &st) }); err != nil {
		return fmt.Errorf("the caller's executable: %w", err)
	}
	if statErr != nil {
		return fmt.Errorf("the caller's executable's file system: %w", statErr)
	}
	return digestibleFS(int64(st.Type))
}

// digestibleFS refuses a file system of type fsType (statfs's f_type)
// whose contents may differ by reader: FUSE.
func digestibleFS(fsType int64) error {
	if fsType == unix.FUSE_SUPER_MAGIC {
		return errors.New("the caller's executable is on a FUSE file system, whose server may answer a reading with other bytes than the process runs: it matches no sha256 selector")
	}
	return nil
}

// groupsOf reads the supplementary group ids of a /proc/PID/status.
func groupsOf(status []byte) ([]uint32, error) {
	for line := range strings.Lines(string(status)) {
		v, ok := strings.CutPrefix(line, "Groups:")
		if !ok {
			continue
		}
		var out []uint32
		for _, g := range strings.Fields(v) {
			n, err := strconv.ParseUint(g, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("a group id %q", g)
			}
			out = append(out, uint32(n))
		}
		return out, nil
	}
	return nil, errors.New("no Groups line")
}

// keyOf is what names the contents of the file fi describes: its
// device, inode, size and times of change.
func keyOf(fi os.FileInfo) fileKey {
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st == nil {
		return fileKey{}
	}
	return fileKey{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
}
