//go:build cgo

package hsm

import (
	"context"
	"crypto"
	"fmt"
	"sync"

	"github.com/ThalesGroup/crypto11"

	"mandate.dev/mandate/ca"
)

// KeyManager is a ca.KeyManager whose keys are in one PKCS#11 token. It is
// safe for concurrent use.
type KeyManager struct {
	token string
	p11   *crypto11.Context
	// mu serializes the making and deleting of keys, so that a key's
	// existence check and its making are one step within the process;
	// cache holds the signers found.
	mu    sync.Mutex
	cache map[string]crypto.Signer

	closeOnce sync.Once
	closeErr  error
}

var _ ca.KeyManager = (*KeyManager)(nil)

// Open logs in to the token labelled cfg.TokenLabel of the PKCS#11
// module cfg.Module with the user PIN cfg.PIN.
func Open(cfg Config) (*KeyManager, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	p11, err := crypto11.Configure(&crypto11.Config{Path: cfg.Module, TokenLabel: cfg.TokenLabel, Pin: cfg.PIN})
	if err != nil {
		// crypto11's errors name the module and the token, never the PIN.
		return nil, fmt.Errorf("hsm: open the token %q of %s: %w", cfg.TokenLabel, cfg.Module, err)
	}
	return &KeyManager{token: cfg.TokenLabel, p11: p11, cache: map[string]crypto.Signer{}}, nil
}

// Close logs out of the token and unloads the module (once no other
// KeyManager of this process uses it). Closing again does nothing.
func (m *KeyManager) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.p11.Close() })
	return m.closeErr
}

// GenerateKey implements ca.KeyManager: an ECDSA key made in the token.
func (m *KeyManager) GenerateKey(ctx context.Context, id string, kt ca.KeyType) (crypto.Signer, error) {
	if err := ca.ValidateKeyID(id); err != nil {
		return nil, err
	}
	curve, err := kt.Curve()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch found, err := m.p11.FindKeyPairs([]byte(id), nil); {
	case err != nil:
		return nil, fmt.Errorf("hsm: look for key %s in the token %q: %w", id, m.token, err)
	case len(found) > 0:
		return nil, fmt.Errorf("hsm: key %s already exists in the token %q", id, m.token)
	}
	// The private key never leaves the token: sensitive, not
	// extractable, a token object (durable) that only signs.
	public, err := crypto11.NewAttributeSetWithIDAndLabel([]byte(id), []byte(id))
	if err != nil {
		return nil, fmt.Errorf("hsm: key %s: %w", id, err)
	}
	private := public.Copy()
	if err := private.Set(crypto11.CkaSensitive, true); err != nil {
		return nil, err
	}
	if err := private.Set(crypto11.CkaExtractable, false); err != nil {
		return nil, err
	}
	if err := private.Set(crypto11.CkaToken, true); err != nil {
		return nil, err
	}
	s, err := m.p11.GenerateECDSAKeyPairWithAttributes(public, private, curve)
	if err != nil {
		return nil, fmt.Errorf("hsm: make key %s in the token %q: %w", id, m.token, err)
	}
	m.cache[id] = s
	return s, nil
}

// GetKey implements ca.KeyManager.
func (m *KeyManager) GetKey(ctx context.Context, id string) (crypto.Signer, error) {
	if err := ca.CheckKeyRequest(ctx, id); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.cache[id]; ok {
		return s, nil
	}
	s, err := m.find(id)
	if err != nil {
		return nil, err
	}
	m.cache[id] = s
	return s, nil
}

// DeleteKey implements ca.KeyManager: the key pair is destroyed in the
// token.
func (m *KeyManager) DeleteKey(ctx context.Context, id string) error {
	if err := ca.CheckKeyRequest(ctx, id); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.find(id)
	if err != nil {
		return err
	}
	delete(m.cache, id)
	if err := s.Delete(); err != nil {
		return fmt.Errorf("hsm: delete key %s in the token %q: %w", id, m.token, err)
	}
	return nil
}

// find is the key pair id in the token, or ca.ErrKeyNotFound.
func (m *KeyManager) find(id string) (crypto11.Signer, error) {
	found, err := m.p11.FindKeyPairs([]byte(id), nil)
	switch {
	case err != nil:
		return nil, fmt.Errorf("hsm: look for key %s in the token %q: %w", id, m.token, err)
	case len(found) == 0:
		return nil, fmt.Errorf("hsm: key %s in the token %q: %w", id, m.token, ca.ErrKeyNotFound)
	case len(found) > 1:
		return nil, fmt.Errorf("hsm: %d keys of id %s in the token %q: one is expected", len(found), id, m.token)
	}
	return found[0], nil
}
