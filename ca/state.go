package ca

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// caState is the authoritative CA state. A caState is never modified once
// installed: rotation works on a clone and installs it after saving.
type caState struct {
	seq   uint64       // bundle sequence number; 0 before the first bundle
	auths []*authority // creation order, both kinds
	// hint is the refresh hint the bundle of seq was published with; nil
	// before the first bundle, and in a state saved before it was kept.
	hint *time.Duration
}

func (s *caState) clone() *caState {
	return &caState{seq: s.seq, auths: slices.Clone(s.auths), hint: s.hint}
}

// find returns the active and prepared authorities of kind (either may be
// nil).
func (s *caState) find(kind Kind) (active, prepared *authority) {
	for _, a := range s.auths {
		if a.kind != kind {
			continue
		}
		switch a.state {
		case StateActive:
			active = a
		case StatePrepared:
			prepared = a
		}
	}
	return active, prepared
}

// replace swaps old for repl, keeping its position.
func (s *caState) replace(old, repl *authority) {
	if i := slices.Index(s.auths, old); i >= 0 {
		s.auths[i] = repl
	}
}

const stateVersion = 1

// stateRecord is the journal document.
type stateRecord struct {
	Version        int    `json:"version"`
	TrustDomain    string `json:"trust_domain"`
	BundleSequence uint64 `json:"bundle_sequence"`
	// BundleRefreshHint is the refresh hint (nanoseconds) the bundle of
	// BundleSequence was published with.
	BundleRefreshHint *time.Duration    `json:"bundle_refresh_hint_ns,omitempty"`
	Authorities       []authorityRecord `json:"authorities"`
}

// authorityRecord holds public material only: private keys live in the
// KeyManager, referenced by KeyID.
type authorityRecord struct {
	Kind          Kind      `json:"kind"`
	ID            string    `json:"id"`
	KeyID         string    `json:"key_id"`
	State         State     `json:"state"`
	NotBefore     time.Time `json:"not_before"`
	NotAfter      time.Time `json:"not_after"`
	Certificate   []byte    `json:"certificate,omitempty"`   // DER, x509 only
	Intermediates [][]byte  `json:"intermediates,omitempty"` // DER, x509 only
	Root          []byte    `json:"root,omitempty"`          // DER, x509 only
	PublicKey     []byte    `json:"public_key,omitempty"`    // PKIX DER, jwt only
	// ActivateAt is a prepared authority's activation ahead of schedule;
	// ReplacedAt when an old one stopped signing.
	ActivateAt time.Time `json:"activate_at,omitzero"`
	ReplacedAt time.Time `json:"replaced_at,omitzero"`
}

func encodeState(td spiffeid.TrustDomain, s *caState) ([]byte, error) {
	rec := stateRecord{Version: stateVersion, TrustDomain: td.Name(), BundleSequence: s.seq, BundleRefreshHint: s.hint}
	for _, a := range s.auths {
		r := authorityRecord{
			Kind: a.kind, ID: a.id, KeyID: a.keyID, State: a.state,
			NotBefore: a.notBefore, NotAfter: a.notAfter, ActivateAt: a.activateAt, ReplacedAt: a.replacedAt,
		}
		if a.kind == KindX509 {
			r.Certificate = a.cert.Raw
			r.Root = a.root.Raw
			for _, c := range a.intermediates {
				r.Intermediates = append(r.Intermediates, c.Raw)
			}
		} else {
			pub, err := x509.MarshalPKIXPublicKey(a.publicKey)
			if err != nil {
				return nil, fmt.Errorf("ca: encode jwt authority %s: %w", a.id, err)
			}
			r.PublicKey = pub
		}
		rec.Authorities = append(rec.Authorities, r)
	}
	return json.Marshal(rec)
}

// decodeState parses and checks a journal document. Signers are not
// loaded here.
func decodeState(td spiffeid.TrustDomain, data []byte) (*caState, error) {
	var rec stateRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("ca: decode journal state: %w", err)
	}
	if rec.Version != stateVersion {
		return nil, fmt.Errorf("ca: journal state version %d is not supported (want %d)", rec.Version, stateVersion)
	}
	if rec.TrustDomain != td.Name() {
		return nil, fmt.Errorf("%w: the CA stored here is trust domain %q's, and the authority is started for %q: start it for %q (trust_domain), or give another data directory",
			ErrInvalidConfig, rec.TrustDomain, td.Name(), rec.TrustDomain)
	}
	s := &caState{seq: rec.BundleSequence, hint: rec.BundleRefreshHint}
	seen := map[string]bool{}
	for i, r := range rec.Authorities {
		a, err := r.authority(td)
		if err != nil {
			return nil, fmt.Errorf("ca: journal authority %d: %w", i, err)
		}
		if seen[a.id] || seen[a.keyID] {
			return nil, fmt.Errorf("ca: journal authority %d: duplicate id", i)
		}
		seen[a.id], seen[a.keyID] = true, true
		s.auths = append(s.auths, a)
	}
	for _, kind := range []Kind{KindX509, KindJWT} {
		if err := checkUniqueStates(s, kind); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func checkUniqueStates(s *caState, kind Kind) error {
	var active, prepared int
	for _, a := range s.auths {
		if a.kind == kind && a.state == StateActive {
			active++
		}
		if a.kind == kind && a.state == StatePrepared {
			prepared++
		}
	}
	if active > 1 || prepared > 1 {
		return fmt.Errorf("ca: journal state has %d active and %d prepared %s authorities", active, prepared, kind)
	}
	return nil
}

func (r authorityRecord) authority(td spiffeid.TrustDomain) (*authority, error) {
	if err := ValidateKeyID(r.KeyID); err != nil {
		return nil, err
	}
	switch r.State {
	case StatePrepared, StateActive, StateOld:
	default:
		return nil, fmt.Errorf("unknown state %q", r.State)
	}
	a := &authority{kind: r.Kind, id: r.ID, keyID: r.KeyID, state: r.State,
		notBefore: r.NotBefore, notAfter: r.NotAfter}
	switch r.State {
	case StatePrepared:
		a.activateAt = r.ActivateAt
	case StateOld:
		a.replacedAt = r.ReplacedAt
	}
	switch r.Kind {
	case KindX509:
		return a, r.decodeX509(a, td)
	case KindJWT:
		pub, err := x509.ParsePKIXPublicKey(r.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("jwt authority %s: %w", r.ID, err)
		}
		if err := checkAuthorityKey(pub); err != nil {
			return nil, err
		}
		a.publicKey = pub
		return a, nil
	default:
		return nil, fmt.Errorf("unknown kind %q", r.Kind)
	}
}

func (r authorityRecord) decodeX509(a *authority, td spiffeid.TrustDomain) error {
	var err error
	if a.cert, err = x509.ParseCertificate(r.Certificate); err != nil {
		return fmt.Errorf("x509 authority %s: certificate: %w", r.ID, err)
	}
	if a.root, err = x509.ParseCertificate(r.Root); err != nil {
		return fmt.Errorf("x509 authority %s: root: %w", r.ID, err)
	}
	for _, der := range r.Intermediates {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("x509 authority %s: intermediate: %w", r.ID, err)
		}
		a.intermediates = append(a.intermediates, c)
	}
	if len(a.cert.URIs) != 1 || a.cert.URIs[0].String() != td.IDString() || !a.cert.IsCA {
		return fmt.Errorf("x509 authority %s: certificate is not a CA for %s", r.ID, td.IDString())
	}
	a.publicKey = a.cert.PublicKey
	a.notBefore, a.notAfter = a.cert.NotBefore, a.cert.NotAfter
	return checkAuthorityKey(a.publicKey)
}
