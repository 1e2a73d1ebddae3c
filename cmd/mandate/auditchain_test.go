package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/delegation"
)

// TestCheckLinks: an auditor accepts proven hops only when each names
// its parent's id, issuer and proven log entry, continues its delegatee
// and its principal one level deeper, and the chain ends at the hop asked.
func TestCheckLinks(t *testing.T) {
	leafOf := func(e string) string { return hex.EncodeToString(rfc6962.DefaultHasher.HashLeaf([]byte(e))) }
	idx := func(i uint64) *uint64 { return &i }
	exp := time.Now().Add(time.Hour)
	good := func() []chainHop {
		return []chainHop{
			{ChainHop: authority.ChainHop{ID: "d1", Issuer: "spiffe://org-a", Delegator: "a", Delegatee: "b", Principal: "alice", Scopes: []string{"x", "y"}, Depth: 1, Index: idx(4), EntryB64: []byte("entry-1")},
				expiresAt: exp},
			{ChainHop: authority.ChainHop{ID: "d2", Issuer: "spiffe://org-b", Delegator: "b", Delegatee: "c", Principal: "alice", Scopes: []string{"y"}, Depth: 2, Index: idx(9), EntryB64: []byte("entry-2")},
				parentID: "d1", parentIss: "spiffe://org-a", parentLink: &authority.LogLink{LogIndex: 4, LeafHash: leafOf("entry-1")}, expiresAt: exp},
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
		{"a scope its parent lacks", func(h []chainHop) { h[1].Scopes = []string{"y", "z"} }, `the scope "z"`},
		{"a later expiry than its parent's", func(h []chainHop) { h[1].expiresAt = exp.Add(time.Second) }, "expires after its parent"},
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
	// A chain one hop deeper than delegation.MaxDepth, linked right.
	var deep []chainHop
	for i := range delegation.MaxDepth + 1 {
		h := chainHop{ChainHop: authority.ChainHop{ID: fmt.Sprint("d", i+1), Issuer: "spiffe://org-a", Delegator: fmt.Sprint("a", i), Delegatee: fmt.Sprint("a", i+1),
			Principal: "alice", Scopes: []string{"x"}, Depth: i + 1, Index: idx(uint64(i)), EntryB64: fmt.Append(nil, "entry-", i)}, expiresAt: exp}
		if i > 0 {
			h.parentID, h.parentIss = deep[i-1].ID, "spiffe://org-a"
			h.parentLink = &authority.LogLink{LogIndex: uint64(i - 1), LeafHash: leafOf(string(deep[i-1].EntryB64))}
		}
		deep = append(deep, h)
	}
	if err := checkLinks(deep[:delegation.MaxDepth], deep[delegation.MaxDepth-1].ID); err != nil {
		t.Fatalf("a chain of the maximum depth: %v", err)
	}
	if err := checkLinks(deep, deep[delegation.MaxDepth].ID); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("a chain deeper than the maximum: %v", err)
	}
}

// TestVerifySignerRefuses: an auditor refuses a hop whose logged
// delegator signature is not the delegator's, over that hop, with the
// SVID the entry names, valid when the hop was logged (before asking the
// log for that SVID's entry).
func TestVerifySignerRefuses(t *testing.T) {
	idx := func(i uint64) *uint64 { return &i }
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	svid := func(id string) []*x509.Certificate {
		u, _ := url.Parse(id)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x2a), URIs: []*url.URL{u}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return []*x509.Certificate{c}
	}
	const delegator = "spiffe://org-a.example/agent/a"
	hop := func(signer string) *chainHop {
		h := &chainHop{ChainHop: authority.ChainHop{ID: "d1", Delegator: delegator, Delegatee: "spiffe://org-b.example/agent/b", Principal: "alice", Scopes: []string{"x"}, Index: idx(7)},
			purpose: "p", entryTime: now, signerSVID: &authority.SVIDEntry{Serial: "2a", LogIndex: 3}}
		st := delegation.Statement{Delegator: h.Delegator, Delegatee: h.Delegatee, Principal: h.Principal, Scopes: h.Scopes, Purpose: h.purpose}
		sig, err := delegation.SignStatement(st, key, svid(signer))
		if err != nil {
			t.Fatal(err)
		}
		h.signature = sig
		return h
	}
	for _, tc := range []struct {
		name string
		hop  func() *chainHop
		want string
	}{
		{"no signature", func() *chainHop { h := hop(delegator); h.signature = ""; return h }, "no delegator signature"},
		{"another principal than signed", func() *chainHop { h := hop(delegator); h.Principal = "eve"; return h }, "signed another hop"},
		{"more scopes than signed", func() *chainHop { h := hop(delegator); h.Scopes = []string{"x", "y"}; return h }, "signed another hop"},
		{"signed by another agent", func() *chainHop { return hop("spiffe://org-a.example/agent/z") }, "not the delegator"},
		{"another SVID than the entry names", func() *chainHop { h := hop(delegator); h.signerSVID.Serial = "2b"; return h }, "its entry names 2b"},
		{"logged when the SVID was not valid", func() *chainHop { h := hop(delegator); h.entryTime = now.Add(2 * time.Hour); return h }, "not valid at"},
		{"an SVID logged after the hop", func() *chainHop { h := hop(delegator); h.Index = idx(3); return h }, "not before the hop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := verifySigner(context.Background(), tc.hop(), nil, nil, func(*log.Checkpoint, []byte) {}, false); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("verifySigner = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestLogViewsFork: two checkpoints of one log for the same size with
// different roots are a fork; the same checkpoint twice is not.
func TestLogViewsFork(t *testing.T) {
	_, vkey, err := note.GenerateKey(rand.Reader, "org-a.example/audit")
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	root := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	same := newLogViews()
	same.of(v, nil)(&log.Checkpoint{Origin: v.Name(), Size: 4, Hash: root(1)}, nil)
	same.of(v, nil)(&log.Checkpoint{Origin: v.Name(), Size: 4, Hash: root(1)}, nil)
	if err := same.check(context.Background()); err != nil {
		t.Fatalf("one history: %v", err)
	}
	// Two logs whose keys share a name are two logs, not a fork.
	_, vkey2, err := note.GenerateKey(rand.Reader, "org-a.example/audit")
	if err != nil {
		t.Fatal(err)
	}
	v2, _ := note.NewVerifier(vkey2)
	two := newLogViews()
	two.of(v, nil)(&log.Checkpoint{Origin: v.Name(), Size: 4, Hash: root(1)}, nil)
	two.of(v2, nil)(&log.Checkpoint{Origin: v2.Name(), Size: 4, Hash: root(2)}, nil)
	if err := two.check(context.Background()); err != nil {
		t.Fatalf("two logs with keys of one name: %v", err)
	}
	forked := newLogViews()
	forked.of(v, nil)(&log.Checkpoint{Origin: v.Name(), Size: 4, Hash: root(1)}, nil)
	forked.of(v, nil)(&log.Checkpoint{Origin: v.Name(), Size: 4, Hash: root(2)}, nil)
	if err := forked.check(context.Background()); !errors.Is(err, errFork) {
		t.Fatalf("two roots for one size: %v, want errFork", err)
	}
}

// TestOpenCheckpointOrigin: a checkpoint signed by a log's key for
// another origin is not that log's.
func TestOpenCheckpointOrigin(t *testing.T) {
	skey, vkey, err := note.GenerateKey(rand.Reader, "org-a.example/audit")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	sign := func(origin string) []byte {
		cp := log.Checkpoint{Origin: origin, Size: 1, Hash: bytes.Repeat([]byte{1}, 32)}
		msg, err := note.Sign(&note.Note{Text: string(cp.Marshal())}, s)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	if _, err := openCheckpoint(sign("org-a.example/audit"), v); err != nil {
		t.Fatalf("the log's own checkpoint: %v", err)
	}
	if _, err := openCheckpoint(sign("other.example/audit"), v); err == nil {
		t.Fatal("a checkpoint for another origin was accepted")
	}
}

// TestInheritRevocations: a hop below a revoked one is revoked with it,
// unless it was revoked earlier on its own; the hop named is the one
// revoked, however far above.
func TestInheritRevocations(t *testing.T) {
	t0 := time.Now()
	rev := func(of string, d time.Duration) *hopRevocation { return &hopRevocation{Of: of, RevokedAt: t0.Add(d)} }
	hops := func(rs ...*hopRevocation) []chainHop {
		out := make([]chainHop, len(rs))
		for i, r := range rs {
			out[i] = chainHop{ChainHop: authority.ChainHop{ID: fmt.Sprint("d", i+1)}, Revoked: r}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		in   []chainHop
		want []string // of/above per hop, "" for none
	}{
		{"none", hops(nil, nil, nil), []string{"", "", ""}},
		{"the root, for all below", hops(rev("d1", 0), nil, nil), []string{"d1/", "d1/d1", "d1/d1"}},
		{"its own, earlier", hops(rev("d1", time.Minute), rev("spiffe://b", 0), nil), []string{"d1/", "spiffe://b/", "spiffe://b/d2"}},
		{"its own, later", hops(rev("d1", 0), rev("spiffe://b", time.Minute)), []string{"d1/", "d1/d1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inheritRevocations(tc.in)
			for i, h := range tc.in {
				got := ""
				if h.Revoked != nil {
					got = h.Revoked.Of + "/" + h.Revoked.Above
				}
				if got != tc.want[i] {
					t.Errorf("hop %d: %q, want %q", i+1, got, tc.want[i])
				}
			}
		})
	}
}
