package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/credfile"
)

// keyFileMode is the permission of a signer key file (its directory is
// credfile.PrivateDir's 0700).
const keyFileMode = 0o600

// algEd25519 is the algorithm byte of an Ed25519 note key.
const algEd25519 = 1

// DefaultOrigin returns the conventional checkpoint origin, and signer key
// name, of the audit log of trust domain td: "<trust domain>/audit".
func DefaultOrigin(td spiffeid.TrustDomain) string {
	return td.Name() + "/audit"
}

// GenerateKey returns a new Ed25519 note signer key (secret) and its
// verifier key, both in golang.org/x/mod/sumdb/note's text format, for a
// log whose key name is name (conventionally the checkpoint origin).
func GenerateKey(name string) (skey, vkey string, err error) {
	skey, vkey, err = note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", "", fmt.Errorf("audit: generate key %q: %w", name, err)
	}
	return skey, vkey, nil
}

// LoadOrCreateSigner loads the note signer key stored at path, or, if the
// file does not exist, generates one named name and writes it there (mode
// 0600, atomically: temporary file, fsync, link into place, directory
// fsync; a missing parent directory is created with mode 0700). It returns
// the signer and its verifier key in note format ("<name>+<hash>+<key>"),
// which is safe to print and publish.
//
// An existing file must hold a key named name, and must not be readable or
// writable by group or others. Errors name the path, never key material.
func LoadOrCreateSigner(path, name string) (note.Signer, string, error) {
	s, _, vkey, err := LoadOrCreateKey(path, name)
	return s, vkey, err
}

// LoadOrCreateKey is LoadOrCreateSigner that also returns the signer key
// itself (secret: for a signer of another kind made from the same key,
// such as a witness's cosignature/v1 signer).
func LoadOrCreateKey(path, name string) (s note.Signer, skey, vkey string, err error) {
	s, skey, vkey, err = loadSigner(path, name)
	if !errors.Is(err, fs.ErrNotExist) {
		return s, skey, vkey, err
	}
	skey, _, err = GenerateKey(name)
	if err != nil {
		return nil, "", "", err
	}
	if _, _, err := parseSignerKey(skey); err != nil { // e.g. a name note refuses
		return nil, "", "", fmt.Errorf("audit: signer key name %q: %w", name, err)
	}
	err = createFile(path, []byte(skey+"\n"))
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, "", "", fmt.Errorf("audit: write signer key %s: %w", path, err)
	}
	// Load what is on disk: ours, or a concurrent creator's that won.
	return loadSigner(path, name)
}

// loadSigner reads and checks the key file at path. Its error matches
// fs.ErrNotExist when the file does not exist.
func loadSigner(path, name string) (note.Signer, string, string, error) {
	// Only this user's: a key others may read, or may have written, is
	// not the log's (credfile.ErrNotPrivate).
	b, err := credfile.ReadPrivate(path)
	if err != nil {
		return nil, "", "", fmt.Errorf("audit: signer key: %w", err)
	}
	skey := strings.TrimSuffix(string(b), "\n")
	s, vkey, err := parseSignerKey(skey)
	if err != nil {
		return nil, "", "", fmt.Errorf("audit: signer key %s: %w", path, err)
	}
	if s.Name() != name {
		return nil, "", "", fmt.Errorf("audit: signer key %s is named %q, want %q", path, s.Name(), name)
	}
	return s, skey, vkey, nil
}

// parseSignerKey returns the signer of an Ed25519 note signer key and the
// matching verifier key. Errors never contain the key.
// VerifierKey is the note verifier key of the Ed25519 note signer key
// skey (secret: it never appears in the error).
func VerifierKey(skey string) (string, error) {
	_, vkey, err := parseSignerKey(skey)
	return vkey, err
}

func parseSignerKey(skey string) (note.Signer, string, error) {
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, "", errors.New("malformed note signer key")
	}
	// NewSigner checked the format: PRIVATE+KEY+<name>+<hash>+<base64>,
	// where only the base64 key may contain '+'.
	parts := strings.SplitN(skey, "+", 5)
	key, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(key) != 1+ed25519.SeedSize || key[0] != algEd25519 {
		return nil, "", errors.New("not an Ed25519 note signer key")
	}
	pub := ed25519.NewKeyFromSeed(key[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(s.Name(), pub)
	if err != nil {
		return nil, "", err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil || v.KeyHash() != s.KeyHash() {
		return nil, "", errors.New("derived verifier key does not match the signer key")
	}
	return s, vkey, nil
}

// createFile writes b to a new file at path with mode keyFileMode. It
// never replaces an existing file: then it returns an error matching
// fs.ErrExist. A crash leaves no partial file at path.
func createFile(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := credfile.PrivateDir(dir); err != nil {
		return err
	}
	// The directory's own entry is made durable too (a new one would
	// otherwise be lost with the key in it on a power loss, on file
	// systems that do not persist it with the file).
	if err := credfile.SyncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	return credfile.CreateFileAtomic(path, b, keyFileMode)
}
