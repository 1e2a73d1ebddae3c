package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// TestEmptyOperandRefused: a command given an empty operand (a shell
// variable a failed command left empty) says so, before it reads a
// credential or asks the authority, which would answer for another
// path ("no such endpoint: POST /v1/admin/nodes//evict") or in the
// API's field names ("give delegation_id or spiffe_id").
func TestEmptyOperandRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dataDir := filepath.Join(t.TempDir(), "mandate-data")
	for _, tc := range []struct {
		args []string
		what string
	}{
		{[]string{"admin", "node", "evict", "", "--reason", "r"}, "the node's SPIFFE ID"},
		{[]string{"admin", "node", "ban", ""}, "the node's SPIFFE ID"},
		{[]string{"admin", "agent", "show", ""}, "the registration id"},
		{[]string{"admin", "agent", "delete", ""}, "the registration id"},
		{[]string{"admin", "federation", "delete", ""}, "the trust domain"},
		{[]string{"admin", "revoke", "delegation", "", "--reason", "r"}, "the delegation id"},
		{[]string{"admin", "revoke", "spiffe-id", "", "--reason", "r"}, "the SPIFFE ID"},
		{[]string{"admin", "ca", "revoke", "", "--reason", "r"}, "the authority's id"},
	} {
		var out, errOut bytes.Buffer
		args := append(tc.args, "--server", "https://"+ln.Addr().String(), "--data-dir", dataDir)
		err := run(context.Background(), args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.what) || !strings.Contains(err.Error(), "empty") {
			t.Errorf("mandate %s = %v, want a refusal of the empty operand, %s", strings.Join(tc.args, " "), err, tc.what)
		}
	}
}

// A node command given a node's ID without its scheme and trust domain
// (node/join/…, a path as a node's files name it) says to give the
// whole SPIFFE ID, before it asks the authority, which knows no such
// node.
func TestNodeOperandIsASPIFFEID(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "mandate-data")
	for _, args := range [][]string{{"show"}, {"ban"}, {"evict", "--reason", "r"}} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"admin", "node", args[0], "node/join/ffff", "--server", "https://127.0.0.1:1", "--data-dir", dataDir}, args[1:]...), &out, &errOut)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "spiffe://<td>/node/") {
			t.Errorf("admin node %s node/join/ffff = %v, want it refused, saying to give the node's SPIFFE ID", args[0], err)
		}
	}
}
