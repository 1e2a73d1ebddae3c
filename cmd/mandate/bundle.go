package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

const bundleUsage = `Usage: mandate bundle show [--server URL] [--bundle FILE]

Prints the authority's SPIFFE bundle (GET /v1/bundle), as a peer's
bundle_file wants it.
`

func runBundle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if helpAsked(args, bundleUsage, stdout) {
		return nil
	}
	if len(args) == 0 || args[0] != "show" {
		fmt.Fprint(stderr, bundleUsage)
		return usagef("bundle: want show")
	}
	fs := newFlagSet("bundle show", "bundle show [flags]", stderr)
	var cf clientFlags
	cf.registerServer(fs)
	fs.StringVar(&cf.bundle, "bundle", "mandate-data/admin/bundle.pem", "PEM trust bundle to authenticate the authority")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if _, err := os.Stat(cf.bundle); err != nil {
		return fmt.Errorf("trust bundle: %w (give --bundle, the authority's trust bundle, and --server, or run from the directory mandate serve runs in)", err)
	}
	c, err := cf.dial(false)
	if err != nil {
		return err
	}
	doc, err := c.BundleDocument(ctx)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, doc, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = stdout.Write(out.Bytes())
	return err
}
