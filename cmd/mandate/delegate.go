package main

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/delegation"
)

const delegateUsage = `Usage:
  mandate delegate request --creds AGENT_DIR --delegatee ID --scope S [--scope S ...]
                           (--principal P | --parent TOKEN_FILE) [flags]
        as the agent whose credential is in AGENT_DIR (the delegator), let the
        delegatee act for the principal (a root hop) or below the parent token
        it holds; prints the delegation and writes the token (--out; if that
        write fails, the error names the delegation and its audit index, to revoke it)
  mandate delegate verify TOKEN_FILE (--presenter ID [--presenter-cert PEM] | --any-holder) [--bundles FILE] [--audience A]
                          [--status URL | --status TD=URL ...]
        verify a delegation token's whole chain offline and print it; with --status, also ask the
        last hop's issuer whether the chain still holds (it answers for the hops above too), or,
        with TD=URL for each issuer, each hop's own issuer, taking no issuer's word for another's
`

func runDelegate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if helpAsked(args, delegateUsage, stdout) {
		return nil
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, delegateUsage)
		return usagef("delegate: missing command")
	}
	switch args[0] {
	case "request":
		return delegateRequest(ctx, args[1:], stdout, stderr)
	case "verify":
		return delegateVerify(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, delegateUsage)
	return unknownCommand("delegate", args[0])
}

func delegateRequest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("delegate request", "delegate request --creds AGENT_DIR --delegatee ID --scope S (--principal P | --parent FILE) [flags]", stderr)
	var cf clientFlags
	var delegatee, principal, parentFile, purpose, bindFile, out string
	var scopes stringList
	var ttl time.Duration
	cf.register(fs, "mandate-agent", "delegator agent's credential directory")
	fs.StringVar(&delegatee, "delegatee", "", "SPIFFE ID of the agent that will act (required)")
	fs.Var(&scopes, "scope", "a scope to delegate (repeatable; at least one)")
	fs.StringVar(&principal, "principal", "", "on whose behalf (a root hop)")
	fs.StringVar(&parentFile, "parent", "", "file holding the parent delegation token this agent holds (a sub-delegation)")
	fs.StringVar(&purpose, "purpose", "", "what for, recorded with the hop")
	fs.DurationVar(&ttl, "ttl", 0, "lifetime (default 10m, at most 24h, never beyond the parent's); when given, also signed in the hop's statement as its not_after, which verifiers hold the hop to")
	fs.StringVar(&bindFile, "bind-svid", "", "the delegatee's current X509-SVID chain (PEM): the token is bound to it, as the hop's statement signs (cnf)")
	fs.StringVar(&out, "out", "delegation.jwt", "file to write the token to")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case principal != "" && parentFile != "":
		return usagef("give --principal (a root hop) or --parent (a sub-delegation), not both")
	case delegatee == "" || len(scopes) == 0 || principal == "" && parentFile == "":
		return usagef("--delegatee, at least one --scope, and --principal or --parent are required")
	}
	// The API takes whole seconds: 500ms would be 0, the default (10m),
	// and no not_after would be signed.
	if err := wholeSeconds("--ttl", ttl); err != nil {
		return err
	}
	// Refused here rather than by the authority, which would log the
	// refusal of a request that was never meant.
	if ttl > authority.MaxDelegationTTL {
		return usagef("--ttl %s: at most %dh", ttl, int(authority.MaxDelegationTTL.Hours()))
	}
	// The delegation is made (and logged) once asked for: where its
	// token goes is checked first.
	if err := checkOutFile("--out", out); err != nil {
		return err
	}
	chain, key, _, err := cf.credential()
	if err != nil {
		return err
	}
	me, err := spiffeIDOf(chain)
	if err != nil {
		return err
	}
	c, err := cf.dial(true)
	if err != nil {
		return err
	}
	secs := int64(ttl / time.Second)
	req := &client.DelegationRequest{Delegatee: delegatee, Scopes: scopes, Purpose: purpose, TTLSeconds: secs}
	st := delegation.Statement{Delegator: me.String(), Delegatee: delegatee, Principal: principal, Scopes: scopes, Purpose: purpose}
	if secs > 0 {
		// The delegator signs how long the hop may last, at most: its
		// issuer cannot make it last longer. (Only when asked: a verifier
		// older than not_after refuses a statement that has it.)
		st.NotAfter = time.Now().Unix() + secs
	}
	if parentFile != "" {
		b, err := readTokenFile("--parent", parentFile, tokenInAFile)
		if err != nil {
			return err
		}
		parent := strings.TrimSpace(string(b))
		req.ParentToken = parent
		// The statement names the parent's principal and id: read them
		// from the token (the authority verifies it).
		p, err := unverifiedClaims(parent)
		if err != nil {
			return fmt.Errorf("--parent: %w", err)
		}
		st.Principal, st.Parent, st.ParentIssuer = p.Subject, p.ID, p.Issuer
	} else {
		req.Principal = principal
	}
	if bindFile != "" {
		b, err := os.ReadFile(bindFile)
		if err != nil {
			return fmt.Errorf("--bind-svid: %w", err)
		}
		certs, err := credfile.ParseCertsPEM(b)
		if err != nil {
			return fmt.Errorf("--bind-svid: %w", err)
		}
		req.DelegateeX509SVID = string(b)
		// Signed too: no authority can leave the hop unbound, or bind it
		// to another certificate, without verifiers refusing it.
		st.Cnf = &delegation.Confirmation{X5tS256: delegation.Thumbprint(certs[0])}
	}
	sig, err := delegation.SignStatement(st, key, chain)
	if err != nil {
		return err
	}
	req.DelegatorSignature = sig
	ans, err := c.Delegate(ctx, req)
	if err != nil {
		return err
	}
	// Only the token of the delegation the answer names is written: an
	// answer without it is no delegation, whatever else it says.
	switch claims, err := unverifiedClaims(ans.Token); {
	case ans.Token == "":
		return errors.New("the authority's answer carries no delegation token")
	case err != nil:
		return fmt.Errorf("the authority's answer carries no delegation token: %v", err)
	case ans.ID == "" || claims.ID != ans.ID:
		return fmt.Errorf("the authority's answer names the delegation %q, and its token is that of %q", ans.ID, claims.ID)
	}
	if err := writeIssued(out, []byte(ans.Token+"\n")); err != nil {
		// The delegation is made and logged: said, so that it can be
		// found and revoked (its token, a secret, is shown nowhere).
		return fmt.Errorf("the authority issued delegation %s (audit log index %d, expires %s), but its token was not written to --out %s: %w; "+
			"nothing else holds the token: have an admin revoke the delegation (mandate admin revoke delegation %s --reason \"token not written\"), and ask again once --out can be written",
			ans.ID, ans.Receipt.Index, ans.ExpiresAt.UTC().Format(time.RFC3339), out, err, ans.ID)
	}
	return printJSON(stdout, map[string]any{"id": ans.ID, "expires_at": ans.ExpiresAt, "token_file": out,
		"audit_index": ans.Receipt.Index, "chain": ans.Chain})
}

func spiffeIDOf(chain []*x509.Certificate) (spiffeid.ID, error) {
	if len(chain) == 0 || len(chain[0].URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("the credential is not an X509-SVID")
	}
	return spiffeid.FromURI(chain[0].URIs[0])
}

// unverifiedClaims reads a token's claims without checking it.
func unverifiedClaims(token string) (*delegation.Claims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("not a JWT: %v", err)
	}
	c := new(delegation.Claims)
	if err := json.Unmarshal(b, c); err != nil {
		return nil, err
	}
	return c, nil
}

func delegateVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("delegate verify", "delegate verify TOKEN_FILE [flags]", stderr)
	bundles := fs.String("bundles", filepath.Join("mandate-agent", "bundles.json"), "SPIFFE bundles of every trust domain to trust ({\"<td>\": <bundle>}, as in a credential directory's bundles.json)")
	presenter := fs.String("presenter", "", "SPIFFE ID that presents the token: it must be its holder (required unless --any-holder)")
	presenterCert := fs.String("presenter-cert", "", "the presenter's X509-SVID (PEM), for a token bound to a certificate")
	anyHolder := fs.Bool("any-holder", false, "only inspect the chain: do not check who holds the token, nor (unless --presenter or --presenter-cert is given) the certificate it is bound to")
	audience := fs.String("audience", "", "audience the token must be for")
	var status stringList
	fs.Var(&status, "status", "also ask whether the chain still holds: https://HOST:PORT is the last hop's issuer (it answers for the hops above too, on its word); TD=https://HOST:PORT is trust domain TD's authority, asked of its own hops, so that no issuer's word is taken for another's hops (repeatable; the last hop's issuer must be among them). Each server must present spiffe://<td>/mandate/server")
	rest, err := splitFlags(fs, args)
	if err != nil {
		return err
	}
	file, err := oneArg(rest, "the token file")
	if err != nil {
		return err
	}
	statusAt, lastAt, err := statusAddresses(status)
	if err != nil {
		return err
	}
	opts := delegation.VerifyOptions{Audience: *audience, AnyHolder: *anyHolder}
	if *presenter == "" && !*anyHolder {
		return usagef("--presenter is required (or --any-holder, to inspect a chain without using it)")
	}
	if *presenter != "" {
		if opts.Presenter, err = spiffeid.FromString(*presenter); err != nil {
			return usagef("--presenter: %v", err)
		}
	}
	tok, err := readTokenFile("the token file", file, tokenInAFile)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(*bundles)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("--bundles: %w (give --bundles, the SPIFFE bundles of the trust domains to trust: the bundles.json of an agent's or a node's credential directory)", err)
	}
	if err != nil {
		return fmt.Errorf("--bundles: %w", err)
	}
	var docs map[string]json.RawMessage
	if err := json.Unmarshal(b, &docs); err != nil {
		return fmt.Errorf("--bundles %s: %w", *bundles, err)
	}
	m, err := client.ParseBundles(docs)
	if err != nil {
		return err
	}
	set := spiffebundle.NewSet()
	for _, bd := range m {
		set.Add(bd)
	}
	if *presenterCert != "" {
		pem, err := os.ReadFile(*presenterCert)
		if err != nil {
			return fmt.Errorf("--presenter-cert: %w", err)
		}
		certs, err := credfile.ParseCertsPEM(pem)
		if err != nil {
			return fmt.Errorf("--presenter-cert: %w", err)
		}
		opts.PresenterCert = certs[0]
	}
	chain, err := delegation.Verify(strings.TrimSpace(string(tok)), set, opts)
	if errors.Is(err, delegation.ErrPresenterCertNeeded) {
		return fmt.Errorf("%w (give it with --presenter-cert)", err)
	}
	if err != nil {
		return err
	}
	out := delegation.ViewsOf(chain)
	ans := map[string]any{"valid": true, "principal": chain[0].Subject, "holder": chain[len(chain)-1].Act.Subject, "chain": out}
	if len(status) > 0 {
		last := chain[len(chain)-1]
		lastTD, err := spiffeid.TrustDomainFromString(last.Issuer)
		if err != nil {
			return err
		}
		if lastAt != "" {
			if statusAt[lastTD.Name()] != "" {
				return usagef("--status: the last hop's issuer, %s, given twice (%s and %s=%s)", lastTD.Name(), lastAt, lastTD.Name(), statusAt[lastTD.Name()])
			}
			statusAt[lastTD.Name()] = lastAt
		}
		// A trust domain given that issued no hop (a typo, say) would
		// leave the hops meant unasked: the last issuer's word taken.
		for name := range statusAt {
			if !slices.ContainsFunc(chain, func(h *delegation.Claims) bool {
				td, err := spiffeid.TrustDomainFromString(h.Issuer)
				return err == nil && td.Name() == name
			}) {
				return usagef("--status %s=%s: %s issued no hop of this chain", name, statusAt[name], name)
			}
		}
		if statusAt[lastTD.Name()] == "" {
			return usagef("--status: give the last hop's issuer, %s (as %s=https://HOST:PORT, or its address alone)", lastTD.Name(), lastTD.Name())
		}
		// Each hop whose issuer is given is asked of it, the last hop
		// included (which its issuer answers for the hops above too).
		var asked []map[string]any
		for _, hop := range chain {
			td, err := spiffeid.TrustDomainFromString(hop.Issuer)
			if err != nil {
				return err
			}
			at := statusAt[td.Name()]
			if at == "" {
				continue
			}
			st, err := delegation.FetchStatus(ctx, delegation.NewStatusClient(set, authority.ServerID(td)), at, hop.ID)
			if errors.Is(err, delegation.ErrStatusUnreachable) {
				// Another authority's server fails the handshake with a
				// bare "unexpected ID".
				what := fmt.Sprintf("--status %s=%s is the address of %s", td.Name(), at, td.IDString())
				if td == lastTD && lastAt != "" {
					what = "--status is the address of the last hop's issuer, " + td.IDString()
				}
				return fmt.Errorf("%w (%s, whose server presents %s)", err, what, authority.ServerID(td))
			}
			if err != nil {
				return err // the issuer's own answer: the address was right
			}
			asked = append(asked, map[string]any{"id": hop.ID, "issuer": hop.Issuer, "status": st.Status})
			if st.Status != delegation.StatusActive {
				_ = printJSON(stdout, map[string]any{"valid": false, "status": st.Status, "reason": st.Reason, "asked": asked, "chain": out})
				return fmt.Errorf("the chain no longer holds: %s %s (%s)", hop.ID, st.Status, st.Reason) // FetchStatus escapes a reason that is not plain text
			}
		}
		ans["status"] = delegation.StatusActive
		ans["asked"] = asked
	}
	return printJSON(stdout, ans)
}

// statusAddresses reads delegate verify's --status values: TD=URL, the
// authority of trust domain TD (by TD), or a URL alone, the last hop's
// issuer (last).
func statusAddresses(vals []string) (byTD map[string]string, last string, err error) {
	byTD = map[string]string{}
	for _, v := range vals {
		name, at, ok := strings.Cut(v, "=")
		if !ok || strings.HasPrefix(v, "https://") {
			if last != "" {
				return nil, "", usagef("--status: the last hop's issuer given twice (%s and %s); name the others as TD=https://HOST:PORT", last, v)
			}
			last = v
			continue
		}
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			return nil, "", usagef("--status %s: %q is not a trust domain: %v", v, name, err)
		}
		if byTD[td.Name()] != "" {
			return nil, "", usagef("--status: %s given twice", td.Name())
		}
		if at == "" {
			return nil, "", usagef("--status %s: give the address of %s's authority (%s=https://HOST:PORT)", v, td.Name(), td.Name())
		}
		byTD[td.Name()] = at
	}
	return byTD, last, nil
}
