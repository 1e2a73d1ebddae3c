package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"mandate.dev/mandate/credfile"
)

const (
	keyFileMode = 0o600
	keyFileExt  = ".pem"
)

// DiskKeyManager is a KeyManager that keeps each key as one PKCS#8 PEM file
// (mode 0600) in a directory only its user may write to (made 0700). Files are written atomically:
// temporary file, fsync, rename, fsync of the directory.
//
// Loaded keys are cached in memory. Errors name key ids and paths, never
// key material.
type DiskKeyManager struct {
	dir string

	// mu guards cache and serializes file creation and removal, so that
	// GenerateKey's existence check and rename are atomic within the
	// process. (Sharing a directory between processes is not supported.)
	mu    sync.Mutex
	cache map[string]crypto.Signer
}

var _ KeyManager = (*DiskKeyManager)(nil)

// NewDiskKeyManager opens the key directory dir, creating it with mode
// 0700 if needed. An existing directory that group or others may write
// to, or that another user owns, is refused (credfile.ErrNotPrivate), as
// every directory the authority keeps keys in; its mode is never changed.
// Temporary files left by an interrupted write are removed.
func NewDiskKeyManager(dir string) (*DiskKeyManager, error) {
	if dir == "" {
		return nil, errors.New("ca: key directory is required")
	}
	if err := credfile.PrivateDir(dir); err != nil {
		return nil, fmt.Errorf("ca: key directory: %w", err)
	}
	// The directory's own entry is durable before any key in it is
	// (a power loss could otherwise lose the directory, and the keys a
	// durable journal names).
	if err := credfile.SyncDir(filepath.Dir(filepath.Clean(dir))); err != nil {
		return nil, fmt.Errorf("ca: key directory: %w", err)
	}
	if err := credfile.RemoveTemps(dir); err != nil {
		return nil, fmt.Errorf("ca: key directory: %w", err)
	}
	return &DiskKeyManager{dir: dir, cache: make(map[string]crypto.Signer)}, nil
}

// Dir returns the key directory.
func (m *DiskKeyManager) Dir() string { return m.dir }

// GenerateKey implements KeyManager.
func (m *DiskKeyManager) GenerateKey(ctx context.Context, id string, kt KeyType) (crypto.Signer, error) {
	if err := CheckKeyRequest(ctx, id); err != nil {
		return nil, err
	}
	curve, err := kt.Curve()
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	path := m.path(id)
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("ca: key %q already exists", id)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("ca: key %q: %w", id, err)
	}
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate key %q: %w", id, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ca: encode key %q failed", id)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	clear(der)
	defer clear(pemBytes)
	if err := credfile.WriteFileAtomic(filepath.Join(m.dir, id+keyFileExt), pemBytes, keyFileMode); err != nil {
		return nil, fmt.Errorf("ca: write key %q: %w", id, err)
	}
	m.cache[id] = key
	return key, nil
}

// GetKey implements KeyManager. It refuses key files that group or others
// can access.
func (m *DiskKeyManager) GetKey(ctx context.Context, id string) (crypto.Signer, error) {
	if err := CheckKeyRequest(ctx, id); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.cache[id]; ok {
		return s, nil
	}
	s, err := m.readKey(id)
	if err != nil {
		return nil, err
	}
	m.cache[id] = s
	return s, nil
}

// DeleteKey implements KeyManager. The removal is durable (the directory
// is fsynced) before it returns.
func (m *DiskKeyManager) DeleteKey(ctx context.Context, id string) error {
	if err := CheckKeyRequest(ctx, id); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.cache, id)
	if err := os.Remove(m.path(id)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %q", ErrKeyNotFound, id)
		}
		return fmt.Errorf("ca: delete key %q: %w", id, err)
	}
	if err := credfile.SyncDir(m.dir); err != nil {
		return fmt.Errorf("ca: delete key %q: %w", id, err)
	}
	return nil
}

// Path is the file that holds (or would hold) key id.
func (m *DiskKeyManager) Path(id string) string { return m.path(id) }

func (m *DiskKeyManager) path(id string) string {
	return filepath.Join(m.dir, id+keyFileExt)
}

// readKey loads and parses a key file. Parse errors are reported without
// their details so no fragment of the file can leak into an error.
func (m *DiskKeyManager) readKey(id string) (crypto.Signer, error) {
	path := m.path(id)
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q (no file %s)", ErrKeyNotFound, id, m.path(id))
	}
	if err != nil {
		return nil, fmt.Errorf("ca: key %q: %w", id, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("ca: key file %s is not a regular file", path)
	}
	if err := credfile.CheckPrivate(path, fi); err != nil {
		return nil, fmt.Errorf("ca: key %q: %w", id, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: read key %q: %w", id, err)
	}
	defer clear(data)
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("ca: key file %s is not a PKCS#8 PEM file", path)
	}
	defer clear(block.Bytes)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: key file %s: malformed PKCS#8 key", path)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("ca: key file %s: key type %T cannot sign", path, key)
	}
	return s, nil
}
