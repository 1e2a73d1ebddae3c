package credfile

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// EncodeCertsPEM encodes certificates as concatenated PEM blocks.
func EncodeCertsPEM(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// ParseCertsPEM decodes one or more PEM certificates.
func ParseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// EncodeKeyPEM encodes a private key as PKCS#8 PEM.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPEM decodes a PKCS#8 (or SEC 1 / PKCS#1) PEM private key: the
// first PEM block whose type names a private key. Blocks before it are
// skipped, as the EC PARAMETERS block that `openssl ecparam -genkey`
// writes first, or a certificate kept in the same file. An encrypted key
// is refused, saying so.
func ParseKeyPEM(b []byte) (crypto.Signer, error) {
	var blk *pem.Block
	for {
		if blk, b = pem.Decode(b); blk == nil {
			return nil, errors.New("no PEM private key found")
		}
		if strings.HasSuffix(blk.Type, "PRIVATE KEY") {
			break
		}
	}
	if blk.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(blk.Headers["Proc-Type"], "ENCRYPTED") {
		return nil, errors.New("parse private key: the key is encrypted; give it unencrypted (openssl pkey -in KEY -out PLAIN.pem), in a file only this user may read")
	}
	var k any
	var err error
	switch blk.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		return nil, errors.New("parse private key: malformed key") // never echo key bytes
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("parse private key: not a signing key")
	}
	return s, nil
}

// WriteFileAtomic writes b to path through a temporary file in the same
// directory (named .tmp-<name>-*), fsyncs it and renames it into place, then
// fsyncs the directory, so a crash leaves either the old or the new content.
func WriteFileAtomic(path string, b []byte, mode os.FileMode) error {
	return writeAtomic(path, b, mode, os.Rename)
}

// CreateFileAtomic is WriteFileAtomic for a file that must not exist yet:
// it never replaces one (the error then matches fs.ErrExist).
func CreateFileAtomic(path string, b []byte, mode os.FileMode) error {
	return writeAtomic(path, b, mode, os.Link)
}

// writeAtomic writes a synced temporary file and publishes it at path with
// publish (rename or link).
func writeAtomic(path string, b []byte, mode os.FileMode, publish func(tmp, path string) error) error {
	dir := filepath.Dir(path)
	prefix := ".tmp-" + filepath.Base(path) + "-"
	removeStaleTemps(dir, prefix)
	f, err := os.CreateTemp(dir, prefix+"*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, withoutTemp(err))
	}
	defer os.Remove(f.Name())
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(b)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = publish(f.Name(), path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, withoutTemp(err))
	}
	return nil
}

// withoutTemp is the reason of err, an error of a step on the temporary
// file (its *fs.PathError or *os.LinkError naming that file), for an
// error that names the file written instead: the temporary file is
// writeAtomic's, not the caller's, and gone by the time it is read.
func withoutTemp(err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		return pe.Err
	case errors.As(err, &le):
		return le.Err
	}
	return err
}

// staleTemp is the age past which a temporary file of writeAtomic is
// one a crash left (a write takes milliseconds).
const staleTemp = time.Minute

// removeStaleTemps removes the temporary files a crash left in dir for
// the file writeAtomic is about to write (a part of a key among them).
func removeStaleTemps(dir, prefix string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) || !e.Type().IsRegular() {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleTemp {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// RemoveTemps removes every temporary file of WriteFileAtomic and
// CreateFileAtomic (.tmp-*) in dir, whatever its age: for a caller that
// holds dir's lock, so that no write is under way there. A directory
// that does not exist holds none.
func RemoveTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("credfile: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") && e.Type().IsRegular() {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("credfile: remove a temporary file a crash left: %w", err)
			}
		}
	}
	return nil
}

// syncDir is SyncDir; tests replace it to see which directories are
// synced.
var syncDir = SyncDir

// SyncDir fsyncs a directory, making renames and removals in it durable.
// Where directories cannot be synced (fsync answers EINVAL or "not
// supported": some FUSE and network file systems; Windows, which
// refuses to flush a directory handle) there is nothing more to make
// durable, and it returns nil: the files in it are synced by
// themselves, and a write is not failed once it is in place.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = fsyncDir(d)
	if cannotSyncDir(err) {
		err = nil
	}
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// cannotSyncDir reports whether err, a directory's fsync error, says
// that directories cannot be synced there (rather than that the sync
// failed).
func cannotSyncDir(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, errors.ErrUnsupported) ||
		runtime.GOOS == "windows" && errors.Is(err, fs.ErrPermission) // FlushFileBuffers on a directory handle opened for reading
}

// fsyncDir syncs the open directory d; tests replace it to fail as a
// file system may.
var fsyncDir = (*os.File).Sync

// Paths are the three files of a credential in one directory.
type Paths struct{ Cert, Key, Bundle string }

// In returns the conventional paths in dir: svid.pem, svid.key, bundle.pem.
func In(dir string) Paths {
	return Paths{Cert: filepath.Join(dir, "svid.pem"), Key: filepath.Join(dir, "svid.key"), Bundle: filepath.Join(dir, "bundle.pem")}
}

// Write stores a credential: the bundle, the key (0600) and the chain,
// creating dir (0700) if needed. Each file is replaced atomically, but not
// the three together. The bundle goes first: a crash after it leaves the
// old certificate with the new bundle, which trusts the authority's
// current CAs (the old certificate's CA among them until it expires), so
// the holder can still reach the authority to renew. A crash between the
// key and the certificate leaves the new key and the old certificate, and
// Load then uses the old key, which Write kept as svid.key.prev until the
// certificate landed.
//
// Writers of one credential take turns (where the system has flock:
// Linux, macOS, the BSDs): the last one's is what is left, whole.
//
// A credential that Load would refuse (no certificate, no bundle, a key
// that is not the leaf's: with key nil, the key already on disk) is
// refused before anything is written: the credential in place stays.
func Write(p Paths, chain []*x509.Certificate, key crypto.Signer, bundle []*x509.Certificate) error {
	switch {
	case len(chain) == 0:
		return errors.New("credfile: no certificate to write")
	case len(bundle) == 0:
		return errors.New("credfile: no bundle roots to write")
	case key != nil && !KeyMatches(key, chain[0]):
		return errors.New("credfile: the key is not the key of the certificate")
	}
	if err := PrivateDir(filepath.Dir(p.Cert)); err != nil {
		return err // ErrNotPrivate's, or the file system's naming the directory
	}
	// Another writer of this credential (a second node run, a node
	// attest beside it) waits: interleaved, two writes could leave one's
	// key beside the other's certificate, and no key kept to load.
	unlock, err := lockDir(filepath.Dir(p.Cert))
	if err != nil {
		return err
	}
	defer unlock()
	if key == nil {
		held, inKeyFile, err := loadKeyFor(p, chain[0])
		if err != nil {
			return err
		}
		// After a write cut short between the key and the certificate,
		// the certificate's key is the one kept in prevKey: it goes back
		// into the key file before the certificate lands (prevKey is
		// removed once it has).
		if !inKeyFile {
			key = held
		}
	}
	if err := WriteFileAtomic(p.Bundle, EncodeCertsPEM(bundle), 0o644); err != nil {
		return err
	}
	if key != nil {
		if err := replaceKey(p, key); err != nil {
			return err
		}
	}
	if err := WriteFileAtomic(p.Cert, EncodeCertsPEM(chain), 0o644); err != nil {
		return err
	}
	_ = os.Remove(p.prevKey()) // the pair on disk matches again
	return nil
}

// prevKey is where Write keeps the replaced key until the new certificate
// is in place.
func (p Paths) prevKey() string { return p.Key + ".prev" }

// replaceKey writes key, first keeping the current key (when it matches
// the certificate on disk) as prevKey, so that a crash before the new
// certificate lands leaves a loadable pair: the old certificate and its
// key, however many writes are interrupted in a row.
func replaceKey(p Paths, key crypto.Signer) error {
	kb, err := EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	if old, ok := currentPairKey(p); ok {
		if err := WriteFileAtomic(p.prevKey(), old, 0o600); err != nil {
			return err
		}
	}
	return WriteFileAtomic(p.Key, kb, 0o600)
}

// Load reads a credential written by Write. A Write under way (a renewal
// by another process) may replace the certificate and the key between
// their reading: Load then reads them again, and returns the old pair or
// the new one.
func Load(p Paths) (chain []*x509.Certificate, key crypto.Signer, bundle []*x509.Certificate, err error) {
	for try := 0; ; try++ {
		chain, key, bundle, err = load(p)
		if !errors.Is(err, errKeyMismatch) || try == loadTries-1 {
			return chain, key, bundle, err
		}
		time.Sleep(loadRetryWait)
	}
}

// loadTries and loadRetryWait bound Load's reading again: a Write takes
// a few fsyncs.
const (
	loadTries     = 5
	loadRetryWait = 20 * time.Millisecond
)

// errKeyMismatch is the key file not holding the certificate's key.
var errKeyMismatch = errors.New("does not hold the key of the certificate")

func load(p Paths) (chain []*x509.Certificate, key crypto.Signer, bundle []*x509.Certificate, err error) {
	cb, err := os.ReadFile(p.Cert)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("credfile: %w", err)
	}
	if chain, err = ParseCertsPEM(cb); err != nil {
		return nil, nil, nil, fmt.Errorf("credfile: %s: %w", p.Cert, err)
	}
	if key, _, err = loadKeyFor(p, chain[0]); err != nil {
		return nil, nil, nil, err
	}
	bb, err := os.ReadFile(p.Bundle)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("credfile: %w", err)
	}
	if bundle, err = ParseCertsPEM(bb); err != nil {
		return nil, nil, nil, fmt.Errorf("credfile: %s: %w", p.Bundle, err)
	}
	return chain, key, bundle, nil
}

// currentPairKey returns the bytes of the key file when it holds the key
// of the certificate on disk. After an interrupted write it does not (the
// matching key is already in prevKey), and prevKey must then be kept.
func currentPairKey(p Paths) ([]byte, bool) {
	kb, err := os.ReadFile(p.Key)
	if err != nil {
		return nil, false
	}
	cb, err := os.ReadFile(p.Cert)
	if err != nil {
		return nil, false
	}
	chain, err := ParseCertsPEM(cb)
	if err != nil {
		return nil, false
	}
	key, err := ParseKeyPEM(kb)
	if err != nil || !KeyMatches(key, chain[0]) {
		return nil, false
	}
	return kb, true
}

// loadKeyFor reads the key of leaf: the key file (inKeyFile), or, when a
// Write was interrupted between the key and the certificate, the key it
// replaced.
func loadKeyFor(p Paths, leaf *x509.Certificate) (key crypto.Signer, inKeyFile bool, err error) {
	kb, err := ReadPrivate(p.Key)
	if errors.Is(err, ErrNotPrivate) {
		return nil, false, err // which names this package already
	}
	if err != nil {
		return nil, false, fmt.Errorf("credfile: %w", err)
	}
	key, err = ParseKeyPEM(kb)
	if err != nil {
		return nil, false, fmt.Errorf("credfile: %s: %w", p.Key, err)
	}
	if KeyMatches(key, leaf) {
		return key, true, nil
	}
	pb, err := ReadPrivate(p.prevKey())
	switch {
	case err == nil:
		if prev, err := ParseKeyPEM(pb); err == nil && KeyMatches(prev, leaf) {
			return prev, false, nil
		}
	case errors.Is(err, ErrNotPrivate):
		// The certificate's key may be this one: refused for what it
		// is, with what to do, not taken for a key that does not match.
		return nil, false, err
	}
	return nil, false, fmt.Errorf("credfile: %s %w in %s (fetch the credential again)", p.Key, errKeyMismatch, p.Cert)
}

// KeyMatches reports whether key is the private key of leaf.
func KeyMatches(key crypto.Signer, leaf *x509.Certificate) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(leaf.PublicKey)
}
