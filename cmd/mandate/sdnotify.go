package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"mandate.dev/mandate/client"
	"mandate.dev/mandate/workload"
)

// sdNotifier tells a service manager (systemd, Type=notify or
// Type=notify-reload) how mandate serve, or mandate node run, is doing,
// with the sd_notify
// protocol: one datagram of newline-separated assignments per state
// (READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1, STATUS=...) sent to
// the Unix datagram socket NOTIFY_SOCKET names, a path or, starting
// with '@', an abstract socket. Without NOTIFY_SOCKET it sends nothing.
// A message that cannot be sent is logged once, at warning level; the
// server (or node) goes on serving.
type sdNotifier struct {
	socket   string        // NOTIFY_SOCKET; "" when there is none
	watchdog time.Duration // WATCHDOG_USEC meant for this process; 0 when none
	log      *slog.Logger

	mu      sync.Mutex
	warned  bool
	stopped bool // STOPPING=1 was sent: nothing but STATUS follows
}

// newSDNotifier reads NOTIFY_SOCKET (and WATCHDOG_USEC, WATCHDOG_PID)
// and takes them out of the environment, as sd_notify's
// unset_environment does, so that no process started from this one
// takes its notifications for its own.
func newSDNotifier(log *slog.Logger) *sdNotifier {
	n := &sdNotifier{socket: os.Getenv("NOTIFY_SOCKET"), log: log}
	usec, pid := os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID")
	for _, v := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} {
		_ = os.Unsetenv(v)
	}
	// WATCHDOG_PID, when set, names the process the watchdog is for
	// (sd_watchdog_enabled): another's is not this one's to keep.
	if us, err := strconv.ParseUint(usec, 10, 63); n.socket != "" && err == nil && us > 0 && (pid == "" || pid == strconv.Itoa(os.Getpid())) {
		n.watchdog = time.Duration(us) * time.Microsecond
	}
	return n
}

// ready says the authority serves, or serves again after a reload, or
// the node runs.
func (n *sdNotifier) ready(status string) {
	n.send(false, "READY=1", "STATUS="+status)
}

// reloading says a reload begins: Type=notify-reload (systemd 253 and
// later) wants the CLOCK_MONOTONIC time beside it, and READY=1 once the
// reload is done.
func (n *sdNotifier) reloading(status string) {
	n.send(false, "RELOADING=1", "STATUS="+status, "MONOTONIC_USEC="+strconv.FormatUint(monotonicUsec(), 10))
}

// stopping says the stop has begun; nothing but it is sent after it.
func (n *sdNotifier) stopping(status string) {
	n.send(true, "STOPPING=1", "STATUS="+status)
}

// keepAlive sends WATCHDOG=1 at half the watchdog interval systemd asked
// for (WatchdogSec=) until ctx ends: from READY=1 until the stop begins.
func (n *sdNotifier) keepAlive(ctx context.Context) {
	if n.socket == "" || n.watchdog <= 0 {
		return
	}
	t := time.NewTicker(n.watchdog / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.send(false, "WATCHDOG=1")
		}
	}
}

func (n *sdNotifier) send(stop bool, lines ...string) {
	if n.socket == "" {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return // a reload cut short by the stop is not READY again
	}
	n.stopped = stop
	for i, l := range lines {
		// One assignment a line: a status never carries another.
		lines[i] = strings.ReplaceAll(l, "\n", " ")
	}
	if err := n.write(strings.Join(lines, "\n") + "\n"); err != nil && !n.warned {
		n.warned = true
		n.log.Warn("cannot notify the service manager (NOTIFY_SOCKET); the command goes on, and this is said only once", "notify_socket", n.socket, "err", err)
	}
}

func (n *sdNotifier) write(msg string) error {
	if !strings.HasPrefix(n.socket, "/") && !strings.HasPrefix(n.socket, "@") {
		return errors.New("NOTIFY_SOCKET is neither an absolute path nor an abstract socket ('@...'); other addresses (vsock) are not supported")
	}
	// A name starting with '@' is an abstract socket: the net package
	// sends it with its leading NUL byte.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

// nodeNotifier is node run's sdNotifier: READY=1 once, when the node
// first holds a credential it can use (held), by when the Workload API
// socket, if served, listens; WATCHDOG=1 from then on, as serve sends
// it; STOPPING=1 when node run stops (stop). A nil *nodeNotifier (node
// attest) says nothing.
type nodeNotifier struct {
	*sdNotifier
	// life ends when node run does: keepAlive's.
	life context.Context
	// socket is the Workload API's socket (absolute path), set before
	// the node runs; "" when none is served.
	socket string
	// first, if not nil, is closed when the node first holds a valid
	// credential.
	first chan struct{}
	once  sync.Once
}

// held says the node id holds a valid credential: READY=1, the first
// time, with a STATUS naming it and the Workload API's socket.
func (n *nodeNotifier) held(id string) {
	if n == nil {
		return
	}
	n.once.Do(func() {
		status := "node " + id + " holds a valid credential"
		if n.socket != "" {
			status += "; serving the SPIFFE Workload API on " + n.socket
		}
		n.ready(status)
		if n.first != nil {
			close(n.first)
		}
		go n.keepAlive(n.life)
	})
}

// stop says node run stops: as asked (a signal), or because of err
// (the authority refusing the node for good among others). Only the
// first stop is sent.
func (n *nodeNotifier) stop(asked bool, err error) {
	if n == nil {
		return
	}
	n.stopping(nodeStopStatus(asked, err))
}

// nodeStopStatus is the STATUS of node run's STOPPING=1.
func nodeStopStatus(asked bool, err error) string {
	var p *client.Problem
	switch {
	case asked || err == nil:
		return "stopping, as asked"
	case errors.Is(err, workload.ErrNodeRefused) && errors.As(err, &p),
		errors.As(err, &p) && refusedForGood(p):
		return "stopping: the authority refuses this node for good (" + p.Name() + "); the log says what to do"
	case errors.Is(err, client.ErrCredentialRefused):
		return "stopping: the authority refuses this node's credential at the handshake (its CA revoked); the log says what to do"
	}
	return "stopping after an error: " + err.Error()
}
