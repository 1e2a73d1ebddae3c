package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
)

func runSVID(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "Usage: mandate svid x509|jwt|workload [flags]   (mandate svid x509 -h for the flags)\n"
	if helpAsked(args, usage, stdout) {
		return nil
	}
	if len(args) == 0 || (args[0] != "x509" && args[0] != "jwt" && args[0] != "workload") {
		fmt.Fprint(stderr, usage)
		return usagef("svid: want x509, jwt or workload")
	}
	switch args[0] {
	case "x509":
		return svidX509(ctx, args[1:], stdout, stderr)
	case "workload":
		return svidWorkload(ctx, args[1:], stdout, stderr)
	}
	return svidJWT(ctx, args[1:], stdout, stderr)
}

// svidWorkload asks a SPIFFE Workload API (node run --workload-api, or
// any other) what it gives this process, as a workload would, and
// prints it: the X509-SVIDs' IDs and expiries and the trust domains of
// the bundles, and with --audience the JWT-SVIDs. No key is printed.
func svidWorkload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("svid workload", "svid workload [--workload-api SOCKET] [--audience AUD] [flags]", stderr)
	socket := os.Getenv("SPIFFE_ENDPOINT_SOCKET")
	var aud stringList
	fs.StringVar(&socket, "workload-api", socket, "the Workload API's Unix socket (unix:///PATH or a path; default $SPIFFE_ENDPOINT_SOCKET)")
	fs.Var(&aud, "audience", "also ask for JWT-SVIDs for this audience (repeatable: the first is the audience, the others extra audiences)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the answers")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if socket == "" {
		return usagef("--workload-api is required (or $SPIFFE_ENDPOINT_SOCKET)")
	}
	socket, err := workloadAddr(socket)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(socket))
	if err != nil {
		return fmt.Errorf("workload API %s: %w", socket, err)
	}
	defer c.Close()
	xc, err := c.FetchX509Context(ctx)
	if err != nil {
		if status.Code(err) == codes.Unavailable && !listens(socket) {
			// No socket there, or one nothing listens on (a node run
			// stopped): gRPC says only that the dial failed. (A Workload
			// API that answers Unavailable itself is quoted as it is.)
			return fmt.Errorf("workload API %s: X509-SVIDs: %w (nothing answers there: is mandate node run --workload-api serving this socket?)", socket, err)
		}
		return fmt.Errorf("workload API %s: X509-SVIDs: %w", socket, err)
	}
	type svidOut struct {
		SPIFFEID  string    `json:"spiffe_id"`
		ExpiresAt time.Time `json:"expires_at"`
		Token     string    `json:"token,omitempty"`
	}
	out := struct {
		X509SVIDs []svidOut `json:"x509_svids"`
		Bundles   []string  `json:"bundles"`
		JWTSVIDs  []svidOut `json:"jwt_svids,omitempty"`
	}{}
	for _, sv := range xc.SVIDs {
		out.X509SVIDs = append(out.X509SVIDs, svidOut{SPIFFEID: sv.ID.String(), ExpiresAt: sv.Certificates[0].NotAfter.UTC()})
	}
	for _, b := range xc.Bundles.Bundles() {
		out.Bundles = append(out.Bundles, b.TrustDomain().IDString())
	}
	slices.Sort(out.Bundles)
	if len(aud) > 0 {
		jwts, err := c.FetchJWTSVIDs(ctx, jwtsvid.Params{Audience: aud[0], ExtraAudiences: aud[1:]})
		if err != nil {
			return fmt.Errorf("workload API %s: JWT-SVIDs: %w", socket, err)
		}
		for _, j := range jwts {
			out.JWTSVIDs = append(out.JWTSVIDs, svidOut{SPIFFEID: j.ID.String(), ExpiresAt: j.Expiry.UTC(), Token: j.Marshal()})
		}
	}
	return printJSON(stdout, out)
}

// listens reports whether something accepts connections at addr, a
// Workload API address (unix:///PATH, or tcp://IP:PORT).
func listens(addr string) bool {
	network, at := "unix", strings.TrimPrefix(addr, "unix://")
	if rest, ok := strings.CutPrefix(addr, "tcp://"); ok {
		network, at = "tcp", rest
	}
	c, err := net.DialTimeout(network, at, 5*time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// workloadAddr is the Workload API address of socket: a URI as given
// (unix:///PATH), a path as the unix URI of its absolute path, which
// SPIFFE addresses need (unix://rel.sock would name a host).
func workloadAddr(socket string) (string, error) {
	if strings.Contains(socket, "://") {
		return socket, nil
	}
	abs, err := filepath.Abs(socket)
	if err != nil {
		return "", fmt.Errorf("workload API %s: %w", socket, err)
	}
	return "unix://" + abs, nil
}

func svidX509(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("svid x509", "svid x509 --spiffe-id ID [flags]", stderr)
	var cf clientFlags
	var id, out string
	cf.register(fs, "mandate-node", "credential to authenticate with: a node's (for an agent it hosts) or the agent's own (renewal)")
	fs.StringVar(&id, "spiffe-id", "", "SPIFFE ID to obtain (required)")
	fs.StringVar(&out, "out", "mandate-agent", "directory for the new credential (svid.pem, svid.key 0600, bundle.pem, bundles.json); the command holds credential.lock there while it runs, and refuses to start while another command writing a credential does")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if id == "" {
		return usagef("--spiffe-id is required")
	}
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return usagef("--spiffe-id: %v", err)
	}
	c, err := cf.dial(true)
	if err != nil {
		return err
	}
	// One command at a time writing in --out, from its check to its
	// write.
	unlock, err := lockOut(out)
	if err != nil {
		return err
	}
	defer unlock()
	// Renewing replaces the same identity's credential, nothing else.
	if err := checkOut(out, "--out", func(held spiffeid.ID) bool { return held == sid }); err != nil {
		return err
	}
	ans, key, err := c.NewX509SVID(ctx, sid)
	if err != nil {
		return err
	}
	if err := saveAnswer(out, ans, key, c.TrustDomain(), exactID(sid)); err != nil {
		return err
	}
	return printJSON(stdout, map[string]any{"spiffe_id": ans.SPIFFEID, "expires_at": ans.ExpiresAt, "credential": out})
}

func svidJWT(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("svid jwt", "svid jwt --audience AUD [flags]", stderr)
	var cf clientFlags
	var id string
	var aud stringList
	var asJSON bool
	var outFile string
	cf.register(fs, "mandate-node", "credential to authenticate with: a node's (with --spiffe-id of an agent it hosts) or an agent's")
	fs.StringVar(&id, "spiffe-id", "", "agent SPIFFE ID (default: the credential's own)")
	fs.Var(&aud, "audience", "audience of the token (repeatable, at least one)")
	fs.BoolVar(&asJSON, "json", false, "print the whole answer as JSON instead of the token alone (not with --out)")
	fs.StringVar(&outFile, "out", "", "write the token to this file (mode 0600) instead of printing it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if len(aud) == 0 {
		return usagef("--audience is required")
	}
	if asJSON && outFile != "" {
		return usagef("--json prints the token with the answer and --out writes the token alone to a file: give one of them")
	}
	// The token is issued (and logged) once asked for: where it goes is
	// checked first.
	if outFile != "" {
		if err := checkOutFile("--out", outFile); err != nil {
			return err
		}
	}
	if id == "" {
		if chain, _, _, err := credfile.Load(credfile.In(cf.creds)); err == nil && len(chain) > 0 && len(chain[0].URIs) == 1 &&
			strings.HasPrefix(chain[0].URIs[0].Path, "/node/") {
			return usagef("--creds %s is a node's credential: give --spiffe-id of an agent it hosts, or --creds with the agent's own credential", cf.creds)
		}
	}
	c, err := cf.dial(true)
	if err != nil {
		return err
	}
	ans, err := c.JWTSVID(ctx, id, aud)
	if err != nil {
		return err
	}
	if outFile != "" {
		if err := writeIssued(outFile, []byte(ans.Token+"\n")); err != nil {
			// Issued and logged: said (never the token, a secret).
			return fmt.Errorf("the authority issued a JWT-SVID for %s (audience %s, expires at %s), but it was not written to --out %s: %w; "+
				"nothing else holds it, and it is unusable past its expiry: ask again once --out can be written",
				client.Printable(ans.SPIFFEID), strings.Join(aud, ", "), ans.ExpiresAt.UTC().Format(time.RFC3339), outFile, err)
		}
		return nil
	}
	if asJSON {
		return printJSON(stdout, ans)
	}
	_, err = fmt.Fprintln(stdout, ans.Token)
	return err
}
