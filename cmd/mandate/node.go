package main

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
)

func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "join" {
		fmt.Fprintln(stderr, "Usage: mandate node join --token TOKEN [--bundle FILE] [--out DIR] [--server URL]")
		return usagef("node: unknown or missing command")
	}
	fs := newFlagSet("node join", "node join --token TOKEN [flags]", stderr)
	var cf clientFlags
	var token, out string
	var quiet bool
	cf.register(fs, "", "unused for join")
	fs.StringVar(&token, "token", "", "join token from 'mandate admin join-token create' (required)")
	fs.StringVar(&cf.bundle, "bundle", "mandate-data/admin/bundle.pem", "PEM trust bundle to authenticate the authority")
	fs.StringVar(&out, "out", "mandate-node", "directory for the node credential (svid.pem, svid.key 0600, bundle.pem, bundles.json)")
	fs.BoolVar(&quiet, "quiet", false, "print only the node's SPIFFE ID")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if token == "" {
		return usagef("--token is required")
	}
	c, err := cf.dial(false)
	if err != nil {
		return err
	}
	key, csr, err := client.NewKeyAndCSR()
	if err != nil {
		return err
	}
	ans, err := c.Join(ctx, token, csr)
	if err != nil {
		return err
	}
	if err := saveAnswer(out, ans, key, c.TrustDomain()); err != nil {
		return err
	}
	if quiet {
		_, err = fmt.Fprintln(stdout, ans.SPIFFEID)
		return err
	}
	return printJSON(stdout, map[string]any{"spiffe_id": ans.SPIFFEID, "expires_at": ans.ExpiresAt, "credential": out})
}

// saveAnswer writes an SVID answer as a credential directory: the chain,
// the key, the own trust domain's roots, and every bundle as bundles.json.
func saveAnswer(dir string, ans *client.SVIDAnswer, key crypto.Signer, td spiffeid.TrustDomain) error {
	chain, err := ans.Certificates()
	if err != nil {
		return err
	}
	bundles, err := ans.ParseBundles()
	if err != nil {
		return err
	}
	own, ok := bundles[td]
	if !ok {
		return fmt.Errorf("the answer carries no bundle for %s", td)
	}
	if err := credfile.Write(credfile.In(dir), chain, key, own.X509Authorities()); err != nil {
		return err
	}
	doc, err := json.MarshalIndent(ans.Bundles, "", "  ")
	if err != nil {
		return err
	}
	return credfile.WriteFileAtomic(filepath.Join(dir, "bundles.json"), doc, 0o644)
}
