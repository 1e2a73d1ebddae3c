package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/api"
	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/attest/tpmdevice"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/workload"
)

// runDemo is "mandate demo": the whole story in one process, printed
// step by step.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", "demo\n\n"+
		"Runs the whole story in this process, with no flags and nothing left behind:\n"+
		"two organisations' authorities federate, a device attests with the TPM\n"+
		"simulator and serves an agent its SVID over the SPIFFE Workload API, a user's\n"+
		"task is delegated org-a -> org-b -> org-b, an over-broad delegation is\n"+
		"denied, a hop is revoked, and an auditor verifies the chain.", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "mandate-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	step := func(format string, a ...any) { fmt.Fprintf(stdout, "\n== "+format+"\n", a...) }
	say := func(format string, a ...any) { fmt.Fprintf(stdout, "   "+format+"\n", a...) }

	// The edge device of org-a, with its TPM (the simulator here).
	tpm, err := tpmdevice.OpenSimulator(42)
	if err != nil {
		return err
	}
	defer tpm.Close()
	dev, err := tpmdevice.Open(tpm, tpmdevice.Options{EK: tpmdevice.EKECC})
	if err != nil {
		return err
	}
	defer dev.Close()
	ek, err := attest.ParseTPM2BPublic("ek", dev.EKPublic())
	if err != nil {
		return err
	}
	pcrs := []int{0, 1, 2, 3, 4, 5, 6, 7, 16}
	golden, err := dev.ReadPCRs(pcrs)
	if err != nil {
		return err
	}

	step("Two organisations start their authorities")
	tpmCfg := authority.TPMConfig{EKAllowlist: []string{ek.SHA256Hex()}, AllowedProfiles: []string{"edge-v1"},
		PCRProfiles: map[string]authority.PCRProfileConfig{"edge-v1": {SHA256: map[string]string{}}}}
	for i, v := range golden {
		tpmCfg.PCRProfiles["edge-v1"].SHA256[strconv.Itoa(i)] = hex.EncodeToString(v)
	}
	orgA, err := startDemoAuthority(ctx, tmp, "org-a.example", func(c *authority.Config) {
		c.Attestation.TPM = tpmCfg
		c.Audit.Auditors = []string{"spiffe://org-b.example/mandate/admin"}
	})
	if err != nil {
		return err
	}
	defer orgA.stop()
	orgB, err := startDemoAuthority(ctx, tmp, "org-b.example", func(c *authority.Config) {
		c.Audit.Auditors = []string{"spiffe://org-a.example/mandate/admin"}
		c.Audit.Witness.Logs = []string{orgA.a.AuditVerifierKey()} // org-b witnesses org-a's log
	})
	if err != nil {
		return err
	}
	defer orgB.stop()
	say("org-a.example at %s, org-b.example at %s", orgA.url, orgB.url)

	step("They federate: each trusts the other's bundle, kept fresh from its endpoint")
	for _, p := range [][2]*demoOrg{{orgA, orgB}, {orgB, orgA}} {
		doc, err := p[1].a.Bundle().Marshal()
		if err != nil {
			return err
		}
		if _, err := p[0].admin.AddFederation(ctx, &client.Federation{TrustDomain: p[1].td.Name(), BundleEndpointURL: p[1].url + "/v1/bundle",
			Profile: "https_spiffe", Bundle: doc}); err != nil {
			return err
		}
	}
	say("org-a ⇄ org-b")
	witness := &demoWitness{log: orgA, witness: orgB, hc: &http.Client{Transport: &http.Transport{TLSClientConfig: orgB.public.TLSConfig()}}}
	defer witness.hc.CloseIdleConnections()
	witnessedAt, _, err := witness.cosign(ctx)
	if err != nil {
		return fmt.Errorf("org-b witnessing org-a's log: %w", err)
	}
	say("org-b witnesses org-a's log (C2SP tlog-witness): it cosigned org-a's checkpoint at size %d", witnessedAt)

	step("org-a's edge device attests with its TPM: credential activation, a fresh quote of PCRs 0-7 and 16")
	nodeKey, csr, err := client.NewKeyAndCSR()
	if err != nil {
		return err
	}
	nodeAns, err := orgA.public.AttestTPM(ctx, dev, nil, csr)
	if err != nil {
		return err
	}
	nodeChain, _ := nodeAns.Certificates()
	tpmNode := demoID{id: spiffeid.RequireFromString(nodeAns.SPIFFEID), chain: nodeChain, key: nodeKey}
	say("admitted as %s (level hardware, profile edge-v1)", tpmNode.id)

	step("Agents are registered, with who answers for them, and get X509-SVIDs")
	plannerScopes := []string{"calendar:read", "payments:write", "mail:send"}
	var planner demoID
	if runtime.GOOS == "linux" {
		// The device serves the SPIFFE Workload API to its processes: the
		// planner, a process of this user, gets its SVID from it.
		if err := orgA.register(ctx, tpmNode.id, "planner", plannerScopes, "research", "alice@org-a.example"); err != nil {
			return err
		}
		if planner, err = orgA.fromWorkloadAPI(ctx, tpmNode, filepath.Join(tmp, "workload.sock"), "planner"); err != nil {
			return err
		}
		say("the device serves the SPIFFE Workload API; the planner, picked by its uid, gets its SVID there")
	} else if planner, err = orgA.agent(ctx, &tpmNode, "planner", plannerScopes, "research", "alice@org-a.example"); err != nil {
		return err
	}
	booker, err := orgB.agent(ctx, nil, "booker", nil, "travel", "bob@org-b.example")
	if err != nil {
		return err
	}
	payer, err := orgB.agent(ctx, nil, "payer", nil, "finance", "carol@org-b.example")
	if err != nil {
		return err
	}
	for _, a := range []demoID{planner, booker, payer} {
		say("%s", a.id)
	}

	step("alice's task is delegated: planner (org-a) → booker (org-b) → payer (org-b)")
	t1, id1, err := orgA.delegate(ctx, planner, booker.id, []string{"calendar:read", "payments:write"}, "alice@org-a.example", "")
	if err != nil {
		return err
	}
	say("org-a issued %s: planner lets booker act for alice with [calendar:read payments:write]", id1)
	t2, id2, err := orgB.delegate(ctx, booker, payer.id, []string{"calendar:read"}, "", t1)
	if err != nil {
		return err
	}
	say("org-b issued %s below it: booker lets payer read alice's calendar [calendar:read]", id2)
	set := spiffebundle.NewSet(orgA.a.Bundle(), orgB.a.Bundle())
	chain, err := delegation.Verify(t2, set, delegation.VerifyOptions{Presenter: payer.id, PresenterCert: payer.chain[0]})
	if err != nil {
		return fmt.Errorf("the payer's token does not verify: %w", err)
	}
	say("the payer's token verifies offline: %d hops, every issuer and every delegator signature checked", len(chain))

	step("Over-broad delegations are denied by policy")
	for _, scopes := range [][]string{{"mail:send"}, {"payments:write"}} {
		_, _, err := orgB.delegate(ctx, booker, payer.id, scopes, "", t1)
		var p *client.Problem
		if !errors.As(err, &p) {
			return fmt.Errorf("the delegation of %v was not denied: %v", scopes, err)
		}
		say("%v denied (%s): %s", scopes, p.Name(), strings.Join(p.Reasons, "; "))
	}

	step("An auditor of org-b reconstructs the chain and proves every hop in its issuer's log")
	vkeys := map[string]note.Verifier{}
	for _, o := range []*demoOrg{orgA, orgB} {
		v, err := note.NewVerifier(o.a.AuditVerifierKey())
		if err != nil {
			return err
		}
		vkeys[o.td.IDString()] = v
	}
	hops, err := fetchChain(ctx, orgB.admin, "/v1/audit/chains/"+id2)
	if err != nil {
		return err
	}
	// org-a accepts org-b's auditor (audit.auditors): the same credential
	// reads org-a's log.
	auditorAtA, err := client.New(client.Config{Server: orgA.url, TrustDomain: orgA.td, Bundle: orgA.bundle, SVID: orgB.adminChain, Key: orgB.adminKey})
	if err != nil {
		return err
	}
	defer auditorAtA.CloseIdle()
	views := newLogViews()
	for i := range hops {
		h := &hops[i]
		issuerLog := orgB.admin
		if h.Index == nil { // another authority's hop: ask it
			issuerLog = auditorAtA
			theirs, err := fetchChain(ctx, issuerLog, "/v1/audit/chains/"+h.ID)
			if err != nil {
				return err
			}
			*h = theirs[len(theirs)-1]
		}
		seen := views.of(vkeys[h.Issuer], issuerLog)
		if err := verifyHop(h, vkeys[h.Issuer], h.Issuer, seen); err != nil {
			return err
		}
		if err := verifySigner(ctx, h, issuerLog, vkeys[h.Issuer], seen, false); err != nil {
			return err
		}
	}
	if err := checkLinks(hops, id2); err != nil {
		return err
	}
	if err := views.check(ctx); err != nil {
		return err
	}
	printChain(stdout, hops)

	step("org-a revokes the first hop: everything below it stops holding")
	if _, err := orgA.admin.RevokeDelegation(ctx, id1, "alice cancelled the trip"); err != nil {
		return err
	}
	st, err := orgA.public.DelegationStatus(ctx, id1)
	if err != nil {
		return err
	}
	say("%s is %s at org-a", id1, st.Status)
	_, _, err = orgB.delegate(ctx, booker, payer.id, []string{"calendar:read"}, "", t1)
	var p *client.Problem
	if !errors.As(err, &p) {
		return fmt.Errorf("a revoked hop was extended (%v)", err)
	}
	say("org-b asked org-a before extending the chain, and refused (%s): %s", p.Name(), p.Detail)
	// A verifier of the payer's token asks the last hop's issuer, which
	// answers for the hops above it too (org-b asks org-a).
	last := chain[len(chain)-1]
	hs, err := orgB.public.DelegationStatus(ctx, last.ID)
	if err != nil {
		return err
	}
	say("a verifier of the payer's token asks org-b about its hop %s: %s (%s)", last.ID, hs.Status, hs.Reason)
	// The auditor proves the revocation in org-a's log.
	logs := map[string]logAccess{orgA.td.IDString(): {auditorAtA, vkeys[orgA.td.IDString()]}, orgB.td.IDString(): {orgB.admin, vkeys[orgB.td.IDString()]}}
	if err := findRevocations(ctx, hops, logs, views); err != nil {
		return err
	}
	if err := views.check(ctx); err != nil {
		return err
	}
	for _, h := range hops {
		if r := h.Revoked; r == nil {
			return fmt.Errorf("the auditor found no revocation of %s", h.ID)
		} else if r.Above == "" {
			say("the auditor proves it in %s's log, entry %d: %s revoked by %s (%q)", strings.TrimPrefix(r.Log, "spiffe://"), r.Index, h.ID, r.RevokedBy, r.Reason)
		} else {
			say("and shows %s revoked with the hop above", h.ID)
		}
	}
	step("org-b cosigns org-a's grown log, and refuses a fork")
	size, _, err := witness.cosign(ctx)
	if err != nil {
		return fmt.Errorf("org-b witnessing org-a's log: %w", err)
	}
	say("org-a's log grew from %d to %d entries: org-b checked the consistency proof and cosigned; an auditor holding both signatures knows org-a showed org-b this history", witnessedAt, size)
	status, ans, err := witness.forkAt(ctx, filepath.Join(tmp, orgA.td.Name()))
	if err != nil {
		return err
	}
	if status != http.StatusConflict || !strings.Contains(ans, "witness-root-mismatch") {
		return fmt.Errorf("a forked checkpoint of org-a was answered %d: %s", status, ans)
	}
	say("a checkpoint of size %d with another root, signed with org-a's own key (an operator rewriting history): refused (%d witness-root-mismatch)", size, status)
	fmt.Fprintln(stdout, "\nDone.")
	return nil
}

// demoOrg is one organisation's authority, served on 127.0.0.1.
type demoOrg struct {
	td     spiffeid.TrustDomain
	a      *authority.Authority
	url    string
	admin  *client.Client
	public *client.Client
	bundle []*x509.Certificate
	stop   func()

	adminChain []*x509.Certificate
	adminKey   crypto.Signer
}

type demoID struct {
	id    spiffeid.ID
	chain []*x509.Certificate
	key   crypto.Signer
}

func startDemoAuthority(ctx context.Context, tmp, td string, mutate func(*authority.Config)) (*demoOrg, error) {
	cfg := authority.Config{TrustDomain: td, DataDir: tmp + "/" + td, Listen: "127.0.0.1:0", LogLevel: "error"}
	mutate(&cfg)
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a, err := authority.New(runCtx, cfg, authority.Options{Logger: newLogger("error", io.Discard)})
	if err != nil {
		cancel()
		return nil, err
	}
	done := make(chan struct{}, 2)
	running := 1
	go func() { _ = a.Run(runCtx); done <- struct{}{} }()
	o := &demoOrg{td: a.TrustDomain(), a: a}
	o.stop = func() {
		cancel()
		for range running {
			<-done
		}
		for _, c := range []*client.Client{o.admin, o.public} {
			if c != nil {
				c.CloseIdle()
			}
		}
		a.Close()
	}
	if err := a.WriteAdminCredential(runCtx, true); err != nil {
		o.stop()
		return nil, err
	}
	srv, err := api.New(a)
	if err != nil {
		o.stop()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		o.stop()
		return nil, err
	}
	running++
	go func() { _ = srv.Serve(runCtx, ln); done <- struct{}{} }()
	o.url = "https://" + ln.Addr().String()
	chain, key, bundle, err := credfile.Load(authority.AdminPaths(cfg.DataDir))
	if err != nil {
		o.stop()
		return nil, err
	}
	o.bundle, o.adminChain, o.adminKey = bundle, chain, key
	if o.admin, err = client.New(client.Config{Server: o.url, TrustDomain: o.td, Bundle: bundle, SVID: chain, Key: key}); err != nil {
		o.stop()
		return nil, err
	}
	if o.public, err = client.New(client.Config{Server: o.url, TrustDomain: o.td, Bundle: bundle}); err != nil {
		o.stop()
		return nil, err
	}
	return o, nil
}

// agent registers name on host (a new join-token node if nil) and returns
// its X509-SVID.
func (o *demoOrg) agent(ctx context.Context, host *demoID, name string, scopes []string, operator, responsible string) (demoID, error) {
	if host == nil {
		n, err := joinNewNode(ctx, o.admin, o.public)
		if err != nil {
			return demoID{}, err
		}
		host = &demoID{id: spiffeid.RequireFromString(n.id), chain: n.chain, key: n.key}
	}
	id := spiffeid.RequireFromSegments(o.td, "agent", name)
	if err := o.register(ctx, host.id, name, scopes, operator, responsible); err != nil {
		return demoID{}, err
	}
	hc, err := host.client(o)
	if err != nil {
		return demoID{}, err
	}
	defer hc.CloseIdle()
	ans, key, err := hc.NewX509SVID(ctx, id)
	if err != nil {
		return demoID{}, err
	}
	chain, _ := ans.Certificates()
	return demoID{id: id, chain: chain, key: key}, nil
}

// register registers agent name, hosted by host.
func (o *demoOrg) register(ctx context.Context, host spiffeid.ID, name string, scopes []string, operator, responsible string) error {
	id := spiffeid.RequireFromSegments(o.td, "agent", name)
	_, err := o.admin.CreateAgent(ctx, &client.Agent{SPIFFEID: id.String(), NodeIDs: []string{host.String()}, Scopes: scopes,
		Accountability: client.Accountability{Operator: operator, ModelProvider: "acme", Model: "acme-1", ResponsibleParty: responsible}})
	return err
}

// client is a client of o authenticated as d.
func (d demoID) client(o *demoOrg) (*client.Client, error) {
	return client.New(client.Config{Server: o.url, TrustDomain: o.td, Bundle: o.bundle, SVID: d.chain, Key: d.key})
}

// fromWorkloadAPI serves the SPIFFE Workload API of node host on socket,
// its entry giving this process agent name, and fetches the agent's
// X509-SVID from it, as the agent's process would (go-spiffe).
func (o *demoOrg) fromWorkloadAPI(ctx context.Context, host demoID, socket, name string) (demoID, error) {
	id := spiffeid.RequireFromSegments(o.td, "agent", name)
	entry, err := workload.ParseEntry("uid:" + strconv.Itoa(os.Getuid()) + "=" + id.String())
	if err != nil {
		return demoID{}, err
	}
	srv, err := workload.New([]workload.Entry{entry}, &nodeIssuer{dial: func() (*client.Client, error) { return host.client(o) }}, slog.New(slog.DiscardHandler))
	if err != nil {
		return demoID{}, err
	}
	ln, err := workload.Listen(socket)
	if err != nil {
		return demoID{}, err
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	defer func() { stop(); <-served }()
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchX509SVID(fctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		return demoID{}, fmt.Errorf("the Workload API: %w", err)
	}
	if svid.ID != id {
		return demoID{}, fmt.Errorf("the Workload API gave %s, not %s", svid.ID, id)
	}
	return demoID{id: id, chain: svid.Certificates, key: svid.PrivateKey}, nil
}

// delegate has from ask o for a hop to to, for principal or below parent.
func (o *demoOrg) delegate(ctx context.Context, from demoID, to spiffeid.ID, scopes []string, principal, parent string) (string, string, error) {
	st := delegation.Statement{Delegator: from.id.String(), Delegatee: to.String(), Principal: principal, Scopes: scopes}
	req := &client.DelegationRequest{Delegatee: to.String(), Scopes: scopes}
	if parent != "" {
		p, err := unverifiedClaims(parent)
		if err != nil {
			return "", "", err
		}
		st.Principal, st.Parent, st.ParentIssuer = p.Subject, p.ID, p.Issuer
		req.ParentToken = parent
	} else {
		req.Principal = principal
	}
	sig, err := delegation.SignStatement(st, from.key, from.chain)
	if err != nil {
		return "", "", err
	}
	req.DelegatorSignature = sig
	c, err := client.New(client.Config{Server: o.url, TrustDomain: o.td, Bundle: o.bundle, SVID: from.chain, Key: from.key})
	if err != nil {
		return "", "", err
	}
	defer c.CloseIdle()
	ans, err := c.Delegate(ctx, req)
	if err != nil {
		return "", "", err
	}
	return ans.Token, ans.ID, nil
}
