package main

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParseProof feeds arbitrary bytes to the offline proof parser: it
// never panics, and what it accepts it writes back identically.
func FuzzParseProof(f *testing.F) {
	f.Add([]byte("c2sp.org/tlog-proof@v1\nextra e30=\nindex 0\n\norigin\n1\nAAAA\n\n— origin sig\n"))
	f.Add([]byte("c2sp.org/tlog-proof@v1\nextra e30=\nindex 3\n" + "gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n" + "\ncp\n"))
	f.Add([]byte("c2sp.org/tlog-proof@v1\nindex 1\n\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := parseProof(data)
		if err != nil {
			return
		}
		if got := p.marshalProof(); !bytes.Equal(got, data) {
			// Accepted input must be in the canonical form marshalProof writes.
			q, err := parseProof(got)
			if err != nil || q.index != p.index || !bytes.Equal(q.entry, p.entry) || len(q.proof) != len(p.proof) {
				t.Fatalf("parse(marshal(parse(x))) differs from parse(x)")
			}
		}
	})
}

// c2sp.org/tlog-proof: the index is "an ASCII decimal with no leading
// zeroes (unless the index is 0)".
func TestParseProofIndexIsCanonical(t *testing.T) {
	for idx, ok := range map[string]bool{"0": true, "300": true, "0300": false, "00": false, "+3": false, "3 ": false} {
		_, err := parseProof([]byte("c2sp.org/tlog-proof@v1\nextra e30=\nindex " + idx + "\n\norigin\n1\nAAAA\n\n— origin sig\n"))
		if got := err == nil || !strings.Contains(err.Error(), "index"); got != ok {
			t.Errorf("index %q: %v, want accepted %v", idx, err, ok)
		}
	}
}
