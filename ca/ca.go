package ca

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// CA is a SPIFFE certificate and JWT authority for one trust domain. It is
// safe for concurrent use. Minting and the read accessors are lock-free:
// they load an immutable snapshot through an atomic pointer.
type CA struct {
	cfg     Config // defaults applied; read-only after New
	td      spiffeid.TrustDomain
	km      KeyManager
	journal Journal
	log     *slog.Logger
	now     func() time.Time

	// mu serializes state transitions (loading in New, Rotate) and guards
	// st. The minting and read paths never take it.
	mu sync.Mutex
	st *caState

	// view is the immutable snapshot (active signers, bundle, authority
	// list) used by minting and the read accessors. It is stored only with
	// mu held, after the state it derives from has been saved.
	view atomic.Pointer[view]

	// subMu guards subs and nextSub.
	subMu   sync.Mutex
	subs    map[uint64]chan struct{}
	nextSub uint64
}

// view is an immutable snapshot of what readers need.
type view struct {
	x509   *x509Issuer // active X.509 CA; nil only during New
	jwt    *jwtIssuer  // active JWT key; nil only during New
	bundle *spiffebundle.Bundle
	infos  []AuthorityInfo
}

// New returns a CA for cfg.TrustDomain. It loads the state saved in
// cfg.Journal, fetching the active and prepared keys from cfg.KeyManager,
// or, when nothing was saved, creates and saves a first active X.509 CA and
// JWT key. It then runs one Rotate step to catch up with the clock (for
// example after downtime). A missing or mismatched active key is an error:
// New never silently replaces an authority.
func New(ctx context.Context, cfg Config) (*CA, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &CA{
		cfg:     cfg,
		td:      cfg.TrustDomain,
		km:      cfg.KeyManager,
		journal: cfg.Journal,
		log:     cfg.Logger,
		now:     cfg.Now,
		subs:    make(map[uint64]chan struct{}),
	}
	for _, w := range cfg.warnings() {
		c.log.Warn("ca: " + w)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.load(ctx)
	if err != nil {
		return nil, err
	}
	v, err := c.buildView(st)
	if err != nil {
		return nil, err
	}
	c.st = st
	c.view.Store(v)
	if _, err := c.rotateLocked(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// load reads the journal and attaches signers to the active and prepared
// authorities. A prepared authority whose key is unusable is demoted to
// old in memory (it stays published until it expires) and a new one is
// prepared by the next rotation.
func (c *CA) load(ctx context.Context) (*caState, error) {
	data, err := c.journal.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("ca: load journal: %w", err)
	}
	if data == nil {
		return &caState{}, nil
	}
	st, err := decodeState(c.td, data)
	if err != nil {
		return nil, err
	}
	for i, a := range st.auths {
		if a.state == StateOld {
			continue
		}
		signer, err := c.km.GetKey(ctx, a.keyID)
		if err == nil && !publicKeyEqual(signer.Public(), a.publicKey) {
			err = fmt.Errorf("ca: key %q does not match its authority's public key", a.keyID)
		}
		// An active authority that has expired signs nothing any more,
		// and the rotation replaces it: with keys that backups do not
		// hold, its key may be gone (deleted once it expired, and this
		// state restored from a backup made before). One still valid is
		// never replaced silently: what it signed would stop verifying;
		// nor one whose key would have been restored with the state: its
		// key is lost, or elsewhere (a token left out).
		if errors.Is(err, ErrKeyNotFound) && c.cfg.KeysNotRestored && a.state == StateActive && !c.now().Before(a.notAfter) {
			c.log.Warn("ca: the key of the active authority, which has expired, is gone (deleted once it expired; is this state restored from a backup?): it is replaced",
				"kind", a.kind, "id", a.id, "key_id", a.keyID, "not_after", a.notAfter)
			st.auths[i] = a.withState(StateOld)
			continue
		}
		if err != nil && a.state == StateActive {
			return nil, fmt.Errorf("ca: load active %s authority %s: %w", a.kind, a.id, err)
		}
		if err != nil {
			c.log.Warn("ca: prepared authority unusable, demoting to old",
				"kind", a.kind, "id", a.id, "key_id", a.keyID, "err", err)
			st.auths[i] = a.withState(StateOld)
			continue
		}
		b := *a
		b.signer = signer
		st.auths[i] = &b
	}
	return st, nil
}

// buildView derives the reader snapshot from st, reusing the current
// issuers (and their cached signers) when the active authority is
// unchanged.
func (c *CA) buildView(st *caState) (*view, error) {
	cur := c.view.Load()
	v := &view{bundle: c.buildBundle(st), infos: authorityInfos(st)}
	if a, _ := st.find(KindX509); a != nil {
		if cur != nil && cur.x509 != nil && cur.x509.id == a.id {
			v.x509 = cur.x509
		} else {
			iss, err := newX509Issuer(a, c.cfg.Subject)
			if err != nil {
				return nil, err
			}
			v.x509 = iss
		}
	}
	if a, _ := st.find(KindJWT); a != nil {
		if cur != nil && cur.jwt != nil && cur.jwt.kid == a.id {
			v.jwt = cur.jwt
		} else {
			iss, err := newJWTIssuer(a)
			if err != nil {
				return nil, err
			}
			v.jwt = iss
		}
	}
	return v, nil
}

// Subscribe returns a channel that receives a value after every state
// change: an authority prepared, activated or pruned (and so after every
// bundle change). Notifications coalesce: the channel has a buffer of one
// and a send is dropped when a notification is already pending, so a
// receiver should re-read Bundle/Status rather than count signals. Call
// cancel to unsubscribe; the channel is not closed.
func (c *CA) Subscribe() (ch <-chan struct{}, cancel func()) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	id := c.nextSub
	c.nextSub++
	sub := make(chan struct{}, 1)
	c.subs[id] = sub
	return sub, func() {
		c.subMu.Lock()
		defer c.subMu.Unlock()
		delete(c.subs, id)
	}
}

func (c *CA) notify() {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	for _, ch := range c.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
