// Command mandate is the Mandate authority and its command-line tools.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"mandate.dev/mandate/client"
)

const usage = `mandate — trust and identity authority for AI agents

Usage:
  mandate serve [flags]                 run the authority
  mandate admin <command> [flags]       manage join tokens, agents, nodes, federation, revocations
  mandate node join|attest|run [flags]  make this host a node: join token, or TPM 2.0 attestation
  mandate node ek|pcrs [flags]          print a TPM's EK digest or PCR values for the configuration
  mandate svid x509|jwt [flags]         obtain an X509-SVID or a JWT-SVID
  mandate svid workload [flags]         ask a SPIFFE Workload API what it gives this process
  mandate bundle show [flags]           print the trust domain's SPIFFE bundle
  mandate audit <command> [flags]       read and verify the audit log (checkpoint, tail, show,
                                        search, chain, verify, prove, check-proof)
  mandate policy <command> [flags]      test, export, reload the Rego policies; show the revision
  mandate delegate request|verify       as an agent, delegate scopes to another agent; verify a
                                        delegation token's chain offline
  mandate bench issue|audit|attest|decide|delegate
                                        measure SVID issuance, audit log appends, TPM attestation
                                        verification, decisions side by side with opa run --server,
                                        or delegations and offline chain verification
  mandate demo                          the whole story in one process: two organisations, a TPM
                                        device, agents, a cross-organisation delegation chain, a
                                        policy deny, an auditor's proof, a revocation
  mandate version

Run "mandate <command> -h" for a command's flags.
`

// version is the build's version when set with -ldflags
// "-X main.version=v1.2.3"; else versionOf says it.
var version = ""

// versionOf is the build's version: version when set, else the module's
// (go install ...@v1.2.3) or the VCS revision it was built from (go
// build in a checkout: dev-<revision>), else "dev".
func versionOf() string {
	if version != "" {
		return version
	}
	const def = "dev"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return def
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return def
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "+modified"
	}
	return def + "-" + rev
}

// stopOnSignal returns a context that ends at the first interrupt or
// SIGTERM: a command then stops as it should (serve finishes the
// requests in progress first). The signals' default action is back in
// place before the context ends, so a second one ends the process at
// once, as an operator who asks twice expects: nothing acknowledged is
// lost (every answer follows its durable commit).
func stopOnSignal() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-sigs:
		case <-ctx.Done():
		}
		signal.Stop(sigs)
		cancel()
	}()
	return ctx, cancel
}

func main() {
	ctx, stop := stopOnSignal()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	var xe exitError
	if errors.As(err, &xe) {
		os.Exit(xe.code)
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(os.Stderr, "mandate:", shownError(err))
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mandate:", shownError(err))
		os.Exit(1)
	}
}

// shownError is an error's message as it may be printed: an error can
// carry what an authority sent (a name, a reason), so each of its lines
// is shown as shown shows text; its own line breaks stay.
func shownError(err error) string { return client.PrintableLines(err.Error()) }

// usageError is a mistake in the command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("no command given")
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"serve":    runServe,
		"admin":    runAdmin,
		"node":     runNode,
		"svid":     runSVID,
		"bundle":   runBundle,
		"bench":    runBench,
		"audit":    runAudit,
		"policy":   runPolicy,
		"delegate": runDelegate,
		"demo":     runDemo,
	}
	switch args[0] {
	case "version", "--version":
		_, err := fmt.Fprintln(stdout, "mandate", versionOf())
		return err
	case "help", "-h", "--help":
		_, err := fmt.Fprint(stdout, usage)
		return err
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprint(stderr, usage)
		return unknownCommand("", args[0])
	}
	if args[0] == "serve" {
		// What serve prints is its banner: a stdout gone does not
		// fail the authority it starts.
		return cmd(ctx, args[1:], stdout, stderr)
	}
	// A result that could not be written (a full disk, a closed pipe) is
	// a failure, whichever write of the command met it first.
	out := &writeChecked{w: stdout}
	err := cmd(ctx, args[1:], out, stderr)
	if err == nil && out.err != nil {
		return fmt.Errorf("writing the output: %w", out.err)
	}
	return err
}

// writeChecked is a writer that keeps its first write error and refuses
// every write after it.
type writeChecked struct {
	w   io.Writer
	err error
}

func (c *writeChecked) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		c.err = err
	}
	return n, err
}

// helpAsked reports whether a command group was asked for its usage
// (mandate GROUP -h, --help or help), which it prints to stdout.
func helpAsked(args []string, usage string, stdout io.Writer) bool {
	if len(args) == 0 || args[0] != "-h" && args[0] != "--help" && args[0] != "help" {
		return false
	}
	fmt.Fprint(stdout, usage)
	return true
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: mandate %s\n", synopsis)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprint(stderr, "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args, which are flags only: flag errors, and any
// argument left (a value without its flag: "--node-id A B"), are usage
// errors, never ignored along with every flag after them.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := parseSome(fs, args); err != nil {
		return err
	}
	return noArgs(fs.Args())
}

// parseSome parses the flags of args up to the first argument that is not
// one (left in fs.Args()).
func parseSome(fs *flag.FlagSet, args []string) error {
	// A duration flag's value that is not one ("--ttl 5": SPIFFE's tools
	// take seconds) is said in a line, without Go's "parse error" and the
	// whole usage: what the flag package prints is held back until it is
	// known not to be that.
	var badDuration error
	var wrapped []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if g, ok := f.Value.(flag.Getter); ok {
			if _, ok := g.Get().(time.Duration); ok {
				f.Value = &durationFlag{Value: f.Value, name: f.Name, bad: &badDuration}
				wrapped = append(wrapped, f)
			}
		}
	})
	out, usage := fs.Output(), fs.Usage
	var held bytes.Buffer
	usageAsked := false
	fs.SetOutput(&held)
	fs.Usage = func() { usageAsked = true }
	err := fs.Parse(args)
	for _, f := range wrapped {
		f.Value = f.Value.(*durationFlag).Value
	}
	fs.SetOutput(out)
	fs.Usage = usage
	if badDuration != nil {
		return badDuration
	}
	if name, ok := secretLikeFlag(err); ok {
		// Not shown: a join token of an older build may begin with "-",
		// and one pasted where an argument goes is read as a flag.
		shown := fmt.Sprintf("an unknown flag of %d characters (not shown: it may be a secret, such as a join token)", len(name))
		err = errors.New("flag provided but not defined: " + shown)
		held.Reset()
		fmt.Fprintln(&held, err)
	}
	_, _ = held.WriteTo(out)
	if usageAsked {
		usage()
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	return nil
}

// secretLikeFlag reports whether err is the flag package's unknown flag
// (or bad syntax) error for a "flag" that looks like a secret
// (looksLikeSecret); name is it.
func secretLikeFlag(err error) (name string, ok bool) {
	if err == nil {
		return "", false
	}
	// A "flag" whose name begins with "-" (after "--"), a token
	// beginning "--" given after a single "-", is "bad flag syntax".
	for _, prefix := range []string{"flag provided but not defined: ", "bad flag syntax: "} {
		if name, ok = strings.CutPrefix(err.Error(), prefix); ok {
			return name, looksLikeSecret(strings.TrimLeft(name, "-"))
		}
	}
	return "", false
}

// looksLikeSecret reports whether an argument no flag name or value of
// this CLI looks like, 40 or more base64url characters, may be a join
// token (43), or, those characters in three or five dot-separated
// parts (the JWS or JWE compact form), a JWT-SVID or a delegation
// token (space around it, as a copy and paste brings, aside): such an
// argument out of place, or a file name that is one, is said by its
// length only.
func looksLikeSecret(s string) bool {
	s = strings.TrimSpace(s)
	if len(s) < 40 {
		return false
	}
	dots := 0
	for _, c := range []byte(s) {
		switch {
		case c == '.':
			dots++
		case !base64URLChar(c):
			return false
		}
	}
	return dots == 0 || (dots == 2 || dots == 4) && s[0] != '.'
}

// tokenInAFile is readTokenFile's hint for a token given where its file goes.
const tokenInAFile = "put it in a file and give that file"

// readTokenFile reads the file a token file argument (flag, or the
// argument what) names. The name is not said in an error when it may be
// the token itself, given where its file goes (errors end up in logs):
// when it looks like a secret (looksLikeSecret), or names no file and
// has neither a dot nor a slash, as a join token shorter than a real one
// would. hint says what to do then.
func readTokenFile(what, path, hint string) ([]byte, error) {
	b, err := readAtMost(path, maxTokenFile)
	var pe *fs.PathError
	mayBeToken := looksLikeSecret(path) || errors.Is(err, fs.ErrNotExist) && !strings.ContainsAny(path, "./")
	if err != nil && errors.As(err, &pe) && mayBeToken {
		return nil, fmt.Errorf("%s: %w (the file's name, of %d characters, not shown: if it is the token itself, %s)", what, pe.Err, len(path), hint)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}

// maxTokenFile bounds what a token file may hold: a join token is a few
// dozen bytes, a parent delegation token (which carries those above
// it) some kilobytes.
const maxTokenFile = 1 << 20

// readAtMost reads the file at path, which must hold at most max bytes:
// a larger one (a device that never ends, /dev/zero) is refused once
// max+1 have been read.
func readAtMost(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("it holds more than %d bytes: is it the right file?", max)
	}
	return b, nil
}

// durationFlag is a duration flag's value while its flags are parsed:
// a value that is not a duration is noted in bad as a usage error that
// says how to give one.
type durationFlag struct {
	flag.Value
	name string
	bad  *error
}

func (d *durationFlag) Set(s string) error {
	err := d.Value.Set(s)
	if err != nil {
		// A bare number is told to add "s" only when that makes a
		// duration ("5", "1.5"): "1e3s", "NaNs" or "Infs" would be a
		// hint refused in turn.
		if _, nerr := time.ParseDuration(s + "s"); nerr == nil {
			*d.bad = usagef("--%s %s: a duration needs its unit: give one such as 90s or 10m (%ss for %s seconds)", d.name, s, s, s)
		} else {
			*d.bad = usagef("--%s %q is not a duration: give one such as 90s or 10m", d.name, s)
		}
	}
	return err
}

// unknownCommand is the refusal of an unknown command name given after
// group ("" for the top level): the name quoted, or, when it looks like
// a secret (looksLikeSecret: a token pasted where a command's name
// goes), said by its length only, as errors end up in logs.
func unknownCommand(group string, name ...string) error {
	shown := make([]string, len(name))
	for i, n := range name {
		shown[i] = n
		if looksLikeSecret(n) {
			shown[i] = fmt.Sprintf("<an argument of %d characters, not shown: it may be a secret, such as a join token>", len(n))
		}
	}
	if group != "" {
		group += ": "
	}
	return usagef("%sunknown command %q", group, strings.Join(shown, " "))
}

// noArgs refuses arguments to a command that takes none.
func noArgs(args []string) error {
	if len(args) > 0 {
		arg := strconv.Quote(args[0])
		if looksLikeSecret(args[0]) {
			arg = fmt.Sprintf("of %d characters (not shown: it may be a secret, such as a join token, which --token or --token-file takes)", len(args[0]))
		}
		return usagef("unexpected argument %s: this command takes flags only (a flag taking several values is given once for each)", arg)
	}
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return fmt.Sprint(*s) }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
