package main

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
)

// clientFlags say which authority to call and with which credential.
type clientFlags struct {
	server, trustDomain string
	creds               string // a credential directory (svid.pem, svid.key, bundle.pem)
	bundle              string // PEM roots, when there is no credential (join)
	// bundleGiven is --bundle given on the command line (not its default).
	bundleGiven bool
	// lapsed, when set, is the trust bundle that came with an expired
	// credential of this node: trusted besides --bundle's roots.
	lapsed *heldRoots
	// missing says how to give the credential when there is none in
	// creds: the command's own flags (see register).
	missing string
}

// heldRoots are the X.509 roots of trust domain td that its authority
// handed out with a credential (bundle.pem in the credential's
// directory, rewritten with every renewal).
type heldRoots struct {
	td    spiffeid.TrustDomain
	roots []*x509.Certificate
}

// register registers the flags naming the authority and --creds. A
// command with no default credential directory takes the admin
// credential of the authority's --data-dir (admin, audit, policy,
// bench): a missing credential is then said with both flags; else with
// --creds and what it is.
func (c *clientFlags) register(fs *flag.FlagSet, defaultCreds, credsHelp string) {
	c.registerServer(fs)
	fs.StringVar(&c.creds, "creds", defaultCreds, credsHelp)
	c.missing = "give --creds DIR, the " + credsHelp
	if defaultCreds == "" {
		c.missing = "give --data-dir of the authority (its admin credential is in <data-dir>/admin: run the command where the authority runs), or --creds DIR"
	}
}

// registerServer registers the flags naming the authority only, for
// commands that authenticate with no credential of their own (--creds).
func (c *clientFlags) registerServer(fs *flag.FlagSet) {
	fs.StringVar(&c.server, "server", defaultServer(), "authority URL ($MANDATE_SERVER when set)")
	if fs.Lookup("trust-domain") == nil { // "federation add --trust-domain" names the peer instead
		fs.StringVar(&c.trustDomain, "trust-domain", "", "authority's trust domain (default: from the credential or bundle)")
	}
}

// defaultServer is $MANDATE_SERVER, or the address of an authority started
// with no flags.
func defaultServer() string {
	if s := os.Getenv("MANDATE_SERVER"); s != "" {
		return s
	}
	return client.DefaultServer
}

// dial builds a client from the flags: mTLS with the credential in creds,
// or server-authenticated TLS only when withCert is false.
func (c *clientFlags) dial(withCert bool) (*client.Client, error) {
	cfg := client.Config{Server: c.server}
	if c.trustDomain != "" {
		td, err := spiffeid.TrustDomainFromString(c.trustDomain)
		if err != nil {
			return nil, usagef("--trust-domain: %v", err)
		}
		cfg.TrustDomain = td
	}
	if withCert {
		chain, key, bundle, err := c.credential()
		if err != nil {
			return nil, err
		}
		// An expired certificate fails the TLS handshake with no more than
		// "bad certificate": say so before.
		if exp := chain[0].NotAfter; time.Now().After(exp) {
			return nil, fmt.Errorf("the credential in %s expired at %s: get a new one (an agent's: mandate svid x509 with its node's credential; a node's: mandate node join or attest again; the admin credential: the running authority renews it in <data-dir>/admin)",
				c.creds, exp.UTC().Format(time.RFC3339))
		}
		cfg.SVID, cfg.Key, cfg.Bundle = chain, key, bundle
		cfg.BundleFrom, cfg.SVIDFrom = credfile.In(c.creds).Bundle, c.creds
		return client.New(cfg)
	}
	path := c.bundle
	if path == "" {
		path = credfile.In(c.creds).Bundle
	}
	b, err := os.ReadFile(path)
	noBundle := func(err error) error {
		return fmt.Errorf("trust bundle: %w (give --bundle, the authority's trust bundle: <data-dir>/admin/bundle.pem where it runs, or what mandate bundle show prints)", err)
	}
	switch {
	case err == nil:
		cfg.BundleFrom = path
		if cfg.Bundle, err = credfile.ParseCertsPEM(b); err != nil {
			return nil, fmt.Errorf("trust bundle %s: %w", path, err)
		}
	case c.lapsed == nil || c.bundleGiven || !errors.Is(err, fs.ErrNotExist):
		return nil, noBundle(err)
	}
	if c.lapsed != nil {
		cfg = c.lapsed.addTo(cfg)
		if len(cfg.Bundle) == 0 { // the lapsed credential's is another trust domain's
			return nil, noBundle(err)
		}
	}
	return client.New(cfg)
}

// credential loads the credential in creds. A missing one is said with
// the flags that give it (see register), not with the package that
// looked for it.
func (c *clientFlags) credential() ([]*x509.Certificate, crypto.Signer, []*x509.Certificate, error) {
	chain, key, bundle, err := credfile.Load(credfile.In(c.creds))
	if errors.Is(err, fs.ErrNotExist) {
		missing := c.missing
		if missing == "" {
			missing = "give its directory"
		}
		var pe *fs.PathError
		if errors.As(err, &pe) { // the file, without the package that read it
			err = fmt.Errorf("%s: %w", pe.Path, pe.Err)
		}
		return nil, nil, nil, fmt.Errorf("no credential in %s (%w): %s", c.creds, err, missing)
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load credential from %s: %w", c.creds, err)
	}
	return chain, key, bundle, nil
}

// addTo adds the held roots to cfg's bundle when they are those of the
// trust domain cfg names (by --trust-domain, else by its bundle's CA),
// or when cfg has no roots and names none; the roots of another trust
// domain are another authority's, and never trusted for this one. Roots
// given that name no trust domain (an upstream CA's) are left as they
// are, for --trust-domain to say whose they are: they may be another
// authority's.
func (h *heldRoots) addTo(cfg client.Config) client.Config {
	td := cfg.TrustDomain
	if td.IsZero() && len(cfg.Bundle) > 0 {
		for _, u := range cfg.Bundle[0].URIs {
			if t, err := spiffeid.TrustDomainFromURI(u); err == nil {
				td = t
				break
			}
		}
		if td.IsZero() {
			return cfg
		}
	}
	if !td.IsZero() && td != h.td {
		return cfg
	}
	cfg.TrustDomain = h.td
	cfg.Bundle = append(slices.Clip(cfg.Bundle), h.roots...)
	return cfg
}

// printJSON prints v as indented JSON, each line printableJSON: what an
// authority sent (names, accountability, reasons) is shown as it reads,
// never with a bidirectional override or an invisible character acting
// on the terminal. json.Marshal writes no raw newline inside a string,
// so the lines are the indentation's.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	var out strings.Builder
	for line := range strings.Lines(string(b) + "\n") {
		out.WriteString(printableJSON([]byte(strings.TrimSuffix(line, "\n"))))
		out.WriteByte('\n')
	}
	_, err = io.WriteString(w, out.String())
	return err
}

// reusedClient is a client with the credential in dir (made by dial),
// made anew only once that credential changes (svid.pem or bundle.pem
// rewritten by a renewal) or expires: its connections to the authority
// are kept alive from one call to the next, rather than each call
// making a TLS handshake of its own. Safe for concurrent use.
type reusedClient struct {
	dir  string
	dial func() (*client.Client, error)

	mu       sync.Mutex
	c        *client.Client
	seen     []byte    // svid.pem and bundle.pem as c was made with them
	notAfter time.Time // the end of c's credential
}

// get is the client for the credential in dir as it is now.
func (r *reusedClient) get() (*client.Client, error) {
	p := credfile.In(r.dir)
	pem, errCert := os.ReadFile(p.Cert)
	bundle, errBundle := os.ReadFile(p.Bundle)
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := append(pem, bundle...)
	if errCert == nil && errBundle == nil && r.c != nil && bytes.Equal(seen, r.seen) && time.Now().Before(r.notAfter) {
		return r.c, nil
	}
	c, err := r.dial() // says what is wrong with the credential, if anything
	if err != nil {
		return nil, err
	}
	if r.c != nil {
		r.c.CloseIdle()
	}
	r.c, r.seen, r.notAfter = c, nil, time.Time{}
	if chain, err := credfile.ParseCertsPEM(pem); errCert == nil && errBundle == nil && err == nil {
		r.seen, r.notAfter = seen, chain[0].NotAfter
	}
	return c, nil
}

// forget drops c, if it is still the client get returns, with its
// connections: the next get makes a new one, and so a new handshake.
func (r *reusedClient) forget(c *client.Client) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c == c {
		r.c.CloseIdle()
		r.c, r.seen, r.notAfter = nil, nil, time.Time{}
	}
}
