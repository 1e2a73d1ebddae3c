package main

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/transparency-dev/merkle/rfc6962"
)

// TestCheckLinks: an auditor accepts proven hops only when each names
// its parent's id, issuer and proven log entry, continues its delegatee
// and its principal one level deeper, and the chain ends at the hop asked.
func TestCheckLinks(t *testing.T) {
	leafOf := func(e string) string { return hex.EncodeToString(rfc6962.DefaultHasher.HashLeaf([]byte(e))) }
	idx := func(i uint64) *uint64 { return &i }
	good := func() []chainHop {
		return []chainHop{
			{ID: "d1", Issuer: "spiffe://org-a", Delegator: "a", Delegatee: "b", Principal: "alice", Depth: 1, Index: idx(4), EntryB64: []byte("entry-1")},
			{ID: "d2", Issuer: "spiffe://org-b", Delegator: "b", Delegatee: "c", Principal: "alice", Depth: 2, Index: idx(9), EntryB64: []byte("entry-2"),
				parentID: "d1", parentIss: "spiffe://org-a", parentLink: &logLink{LogIndex: 4, LeafHash: leafOf("entry-1")}},
		}
	}
	for _, tc := range []struct {
		name    string
		breakIt func(h []chainHop)
		want    string
	}{
		{"a proven chain", func([]chainHop) {}, ""},
		{"parent logged elsewhere in the log", func(h []chainHop) { h[1].parentLink.LogIndex = 5 }, "does not point at the log entry"},
		{"parent entry with another content", func(h []chainHop) { h[1].parentLink.LeafHash = leafOf("entry-x") }, "does not point at the log entry"},
		{"no link to the parent's entry", func(h []chainHop) { h[1].parentLink = nil }, "does not point at the log entry"},
		{"another parent id", func(h []chainHop) { h[1].parentID = "d0" }, "is logged below d0"},
		{"another delegator", func(h []chainHop) { h[1].Delegator = "x" }, "is delegated by x"},
		{"another principal", func(h []chainHop) { h[1].Principal = "eve" }, "acts for"},
		{"a skipped level", func(h []chainHop) { h[1].Depth = 3 }, "has depth 3"},
		{"no root", func(h []chainHop) { h[0].Depth = 2 }, "does not start at a root hop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := good()
			tc.breakIt(h)
			err := checkLinks(h, "d2")
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("checkLinks = %v, want %q", err, tc.want)
			}
		})
	}
	if err := checkLinks(good(), "d3"); err == nil {
		t.Fatal("a chain ending at another hop than asked was accepted")
	}
}
