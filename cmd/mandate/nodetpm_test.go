package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mandate.dev/mandate/credfile"
)

// serveTrustingTPM starts `mandate serve` in dir, trusting the EK ek (on
// its allowlist) in the PCR profile printed by `node pcrs` (edge-v1).
func serveTrustingTPM(t *testing.T, dir, ek, profile string, more ...string) string {
	t.Helper()
	var cfg strings.Builder
	for _, m := range more { // more of the config file: top-level keys
		cfg.WriteString(m + "\n")
	}
	cfg.WriteString("attestation:\n  tpm:\n    ek_allowlist: [" + ek + "]\n    allowed_profiles: [edge-v1]\n    pcr_profiles:\n")
	for _, line := range strings.Split(strings.TrimSpace(profile), "\n") {
		cfg.WriteString("      " + line + "\n")
	}
	cfgFile := filepath.Join(dir, "mandate.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return startServe(t, dir, "--config", cfgFile)
}

// TestCLINodeTPMAttestation runs the operator's and the device's side
// with the simulator: read the EK digest and the PCRs, configure the
// authority with them, attest, renew with a fresh quote, then drift.
func TestCLINodeTPMAttestation(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	ek, err := cli(t, "", dir, "node", "ek", "--tpm", "simulator", "--ek", "ecc", "--quiet")
	if err != nil {
		t.Fatalf("node ek: %v", err)
	}
	ek = strings.TrimSpace(ek)
	profile, err := cli(t, "", dir, "node", "pcrs", "--tpm", "simulator", "--pcrs", "0-7,16", "--profile", "edge-v1")
	if err != nil {
		t.Fatalf("node pcrs: %v", err)
	}
	if strings.Count(profile, ": ") != 9 {
		t.Fatalf("node pcrs printed:\n%s", profile)
	}
	url := serveTrustingTPM(t, dir, ek, profile)

	attestJSON := func(extra ...string) (map[string]any, error) {
		out, err := cli(t, url, dir, append([]string{"node", "attest", "--tpm", "simulator", "--ek", "ecc"}, extra...)...)
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("node attest printed %q", out)
		}
		return m, nil
	}
	// A directory holding another node's valid credential (a join
	// node's) is not written over.
	token, err := cli(t, url, dir, "admin", "join-token", "create", "--quiet")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, url, dir, "node", "join", "--token", strings.TrimSpace(token), "--quiet", "--bundle", "mandate-data/admin/bundle.pem", "--out", "join-node"); err != nil {
		t.Fatal(err)
	}
	if _, err := attestJSON("--out", "join-node"); err == nil || !strings.Contains(err.Error(), "holds the credential of spiffe://mandate.localhost/node/join/") {
		t.Fatalf("node attest into a join node's directory: %v, want it refused", err)
	}
	// ...before anything is written in it (the simulator's seed).
	if _, err := os.Stat(filepath.Join(dir, "join-node", "tpm-simulator.seed")); !os.IsNotExist(err) {
		t.Errorf("a refused node attest wrote the simulator's seed in --out (%v)", err)
	}
	// node run stops there too: retrying would change nothing.
	if _, err := cli(t, url, dir, "node", "run", "--tpm", "simulator", "--ek", "ecc", "--out", "join-node"); err == nil || !strings.Contains(err.Error(), "holds the credential of") {
		t.Fatalf("node run into a join node's directory: %v, want it refused at once", err)
	}
	first, err := attestJSON()
	if err != nil {
		t.Fatalf("node attest: %v", err)
	}
	wantID := "spiffe://mandate.localhost/node/tpm/" + ek
	if first["spiffe_id"] != wantID || first["renewal"] != false {
		t.Fatalf("first attestation: %v", first)
	}
	if fi, err := os.Stat(filepath.Join(dir, "mandate-node", "svid.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("svid.key: %v %v", fi, err)
	}
	again, err := attestJSON()
	if err != nil || again["renewal"] != true || again["spiffe_id"] != wantID {
		t.Fatalf("renewal: %v, %v", again, err)
	}
	// A changed boot: the quote no longer matches, renewal is refused.
	if _, err := attestJSON("--simulator-extend-pcr", "7"); err == nil || !strings.Contains(err.Error(), "tpm-pcr-policy-mismatch") {
		t.Fatalf("renewal after a changed boot = %v", err)
	}
	nodes, err := cli(t, url, dir, "admin", "node", "list")
	if err != nil || !strings.Contains(nodes, `"drifted": true`) || !strings.Contains(nodes, `"drifted_at": "`) {
		t.Fatalf("node list after drift: %v\n%s", err, nodes)
	}
	// A banned node: node run stops at once, naming the ban (a ban is
	// never lifted), rather than asking a challenge every 30 seconds.
	if _, err := cli(t, url, dir, "admin", "node", "ban", wantID, "--reason", "stolen"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	t.Setenv("MANDATE_SERVER", url)
	if err := run(ctx, []string{"node", "run", "--tpm", "simulator", "--ek", "ecc"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "node-banned") || ctx.Err() != nil {
		t.Errorf("node run of a banned TPM node = %v (%s), want it stopped at once, naming the ban", err, errOut.String())
	}
	// Stopped (SIGINT, SIGTERM) while it attests: a stop as asked, exit
	// status 0 and no failure reported.
	stopped, stop := context.WithCancel(context.Background())
	stop()
	out.Reset()
	errOut.Reset()
	if err := run(stopped, []string{"node", "run", "--tpm", "simulator", "--ek", "ecc"}, &out, &errOut); err != nil || errOut.Len() > 0 {
		t.Errorf("node run --tpm stopped while it attests = %v, %q; want nil and nothing said", err, errOut.String())
	}
}

// A TPM node whose credential expired (the device off for longer than its
// SVID's life) attests anew. The --bundle it first attested with may be
// outdated by CA rotations since; the bundle that came with its lapsed
// credential (rewritten by every renewal) is the authority's current one
// and is trusted too, but only for the trust domain that credential is
// of. So with a credential still valid that the authority refuses at the
// handshake (signed by an X.509 CA revoked since): the node attests anew
// at once, rather than failing until that credential expires.
func TestCLINodeTPMAttestsAgainAfterItLapsed(t *testing.T) {
	dir := t.TempDir()
	host := filepath.Join(dir, "host") // the device: no mandate-data here
	if err := os.Mkdir(host, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(host)
	ek, err := cli(t, "", dir, "node", "ek", "--tpm", "simulator", "--ek", "ecc", "--out", "device", "--quiet")
	if err != nil {
		t.Fatalf("node ek: %v", err)
	}
	ek = strings.TrimSpace(ek)
	profile, err := cli(t, "", dir, "node", "pcrs", "--tpm", "simulator", "--ek", "ecc", "--out", "device", "--pcrs", "0-7", "--profile", "edge-v1")
	if err != nil {
		t.Fatalf("node pcrs: %v", err)
	}
	seed, err := os.ReadFile(filepath.Join("device", "tpm-simulator.seed"))
	if err != nil {
		t.Fatal(err)
	}
	url := serveTrustingTPM(t, dir, ek, profile)
	roots := adminRoots(t, dir)
	// The bundle the device first attested with, its CA long gone.
	stale := selfSigned(t, "spiffe://mandate.localhost", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), true)
	if err := os.WriteFile("stale.pem", credfile.EncodeCertsPEM([]*x509.Certificate{stale.cert}), 0o644); err != nil {
		t.Fatal(err)
	}
	// A root naming no trust domain (an upstream CA's): whose it is,
	// --trust-domain says; it is not the lapsed credential's to guess.
	unnamed := selfSigned(t, "", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), true)
	if err := os.WriteFile("unnamed.pem", credfile.EncodeCertsPEM([]*x509.Certificate{unnamed.cert}), 0o644); err != nil {
		t.Fatal(err)
	}
	wantID := "spiffe://mandate.localhost/node/tpm/" + ek
	for _, tc := range []struct {
		name     string
		lapsedTD string // the trust domain of the lapsed credential in --out, "" for none
		args     []string
		wantErr  string
		refused  bool // the credential in --out is valid, its CA unknown to the authority
	}{
		{"stale --bundle, lapsed credential's bundle current", "mandate.localhost", []string{"--bundle", "stale.pem"}, "", false},
		{"stale --bundle, credential refused, its bundle current", "mandate.localhost", []string{"--bundle", "stale.pem"}, "", true},
		{"no --bundle, nothing at its default", "mandate.localhost", nil, "", false},
		{"no lapsed credential", "", []string{"--bundle", "stale.pem"}, "unknown authority", false},
		{"lapsed credential of another trust domain", "other.example", []string{"--bundle", "stale.pem"}, "unknown authority", false},
		{"no lapsed credential, no --bundle", "", nil, "mandate-data/admin/bundle.pem", false},
		{"--bundle given, missing", "mandate.localhost", []string{"--bundle", "missing.pem"}, "missing.pem", false},
		{"no --bundle, --trust-domain another", "mandate.localhost", []string{"--trust-domain", "other.example"}, "give --bundle", false},
		{"--bundle naming no trust domain", "mandate.localhost", []string{"--bundle", "unnamed.pem"}, "cannot tell the trust domain", false},
		{"--bundle naming no trust domain, --trust-domain the lapsed one's", "mandate.localhost", []string{"--bundle", "unnamed.pem", "--trust-domain", "mandate.localhost"}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "node")
			if err := os.Mkdir(out, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(out, "tpm-simulator.seed"), seed, 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.lapsedTD != "" {
				from, to := time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
				if tc.refused {
					to = time.Now().Add(time.Hour)
				}
				old := selfSigned(t, "spiffe://"+tc.lapsedTD+"/node/tpm/"+ek, from, to, false)
				if err := credfile.Write(credfile.In(out), []*x509.Certificate{old.cert}, old.key, roots); err != nil {
					t.Fatal(err)
				}
			}
			got, err := cli(t, url, dir, append([]string{"node", "attest", "--tpm", "simulator", "--ek", "ecc", "--out", out, "--quiet"}, tc.args...)...)
			switch {
			case tc.wantErr == "" && (err != nil || strings.TrimSpace(got) != wantID):
				t.Fatalf("node attest = %q, %v; want %s attested", got, err, wantID)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("node attest = %q, %v; want an error naming %q", got, err, tc.wantErr)
			}
		})
	}
}

type signed struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// selfSigned makes a self-signed certificate with URI SAN uri (none if
// uri is "").
func selfSigned(t *testing.T, uri string, notBefore, notAfter time.Time, isCA bool) signed {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: notBefore, NotAfter: notAfter,
		IsCA: isCA, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature}
	if uri != "" {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		tpl.URIs = []*url.URL{u}
	}
	if isCA {
		tpl.KeyUsage |= x509.KeyUsageCertSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return signed{cert, key}
}

// --quiet is a flag of node attest, which prints the node's identity
// once; node run prints only its log, and neither offers nor takes it.
func TestNodeRunHasNoQuietFlag(t *testing.T) {
	for _, tc := range []struct {
		cmd   string
		quiet bool
	}{{"attest", true}, {"run", false}} {
		var out, errOut bytes.Buffer
		_ = run(context.Background(), []string{"node", tc.cmd, "-h"}, &out, &errOut)
		if listed := strings.Contains(out.String()+errOut.String(), "-quiet"); listed != tc.quiet {
			t.Errorf("node %s -h lists --quiet: %v, want %v", tc.cmd, listed, tc.quiet)
		}
	}
	var out, errOut bytes.Buffer
	var ue usageError
	// Taken, the flag would start the loop, which only ctx stops.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := run(ctx, []string{"node", "run", "--tpm", "simulator", "--quiet", "--out", t.TempDir(), "--server", "https://127.0.0.1:1"}, &out, &errOut); !errors.As(err, &ue) {
		t.Errorf("node run --tpm simulator --quiet = %v, want a usage error", err)
	}
}

// A TPM node attested with one EK, then run with the other (--ek rsa,
// then ecc, on one --out): the credential in --out is another node's
// (the EK names the node), which this TPM's EK of the other type cannot
// renew. Both commands stop at once, saying so and what to do, rather
// than as if the authority refused the node; removing the credential
// attests the node of the EK now asked for.
func TestCLINodeTPMEKTypeChanged(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	eks := map[string]string{}
	for _, typ := range []string{"rsa", "ecc"} {
		ek, err := cli(t, "", dir, "node", "ek", "--tpm", "simulator", "--ek", typ, "--quiet")
		if err != nil {
			t.Fatalf("node ek --ek %s: %v", typ, err)
		}
		eks[typ] = strings.TrimSpace(ek)
	}
	profile, err := cli(t, "", dir, "node", "pcrs", "--tpm", "simulator", "--pcrs", "0-7", "--profile", "edge-v1")
	if err != nil {
		t.Fatal(err)
	}
	url := serveTrustingTPM(t, dir, eks["rsa"]+", "+eks["ecc"], profile)
	const node = "spiffe://mandate.localhost/node/tpm/"
	if id, err := cli(t, url, dir, "node", "attest", "--tpm", "simulator", "--ek", "rsa", "--quiet"); err != nil || strings.TrimSpace(id) != node+eks["rsa"] {
		t.Fatalf("node attest --ek rsa = %q, %v", id, err)
	}
	held, err := os.ReadFile(filepath.Join("mandate-node", "svid.key"))
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"attest", "run"} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		var out, errOut bytes.Buffer
		t.Setenv("MANDATE_SERVER", url)
		err := run(ctx, []string{"node", cmd, "--tpm", "simulator", "--ek", "ecc"}, &out, &errOut)
		stoppedByCtx := ctx.Err() != nil
		cancel()
		switch {
		case err == nil || stoppedByCtx:
			t.Fatalf("node %s --ek ecc after --ek rsa = %v (%s), want it stopped at once", cmd, err, errOut.String())
		case !strings.Contains(err.Error(), node+eks["rsa"]) || !strings.Contains(err.Error(), node+eks["ecc"]) || !strings.Contains(err.Error(), "give the --ek it attested with"):
			t.Errorf("node %s --ek ecc after --ek rsa = %v, want it to name both nodes and say what to do", cmd, err)
		}
		if now, _ := os.ReadFile(filepath.Join("mandate-node", "svid.key")); !bytes.Equal(now, held) {
			t.Fatalf("node %s --ek ecc replaced the key of the --ek rsa node", cmd)
		}
	}
	// Its credential removed, as the error says, the node of the ECC EK attests.
	for _, f := range []string{"svid.pem", "svid.key"} {
		if err := os.Remove(filepath.Join("mandate-node", f)); err != nil {
			t.Fatal(err)
		}
	}
	if id, err := cli(t, url, dir, "node", "attest", "--tpm", "simulator", "--ek", "ecc", "--quiet"); err != nil || strings.TrimSpace(id) != node+eks["ecc"] {
		t.Fatalf("node attest --ek ecc with the credential removed = %q, %v", id, err)
	}
}
