package workload

import (
	"context"
	"errors"
	"net"

	"google.golang.org/grpc/credentials"
)

// peerCreds identifies a connection's caller by what the kernel said of
// it when it was accepted (callerOf). The connection is a local socket: nothing is
// encrypted, and there is no server name.
type peerCreds struct{}

// callerInfo is the caller of a connection, as gRPC hands it to a call
// (peer.FromContext).
type callerInfo struct{ Caller }

func (callerInfo) AuthType() string { return "unix-peer" }

// ServerHandshake takes the caller the listener read when it accepted c
// (connLimit): Serve accepts every connection through it.
func (peerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	pc, ok := c.(*peerConn)
	if !ok {
		return nil, nil, errors.New("workload: a connection not accepted by the Workload API's listener")
	}
	return c, callerInfo{pc.who}, nil
}

func (peerCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("workload: peer credentials are for the server side")
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "unix-peer"}
}

func (c peerCreds) Clone() credentials.TransportCredentials { return c }

func (peerCreds) OverrideServerName(string) error { return nil }
