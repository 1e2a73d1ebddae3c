package workload

import (
	"context"
	"errors"
	"net"

	"google.golang.org/grpc/credentials"
)

// peerCreds identifies a connection's caller by what the kernel says of
// it (callerOf). The connection is a local socket: nothing is
// encrypted, and there is no server name.
type peerCreds struct{}

// callerInfo is the caller of a connection, as gRPC hands it to a call
// (peer.FromContext).
type callerInfo struct{ Caller }

func (callerInfo) AuthType() string { return "unix-peer" }

func (peerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if pc, ok := c.(*peerConn); ok { // read as it was accepted
		return c, callerInfo{pc.who}, nil
	}
	who, err := callerOf(c)
	if err != nil {
		return nil, nil, err
	}
	return c, callerInfo{who}, nil
}

func (peerCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("workload: peer credentials are for the server side")
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "unix-peer"}
}

func (c peerCreds) Clone() credentials.TransportCredentials { return c }

func (peerCreds) OverrideServerName(string) error { return nil }
