//go:build cgo

package hsm

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"mandate.dev/mandate/ca"
)

// KeyManager is a ca.KeyManager whose keys are in one PKCS#11 token. It is
// safe for concurrent use.
//
// A token that forgets its sessions (an HSM restarted, a network HSM's
// connection lost and made again, the token taken out and put back)
// leaves every handle the process held invalid, and the login gone:
// then a signature that fails so logs in to the token anew and is made
// again, once, rather than every signature failing until the authority
// restarts.
//
// A token that cannot be opened anew is not tried again at once: the
// signatures fail at once, saying why, for 1 s after the first failed
// try, then twice as long after each, up to 30 s, so that a token down
// (or a network HSM unreachable) does not have every signature wait
// for a login in turn. A token that refuses the PIN is not tried again
// at all: each wrong PIN counts towards the token locking it.
type KeyManager struct {
	cfg crypto11.Config
	// mu guards what follows, and serializes the making and deleting of
	// keys, so that a key's existence check and its making are one step
	// within the process.
	mu     sync.Mutex
	p11    *crypto11.Context
	gen    uint64                     // how many times the token was opened anew
	cache  map[string]crypto11.Signer // the key pairs found in p11, by id
	closed bool
	// down is why the token could not be opened anew (nil: it was, or
	// never had to be), and until when it is not tried again (the zero
	// time: never, the PIN refused); pause is the wait after the latest
	// failed try.
	down  error
	until time.Time
	pause time.Duration
	// open opens the token and logs in (crypto11.Configure); now is the
	// time.
	open func(*crypto11.Config) (*crypto11.Context, error)
	now  func() time.Time
}

// The waits before the token, once it could not be opened anew, is
// tried again: the first, and the longest.
const (
	firstPause = time.Second
	maxPause   = 30 * time.Second
)

var _ ca.KeyManager = (*KeyManager)(nil)

// Open logs in to the token labelled cfg.TokenLabel of the PKCS#11
// module cfg.Module with the user PIN cfg.PIN.
func Open(cfg Config) (*KeyManager, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	m := &KeyManager{
		cfg:   crypto11.Config{Path: cfg.Module, TokenLabel: cfg.TokenLabel, Pin: cfg.PIN},
		cache: map[string]crypto11.Signer{},
		open:  crypto11.Configure,
		now:   time.Now,
	}
	p11, err := m.configure()
	if err != nil {
		return nil, err
	}
	m.p11 = p11
	return m, nil
}

// configure opens the token and logs in.
func (m *KeyManager) configure() (*crypto11.Context, error) {
	cfg := m.cfg // Configure sets its defaults in the Config it is given
	p11, err := m.open(&cfg)
	if err != nil {
		// crypto11's errors name the module and the token, never the PIN.
		return nil, fmt.Errorf("hsm: open the token %q of %s: %w", m.cfg.TokenLabel, m.cfg.Path, err)
	}
	return p11, nil
}

// Close logs out of the token and unloads the module (once no other
// KeyManager of this process uses it). Closing again does nothing.
func (m *KeyManager) Close() error {
	m.mu.Lock()
	p11 := m.p11
	if m.closed {
		p11 = nil
	}
	m.closed, m.cache = true, map[string]crypto11.Signer{}
	m.mu.Unlock()
	if p11 == nil {
		return nil
	}
	return p11.Close()
}

// errClosed is the answer of a KeyManager closed.
var errClosed = errors.New("hsm: the token is closed")

// forgotten reports whether err is the token's saying that it no longer
// knows the session, the login or the key's handle this process had:
// the token was reset, or its connection made again.
func forgotten(err error) bool {
	var p11err pkcs11.Error
	if !errors.As(err, &p11err) {
		return false
	}
	switch p11err {
	case pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID,
		pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_DEVICE_REMOVED,
		pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_TOKEN_NOT_RECOGNIZED,
		pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED:
		return true
	}
	return false
}

// pinRefused reports whether err is the token's refusing the PIN: a
// wrong one, or one it locked or lets expire.
func pinRefused(err error) bool {
	var p11err pkcs11.Error
	if !errors.As(err, &p11err) {
		return false
	}
	switch p11err {
	case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE,
		pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_PIN_EXPIRED:
		return true
	}
	return false
}

// reopen logs in to the token anew, unless it was done since gen (by
// another signature that failed the same way); the handles found before
// are forgotten. After a failed try, the token is not tried again for a
// while (KeyManager), nor ever once it refused the PIN: the error says
// so.
func (m *KeyManager) reopen(gen uint64) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errClosed
	}
	if m.gen != gen {
		m.mu.Unlock()
		return nil
	}
	now := m.now()
	switch {
	case m.down != nil && m.until.IsZero():
		m.mu.Unlock()
		return m.down
	case m.down != nil && now.Before(m.until):
		err := fmt.Errorf("%w (not tried again before %s)", m.down, m.until.UTC().Format(time.RFC3339))
		m.mu.Unlock()
		return err
	}
	p11, err := m.configure()
	if err != nil {
		if pinRefused(err) {
			m.down, m.until = fmt.Errorf("%w; it is not logged in to again, lest it lock the PIN: restart the authority with the right PIN in ca.pkcs11.pin_file", err), time.Time{}
		} else {
			m.pause = min(max(2*m.pause, firstPause), maxPause)
			m.down, m.until = err, now.Add(m.pause)
		}
		err = m.down
		m.mu.Unlock()
		return err
	}
	old := m.p11
	m.p11, m.cache = p11, map[string]crypto11.Signer{}
	m.gen++
	m.down, m.pause = nil, 0
	m.mu.Unlock()
	// Closed once the new one holds the module, which stays loaded;
	// outside the lock: Close waits for the signatures under way.
	_ = old.Close()
	return nil
}

// reopened reports whether the token was opened anew since gen.
func (m *KeyManager) reopened(gen uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen != gen
}

// signer is a key of the token, as the CA holds it: found again in the
// token if the token was opened anew since.
type signer struct {
	m      *KeyManager
	id     string
	public crypto.PublicKey
}

func (s *signer) Public() crypto.PublicKey { return s.public }

// Sign has the token sign digest. A token that forgot this process's
// sessions and login is logged in to again, and the signature made once
// more.
func (s *signer) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	for try := 0; ; try++ {
		k, gen, err := s.m.current(s.id)
		if err == nil {
			if !publicEqual(k.Public(), s.public) {
				return nil, fmt.Errorf("hsm: key %s in the token %q is not the key it was", s.id, s.m.cfg.TokenLabel)
			}
			var sig []byte
			if sig, err = k.Sign(rand, digest, opts); err == nil {
				return sig, nil
			}
		}
		// Made again once: when the token forgot this process, or when
		// it was opened anew meanwhile (the handle used is closed).
		if try > 0 || !forgotten(err) && !s.m.reopened(gen) {
			return nil, fmt.Errorf("hsm: sign with key %s in the token %q: %w", s.id, s.m.cfg.TokenLabel, err)
		}
		if rerr := s.m.reopen(gen); rerr != nil {
			return nil, fmt.Errorf("hsm: sign with key %s in the token %q: %w (and then: %w)", s.id, s.m.cfg.TokenLabel, err, rerr)
		}
	}
}

func publicEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// current is the key pair id as the token opened now holds it, and how
// many times the token was opened anew.
func (m *KeyManager) current(id string) (crypto11.Signer, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, m.gen, errClosed
	}
	if k, ok := m.cache[id]; ok {
		return k, m.gen, nil
	}
	k, err := m.find(id)
	if err != nil {
		return nil, m.gen, err
	}
	m.cache[id] = k
	return k, m.gen, nil
}

// GenerateKey implements ca.KeyManager: an ECDSA key made in the token.
func (m *KeyManager) GenerateKey(ctx context.Context, id string, kt ca.KeyType) (crypto.Signer, error) {
	if err := ca.CheckKeyRequest(ctx, id); err != nil {
		return nil, err
	}
	curve, err := kt.Curve()
	if err != nil {
		return nil, err
	}
	s, gen, err := m.generate(id, curve)
	if err != nil && forgotten(err) {
		// Made again once, the token logged in to anew, as a signature.
		if rerr := m.reopen(gen); rerr != nil {
			return nil, fmt.Errorf("%w (and then: %w)", err, rerr)
		}
		s, _, err = m.generate(id, curve)
	}
	return s, err
}

// generate makes the key pair id in the token opened now, whose
// generation it says.
func (m *KeyManager) generate(id string, curve elliptic.Curve) (crypto.Signer, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	gen := m.gen
	if m.closed {
		return nil, gen, errClosed
	}
	switch found, err := m.p11.FindKeyPairs([]byte(id), nil); {
	case err != nil:
		return nil, gen, fmt.Errorf("hsm: look for key %s in the token %q: %w", id, m.cfg.TokenLabel, err)
	case len(found) > 0:
		return nil, gen, fmt.Errorf("hsm: key %s already exists in the token %q", id, m.cfg.TokenLabel)
	}
	// The private key never leaves the token: sensitive, not
	// extractable, a token object (durable) that only signs.
	public, err := crypto11.NewAttributeSetWithIDAndLabel([]byte(id), []byte(id))
	if err != nil {
		return nil, gen, fmt.Errorf("hsm: key %s: %w", id, err)
	}
	private := public.Copy()
	if err := private.Set(crypto11.CkaSensitive, true); err != nil {
		return nil, gen, err
	}
	if err := private.Set(crypto11.CkaExtractable, false); err != nil {
		return nil, gen, err
	}
	if err := private.Set(crypto11.CkaToken, true); err != nil {
		return nil, gen, err
	}
	s, err := m.p11.GenerateECDSAKeyPairWithAttributes(public, private, curve)
	if err != nil {
		return nil, gen, fmt.Errorf("hsm: make key %s in the token %q: %w", id, m.cfg.TokenLabel, err)
	}
	m.cache[id] = s
	return &signer{m: m, id: id, public: s.Public()}, gen, nil
}

// GetKey implements ca.KeyManager.
func (m *KeyManager) GetKey(ctx context.Context, id string) (crypto.Signer, error) {
	if err := ca.CheckKeyRequest(ctx, id); err != nil {
		return nil, err
	}
	k, gen, err := m.current(id)
	if err != nil {
		if err = m.lookAgain(err, gen); err == nil {
			k, _, err = m.current(id)
		}
	}
	if err != nil {
		return nil, err
	}
	return &signer{m: m, id: id, public: k.Public()}, nil
}

// lookAgain is nil when a lookup or a deletion that failed with err, in
// the token opened anew gen times, is to be made once more, the token
// logged in to anew: when the token forgot this process, or found no
// key, as a token does that forgot this process's login (it then hides
// the private keys, and says nothing else). Otherwise it is the error
// to answer: err, or, when the token could not be logged in to anew,
// why (not the key's absence, which is not known then).
func (m *KeyManager) lookAgain(err error, gen uint64) error {
	if !errors.Is(err, ca.ErrKeyNotFound) && !forgotten(err) {
		return err
	}
	if rerr := m.reopen(gen); rerr != nil {
		return fmt.Errorf("hsm: the token %q, logged in to anew to look for the key again: %w", m.cfg.TokenLabel, rerr)
	}
	return nil
}

// DeleteKey implements ca.KeyManager: the key pair is destroyed in the
// token.
func (m *KeyManager) DeleteKey(ctx context.Context, id string) error {
	if err := ca.CheckKeyRequest(ctx, id); err != nil {
		return err
	}
	gen, err := m.delete(id)
	if err != nil {
		if err = m.lookAgain(err, gen); err == nil {
			_, err = m.delete(id)
		}
	}
	return err
}

// delete destroys the key pair id in the token opened now, whose
// generation it says.
func (m *KeyManager) delete(id string) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return m.gen, errClosed
	}
	s, err := m.find(id)
	if err != nil {
		return m.gen, err
	}
	delete(m.cache, id)
	if err := s.Delete(); err != nil {
		return m.gen, fmt.Errorf("hsm: delete key %s in the token %q: %w", id, m.cfg.TokenLabel, err)
	}
	return m.gen, nil
}

// find is the key pair id in the token, or ca.ErrKeyNotFound. m.mu is
// held.
func (m *KeyManager) find(id string) (crypto11.Signer, error) {
	found, err := m.p11.FindKeyPairs([]byte(id), nil)
	switch {
	case err != nil:
		return nil, fmt.Errorf("hsm: look for key %s in the token %q: %w", id, m.cfg.TokenLabel, err)
	case len(found) == 0:
		return nil, fmt.Errorf("hsm: key %s in the token %q: %w", id, m.cfg.TokenLabel, ca.ErrKeyNotFound)
	case len(found) > 1:
		return nil, fmt.Errorf("hsm: %d keys of id %s in the token %q: one is expected", len(found), id, m.cfg.TokenLabel)
	}
	return found[0], nil
}
