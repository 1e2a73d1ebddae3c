package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/client"
)

const adminUsage = `Usage: mandate admin <command> [flags]

Commands (all use the admin credential in <data-dir>/admin, or --creds DIR):
  join-token create [--ttl 10m] [--quiet]
  join-token withdraw TOKEN_ID        withdraw an unused join token (the "id" create prints)
  agent create --spiffe-id ID [--node-id ID]... [--selector S]... [--scope S]...
               [--x509-ttl D] [--jwt-ttl D] [--operator O] [--model-provider P]
               [--model M] [--responsible-party R] [--require-hardware-attestation]
  agent update ID (same flags as create; replaces the registration)
  agent list | agent show ID | agent delete ID
  node list | node show NODE_SPIFFE_ID | node ban NODE_SPIFFE_ID [--reason R]
  node evict NODE_SPIFFE_ID [--reason R] [--lift-ban]
                                      remove a node's record: it gets nothing more until
                                      it attests again (a TPM node's node run does at its
                                      next sync, or next renewal without --workload-api;
                                      a join-token node cannot: its node run stops)
  federation add --trust-domain TD --url URL [--profile https_spiffe|https_web]
                 [--endpoint-spiffe-id ID] [--bundle-file FILE]
  federation list | federation delete TD
  revoke delegation ID --reason R     revoke a delegation and every delegation below it
  revoke spiffe-id ID --reason R      revoke what an agent or a node delegated or was
                                      delegated, for ever: the ID is never trusted in a
                                      hop again, and gets no SVID again (nor does anything
                                      through a node revoked)
  revoke list                         the SPIFFE IDs revoked
  backup create                       a consistent copy of the authority's state, written
                                      on its host in <data-dir>/backups/<time> (keys
                                      included: move it to storage as private)
  ca status                           the X.509 CAs and JWT keys, and their rotation state
  ca rotate --kind x509|jwt --reason R [--immediately]
                                      replace the active X.509 CA or JWT key ahead of its
                                      schedule: its successor is published now and takes
                                      over once every holder of the bundle has fetched it
                                      (a JWT key: at once with --immediately)
  ca revoke ID --reason R [--force]   take a replaced X.509 CA or JWT key out of the bundle
                                      before it expires: nothing it signed verifies any more;
                                      a prepared one, before it ever signs

Answers are printed as JSON.
`

// adminOperands names the operand of the admin commands that take one.
var adminOperands = map[string]string{
	"join-token withdraw": "TOKEN_ID", "agent update": "ID", "agent show": "ID", "agent delete": "ID", "node ban": "NODE_SPIFFE_ID",
	"node evict": "NODE_SPIFFE_ID", "node show": "NODE_SPIFFE_ID",
	"federation delete": "TD", "revoke delegation": "DELEGATION_ID", "revoke spiffe-id": "SPIFFE_ID",
	"ca revoke": "ID",
}

// adminTakesNoArgs are the admin commands with flags only.
var adminTakesNoArgs = map[string]bool{
	"join-token create": true, "agent create": true, "agent list": true,
	"node list": true, "federation add": true, "federation list": true, "revoke list": true,
	"backup create": true, "ca status": true, "ca rotate": true,
}

// adminCmd runs one admin command: it checks its arguments first, then
// calls dial, so that a mistake in the command line is said as one (exit
// status 2) even where no credential is at hand.
type adminCmd func(ctx context.Context, dial dialFunc, args []string, stdout, stderr io.Writer) error

// dialFunc loads the credential and returns the client.
type dialFunc func() (*client.Client, error)

func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmds := map[string]adminCmd{
		"join-token create": adminJoinToken, "join-token withdraw": adminJoinTokenWithdraw,
		"agent create": adminAgentCreate, "agent update": adminAgentUpdate,
		"agent list": adminAgentList, "agent show": adminAgentShow, "agent delete": adminAgentDelete,
		"node list": adminNodeList,
		"node show": adminNode(func(ctx context.Context, c *client.Client, id string) (*client.Node, error) {
			return c.GetNode(ctx, id)
		}),
		"node ban": adminNode(func(ctx context.Context, c *client.Client, id string) (*client.Node, error) {
			return c.BanNode(ctx, id, adminFlags.reason)
		}),
		"node evict": adminNode(func(ctx context.Context, c *client.Client, id string) (*client.Node, error) {
			return c.EvictNode(ctx, id, adminFlags.reason, adminFlags.liftBan)
		}),
		"federation add": adminFedAdd, "federation list": adminFedList, "federation delete": adminFedDelete,
		"revoke delegation": adminRevoke("delegation_id"), "revoke spiffe-id": adminRevoke("spiffe_id"),
		"revoke list": adminRevokeList, "backup create": adminBackupCreate,
		"ca status": adminCAStatus, "ca rotate": adminCARotate, "ca revoke": adminCARevoke,
	}
	// admin -h, and admin GROUP -h (admin revoke -h).
	if helpAsked(args, adminUsage, stdout) || len(args) == 2 && cmds[args[0]+" "+args[1]] == nil && helpAsked(args[1:], adminUsage, stdout) {
		return nil
	}
	if len(args) < 2 {
		fmt.Fprint(stderr, adminUsage)
		if len(args) == 1 && !slices.ContainsFunc(slices.Collect(maps.Keys(cmds)), func(c string) bool { return strings.HasPrefix(c, args[0]+" ") }) {
			return unknownCommand("admin", args[0])
		}
		return usagef("admin: missing command")
	}
	cmd, ok := cmds[args[0]+" "+args[1]]
	if !ok {
		fmt.Fprint(stderr, adminUsage)
		return unknownCommand("admin", args[0], args[1])
	}
	adminFlags = adminFlagValues{}
	name := args[0] + " " + args[1]
	synopsis := "admin " + name
	if operand := adminOperands[name]; operand != "" {
		synopsis += " " + operand
	}
	fs := newFlagSet("admin "+name, synopsis+" [flags]", stderr)
	var cf clientFlags
	var dataDir string
	fs.StringVar(&dataDir, "data-dir", "mandate-data", "the authority's data directory (for the admin credential)")
	adminFlagSpec(args[0]+" "+args[1], fs)
	cf.register(fs, "", "admin credential directory (default <data-dir>/admin)")
	operands := args[2:]
	if name == "ca revoke" {
		operands = dashedKIDLast(fs, operands)
	}
	rest, err := splitFlags(fs, operands)
	if err != nil {
		return err
	}
	if adminTakesNoArgs[args[0]+" "+args[1]] {
		if err := noArgs(rest); err != nil {
			return err
		}
	}
	for flag, d := range map[string]time.Duration{"--ttl": adminFlags.ttl, "--x509-ttl": adminFlags.x509TTL, "--jwt-ttl": adminFlags.jwtTTL} {
		if err := wholeSeconds(flag, d); err != nil {
			return err
		}
	}
	if ttl := adminFlags.ttl; name == "join-token create" && (ttl < time.Second || ttl > attest.MaxJoinTokenTTL) {
		return usagef("--ttl %s: a join token lives 1s to 168h (7 days)", ttl)
	}
	if cf.creds == "" {
		cf.creds = filepath.Join(dataDir, "admin")
	}
	return cmd(ctx, func() (*client.Client, error) { return cf.dial(true) }, rest, stdout, stderr)
}

// adminFlags holds the per-command flags, registered on the shared set.
type adminFlagValues struct {
	quiet, requireHardware                    bool
	ttl                                       time.Duration
	spiffeID                                  string
	nodeIDs, selectors, scopes                stringList
	x509TTL, jwtTTL                           time.Duration
	operator, modelProvider, model, respParty string
	reason, trustDomain, url, profile, epID   string
	bundleFile, kind                          string
	immediately, force, liftBan               bool
}

var adminFlags adminFlagValues

func adminFlagSpec(cmd string, fs *flag.FlagSet) {
	f := &adminFlags
	switch cmd {
	case "join-token create":
		fs.DurationVar(&f.ttl, "ttl", 10*time.Minute, "token lifetime, 1s to 168h (7 days)")
		fs.BoolVar(&f.quiet, "quiet", false, "print only the token")
	case "agent create", "agent update":
		fs.StringVar(&f.spiffeID, "spiffe-id", "", "agent SPIFFE ID: spiffe://<td>/agent/<name> (required)")
		fs.Var(&f.nodeIDs, "node-id", "SPIFFE ID of a node that may host the agent (repeatable)")
		fs.Var(&f.selectors, "selector", "node selector the host must carry, e.g. level:token (repeatable)")
		fs.Var(&f.scopes, "scope", "scope the agent may hold (repeatable)")
		fs.DurationVar(&f.x509TTL, "x509-ttl", 0, "X509-SVID lifetime (default: the authority's)")
		fs.DurationVar(&f.jwtTTL, "jwt-ttl", 0, "JWT-SVID lifetime (default: the authority's)")
		fs.StringVar(&f.operator, "operator", "", "accountable operator (team or org unit)")
		fs.StringVar(&f.modelProvider, "model-provider", "", "model provider")
		fs.StringVar(&f.model, "model", "", "model")
		fs.StringVar(&f.respParty, "responsible-party", "", "responsible party (contact)")
		fs.BoolVar(&f.requireHardware, "require-hardware-attestation", false, "admit only TPM-attested hosting nodes")
	case "node ban":
		fs.StringVar(&f.reason, "reason", "", "why the node is banned")
	case "node evict":
		fs.StringVar(&f.reason, "reason", "", "why the node is evicted (recorded)")
		fs.BoolVar(&f.liftBan, "lift-ban", false, "evict a banned node too, lifting its ban: a TPM node may then attest again")
	case "revoke delegation", "revoke spiffe-id":
		fs.StringVar(&f.reason, "reason", "", "why (required; recorded)")
	case "ca revoke":
		fs.StringVar(&f.reason, "reason", "", "why (required; recorded)")
		fs.BoolVar(&f.force, "force", false, "revoke it before every X509-SVID it signed has been renewed (a node holding one must join again), or a JWT key before it expires (what it signed stops validating)")
	case "ca rotate":
		fs.StringVar(&f.kind, "kind", "", "x509 (the X.509 CA) or jwt (the JWT key) (required)")
		fs.StringVar(&f.reason, "reason", "", "why (required; recorded)")
		fs.BoolVar(&f.immediately, "immediately", false, "a JWT key only: activate it at once; JWT-SVIDs and delegation tokens it signs fail to validate where the bundle has not been fetched since")
	case "federation add":
		fs.StringVar(&f.trustDomain, "trust-domain", "", "federated trust domain (required)")
		fs.StringVar(&f.url, "url", "", "its bundle endpoint URL (required)")
		fs.StringVar(&f.profile, "profile", "https_spiffe", "https_spiffe or https_web")
		fs.StringVar(&f.epID, "endpoint-spiffe-id", "", "endpoint SPIFFE ID (https_spiffe; default spiffe://<td>/mandate/server; a SPIRE server's is spiffe://<td>/spire/server)")
		fs.StringVar(&f.bundleFile, "bundle-file", "", "peer's SPIFFE bundle (JSON) to authenticate the endpoint the first time")
	}
}

// splitFlags parses flags that may come before or after positional
// arguments, returning the positional ones.
func splitFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseSome(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// dashedKIDLast returns args with a JWT key's id that begins with "-"
// moved behind "--", where the flag package takes it for the operand it
// is rather than for an unknown flag: a kid, the key's RFC 7638
// thumbprint in base64url (43 characters), begins with one in 1 of 64
// keys, and ca revoke ID must take it as mandate admin ca status shows
// it. A flag's value is left where it is (--reason -x... is a reason).
func dashedKIDLast(fs *flag.FlagSet, args []string) []string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if f := fs.Lookup(name); f != nil {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !hasValue && !(ok && b.IsBoolFlag()) {
				i++ // its value
			}
			continue
		}
		if len(a) == 43 && isBase64URL(a) {
			return append(append(slices.Delete(slices.Clone(args), i, i+1), "--"), a)
		}
	}
	return args
}

// isBase64URL reports whether s is made of base64url characters only
// (RFC 4648 §5, no padding).
func isBase64URL(s string) bool {
	for _, c := range []byte(s) {
		if !base64URLChar(c) {
			return false
		}
	}
	return true
}

// base64URLChar reports whether c is of the base64url alphabet.
func base64URLChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// oneArg is the one operand of a command, what it names: none, more, or
// an empty one (a shell variable left empty by a command that failed,
// as NODE=$(mandate node join ...)) is refused before anything is asked
// of the authority, which would answer for another path or field.
func oneArg(args []string, what string) (string, error) {
	if len(args) != 1 {
		return "", usagef("want exactly one argument: %s", what)
	}
	if args[0] == "" {
		return "", usagef("want exactly one argument: %s; the one given is empty", what)
	}
	return args[0], nil
}

// wholeSeconds refuses a lifetime the API cannot carry (it takes whole
// seconds): 500ms would be 0, the authority's default, not half a second.
func wholeSeconds(flag string, d time.Duration) error {
	if d < 0 || d%time.Second != 0 {
		return usagef("%s %s: give a whole number of seconds or more (as 90s, 10m)", flag, d)
	}
	return nil
}

func adminJoinToken(ctx context.Context, dial dialFunc, _ []string, stdout, _ io.Writer) error {
	c, err := dial()
	if err != nil {
		return err
	}
	t, err := c.CreateJoinToken(ctx, adminFlags.ttl)
	if err != nil {
		return err
	}
	if adminFlags.quiet {
		_, err = fmt.Fprintln(stdout, t.Token)
		return err
	}
	return printJSON(stdout, t)
}

func adminJoinTokenWithdraw(ctx context.Context, dial dialFunc, args []string, stdout, _ io.Writer) error {
	id, err := oneArg(args, "the token's id")
	if err != nil {
		return err
	}
	// Checked here, and not repeated: given in place of the id, the
	// token itself would otherwise be sent in a URL and shown again in
	// the error.
	if !attest.ValidJoinTokenID(id) {
		return usagef("TOKEN_ID is the token's id, 16 lowercase hex digits (the \"id\" join-token create prints), not the token")
	}
	c, err := dial()
	if err != nil {
		return err
	}
	if err := c.WithdrawJoinToken(ctx, id); err != nil {
		return err
	}
	return printJSON(stdout, map[string]string{"withdrawn": id})
}

func agentFromFlags() (*client.Agent, error) {
	f := &adminFlags
	if f.spiffeID == "" {
		return nil, usagef("--spiffe-id is required")
	}
	return &client.Agent{
		SPIFFEID: f.spiffeID, NodeIDs: f.nodeIDs, Selectors: f.selectors, Scopes: f.scopes,
		X509TTLSeconds: int64(f.x509TTL / time.Second), JWTTTLSeconds: int64(f.jwtTTL / time.Second),
		Accountability:             client.Accountability{Operator: f.operator, ModelProvider: f.modelProvider, Model: f.model, ResponsibleParty: f.respParty},
		RequireHardwareAttestation: f.requireHardware,
	}, nil
}

func adminAgentCreate(ctx context.Context, dial dialFunc, _ []string, stdout, _ io.Writer) error {
	a, err := agentFromFlags()
	if err != nil {
		return err
	}
	c, err := dial()
	if err != nil {
		return err
	}
	out, err := c.CreateAgent(ctx, a)
	if err != nil {
		return err
	}
	return printJSON(stdout, out)
}

func adminAgentUpdate(ctx context.Context, dial dialFunc, args []string, stdout, _ io.Writer) error {
	id, err := registrationID(args)
	if err != nil {
		return err
	}
	a, err := agentFromFlags()
	if err != nil {
		return err
	}
	c, err := dial()
	if err != nil {
		return err
	}
	out, err := c.UpdateAgent(ctx, id, a)
	if err != nil {
		return err
	}
	return printJSON(stdout, out)
}

func adminAgentList(ctx context.Context, dial dialFunc, _ []string, stdout, _ io.Writer) error {
	c, err := dial()
	if err != nil {
		return err
	}
	out, err := c.ListAgents(ctx)
	if err != nil {
		return err
	}
	return printJSON(stdout, map[string]any{"agents": out})
}

func adminAgentShow(ctx context.Context, dial dialFunc, args []string, stdout, _ io.Writer) error {
	id, err := registrationID(args)
	if err != nil {
		return err
	}
	c, err := dial()
	if err != nil {
		return err
	}
	out, err := c.GetAgent(ctx, id)
	if err != nil {
		return err
	}
	return printJSON(stdout, out)
}

func adminAgentDelete(ctx context.Context, dial dialFunc, args []string, stdout, _ io.Writer) error {
	id, err := registrationID(args)
	if err != nil {
		return err
	}
	c, err := dial()
	if err != nil {
		return err
	}
	if err := c.DeleteAgent(ctx, id); err != nil {
		return err
	}
	return printJSON(stdout, map[string]string{"deleted": id})
}

func adminNodeList(ctx context.Context, dial dialFunc, _ []string, stdout, _ io.Writer) error {
	c, err := dial()
	if err != nil {
		return err
	}
	out, err := c.ListNodes(ctx)
	if err != nil {
		return err
	}
	return printJSON(stdout, map[string]any{"nodes": out})
}

// adminNode is an admin command acting on the node its operand names
// with call, printing the node record it answers.
func adminNode(call func(context.Context, *client.Client, string) (*client.Node, error)) adminCmd {
	return func(ctx context.Context, dial dialFunc, args []string, stdout, _ io.Writer) error {
		id, err := oneArg(args, "the node's SPIFFE ID")
		if err != nil {
			return err
		}
		if !strings.HasPrefix(id, "spiffe://") {
			shown := id
			if looksLikeSecret(id) {
				shown = fmt.Sprintf("the operand (of %d characters, not shown: it may be a secret, such as a join token)", len(id))
			}
			return usagef("%s is not a SPIFFE ID; give the node's whole SPIFFE ID (spiffe://<td>/node/..., as mandate admin node list prints it)", shown)
		}
		c, err := dial()
		if err != nil {
			return err
		}
		out, err := call(ctx, c, id)
		if err != nil {
			return err
		}
		return printJSON(stdout, out)
	}
}

func adminRevokeList(ctx context.Context, dial dialFunc, _ []string, stdout, _ io.Writer) error {
	c, err := dial()
	if err != nil {
		return err
	}
	out, err := c.ListRevokedIDs(ctx)
	if err != nil {
		return err
	}
	return printJSON(stdout, map[string]any{"revoked_spiffe_ids": out})
}

// adminRevoke revokes a delegation or a SPIFFE ID (field names which).
func adminRevoke(field string) adminCmd {
	return func(ctx context.Context, dial dialFunc, args []string, stdout, _ io.Writer) error {
		what := map[string]string{"delegation_id": "the delegation id", "spiffe_id": "the SPIFFE ID"}[field]
		id, err := oneArg(args, what)
		if err != nil {
			return err
		}
		if adminFlags.reason == "" {
			return usagef("--reason is required")
		}
		c, err := dial()
		if err != nil {
			return err
		}
		revoke := c.RevokeDelegation
		if field == "spiffe_id" {
			revoke = c.RevokeSPIFFEID
		}
		revoked, err := revoke(ctx, id, adminFlags.reason)
		if err != nil {
			return err
		}
		return printJSON(stdout, map[string][]string{"revoked": revoked})
	}
}

func adminFedAdd(ctx context.Context, dial dialFunc, _ []string, stdout, _ io.Writer) error {
	f := &adminFlags
	if f.trustDomain == "" || f.url == "" {
		return usagef("--trust-domain and --url are required")
	}
	fed := &client.Federation{TrustDomain: f.trustDomain, BundleEndpointURL: f.url, Profile: f.profile, EndpointSPIFFEID: f.epID}
	if f.bundleFile != "" {
		b, err := os.ReadFile(f.bundleFile)
		if err != nil {
			return fmt.Errorf("--bundle-file: %w", err)
		}
		if !json.Valid(b) {
			return fmt.Errorf("%s: not a JSON SPIFFE bundle", f.bundleFile)
		}
		fed.Bundle = b
	}
	c, err := dial()
	if err != nil {
		return err
	}
	out, err := c.AddFederation(ctx, fed)
	if err != nil {
		return err
	}
	return printJSON(stdout, out)
}

func adminFedList(ctx context.Context, dial dialFunc, _ []string, stdout, _ io.Writer) error {
	c, err := dial()
	if err != nil {
		return err
	}
	out, err := c.ListFederations(ctx)
	if err != nil {
		return err
	}
	return printJSON(stdout, map[string]any{"federations": out})
}

func adminFedDelete(ctx context.Context, dial dialFunc, args []string, stdout, _ io.Writer) error {
	td, err := oneArg(args, "the trust domain")
	if err != nil {
		return err
	}
	c, err := dial()
	if err != nil {
		return err
	}
	if err := c.DeleteFederation(ctx, td); err != nil {
		return err
	}
	return printJSON(stdout, map[string]string{"deleted": td})
}

// registrationID is the one argument of agent show, update and delete:
// a registration id (as agent list and create print it), not a SPIFFE ID.
func registrationID(args []string) (string, error) {
	id, err := oneArg(args, "the registration id")
	if err == nil && strings.HasPrefix(id, "spiffe://") {
		return "", usagef("%s is a SPIFFE ID; give the registration's id (the \"id\" that mandate admin agent list prints)", id)
	}
	return id, err
}

func adminCAStatus(ctx context.Context, dial dialFunc, _ []string, stdout, _ io.Writer) error {
	c, err := dial()
	if err != nil {
		return err
	}
	out, err := c.CAStatus(ctx)
	if err != nil {
		return err
	}
	return printJSON(stdout, out)
}

func adminCARotate(ctx context.Context, dial dialFunc, _ []string, stdout, _ io.Writer) error {
	f := &adminFlags
	switch {
	case f.kind == "":
		return usagef("--kind x509 or --kind jwt is required")
	case f.kind != "x509" && f.kind != "jwt":
		return usagef("--kind %q: want x509 (the X.509 CA) or jwt (the JWT key)", f.kind)
	case f.reason == "":
		return usagef("--reason is required")
	case f.immediately && f.kind == "x509":
		return usagef("--immediately is for a JWT key only: an X.509 CA activated before the nodes fetched it would leave them unable to reach the authority")
	}
	c, err := dial()
	if err != nil {
		return err
	}
	out, err := c.RotateCA(ctx, client.CARotation{Kind: ca.Kind(f.kind), Reason: f.reason, Immediately: f.immediately})
	if err != nil {
		return err
	}
	return printJSON(stdout, out)
}

func adminCARevoke(ctx context.Context, dial dialFunc, args []string, stdout, _ io.Writer) error {
	id, err := oneArg(args, "the authority's id (mandate admin ca status lists them)")
	if err != nil {
		return err
	}
	if adminFlags.reason == "" {
		return usagef("--reason is required")
	}
	c, err := dial()
	if err != nil {
		return err
	}
	out, err := c.RevokeCA(ctx, id, adminFlags.reason, adminFlags.force)
	if err != nil {
		return err
	}
	return printJSON(stdout, out)
}

func adminBackupCreate(ctx context.Context, dial dialFunc, _ []string, stdout, _ io.Writer) error {
	c, err := dial()
	if err != nil {
		return err
	}
	out, err := c.CreateBackup(ctx)
	if err != nil {
		return err
	}
	return printJSON(stdout, out)
}
