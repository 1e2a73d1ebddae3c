package main

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/ca/federation"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/workload"
)

// workloadFlags are node run's flags that serve the SPIFFE Workload API
// to the workloads of the host.
type workloadFlags struct {
	socket  string
	entries []workload.Entry
	// attests is a TPM node's node run: its credential comes from its
	// attestations, not from renewals. unknown, then, is sent to
	// (without blocking) when a sync is refused as node-not-attested, or
	// its credential at the handshake: the node should attest again.
	attests bool
	unknown chan struct{}
}

func (w *workloadFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&w.socket, "workload-api", "", "serve the SPIFFE Workload API (gRPC) on this Unix socket to the workloads of this host, for the agents given by --workload, with the node's credential (e.g. /run/mandate/workload.sock; its directory must exist)")
	fs.Func("workload", "`SELECTOR[,SELECTOR...]=SPIFFE-ID`, repeatable: the local processes all the SELECTORs pick get the X509-SVIDs and JWT-SVIDs of the agent SPIFFE-ID, which must be registered to be hosted by this node; a SELECTOR is uid:N or gid:N (as the kernel says of a process when it connects to --workload-api), user:NAME or group:NAME (the names of those ids, looked up at each call), supplementary_gid:N or supplementary_group:NAME, path:PATH (the process's executable) or sha256:HEX (its digest; an entry with either also needs a uid, gid, user or group), as SPIRE's unix attestor names them; cgroup:PATH (its cgroup v2), systemd_unit:NAME (its service or scope), container_id:HEX or pod_uid:UID (its container's or pod's, as their cgroups are named; an entry with one also needs a uid, gid, user or group); see docs/api.md", func(s string) error {
		e, err := workload.ParseEntry(s)
		if err != nil {
			return err
		}
		w.entries = append(w.entries, e)
		return nil
	})
}

// check refuses one of the two flags without the other.
func (w *workloadFlags) check() error {
	switch {
	case w.socket == "" && len(w.entries) > 0:
		return usagef("--workload needs --workload-api SOCKET, where the workloads ask")
	case w.socket != "" && len(w.entries) == 0:
		return usagef("--workload-api needs at least one --workload SELECTOR[,SELECTOR...]=SPIFFE-ID: who gets which agent's identity")
	}
	return nil
}

// around runs run, serving the Workload API beside it when asked, with
// the node credential in out; the Workload API stops when run ends. Both
// write their log to stderr, which takes one line at a time from either
// (a lineWriter). The Workload API listens before run begins, and
// notify is told its socket then; when either ends, notify is told why
// before the other is stopped.
func (w *workloadFlags) around(ctx context.Context, cf clientFlags, out string, stderr io.Writer, notify *nodeNotifier, run func(context.Context) error) error {
	if w.socket == "" {
		return run(ctx)
	}
	cf.creds = out
	cf.missing = "give --out, the node's credential directory"
	if err := w.checkTrustDomain(&cf); err != nil {
		return err
	}
	clients := &reusedClient{dir: out, dial: func() (*client.Client, error) { return cf.dial(true) }}
	issuer := &nodeIssuer{dial: clients.get, forget: clients.forget, attests: w.attests, unknown: w.unknown}
	if w.attests && notify != nil {
		issuer.first = notify.first
	}
	srv, err := workload.New(w.entries, issuer, slog.New(slog.NewTextHandler(stderr, nil)))
	if err != nil {
		return err
	}
	ln, err := workload.Listen(w.socket)
	if err != nil {
		return err
	}
	entries := make([]string, len(w.entries))
	for i, e := range w.entries {
		entries[i] = e.String()
	}
	// The workloads need the socket's absolute path (a SPIFFE address is
	// unix:///PATH): say it, whatever path was given.
	at := w.socket
	if abs, err := filepath.Abs(at); err == nil {
		at = abs
	}
	fmt.Fprintf(stderr, "%s serving the SPIFFE Workload API on %s (SPIFFE_ENDPOINT_SOCKET=unix://%s): %s\n", time.Now().UTC().Format(time.RFC3339), at, at, strings.Join(entries, ", "))
	if notify != nil {
		notify.socket = at
	}
	asked := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served, ran := make(chan error, 1), make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	go func() { ran <- run(ctx) }()
	// Either ending ends the other: the Workload API ends first when
	// the authority refuses the node for good.
	select {
	case err = <-ran:
		notify.stop(asked.Err() != nil, err)
		cancel()
		return errors.Join(err, <-served)
	case err = <-served:
		if err != nil {
			err = fmt.Errorf("node run stopped: %w", err)
			if !w.attests {
				err = joinAgainHint(err)
			}
		}
		notify.stop(asked.Err() != nil, err)
		cancel()
		return errors.Join(err, <-ran)
	}
}

// checkTrustDomain refuses an entry's agent of another trust domain
// than the node's, when the node's is known before any call: that of
// the credential node run will hold. A join-token node's is its
// credential's. A TPM node's is its valid credential's (renewed by its
// attestations); without one (before its first attestation, or once
// its credential lapsed) it attests anew, as attestOnce does, to the
// authority of --trust-domain or --bundle, else of its lapsed
// credential's bundle. The authority would refuse every SVID of an
// agent of another trust domain.
func (w *workloadFlags) checkTrustDomain(cf *clientFlags) error {
	var td spiffeid.TrustDomain
	chain, _, _, err := cf.credential()
	if err == nil && w.attests {
		chain, _ = tpmCredential(cf.creds)
	}
	if len(chain) > 0 {
		if id, err := x509svid.IDFromCert(chain[0]); err == nil {
			td = id.TrustDomain()
		}
	} else {
		anew := *cf
		if w.attests {
			anew.lapsed = lapsedRoots(cf.creds)
		}
		if c, err := anew.dial(false); err == nil {
			td = c.TrustDomain()
		}
	}
	for _, e := range w.entries {
		if !td.IsZero() && e.ID.TrustDomain() != td {
			return usagef("--workload %s: the agent is not of this node's trust domain %s, whose authority alone issues SVIDs to its workloads", e, td)
		}
	}
	return nil
}

// lineWriter is w written by one writer at a time (each write a line):
// the writer the command was given need not be safe for concurrent use.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// nodeIssuer obtains agents' credentials from the authority with the
// node's own credential (a node asks for the agents it hosts): dial is
// a client with it as it is at each request (node run renews it), whose
// connections the issuer leaves open for the next (reusedClient).
type nodeIssuer struct {
	dial func() (*client.Client, error)
	// forget, if not nil, drops a client dial returned (see call).
	forget func(*client.Client)
	// attests is a TPM node, attested again at each renewal; unknown,
	// if not nil, is told (without blocking) when the authority does
	// not know it, or refuses its credential at the handshake (its CA
	// revoked), so that it attests again then.
	attests bool
	unknown chan<- struct{}
	// first, if not nil, is closed once node run first holds a valid
	// credential: a call that finds none before then (a TPM node whose
	// first attestation is under way) waits for it, or for ctx to end,
	// and so a workload asking meanwhile gets its SVID once the node is
	// attested, not an error saying there is no credential until the
	// next try.
	first <-chan struct{}
}

// call calls f with a client for the node's credential (dial). A call
// the authority refuses as unauthenticated, over a connection kept from
// an earlier one whose handshake verified the credential (reusedClient),
// is made once more with a new client: the credential no longer
// verifies (its CA revoked since), and the new handshake says so as any
// other would (client.ErrCredentialRefused).
func (n *nodeIssuer) call(ctx context.Context, f func(*client.Client) error) (*client.Client, error) {
	c, err := n.dial()
	if err != nil && n.first != nil {
		select {
		case <-n.first: // held one already: that one failed
		default:
			select {
			case <-n.first:
				c, err = n.dial()
			case <-ctx.Done():
			}
		}
	}
	if err != nil {
		return nil, err
	}
	err = f(c)
	if p := (*client.Problem)(nil); n.forget != nil && errors.As(err, &p) && p.Name() == "unauthenticated" {
		n.forget(c)
		if c, err = n.dial(); err != nil {
			return nil, err
		}
		err = f(c)
	}
	return c, err
}

func (n *nodeIssuer) X509SVID(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, []*spiffebundle.Bundle, error) {
	var ans *client.SVIDAnswer
	var key crypto.Signer
	_, err := n.call(ctx, func(c *client.Client) (err error) {
		ans, key, err = c.NewX509SVID(ctx, id)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	certs, err := ans.Certificates()
	if err != nil {
		return nil, nil, err
	}
	got, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return nil, nil, fmt.Errorf("the answer's X509-SVID: %w", err)
	}
	// Served as the trust bundles until the next answer, as a sync's
	// are: read as those are.
	bundles, err := readBundles(id.TrustDomain(), ans.Bundles)
	if err != nil {
		return nil, nil, fmt.Errorf("the X509-SVID's answer: %w", err)
	}
	return &x509svid.SVID{ID: got, Certificates: certs, PrivateKey: key}, bundles, nil
}

func (n *nodeIssuer) JWTSVID(ctx context.Context, id spiffeid.ID, audience []string) (string, time.Time, error) {
	var ans *client.JWTAnswer
	_, err := n.call(ctx, func(c *client.Client) (err error) {
		ans, err = c.JWTSVID(ctx, id.String(), audience)
		return err
	})
	if err != nil {
		return "", time.Time{}, err
	}
	return ans.Token, ans.ExpiresAt, nil
}

// refusedForGood reports whether a sync the authority refused with p
// is refused for good: as a renewal is, but for what the node's own
// renewal, or attestation, settles. An SVID replaced since
// (svid-superseded) is a node that lost its renewal's (or
// attestation's) answer: it asks with the SVID before its latest, which
// the authority still renews, and node run does at its next try (one it
// refuses to renew stops node run then). A TPM node the authority does
// not know (node-not-attested: restored from a backup made before its
// attestation) is known again once it attests again, and a drifted one
// (node-drifted: only TPM nodes drift) is admitted again by its next
// attestation whose quote matches (a reboot into a known-good state),
// which node run makes at its time: the first at its start.
func (n *nodeIssuer) refusedForGood(p *client.Problem) bool {
	switch p.Name() {
	case "svid-superseded":
		return false
	case "node-not-attested", "node-drifted":
		return !n.attests
	}
	return refusedForGood(p)
}

func (n *nodeIssuer) Sync(ctx context.Context, ids []spiffeid.ID) (*workload.Sync, error) {
	var ans *client.NodeSync
	c, err := n.call(ctx, func(c *client.Client) (err error) {
		ans, err = c.SyncNode(ctx, ids)
		return err
	})
	var p *client.Problem
	switch {
	case errors.As(err, &p) && n.refusedForGood(p), !n.attests && errors.Is(err, client.ErrCredentialRefused):
		// A join-token node whose credential is refused (its CA revoked)
		// cannot renew it; a TPM node attests anew (unknown, below).
		return nil, fmt.Errorf("%w: %w", workload.ErrNodeRefused, err)
	case n.unknown != nil && (p != nil && p.Name() == "node-not-attested" || errors.Is(err, client.ErrCredentialRefused)):
		select {
		case n.unknown <- struct{}{}:
		default: // told already
		}
	}
	if err != nil {
		return nil, err
	}
	return syncOf(c.TrustDomain(), ans)
}

// syncOf reads the authority's answer to a sync of a node of trust
// domain td: its refusals, and its bundles (readBundles).
func syncOf(td spiffeid.TrustDomain, ans *client.NodeSync) (*workload.Sync, error) {
	out := &workload.Sync{Refused: map[spiffeid.ID]error{}}
	for _, r := range ans.Refused {
		id, err := spiffeid.FromString(r.SPIFFEID)
		if err != nil {
			return nil, fmt.Errorf("the sync's answer: %w", err)
		}
		out.Refused[id] = &r.Problem
	}
	var err error
	if out.Bundles, err = readBundles(td, ans.Bundles); err != nil {
		return nil, fmt.Errorf("the sync's answer: %w", err)
	}
	return out, nil
}

// readBundles reads the bundles of an answer of the authority to a node
// of trust domain td, a sync's or an X509-SVID's, which the Workload API
// serves as the trust bundles: each read as a peer's is (no authority,
// or an X.509 authority of another trust domain, is refused; a key that
// is not a public one, with its private part say, is left out; the
// refresh hint is bounded), and td's among them.
func readBundles(td spiffeid.TrustDomain, docs map[string]json.RawMessage) ([]*spiffebundle.Bundle, error) {
	var out []*spiffebundle.Bundle
	for name, doc := range docs {
		btd, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(out, func(b *spiffebundle.Bundle) bool { return b.TrustDomain() == btd }) {
			return nil, fmt.Errorf("trust domain %s is named twice", btd)
		}
		b, _, err := federation.ParseBundle(btd, doc)
		if err != nil {
			return nil, fmt.Errorf("the bundle of %s: %w", btd, err)
		}
		out = append(out, b)
	}
	if !slices.ContainsFunc(out, func(b *spiffebundle.Bundle) bool { return b.TrustDomain() == td }) {
		return nil, fmt.Errorf("no bundle of %s", td)
	}
	return out, nil
}
