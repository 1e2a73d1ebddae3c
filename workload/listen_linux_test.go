package workload

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A socket whose server is too busy to take another connection (its
// queue of connections not yet accepted is full) is in use, not stale:
// Listen refuses it rather than remove it and serve in its place. Only
// a socket no process listens on is removed.
func TestListenKeepsABusySocket(t *testing.T) {
	dir := t.TempDir()
	busy := filepath.Join(dir, "busy.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: busy}); err != nil {
		t.Fatal(err)
	}
	// A queue of none waiting: the first connection fills it, and the
	// next ones are refused with EAGAIN while nothing accepts.
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		c, err := net.DialTimeout("unix", busy, time.Second)
		if err != nil {
			break
		}
		defer c.Close()
		if i == 10 {
			t.Fatal("the listener's queue never filled")
		}
	}
	if ln, err := Listen(busy); err == nil {
		ln.Close()
		t.Fatal("Listen took the socket of a busy server")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Errorf("Listen = %v, want the socket said in use", err)
	}
	if _, err := os.Lstat(busy); err != nil {
		t.Errorf("the busy server's socket: %v", err)
	}

	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln, err = Listen(stale)
	if err != nil {
		t.Fatalf("Listen on a stale socket: %v", err)
	}
	ln.Close()
}
