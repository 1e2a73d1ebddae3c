package credfile_test

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"mandate.dev/mandate/credfile"
)

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// selfSigned returns a self-signed certificate with the given common name.
func selfSigned(t *testing.T, cn string) *x509.Certificate {
	t.Helper()
	return selfSignedWith(t, cn, ecKey(t))
}

// selfSignedWith returns a self-signed certificate for key k.
func selfSignedWith(t *testing.T, cn string, k crypto.Signer) *x509.Certificate {
	t.Helper()
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sameCerts(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *x509.Certificate) bool { return x.Equal(y) })
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteLoadRoundTrip(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys := []struct {
		name string
		key  crypto.Signer
	}{
		{"ecdsa", ecKey(t)},
		{"rsa", rsaKey},
		{"ed25519", edKey},
	}
	for _, k := range keys {
		t.Run(k.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "a", "creds")
			p := credfile.In(dir)
			chain := []*x509.Certificate{selfSignedWith(t, "leaf", k.key), selfSigned(t, "intermediate")}
			bundle := []*x509.Certificate{selfSigned(t, "root1"), selfSigned(t, "root2")}
			if err := credfile.Write(p, chain, k.key, bundle); err != nil {
				t.Fatalf("Write: %v", err)
			}
			gotChain, gotKey, gotBundle, err := credfile.Load(p)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !sameCerts(gotChain, chain) {
				t.Errorf("chain differs after round trip")
			}
			if !sameCerts(gotBundle, bundle) {
				t.Errorf("bundle differs after round trip")
			}
			type equaler interface{ Equal(crypto.PrivateKey) bool }
			if !k.key.(equaler).Equal(gotKey) {
				t.Errorf("key differs after round trip")
			}
			if got := dirNames(t, dir); !slices.Equal(got, []string{"bundle.pem", "svid.key", "svid.pem"}) {
				t.Errorf("directory holds %q, want exactly the three credential files", got)
			}
		})
	}
}

// Two writers of one credential at once (a second node run, a node
// attest beside the daemon) leave one of the two credentials whole:
// its key beside its certificate.
func TestConcurrentWritesLeaveOneWholeCredential(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "creds")
	p := credfile.In(dir)
	bundle := []*x509.Certificate{selfSigned(t, "root")}
	type cred struct {
		key   *ecdsa.PrivateKey
		chain []*x509.Certificate
	}
	creds := make([]cred, 4)
	for i := range creds {
		k := ecKey(t)
		creds[i] = cred{k, []*x509.Certificate{selfSignedWith(t, fmt.Sprint("leaf", i), k)}}
	}
	for round := range 100 {
		var wg sync.WaitGroup
		for w := range 2 {
			c := creds[(2*round+w)%len(creds)]
			wg.Go(func() {
				if err := credfile.Write(p, c.chain, c.key, bundle); err != nil {
					t.Errorf("Write: %v", err)
				}
			})
		}
		wg.Wait()
		chain, key, _, err := credfile.Load(p)
		if err != nil {
			t.Fatalf("round %d: Load after two writes at once: %v", round, err)
		}
		if !credfile.KeyMatches(key, chain[0]) {
			t.Fatalf("round %d: the key loaded is not the certificate's", round)
		}
	}
}

func TestIn(t *testing.T) {
	p := credfile.In("/x/y")
	if p.Cert != "/x/y/svid.pem" || p.Key != "/x/y/svid.key" || p.Bundle != "/x/y/bundle.pem" {
		t.Errorf("In = %+v", p)
	}
}

func TestWriteModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "creds")
	p := credfile.In(dir)
	key := ecKey(t)
	cert := selfSignedWith(t, "leaf", key)
	if err := credfile.Write(p, []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		want os.FileMode
	}{
		{dir, 0o700},
		{filepath.Dir(dir), 0o700},
		{p.Key, 0o600},
		{p.Cert, 0o644},
		{p.Bundle, 0o644},
	}
	for _, tt := range tests {
		if got := mode(t, tt.path); got != tt.want {
			t.Errorf("mode of %s = %v, want %v", tt.path, got, tt.want)
		}
	}
}

func TestWriteTightensExistingKeyFile(t *testing.T) {
	dir := t.TempDir()
	p := credfile.In(dir)
	if err := os.WriteFile(p.Key, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p.Key, 0o644); err != nil {
		t.Fatal(err)
	}
	key := ecKey(t)
	cert := selfSignedWith(t, "leaf", key)
	if err := credfile.Write(p, []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, p.Key); got != 0o600 {
		t.Errorf("key mode after overwriting a 0644 file = %v, want 0600", got)
	}
}

func TestWriteNilKeyKeepsExistingKey(t *testing.T) {
	dir := t.TempDir()
	p := credfile.In(dir)
	key := ecKey(t)
	cert := selfSignedWith(t, "leaf", key)
	if err := credfile.Write(p, []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	cert2 := selfSignedWith(t, "leaf2", key)
	if err := credfile.Write(p, []*x509.Certificate{cert2}, nil, []*x509.Certificate{cert2}); err != nil {
		t.Fatal(err)
	}
	chain, got, _, err := credfile.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if !key.Equal(got) || !chain[0].Equal(cert2) {
		t.Errorf("after Write with a nil key: key kept = %v, new cert = %v", key.Equal(got), chain[0].Equal(cert2))
	}
}

func TestWriteFileAtomic(t *testing.T) {
	t.Run("replaces content and leaves no temporary file", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "f.pem")
		for i, content := range []string{"first", "second, longer content", "3"} {
			if err := credfile.WriteFileAtomic(path, []byte(content), 0o640); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != content {
				t.Fatalf("after write %d: %q, %v; want %q", i, got, err, content)
			}
			if names := dirNames(t, dir); !slices.Equal(names, []string{"f.pem"}) {
				t.Fatalf("after write %d directory holds %q", i, names)
			}
			if m := mode(t, path); m != 0o640 {
				t.Errorf("mode = %v, want 0640", m)
			}
		}
	})
	t.Run("failed rename leaves no temporary file", func(t *testing.T) {
		dir := t.TempDir()
		target := filepath.Join(dir, "occupied")
		if err := os.Mkdir(target, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(target, "x"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := credfile.WriteFileAtomic(target, []byte("data"), 0o600); err == nil {
			t.Fatal("WriteFileAtomic onto a non-empty directory succeeded")
		}
		if names := dirNames(t, dir); !slices.Equal(names, []string{"occupied"}) {
			t.Errorf("directory holds %q after a failed write, want only the original entry", names)
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "missing", "f")
		if err := credfile.WriteFileAtomic(path, []byte("x"), 0o600); err == nil {
			t.Fatal("WriteFileAtomic into a missing directory succeeded")
		}
	})
}

func TestParseCertsPEM(t *testing.T) {
	c1, c2 := selfSigned(t, "one"), selfSigned(t, "two")
	keyPEM, err := credfile.EncodeKeyPEM(ecKey(t))
	if err != nil {
		t.Fatal(err)
	}
	two := credfile.EncodeCertsPEM([]*x509.Certificate{c1, c2})
	badCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x01}})

	tests := []struct {
		name    string
		in      []byte
		want    int // certificates; -1: error
		errText string
	}{
		{"two certificates", two, 2, ""},
		{"other blocks skipped", slices.Concat(keyPEM, two), 2, ""},
		{"text around blocks", slices.Concat([]byte("# comment\n"), two, []byte("trailing junk")), 2, ""},
		{"empty", nil, -1, "no PEM certificate"},
		{"whitespace", []byte("\n\n  \n"), -1, "no PEM certificate"},
		{"garbage", []byte("not pem at all"), -1, "no PEM certificate"},
		{"only a key", keyPEM, -1, "no PEM certificate"},
		{"malformed certificate", badCert, -1, "parse certificate"},
		{"good then malformed", slices.Concat(two, badCert), -1, "parse certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certs, err := credfile.ParseCertsPEM(tt.in)
			if tt.want < 0 {
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("ParseCertsPEM = %d certs, %v; want error containing %q", len(certs), err, tt.errText)
				}
				if certs != nil {
					t.Errorf("ParseCertsPEM returned certificates with its error")
				}
				return
			}
			if err != nil || len(certs) != tt.want {
				t.Fatalf("ParseCertsPEM = %d certs, %v; want %d", len(certs), err, tt.want)
			}
			if !certs[0].Equal(c1) || !certs[1].Equal(c2) {
				t.Errorf("certificates out of order")
			}
		})
	}
}

func TestParseKeyPEM(t *testing.T) {
	ec := ecKey(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := credfile.EncodeKeyPEM(ec)
	if err != nil {
		t.Fatal(err)
	}
	sec1DER, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	xKey, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	xDER, err := x509.MarshalPKCS8PrivateKey(xKey)
	if err != nil {
		t.Fatal(err)
	}
	block := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }

	good := []struct {
		name string
		in   []byte
		want crypto.Signer
	}{
		{"pkcs8", pkcs8, ec},
		{"sec1", block("EC PRIVATE KEY", sec1DER), ec},
		{"pkcs1", block("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), rsaKey},
		// As `openssl ecparam -name prime256v1 -genkey` writes it: the
		// curve's parameters first, then the key.
		{"sec1 after ec parameters", append(block("EC PARAMETERS", p256OID), block("EC PRIVATE KEY", sec1DER)...), ec},
		{"pkcs8 after a certificate", append(block("CERTIFICATE", []byte{0x30, 0x00}), pkcs8...), ec},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			got, err := credfile.ParseKeyPEM(tt.in)
			if err != nil {
				t.Fatalf("ParseKeyPEM = %v", err)
			}
			if !tt.want.(interface{ Equal(crypto.PrivateKey) bool }).Equal(got) {
				t.Errorf("ParseKeyPEM returned another key")
			}
		})
	}

	bad := []struct {
		name    string
		in      []byte
		errText string
	}{
		{"empty", nil, "no PEM private key"},
		{"garbage", []byte("garbage"), "no PEM private key"},
		{"truncated pkcs8", block("PRIVATE KEY", mustDER(t, pkcs8)[:40]), "malformed key"},
		{"sec1 labelled pkcs8", block("PRIVATE KEY", sec1DER), "malformed key"},
		{"pkcs8 labelled sec1", block("EC PRIVATE KEY", mustDER(t, pkcs8)), "malformed key"},
		{"flipped bytes", block("PRIVATE KEY", flip(mustDER(t, pkcs8))), "malformed key"},
		{"x25519 is not a signing key", block("PRIVATE KEY", xDER), "not a signing key"},
		{"ec parameters only", block("EC PARAMETERS", p256OID), "no PEM private key"},
		{"encrypted pkcs8", block("ENCRYPTED PRIVATE KEY", mustDER(t, pkcs8)), "encrypted"},
		{"encrypted pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00112233445566778899AABBCCDDEEFF"}, Bytes: sec1DER}), "encrypted"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			k, err := credfile.ParseKeyPEM(tt.in)
			if err == nil || k != nil {
				t.Fatalf("ParseKeyPEM = %v, %v; want an error", k, err)
			}
			if !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("error %q does not contain %q", err, tt.errText)
			}
			assertNoKeyMaterial(t, err.Error(), tt.in)
		})
	}
}

// p256OID is the DER of the EC PARAMETERS block openssl writes for
// P-256: its named-curve OID, 1.2.840.10045.3.1.7.
var p256OID = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

func mustDER(t *testing.T, pemBytes []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		t.Fatal("no PEM block")
	}
	return b.Bytes
}

func flip(b []byte) []byte {
	out := bytes.Clone(b)
	for i := 8; i < len(out); i += 3 {
		out[i] ^= 0xff
	}
	return out
}

// assertNoKeyMaterial fails if msg contains any 8-byte run of the key's DER
// bytes in raw, hex or base64 form, or a line of its PEM body.
func assertNoKeyMaterial(t *testing.T, msg string, pemBytes []byte) {
	t.Helper()
	var der []byte
	if b, _ := pem.Decode(pemBytes); b != nil {
		der = b.Bytes
	}
	for i := 0; i+8 <= len(der); i++ {
		w := der[i : i+8]
		for _, form := range []string{string(w), hex.EncodeToString(w), strings.ToUpper(hex.EncodeToString(w))} {
			if strings.Contains(msg, form) {
				t.Fatalf("error %q contains key bytes at offset %d", msg, i)
			}
		}
	}
	for line := range strings.Lines(string(pemBytes)) {
		line = strings.TrimSpace(line)
		if len(line) >= 8 && !strings.HasPrefix(line, "-----") && strings.Contains(msg, line[:8]) {
			t.Fatalf("error %q contains PEM body text %q", msg, line[:8])
		}
	}
	if len(der) >= 6 && strings.Contains(msg, base64.StdEncoding.EncodeToString(der[:6])) {
		t.Fatalf("error %q contains base64 key bytes", msg)
	}
}

func TestLoadErrorsDoNotLeakKey(t *testing.T) {
	dir := t.TempDir()
	p := credfile.In(dir)
	key := ecKey(t)
	cert := selfSignedWith(t, "leaf", key)
	if err := credfile.Write(p, []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	kb, err := os.ReadFile(p.Key)
	if err != nil {
		t.Fatal(err)
	}
	der := mustDER(t, kb)
	corrupt := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der[:len(der)-5]})
	if err := os.WriteFile(p.Key, corrupt, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = credfile.Load(p)
	if err == nil {
		t.Fatal("Load with a corrupt key succeeded")
	}
	if !strings.Contains(err.Error(), p.Key) {
		t.Errorf("error %q does not name the key file", err)
	}
	assertNoKeyMaterial(t, err.Error(), corrupt)
}

func TestLoadErrors(t *testing.T) {
	key := ecKey(t)
	cert := selfSignedWith(t, "leaf", key)
	tests := []struct {
		name   string
		damage func(p credfile.Paths) error
		names  func(p credfile.Paths) string
	}{
		{"missing cert", func(p credfile.Paths) error { return os.Remove(p.Cert) }, func(p credfile.Paths) string { return p.Cert }},
		{"missing key", func(p credfile.Paths) error { return os.Remove(p.Key) }, func(p credfile.Paths) string { return p.Key }},
		{"missing bundle", func(p credfile.Paths) error { return os.Remove(p.Bundle) }, func(p credfile.Paths) string { return p.Bundle }},
		{"empty cert", func(p credfile.Paths) error { return os.WriteFile(p.Cert, nil, 0o644) }, func(p credfile.Paths) string { return p.Cert }},
		{"empty bundle", func(p credfile.Paths) error { return os.WriteFile(p.Bundle, nil, 0o644) }, func(p credfile.Paths) string { return p.Bundle }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := credfile.In(t.TempDir())
			if err := credfile.Write(p, []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
				t.Fatal(err)
			}
			if err := tt.damage(p); err != nil {
				t.Fatal(err)
			}
			chain, key, bundle, err := credfile.Load(p)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if chain != nil || key != nil || bundle != nil {
				t.Errorf("Load returned values with its error")
			}
			if !strings.Contains(err.Error(), tt.names(p)) {
				t.Errorf("error %q does not name %s", err, tt.names(p))
			}
		})
	}
}

func TestLoadRefusesMismatchedKey(t *testing.T) {
	p := credfile.In(t.TempDir())
	key := ecKey(t)
	cert := selfSignedWith(t, "leaf", key)
	if err := credfile.Write(p, []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	other, err := credfile.EncodeKeyPEM(ecKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := credfile.WriteFileAtomic(p.Key, other, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := credfile.Load(p); err == nil || !strings.Contains(err.Error(), "does not hold the key") {
		t.Errorf("Load(key of another certificate) = %v, want a mismatch error", err)
	}
}

// A credential Load would refuse is never written over a good one.
func TestWriteRefusesWhatLoadWouldRefuse(t *testing.T) {
	p := credfile.In(t.TempDir())
	key := ecKey(t)
	cert := selfSignedWith(t, "good", key)
	good := []*x509.Certificate{cert}
	if err := credfile.Write(p, good, key, good); err != nil {
		t.Fatal(err)
	}
	newKey := ecKey(t)
	newCert := selfSignedWith(t, "new", newKey)
	for name, w := range map[string]func() error{
		"another's key":          func() error { return credfile.Write(p, []*x509.Certificate{newCert}, ecKey(t), good) },
		"no certificate":         func() error { return credfile.Write(p, nil, newKey, good) },
		"no bundle":              func() error { return credfile.Write(p, []*x509.Certificate{newCert}, newKey, nil) },
		"no key, not the disk's": func() error { return credfile.Write(p, []*x509.Certificate{newCert}, nil, good) },
	} {
		if err := w(); err == nil {
			t.Errorf("%s: written", name)
		}
		chain, _, _, err := credfile.Load(p)
		if err != nil || !chain[0].Equal(cert) {
			t.Fatalf("%s: the credential in place was lost: %v", name, err)
		}
	}
	// The key on disk with a new certificate for it: written.
	again := selfSignedWith(t, "again", key)
	if err := credfile.Write(p, []*x509.Certificate{again}, nil, good); err != nil {
		t.Fatalf("a certificate for the key on disk: %v", err)
	}
}

// A process reading the credential while another renews it gets the old
// pair or the new one, never an error.
func TestLoadWhileRenewed(t *testing.T) {
	p := credfile.In(t.TempDir())
	key := ecKey(t)
	cert := selfSignedWith(t, "0", key)
	if err := credfile.Write(p, []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	type pair struct {
		key  *ecdsa.PrivateKey
		cert *x509.Certificate
	}
	pairs := make([]pair, 8)
	for i := range pairs {
		k := ecKey(t)
		pairs[i] = pair{k, selfSignedWith(t, fmt.Sprint(i+1), k)}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, _, _, err := credfile.Load(p); err != nil {
					t.Errorf("Load during a renewal: %v", err)
					return
				}
			}
		})
	}
	for i := range 40 {
		pr := pairs[i%len(pairs)]
		if err := credfile.Write(p, []*x509.Certificate{pr.cert}, pr.key, []*x509.Certificate{pr.cert}); err != nil {
			t.Error(err)
			break
		}
	}
	close(done)
	wg.Wait()
}

// svid.key.prev is a private key: held to svid.key's rule.
func TestPrevKeyMustBePrivate(t *testing.T) {
	p := credfile.In(t.TempDir())
	oldKey := ecKey(t)
	oldCert := selfSignedWith(t, "old", oldKey)
	if err := credfile.Write(p, []*x509.Certificate{oldCert}, oldKey, []*x509.Certificate{oldCert}); err != nil {
		t.Fatal(err)
	}
	// A renewal cut after the new key: the old key is kept as .prev.
	ob, err := credfile.EncodeKeyPEM(oldKey)
	if err != nil {
		t.Fatal(err)
	}
	nb, err := credfile.EncodeKeyPEM(ecKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Key+".prev", ob, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p.Key+".prev", 0o644); err != nil {
		t.Fatal(err)
	}
	if err := credfile.WriteFileAtomic(p.Key, nb, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, _, err = credfile.Load(p)
	if err == nil {
		t.Fatal("a key others may read was used")
	}
	// Refused for what it is, not as a key file that does not match:
	// the pair is whole, its key is readable by others.
	if !errors.Is(err, credfile.ErrNotPrivate) || !strings.Contains(err.Error(), p.Key+".prev") {
		t.Errorf("Load: %v, want it refused as %s.prev not private to this user", err, p.Key)
	}
}

// A temporary file a crash left (a part of a key) is removed by the next
// write of that file.
func TestWriteRemovesWhatACrashLeft(t *testing.T) {
	dir := t.TempDir()
	p := credfile.In(dir)
	left := filepath.Join(dir, ".tmp-svid.key-123456")
	if err := os.WriteFile(left, []byte("-----BEGIN PRIVATE KEY-----\nMIGH"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(left, old, old); err != nil {
		t.Fatal(err)
	}
	key := ecKey(t)
	cert := selfSignedWith(t, "leaf", key)
	if err := credfile.Write(p, []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the crash's temporary file is still there: %v", err)
	}
}

func TestEncodeCertsPEMEmpty(t *testing.T) {
	if b := credfile.EncodeCertsPEM(nil); len(b) != 0 {
		t.Errorf("EncodeCertsPEM(nil) = %q, want empty", b)
	}
}

// TestLoadAfterInterruptedRenewal simulates a crash after the new key was
// written and before the new certificate: Load still returns a matching
// pair, the old one.
func TestLoadAfterInterruptedRenewal(t *testing.T) {
	p := credfile.In(t.TempDir())
	oldKey, newKey := ecKey(t), ecKey(t)
	oldCert := selfSignedWith(t, "old", oldKey)
	if err := credfile.Write(p, []*x509.Certificate{oldCert}, oldKey, []*x509.Certificate{oldCert}); err != nil {
		t.Fatal(err)
	}
	// The first half of a renewal: what Write does before the certificate.
	old, err := os.ReadFile(p.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := credfile.WriteFileAtomic(p.Key+".prev", old, 0o600); err != nil {
		t.Fatal(err)
	}
	kb, _ := credfile.EncodeKeyPEM(newKey)
	if err := credfile.WriteFileAtomic(p.Key, kb, 0o600); err != nil {
		t.Fatal(err)
	}
	chain, key, _, err := credfile.Load(p)
	if err != nil {
		t.Fatalf("Load after an interrupted renewal = %v", err)
	}
	if !chain[0].Equal(oldCert) || !oldKey.Equal(key) {
		t.Error("Load after an interrupted renewal did not return the old certificate with its key")
	}
	// A completed renewal leaves no .prev behind.
	newCert := selfSignedWith(t, "new", newKey)
	if err := credfile.Write(p, []*x509.Certificate{newCert}, newKey, []*x509.Certificate{newCert}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.Key + ".prev"); !os.IsNotExist(err) {
		t.Errorf("svid.key.prev after a completed Write: %v, want it removed", err)
	}
}

// A key another user could read is not loaded, and a credential is not
// written in a directory group or others may write to (they could
// replace it); one they may only read is its owner's choice.
func TestPrivateKeyAndDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "loose")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil { // whatever the umask
		t.Fatal(err)
	}
	p := credfile.In(dir)
	key := ecKey(t)
	cert := selfSignedWith(t, "leaf", key)
	if err := credfile.Write(p, []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); !errors.Is(err, credfile.ErrNotPrivate) || !strings.Contains(err.Error(), "chmod go-w") {
		t.Fatalf("Write into a 0777 directory = %v, want ErrNotPrivate, saying what to do", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := credfile.Write(p, []*x509.Certificate{cert}, key, []*x509.Certificate{cert}); err != nil {
		t.Fatalf("Write into a 0755 directory: %v", err)
	}
	if got := mode(t, dir); got != 0o755 {
		t.Errorf("the directory's mode became %v, want its owner's 0755 kept", got)
	}
	if _, _, _, err := credfile.Load(p); err != nil {
		t.Fatalf("Load of a private credential: %v", err)
	}
	if err := os.Chmod(p.Key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := credfile.Load(p); !errors.Is(err, credfile.ErrNotPrivate) || !strings.Contains(err.Error(), "chmod 600") || strings.Count(err.Error(), "credfile:") != 1 {
		t.Fatalf("Load of a 0644 key = %v, want ErrNotPrivate, saying what to do (its package named once)", err)
	}
}

// A write that fails names the file asked for and why, never the
// temporary file it goes through (gone by then), and keeps the reason
// errors.Is sees.
func TestWriteErrorNamesTheFileAskedFor(t *testing.T) {
	dir := t.TempDir()
	aFile := filepath.Join(dir, "a-file")
	held := filepath.Join(dir, "held")
	for _, p := range []string{aFile, held} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		write  func(string, []byte, os.FileMode) error
		path   string
		is     error
		reason string
	}{
		{"missing directory", credfile.WriteFileAtomic, filepath.Join(dir, "no-such-dir", "t.jwt"), fs.ErrNotExist, "no such file or directory"},
		{"under a file", credfile.WriteFileAtomic, filepath.Join(aFile, "t.jwt"), nil, "not a directory"},
		{"create over a file", credfile.CreateFileAtomic, held, fs.ErrExist, "file exists"},
		{"create in a missing directory", credfile.CreateFileAtomic, filepath.Join(dir, "no-such-dir", "t.jwt"), fs.ErrNotExist, "no such file or directory"},
	} {
		err := tc.write(tc.path, []byte("token"), 0o600)
		if want := "write " + tc.path + ": " + tc.reason; err == nil || err.Error() != want || strings.Contains(err.Error(), ".tmp-") {
			t.Errorf("%s: %v, want %q", tc.name, err, want)
		}
		if tc.is != nil && !errors.Is(err, tc.is) {
			t.Errorf("%s: %v is not %v", tc.name, err, tc.is)
		}
	}
}
