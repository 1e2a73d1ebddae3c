package workload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"
)

// peerCreds identifies a connection's caller by what the kernel said of
// it when it was accepted (callerOf). The connection is a local socket: nothing is
// encrypted, and there is no server name.
type peerCreds struct {
	// entries are the Workload API's: what those that may select a
	// caller ask of its process is read here.
	entries []Entry
}

// callerInfo is the caller of a connection, as gRPC hands it to a call
// (peer.FromContext).
type callerInfo struct{ Caller }

func (callerInfo) AuthType() string { return "unix-peer" }

// ServerHandshake takes the caller the listener read when it accepted c
// (connLimit), and reads what the entries ask of its process: Serve
// accepts every connection through it. Each connection's handshake has
// a goroutine of its own.
func (pcs peerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	pc, ok := c.(*peerConn)
	if !ok {
		return nil, nil, errors.New("workload: a connection not accepted by the Workload API's listener")
	}
	if need := needsOf(pcs.entries, pc.who); need.any() {
		pc.setProc(readWithin(pc.Conn, pc.who, need))
	}
	return c, callerInfo{pc.caller()}, nil
}

// Bounds of the readings of callers' processes under way at once:
// one that hangs (an executable on a file system that does not answer)
// holds its slot, and the connections after wait for one, for
// readTimeout at most. One user's callers hold at most maxReadsPerUID
// of them: what another user's do does not stop theirs from being
// read.
const (
	maxReads       = 64
	maxReadsPerUID = 4
)

var reads = newSlots(maxReads, maxReadsPerUID)

// readWithin is readProcess of the caller who, or an error once
// readTimeout has passed: what it reads after is closed.
func readWithin(c net.Conn, who Caller, need procNeeds) *process {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	late := &process{err: fmt.Errorf("the caller's process was not read within %v", readTimeout)}
	release, err := reads.take(ctx, who.UID)
	if err != nil {
		return late
	}
	var mu sync.Mutex
	gone := false
	done := make(chan *process, 1)
	go func() {
		defer release()
		p := readProcess(c, who.PID, need)
		mu.Lock()
		defer mu.Unlock()
		if gone {
			p.close()
			return
		}
		done <- p
	}()
	select {
	case p := <-done:
		return p
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	gone = true
	select {
	case p := <-done:
		return p
	default:
		return late
	}
}

func (peerCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("workload: peer credentials are for the server side")
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "unix-peer"}
}

func (c peerCreds) Clone() credentials.TransportCredentials { return c }

func (peerCreds) OverrideServerName(string) error { return nil }
