package presented

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// FuzzVerify presents chains drawn from a pool of certificates (roots,
// intermediates nested and of one subject, CAs of one name and key
// nothing vouches for, leaves under each), in any order and number, or
// made of the fuzzer's own bytes as DER, to Verify and x509svid.Verify
// under one of several bundles: Verify never panics, and accepts a chain
// exactly when x509svid.Verify does (no chain here reaches its limit of
// signature checks), with the same ID.
func FuzzVerify(f *testing.F) {
	root := mint(f, "root", true, nil, nil, "spiffe://org-a.example")
	other := mint(f, "other", true, nil, nil, "spiffe://org-a.example")
	int1 := mint(f, "int1", true, root, nil, "spiffe://org-a.example")
	int2 := mint(f, "int2", true, int1, nil, "spiffe://org-a.example")
	same1 := mint(f, "", true, root, nil, "spiffe://org-a.example")
	same2 := mint(f, "", true, same1, nil, "spiffe://org-a.example")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	junk1 := mint(f, "junk", true, nil, key, "spiffe://org-a.example")
	junk2 := mint(f, "junk", true, junk1, key, "spiffe://org-a.example")
	pool := []*x509.Certificate{
		leafOf(f, root), leafOf(f, int1), leafOf(f, int2), leafOf(f, same2), leafOf(f, junk1), leafOf(f, other),
		root.cert, other.cert, int1.cert, int2.cert, same1.cert, same2.cert, junk1.cert, junk2.cert,
	}
	bundles := []*x509bundle.Bundle{
		x509bundle.FromX509Authorities(td, []*x509.Certificate{root.cert}),
		x509bundle.FromX509Authorities(td, []*x509.Certificate{int1.cert}),
		x509bundle.FromX509Authorities(td, []*x509.Certificate{root.cert, other.cert}),
		x509bundle.FromX509Authorities(td, []*x509.Certificate{junk1.cert}),
	}
	for _, seed := range [][]byte{
		{0, 0}, {0, 0, 6}, {0, 1, 8}, {0, 2, 9, 8}, {0, 2, 8, 6, 9}, {0, 3, 11, 10},
		{1, 2, 9}, {2, 5}, {0, 4, 12, 13, 13, 12}, {3, 4, 13, 12}, {0, 0, 8, 9, 10, 11, 12, 13},
	} {
		f.Add(seed)
	}
	f.Add(append([]byte{0x80, 0, 0, 3}, pool[0].Raw[:3]...))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 1 {
			return
		}
		bundle := bundles[int(in[0]&0x7f)%len(bundles)]
		var certs []*x509.Certificate
		if in[0]&0x80 == 0 {
			for _, b := range in[1:min(len(in), 10)] {
				certs = append(certs, pool[int(b)%len(pool)])
			}
		} else {
			// The fuzzer's own DER, each length-prefixed (two bytes).
			for rest := in[1:]; len(rest) >= 2 && len(certs) < 9; {
				n := int(binary.BigEndian.Uint16(rest))
				rest = rest[2:]
				if n > len(rest) {
					return
				}
				c, err := x509.ParseCertificate(rest[:n])
				if err != nil {
					return
				}
				certs, rest = append(certs, c), rest[n:]
			}
		}
		id, _, err := Verify(certs, bundle)
		wantID, _, wantErr := x509svid.Verify(certs, bundle)
		if (err == nil) != (wantErr == nil) || id != wantID {
			t.Fatalf("Verify = %v, %v; x509svid.Verify = %v, %v", id, err, wantID, wantErr)
		}
	})
}
