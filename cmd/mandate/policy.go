package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/policies"
	"mandate.dev/mandate/policy"
)

const policyUsage = `Usage:
  mandate policy test [--dir DIR]       run the Rego tests of the policies (the embedded ones, or DIR),
                                        here, without a server; exit status 1 if any fails
  mandate policy export --dir DIR       write the embedded policies to DIR, to start a --policy-dir from
  mandate policy reload [flags]         have the running authority reload its policies (admin)
  mandate policy status [flags]         the running authority's policy revision and modules (admin)
`

func runPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if helpAsked(args, policyUsage, stdout) {
		return nil
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, policyUsage)
		return usagef("policy: missing command")
	}
	switch args[0] {
	case "test":
		return policyTest(ctx, args[1:], stdout, stderr)
	case "export":
		return policyExport(args[1:], stdout, stderr)
	case "reload", "status":
		return policyRemote(ctx, args[0], args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, policyUsage)
	return unknownCommand("policy", args[0])
}

func policyTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy test", "policy test [--dir DIR]", stderr)
	dir := fs.String("dir", "", "policy directory (default: the embedded policies)")
	verbose := fs.Bool("v", false, "list every test, not only failures")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// A directory that is not there is named, as serve --policy-dir
	// names it (the loader would say "stat .").
	if *dir != "" {
		if fi, err := os.Stat(*dir); err != nil {
			return fmt.Errorf("--dir: %w", err)
		} else if !fi.IsDir() {
			return fmt.Errorf("--dir %s: not a directory", *dir)
		}
	}
	// Loading runs the tests and refuses a failing revision: load with
	// them, and report them one by one.
	// A set refused (a module that does not compile, a test that fails)
	// is said on stderr, as every failure is: stdout holds results only.
	eng, err := policy.New(ctx, policy.Options{Dir: *dir, Required: policy.DecisionDocuments(), Timeout: 10 * time.Second})
	if err != nil {
		return err
	}
	results, err := eng.Test(ctx)
	if err != nil {
		return err
	}
	failed := 0
	for _, r := range results {
		status := "PASS"
		if r.Fail || r.Error != "" {
			status, failed = "FAIL", failed+1
		}
		if *verbose || status == "FAIL" {
			fmt.Fprintf(stdout, "%s.%s: %s (%s) %s\n", r.Package, r.Name, status, r.Duration.Round(time.Microsecond), r.Error)
		}
	}
	if failed > 0 {
		fmt.Fprintf(stdout, "FAIL: %d/%d (revision %s)\n", failed, len(results), eng.Revision())
		return exitError{1}
	}
	fmt.Fprintf(stdout, "PASS: %d/%d (revision %s)\n", len(results), len(results), eng.Revision())
	return nil
}

func policyExport(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy export", "policy export --dir DIR", stderr)
	dir := fs.String("dir", "", "directory to write the embedded policies to (required; must not hold them already)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("--dir is required")
	}
	entries, err := policies.FS.ReadDir(".")
	if err != nil {
		return err
	}
	// Lstat: a link at a policy's name, even to nothing, is a name taken.
	for _, e := range entries {
		if _, err := os.Lstat(filepath.Join(*dir, e.Name())); err == nil {
			return fmt.Errorf("%s already exists: not overwriting it", filepath.Join(*dir, e.Name()))
		}
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	// The authority decides with these files: each is written whole
	// (a crash leaves no part of a module, which could compile with
	// rules missing), never over a file or through a link, and 0644
	// whatever the umask, so that no other user may change them.
	for _, e := range entries {
		b, err := policies.FS.ReadFile(e.Name())
		if err != nil {
			return err
		}
		if err := credfile.CreateFileAtomic(filepath.Join(*dir, e.Name()), b, 0o644); err != nil {
			return err
		}
	}
	for _, e := range entries {
		fmt.Fprintln(stdout, filepath.Join(*dir, e.Name()))
	}
	return nil
}

func policyRemote(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy "+cmd, "policy "+cmd+" [flags]", stderr)
	var cf clientFlags
	dataDir := fs.String("data-dir", "mandate-data", "the authority's data directory (for the admin credential)")
	cf.register(fs, "", "admin credential directory (default <data-dir>/admin)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if cf.creds == "" {
		cf.creds = filepath.Join(*dataDir, "admin")
	}
	c, err := cf.dial(true)
	if err != nil {
		return err
	}
	var out any
	if cmd == "reload" {
		out, err = c.ReloadPolicy(ctx)
	} else {
		out, err = c.PolicyStatus(ctx)
	}
	if err != nil {
		return err
	}
	return printJSON(stdout, out)
}

// exitError ends the command with a status and no further message.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }
