package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultKeyType          = KeyTypeECP256
	DefaultCATTL            = 24 * time.Hour
	DefaultJWTKeyTTL        = 24 * time.Hour
	DefaultX509SVIDTTL      = time.Hour
	DefaultJWTSVIDTTL       = 5 * time.Minute
	DefaultRefreshHint      = 5 * time.Minute
	DefaultRotationInterval = 10 * time.Second
	DefaultOrganization     = "Mandate"
)

// Config configures a CA. Zero durations take the documented defaults;
// negative durations are rejected.
type Config struct {
	TrustDomain spiffeid.TrustDomain // required
	KeyManager  KeyManager           // required
	Journal     Journal              // required

	KeyType     KeyType       // key type for new authorities; default ec-p256
	CATTL       time.Duration // X.509 CA lifetime; default 24h
	JWTKeyTTL   time.Duration // JWT signing key lifetime; default 24h
	X509SVIDTTL time.Duration // default X509-SVID lifetime; default 1h
	JWTSVIDTTL  time.Duration // default JWT-SVID lifetime; default 5m
	RefreshHint time.Duration // bundle spiffe_refresh_hint; default 5m

	// RotationInterval is how often Run calls Rotate; default 10s.
	RotationInterval time.Duration

	// KeysNotRestored says that a backup of the CA's state holds none of
	// its keys (a token keeps them, and deletes a key once the CA prunes
	// its authority): a restored state's active authority that has
	// expired since, whose key is gone, is then replaced at New, as the
	// rotation would have replaced it. Otherwise (keys restored with the
	// state) a key gone is a key lost, and New refuses.
	KeysNotRestored bool

	// Upstream, when set, signs our X.509 CAs, which become intermediates;
	// the bundle then carries the upstream root instead of our CAs. It is
	// fixed for the life of the CA value: restart to change it (the next
	// rotation then picks it up).
	Upstream *Upstream

	// Subject of the CA certificates. Organization defaults to "Mandate",
	// CommonName to "<trust domain> X.509 CA" (the trust domain cut
	// short, with "...", past RFC 5280's 64 characters). SerialNumber is always set
	// to the certificate's serial so that successive CAs have distinct
	// subjects.
	Subject pkix.Name

	Now    func() time.Time // clock; default time.Now
	Logger *slog.Logger     // default discards
}

// Upstream is an external CA that signs our X.509 CA certificates.
type Upstream struct {
	// Chain is the upstream signing certificate first, then any
	// intermediates, and last the root that is published in the bundle.
	// All must be parsed certificates (with Raw set).
	Chain []*x509.Certificate
	// Signer is the private key of Chain[0].
	Signer crypto.Signer
}

// notAfter is the earliest expiry in the chain: no CA we create may
// outlive it.
func (u *Upstream) notAfter() time.Time {
	t := u.Chain[0].NotAfter
	for _, c := range u.Chain[1:] {
		if c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}

func (u *Upstream) validate(now time.Time) error {
	if len(u.Chain) == 0 {
		return fmt.Errorf("%w: upstream chain is empty", ErrInvalidConfig)
	}
	if u.Signer == nil {
		return fmt.Errorf("%w: upstream signer is required", ErrInvalidConfig)
	}
	for i, c := range u.Chain {
		switch {
		case c == nil || len(c.Raw) == 0:
			return fmt.Errorf("%w: upstream chain[%d] is not a parsed certificate", ErrInvalidConfig, i)
		case !c.IsCA || !c.BasicConstraintsValid:
			return fmt.Errorf("%w: upstream chain[%d] is not a CA certificate", ErrInvalidConfig, i)
		case c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0:
			return fmt.Errorf("%w: upstream chain[%d] lacks the certSign key usage", ErrInvalidConfig, i)
		case c.MaxPathLen >= 0 && c.MaxPathLen < i+1:
			// Below chain[i] sit i upstream certificates plus our CA.
			return fmt.Errorf("%w: upstream chain[%d] path length constraint does not allow our intermediate CA", ErrInvalidConfig, i)
		}
		if i+1 < len(u.Chain) {
			if err := c.CheckSignatureFrom(u.Chain[i+1]); err != nil {
				return fmt.Errorf("%w: upstream chain[%d] is not signed by chain[%d]: %v", ErrInvalidConfig, i, i+1, err)
			}
		}
	}
	if !publicKeyEqual(u.Signer.Public(), u.Chain[0].PublicKey) {
		return fmt.Errorf("%w: upstream signer does not match the public key of chain[0]", ErrInvalidConfig)
	}
	if na := u.notAfter(); !now.Before(na) {
		return fmt.Errorf("%w: upstream chain expired at %s", ErrInvalidConfig, na.UTC())
	}
	return nil
}

// withDefaults validates cfg and fills in defaults.
func (cfg Config) withDefaults() (Config, error) {
	switch {
	case cfg.TrustDomain.IsZero():
		return cfg, fmt.Errorf("%w: trust domain is required", ErrInvalidConfig)
	case cfg.KeyManager == nil:
		return cfg, fmt.Errorf("%w: key manager is required", ErrInvalidConfig)
	case cfg.Journal == nil:
		return cfg, fmt.Errorf("%w: journal is required", ErrInvalidConfig)
	}
	if cfg.KeyType == "" {
		cfg.KeyType = DefaultKeyType
	}
	if _, err := cfg.KeyType.Curve(); err != nil {
		return cfg, fmt.Errorf("%w: key type %q (want %q or %q)", ErrInvalidConfig, cfg.KeyType, KeyTypeECP256, KeyTypeECP384)
	}
	durations := []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{
		{"ca ttl", &cfg.CATTL, DefaultCATTL},
		{"jwt key ttl", &cfg.JWTKeyTTL, DefaultJWTKeyTTL},
		{"x509-svid ttl", &cfg.X509SVIDTTL, DefaultX509SVIDTTL},
		{"jwt-svid ttl", &cfg.JWTSVIDTTL, DefaultJWTSVIDTTL},
		{"refresh hint", &cfg.RefreshHint, DefaultRefreshHint},
		{"rotation interval", &cfg.RotationInterval, DefaultRotationInterval},
	}
	for _, d := range durations {
		if *d.d < 0 {
			return cfg, fmt.Errorf("%w: %s must not be negative (got %s)", ErrInvalidConfig, d.name, *d.d)
		}
		if *d.d == 0 {
			*d.d = d.def
		}
	}
	if err := cfg.checkDurations(); err != nil {
		return cfg, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Subject.Organization) == 0 {
		cfg.Subject.Organization = []string{DefaultOrganization}
	}
	if cfg.Subject.CommonName == "" {
		cfg.Subject.CommonName = caCommonName(cfg.TrustDomain)
	}
	if cfg.Upstream != nil {
		if err := cfg.Upstream.Check(cfg.TrustDomain, cfg.Now(), nil, nil); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// Check reports, with ErrInvalidConfig, an upstream that cannot sign
// td's X.509 CAs at now: a chain that is not a CA chain, a signer that
// does not match it, an expired chain, or name constraints or extended
// key usages that leave out td's SVIDs, or the DNS names and IP
// addresses given (a server certificate's). New checks it too, without
// names; a caller may check it before it creates anything.
func (u *Upstream) Check(td spiffeid.TrustDomain, now time.Time, dnsNames []string, ips []net.IP) error {
	if err := u.validate(now); err != nil {
		return err
	}
	cfg := Config{TrustDomain: td, Upstream: u, CATTL: DefaultCATTL, Now: func() time.Time { return now }}
	cfg.Subject.CommonName = caCommonName(td)
	return cfg.probeUpstream(dnsNames, ips)
}

// caCommonName is the CA certificates' default common name, "<trust
// domain> X.509 CA", the trust domain's name cut short, with "...", where
// it would exceed the 64 characters RFC 5280 allows (ub-common-name):
// the trust domain is the CA's URI SAN in full.
func caCommonName(td spiffeid.TrustDomain) string {
	const suffix, limit = " X.509 CA", 64
	name := td.Name() // ASCII: a character is a byte
	if len(name)+len(suffix) > limit {
		name = name[:limit-len(suffix)-len("...")] + "..."
	}
	return name + suffix
}

// probeUpstream has the upstream sign a CA certificate for a throwaway
// key, made as every X.509 CA is, so that an upstream whose name
// constraints or extended key usages leave out this trust domain's SVIDs
// is refused at start rather than signing CAs whose SVIDs no relying
// party accepts. Only that refusal is reported: a failure to sign is the
// next rotation's to report.
func (cfg Config) probeUpstream(dnsNames []string, ips []net.IP) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil
	}
	now := cfg.Now()
	caCert, intermediates, root, err := cfg.x509CACert(key, now)
	if errors.Is(err, ErrInvalidConfig) {
		return err
	}
	if err != nil || len(dnsNames)+len(ips) == 0 {
		return nil
	}
	// A certificate below it with these names, as relying parties see
	// it.
	tmpl := &x509.Certificate{SerialNumber: randomSerial(), NotBefore: now.Add(-backdate), NotAfter: caCert.NotAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: leafExtKeyUsage, BasicConstraintsValid: true,
		URIs: []*url.URL{cfg.TrustDomain.ID().URL()}, DNSNames: dnsNames, IPAddresses: ips}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), key)
	if err != nil {
		return nil
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil
	}
	if err := verifyUnder(leaf, append([]*x509.Certificate{caCert}, intermediates...), root, now); err != nil {
		return fmt.Errorf("%w: the upstream CA does not allow the server certificate's names (localhost, the loopback addresses, the listen and public_url hosts, http.server_names): %v", ErrInvalidConfig, err)
	}
	return nil
}

// checkDurations enforces the relations rotation relies on.
func (cfg Config) checkDurations() error {
	switch {
	case cfg.X509SVIDTTL > cfg.CATTL:
		return fmt.Errorf("%w: x509-svid ttl %s exceeds ca ttl %s", ErrInvalidConfig, cfg.X509SVIDTTL, cfg.CATTL)
	case cfg.JWTSVIDTTL > cfg.JWTKeyTTL:
		return fmt.Errorf("%w: jwt-svid ttl %s exceeds jwt key ttl %s", ErrInvalidConfig, cfg.JWTSVIDTTL, cfg.JWTKeyTTL)
	}
	// A prepared authority is published for 1/3 of the lifetime before it
	// is activated; relying parties must fetch the bundle within that time.
	if window := min(cfg.CATTL, cfg.JWTKeyTTL) / 3; cfg.RefreshHint >= window {
		return fmt.Errorf("%w: refresh hint %s must be shorter than the publication window %s (1/3 of the shortest authority ttl)",
			ErrInvalidConfig, cfg.RefreshHint, window)
	}
	if cfg.RotationInterval >= min(cfg.CATTL, cfg.JWTKeyTTL)/6 {
		return fmt.Errorf("%w: rotation interval %s is too long for the authority ttls", ErrInvalidConfig, cfg.RotationInterval)
	}
	return nil
}

// warnings reports settings that work but shorten SVIDs.
func (cfg Config) warnings() []string {
	var w []string
	if cfg.X509SVIDTTL > cfg.CATTL/6 {
		w = append(w, "x509-svid ttl exceeds 1/6 of ca ttl: SVIDs minted late in a CA's active period are shortened to its expiry")
	}
	if cfg.JWTSVIDTTL > cfg.JWTKeyTTL/6 {
		w = append(w, "jwt-svid ttl exceeds 1/6 of jwt key ttl: JWT-SVIDs minted late in a key's active period are shortened to its expiry")
	}
	return w
}
