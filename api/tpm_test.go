package api_test

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/attest/tpmdevice"
	"mandate.dev/mandate/attest/tpmtest"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt"
)

// edgePCRs is the PCR set of the tests' profile: firmware and boot (0-7)
// and the debug PCR 16.
var edgePCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 16}

// tpmEnv is an authority with TPM attestation configured for one
// simulated device.
type tpmEnv struct {
	*env
	tpm transport.TPM
	dev *tpmdevice.Device
	mfr *tpmtest.CA
}

type tpmSetup struct {
	ek        string // tpmdevice.EKRSA or EKECC
	allowlist bool   // put the device's EK on the allowlist
	certs     bool   // trust the test manufacturer CA
	golden    func(map[int][]byte)
}

// startTPM starts a simulator (seed fixes the device), opens the device,
// and an authority trusting it as setup says, with profile edge-v1 set
// to the device's current PCRs.
func startTPM(t *testing.T, seed int64, setup tpmSetup, mutate ...func(*authority.Config)) *tpmEnv {
	t.Helper()
	tpm, err := tpmdevice.OpenSimulator(seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Close() })
	dev, err := tpmdevice.Open(tpm, tpmdevice.Options{EK: setup.ek})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	mfr, err := tpmtest.NewCA("Test TPM Maker")
	if err != nil {
		t.Fatal(err)
	}
	vals, err := dev.ReadPCRs(edgePCRs)
	if err != nil {
		t.Fatal(err)
	}
	if setup.golden != nil {
		setup.golden(vals)
	}
	golden := map[string]string{}
	for i, v := range vals {
		golden[strconv.Itoa(i)] = hex.EncodeToString(v)
	}
	rootFile := filepath.Join(t.TempDir(), "ek-ca.pem")
	if err := os.WriteFile(rootFile, mfr.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	e := start(t, "org-a.example", append([]func(*authority.Config){func(c *authority.Config) {
		tc := &c.Attestation.TPM
		if setup.allowlist {
			tc.EKAllowlist = []string{ekHashOf(t, dev.EKPublic())}
		}
		if setup.certs {
			tc.EKCARoots = []string{rootFile}
		}
		tc.PCRProfiles = map[string]authority.PCRProfileConfig{"edge-v1": {SHA256: golden}}
		tc.AllowedProfiles = []string{"edge-v1"}
	}}, mutate...)...)
	return &tpmEnv{env: e, tpm: tpm, dev: dev, mfr: mfr}
}

func ekHashOf(t *testing.T, ekPublic []byte) string {
	t.Helper()
	p, err := attest.ParseTPM2BPublic("ek", ekPublic)
	if err != nil {
		t.Fatal(err)
	}
	return p.SHA256Hex()
}

func (te *tpmEnv) ekCert() []byte {
	te.t.Helper()
	p, err := attest.ParseTPM2BPublic("ek", te.dev.EKPublic())
	if err != nil {
		te.t.Fatal(err)
	}
	der, err := te.mfr.IssueEKCert(p.Key)
	if err != nil {
		te.t.Fatal(err)
	}
	return der
}

// attest runs the whole exchange as client c (nil: anonymous).
func (te *tpmEnv) attest(c *client.Client, ekCert []byte) (identity, error) {
	te.t.Helper()
	if c == nil {
		c = te.client(nil, nil)
	}
	key, csr, err := client.NewKeyAndCSR()
	if err != nil {
		te.t.Fatal(err)
	}
	ans, err := c.AttestTPM(ctxT(te.t), te.dev, ekCert, csr)
	if err != nil {
		return identity{}, err
	}
	return te.identity(ans, key), nil
}

// auditOf lists the details of audit entries of a type about subject.
func (e *env) auditOf(typ, subject string) []map[string]any {
	e.t.Helper()
	var out struct {
		Entries []struct {
			Entry struct {
				Type    string         `json:"type"`
				Subject string         `json:"subject"`
				Details map[string]any `json:"details"`
			} `json:"entry"`
		} `json:"entries"`
	}
	q := "/v1/audit/search?type=" + typ + "&limit=100"
	if err := e.admin.Do(ctxT(e.t), http.MethodGet, q, nil, &out); err != nil {
		e.t.Fatalf("audit search: %v", err)
	}
	var got []map[string]any
	for _, en := range out.Entries {
		if subject == "" || en.Entry.Subject == subject {
			got = append(got, en.Entry.Details)
		}
	}
	return got
}

func TestTPMAttestationFullFlow(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup tpmSetup
		cert  bool
		trust string
	}{
		{"rsa-ek-allowlist", tpmSetup{ek: tpmdevice.EKRSA, allowlist: true}, false, "allowlist"},
		{"ecc-ek-allowlist", tpmSetup{ek: tpmdevice.EKECC, allowlist: true}, false, "allowlist"},
		{"rsa-ek-certificate", tpmSetup{ek: tpmdevice.EKRSA, certs: true}, true, "certificate"},
		{"ecc-ek-certificate", tpmSetup{ek: tpmdevice.EKECC, certs: true}, true, "certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			te := startTPM(t, 7, tc.setup)
			var cert []byte
			if tc.cert {
				cert = te.ekCert()
			}
			node, err := te.attest(nil, cert)
			if err != nil {
				t.Fatalf("attest: %v", err)
			}
			wantID := spiffeid.RequireFromSegments(te.td, "node", "tpm", ekHashOf(t, te.dev.EKPublic()))
			if node.id != wantID {
				t.Fatalf("node id %s, want %s", node.id, wantID)
			}
			// The SVID is a valid X509-SVID of the trust domain (go-spiffe).
			id, _, err := x509svid.Verify(node.chain, x509bundle.FromX509Authorities(te.td, te.bundle))
			if err != nil || id != wantID {
				t.Fatalf("x509svid.Verify = %v, %v", id, err)
			}
			nodes, err := te.admin.ListNodes(ctxT(t))
			if err != nil || len(nodes) != 1 {
				t.Fatalf("ListNodes = %v, %v", nodes, err)
			}
			n := nodes[0]
			if n.Level != "hardware" || n.AttestationMethod != "tpm" || n.TPM == nil || n.TPM.Profile != "edge-v1" || n.TPM.EKTrust != tc.trust {
				t.Fatalf("node record %+v (tpm %+v)", n, n.TPM)
			}
			for _, sel := range []string{"attestation:tpm", "level:hardware", "tpm:profile:edge-v1", "tpm:ek:" + n.TPM.EKSHA256} {
				if !containsStr(n.Selectors, sel) {
					t.Errorf("selectors %v lack %s", n.Selectors, sel)
				}
			}
			// The audit log holds the attestation with its facts.
			recs := te.auditOf("node.attested", wantID.String())
			if len(recs) != 1 || recs[0]["profile"] != "edge-v1" || recs[0]["ek_sha256"] != n.TPM.EKSHA256 ||
				recs[0]["quote_sha256"] != n.TPM.QuoteSHA256 || recs[0]["method"] != "tpm" {
				t.Fatalf("audit node.attested = %v", recs)
			}
			// An agent registered to it gets an SVID through it.
			agent := te.registerAgent("worker", node.id)
			a := te.agentSVID(node, agent)
			if a.id.String() != agent {
				t.Fatalf("agent SVID for %s", a.id)
			}
		})
	}
}

func containsStr(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestEKCertificateIsRefusedByPlainX509 shows why the critical SAN needs
// handling: crypto/x509 alone refuses a real-shaped EK certificate.
func TestEKCertificateIsRefusedByPlainX509(t *testing.T) {
	te := startTPM(t, 7, tpmSetup{ek: tpmdevice.EKRSA, certs: true})
	der := te.ekCert()
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(te.mfr.Cert)
	_, err = cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	var unhandled x509.UnhandledCriticalExtension
	if !errors.As(err, &unhandled) {
		t.Fatalf("plain Verify = %v, want UnhandledCriticalExtension", err)
	}
	if _, err := te.attest(nil, der); err != nil {
		t.Fatalf("attest with the EK certificate: %v", err)
	}
}

// rawTPM posts a TPM request body as an anonymous client.
func (te *tpmEnv) challenge(c *client.Client, ekPub, cert, akPub []byte) (*client.TPMChallenge, error) {
	if c == nil {
		c = te.client(nil, nil)
	}
	return c.RequestTPMChallenge(ctxT(te.t), ekPub, cert, akPub)
}

func TestTPMAttestationRefusals(t *testing.T) {
	type evidenceMut func(te *tpmEnv, ch *client.TPMChallenge, ev *client.TPMEvidence)
	csr := func(t *testing.T) []byte {
		_, c, err := client.NewKeyAndCSR()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Refusals at the challenge.
	t.Run("challenge", func(t *testing.T) {
		te := startTPM(t, 11, tpmSetup{ek: tpmdevice.EKECC, allowlist: false, certs: true})
		other, err := tpmtest.NewCA("Other Maker")
		if err != nil {
			t.Fatal(err)
		}
		ekKey, _ := attest.ParseTPM2BPublic("ek", te.dev.EKPublic())
		foreignCert, err := other.IssueEKCert(ekKey.Key)
		if err != nil {
			t.Fatal(err)
		}
		// The certified key in a public area other than the TCG template's
		// (another auth policy): it would be another node ID.
		area, err := tpm2.Unmarshal[tpm2.TPMTPublic](te.dev.EKPublic()[2:])
		if err != nil {
			t.Fatal(err)
		}
		area.AuthPolicy = tpm2.TPM2BDigest{Buffer: bytes.Repeat([]byte{7}, 32)}
		otherArea := tpm2.Marshal(tpm2.New2B(*area))
		unrestricted := tpmdevice.AKTemplate
		unrestricted.ObjectAttributes.Restricted = false
		notFixed := tpmdevice.AKTemplate
		notFixed.ObjectAttributes.FixedTPM = false
		notFixed.ObjectAttributes.FixedParent = false
		akOf := func(tmpl tpm2.TPMTPublic) []byte {
			rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tmpl)}.Execute(te.tpm)
			if err != nil {
				t.Fatalf("create AK variant: %v", err)
			}
			tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(te.tpm)
			return tpm2.Marshal(rsp.OutPublic)
		}
		for _, tc := range []struct {
			name           string
			ek, cert, ak   []byte
			want           string
			wantStatusCode int
		}{
			{"unknown EK", te.dev.EKPublic(), nil, te.dev.AKPublic(), "tpm-ek-untrusted", 403},
			{"EK cert not chaining", te.dev.EKPublic(), foreignCert, te.dev.AKPublic(), "tpm-ek-cert-invalid", 403},
			{"EK cert for another key", te.dev.EKPublic(), mustIssue(t, te.mfr), te.dev.AKPublic(), "tpm-ek-cert-invalid", 403},
			{"unrestricted AK", te.dev.EKPublic(), te.ekCert(), akOf(unrestricted), "tpm-ak-invalid", 400},
			{"AK not fixedTPM", te.dev.EKPublic(), te.ekCert(), akOf(notFixed), "tpm-ak-invalid", 400},
			{"AK is the EK", te.dev.EKPublic(), te.ekCert(), te.dev.EKPublic(), "tpm-ak-invalid", 400},
			{"garbage EK", []byte("garbage"), nil, te.dev.AKPublic(), "tpm-malformed", 400},
			{"garbage AK", te.dev.EKPublic(), te.ekCert(), []byte{0, 3, 1, 2, 3}, "tpm-malformed", 400},
			{"EK with trailing bytes", append(te.dev.EKPublic(), 0), te.ekCert(), te.dev.AKPublic(), "tpm-malformed", 400},
			{"garbage cert", te.dev.EKPublic(), []byte("garbage"), te.dev.AKPublic(), "tpm-ek-cert-invalid", 403},
			{"certified key in another public area", otherArea, te.ekCert(), te.dev.AKPublic(), "tpm-ek-untrusted", 403},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := te.challenge(nil, tc.ek, tc.cert, tc.ak)
				var p *client.Problem
				if !errors.As(err, &p) || p.Name() != tc.want || p.Status != tc.wantStatusCode {
					t.Fatalf("challenge = %v, want %s (%d)", err, tc.want, tc.wantStatusCode)
				}
			})
		}
		// Not base64 at all.
		for _, field := range []string{"ek_public", "ak_public", "ek_cert"} {
			body := map[string]string{"ek_public": b64s(te.dev.EKPublic()), "ak_public": b64s(te.dev.AKPublic()), "ek_cert": b64s(te.ekCert())}
			body[field] = "%%% not base64"
			err := te.client(nil, nil).Do(ctxT(t), http.MethodPost, "/v1/nodes/attest/tpm/challenge", body, nil)
			if problemName(err) != "tpm-malformed" {
				t.Errorf("%s not base64: %v", field, err)
			}
		}
		if nodes, err := te.admin.ListNodes(ctxT(t)); err != nil || len(nodes) != 0 {
			t.Fatalf("nodes after refusals: %+v, %v", nodes, err)
		}
	})

	// Refusals at the verify step, each on a fresh challenge.
	te := startTPM(t, 12, tpmSetup{ek: tpmdevice.EKRSA, allowlist: true})
	flipLast := func(b []byte) []byte { b = bytes.Clone(b); b[len(b)-1] ^= 1; return b }
	for _, tc := range []struct {
		name string
		mut  evidenceMut
		want string
	}{
		{"wrong secret", func(_ *tpmEnv, _ *client.TPMChallenge, ev *client.TPMEvidence) { ev.Secret = flipLast(ev.Secret) }, "tpm-credential-mismatch"},
		{"wrong nonce", func(te *tpmEnv, ch *client.TPMChallenge, ev *client.TPMEvidence) {
			ev.Quote, ev.Signature = te.quote(flipLast(ch.Nonce), ch.PCRSelection["sha256"])
		}, "tpm-nonce-mismatch"},
		{"other PCRs than asked", func(te *tpmEnv, ch *client.TPMChallenge, ev *client.TPMEvidence) {
			ev.Quote, ev.Signature = te.quote(ch.Nonce, []int{0, 1, 2})
		}, "tpm-pcr-selection-mismatch"},
		{"PCR values not those quoted", func(_ *tpmEnv, _ *client.TPMChallenge, ev *client.TPMEvidence) {
			ev.PCRs[7] = flipLast(ev.PCRs[7])
		}, "tpm-pcr-digest-mismatch"},
		{"missing PCR value", func(_ *tpmEnv, _ *client.TPMChallenge, ev *client.TPMEvidence) { delete(ev.PCRs, 16) }, "tpm-pcr-selection-mismatch"},
		{"tampered quote", func(_ *tpmEnv, _ *client.TPMChallenge, ev *client.TPMEvidence) {
			// A later clock: still a well-formed quote, no longer signed.
			q, err := tpm2.Unmarshal[tpm2.TPMSAttest](ev.Quote)
			if err != nil {
				panic(err)
			}
			q.ClockInfo.Clock += 1000
			ev.Quote = tpm2.Marshal(*q)
		}, "tpm-quote-signature-invalid"},
		{"tampered magic", func(_ *tpmEnv, _ *client.TPMChallenge, ev *client.TPMEvidence) {
			ev.Quote = bytes.Clone(ev.Quote)
			ev.Quote[0] ^= 1
		}, "tpm-quote-invalid"},
		{"not a quote", func(te *tpmEnv, ch *client.TPMChallenge, ev *client.TPMEvidence) {
			ev.Quote, ev.Signature = te.certifyAK(ch.Nonce)
		}, "tpm-quote-invalid"},
		{"tampered signature", func(_ *tpmEnv, _ *client.TPMChallenge, ev *client.TPMEvidence) {
			sig, _ := tpm2.Unmarshal[tpm2.TPMTSignature](ev.Signature)
			ecc, _ := sig.Signature.ECDSA()
			ecc.SignatureS.Buffer = flipLast(ecc.SignatureS.Buffer)
			ev.Signature = tpm2.Marshal(*sig)
		}, "tpm-quote-signature-invalid"},
		{"garbage quote", func(_ *tpmEnv, _ *client.TPMChallenge, ev *client.TPMEvidence) {
			ev.Quote = append([]byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18}, "garbage"...)
		}, "tpm-malformed"},
		{"garbage signature", func(_ *tpmEnv, _ *client.TPMChallenge, ev *client.TPMEvidence) { ev.Signature = []byte("garbage") }, "tpm-malformed"},
		{"signature with trailing bytes", func(_ *tpmEnv, _ *client.TPMChallenge, ev *client.TPMEvidence) {
			ev.Signature = append(bytes.Clone(ev.Signature), 0)
		}, "tpm-malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, ev := te.answerFresh()
			tc.mut(te, ch, &ev)
			_, err := te.client(nil, nil).AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, csr(t))
			if problemName(err) != tc.want {
				t.Fatalf("verify = %v, want %s", err, tc.want)
			}
		})
	}

	t.Run("credential for another AK", func(t *testing.T) {
		// The challenge names an AK that is not the one the TPM holds:
		// the TPM refuses to activate it, and no guess is accepted.
		other := tpmdevice.AKTemplate
		other.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: bytes.Repeat([]byte{1}, 32)}, Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)}})
		rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(other)}.Execute(te.tpm)
		if err != nil {
			t.Fatal(err)
		}
		tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(te.tpm)
		ch, err := te.challenge(nil, te.dev.EKPublic(), nil, tpm2.Marshal(rsp.OutPublic))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := te.dev.Activate(ch.CredentialBlob, ch.EncryptedSecret); err == nil {
			t.Fatal("the TPM activated a credential made for another AK")
		}
		ev := te.evidence(ch)
		ev.Secret = make([]byte, 32)
		_, err = te.client(nil, nil).AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, csr(t))
		if problemName(err) != "tpm-credential-mismatch" {
			t.Fatalf("verify = %v", err)
		}
	})

	t.Run("replay", func(t *testing.T) {
		ch, ev := te.answerFresh()
		if _, err := te.client(nil, nil).AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, csr(t)); err != nil {
			t.Fatalf("first answer: %v", err)
		}
		_, err := te.client(nil, nil).AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, csr(t))
		if problemName(err) != "tpm-challenge-used" {
			t.Fatalf("same session again = %v", err)
		}
		// The old quote on a new challenge: its nonce is stale.
		ch2, ev2 := te.answerFresh()
		ev2.Quote, ev2.Signature = ev.Quote, ev.Signature
		_, err = te.client(nil, nil).AnswerTPMChallenge(ctxT(t), ch2.SessionID, ev2, csr(t))
		if problemName(err) != "tpm-nonce-mismatch" {
			t.Fatalf("old quote, new challenge = %v", err)
		}
	})

	t.Run("concurrent answers to one challenge", func(t *testing.T) {
		ch, ev := te.answerFresh()
		const n = 8
		errs := make(chan error, n)
		for range n {
			go func() {
				_, err := te.client(nil, nil).AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, csr(t))
				errs <- err
			}()
		}
		won := 0
		for range n {
			switch err := <-errs; {
			case err == nil:
				won++
			case problemName(err) != "tpm-challenge-used":
				t.Errorf("a losing answer = %v", err)
			}
		}
		if won != 1 {
			t.Fatalf("%d answers to one challenge were accepted, want 1", won)
		}
	})

	t.Run("expired challenge", func(t *testing.T) {
		ch, ev := te.answerFresh()
		te.skew.Add(int64(2 * time.Minute))
		defer te.skew.Add(-int64(2 * time.Minute))
		_, err := te.client(nil, nil).AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, csr(t))
		if problemName(err) != "tpm-challenge-expired" {
			t.Fatalf("verify = %v", err)
		}
	})

	t.Run("unknown session", func(t *testing.T) {
		_, ev := te.answerFresh()
		for _, id := range []string{"", "00", "zz", strings.Repeat("a", 1000)} {
			_, err := te.client(nil, nil).AnswerTPMChallenge(ctxT(t), id, ev, csr(t))
			if problemName(err) != "tpm-challenge-unknown" {
				t.Errorf("session %q: %v", id, err)
			}
		}
	})

	t.Run("garbage in every field", func(t *testing.T) {
		ch, ev := te.answerFresh()
		good := map[string]any{"session_id": ch.SessionID, "secret": b64s(ev.Secret), "quote": b64s(ev.Quote),
			"signature": b64s(ev.Signature), "pcrs": map[string]any{"sha256": map[string]string{"0": strings.Repeat("00", 32)}}, "csr": string(csr(t))}
		for _, field := range []string{"secret", "quote", "signature"} {
			body := map[string]any{}
			for k, v := range good {
				body[k] = v
			}
			body[field] = "!!not base64!!"
			err := te.client(nil, nil).Do(ctxT(t), http.MethodPost, "/v1/nodes/attest/tpm/verify", body, nil)
			if problemName(err) != "tpm-malformed" {
				t.Errorf("%s: %v", field, err)
			}
		}
		body := map[string]any{}
		for k, v := range good {
			body[k] = v
		}
		body["pcrs"] = map[string]any{"sha256": map[string]string{"0": "xyz"}}
		if err := te.client(nil, nil).Do(ctxT(t), http.MethodPost, "/v1/nodes/attest/tpm/verify", body, nil); problemName(err) != "tpm-malformed" {
			t.Errorf("pcr not hex: %v", err)
		}
		body["pcrs"] = map[string]any{"sha1": map[string]string{"0": "00"}}
		if err := te.client(nil, nil).Do(ctxT(t), http.MethodPost, "/v1/nodes/attest/tpm/verify", body, nil); problemName(err) != "tpm-pcr-selection-mismatch" {
			t.Errorf("sha1 bank: %v", err)
		}
		// An unreadable answer proves nothing and leaves the challenge as
		// it was: the device's own answer is accepted.
		if _, err := te.client(nil, nil).AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, csr(t)); err != nil {
			t.Errorf("honest answer after unreadable ones = %v", err)
		}
	})

	t.Run("challenges asked in the device's name", func(t *testing.T) {
		// Anyone may ask challenges for a public EK, from the device's own
		// network: none is stored, none takes the device's away. Those
		// asked before still answer.
		first, firstEv := te.answerFresh()
		for i := range 100 {
			if _, err := te.challenge(nil, te.dev.EKPublic(), nil, te.dev.AKPublic()); err != nil {
				t.Fatalf("challenge %d: %v", i, err)
			}
		}
		ch, ev := te.answerFresh()
		if _, err := te.client(nil, nil).AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, csr(t)); err != nil {
			t.Fatalf("the device's own answer: %v", err)
		}
		if _, err := te.client(nil, nil).AnswerTPMChallenge(ctxT(t), first.SessionID, firstEv, csr(t)); err != nil {
			t.Fatalf("a challenge asked before 100 others: %v", err)
		}
	})

	// Five answers were accepted (the replay test's first, one of the
	// concurrent ones, the honest one after unreadable ones, the
	// device's two among challenges asked in its name). Refusals are recorded with their reason at most once a
	// minute per EK, with a count of those that were not: those after
	// the device proved its TPM (the secret matched: 12 of them above)
	// and those anyone could cause (a wrong secret, a replay, an
	// unreadable answer) counted apart.
	nodeID := spiffeid.RequireFromSegments(te.td, "node", "tpm", ekHashOf(t, te.dev.EKPublic())).String()
	refusals := te.auditOf("node.attestation_refused", nodeID)
	// One proven (the first, the wrong nonce); unproven: the wrong
	// secret, and the expired answer (sent with the clock two minutes
	// ahead, so a new minute for the limiter).
	if len(refusals) != 3 {
		for _, r := range refusals {
			t.Log(r["reason"])
		}
		t.Errorf("%d refusals recorded, want 1 proven + 2 unproven", len(refusals))
	}
	for _, r := range refusals {
		if r["reason"] == nil || r["ek_sha256"] == nil {
			t.Fatalf("refusal record without reason or EK: %v", r)
		}
	}
	if got := te.auditOf("node.attested", nodeID); len(got) != 5 {
		t.Fatalf("%d attestations recorded, want 5", len(got))
	}
	te.skew.Add(int64(4 * time.Minute))
	defer te.skew.Add(-int64(4 * time.Minute))
	ch, ev := te.answerFresh()
	ev.Secret = flipLast(ev.Secret)
	if _, err := te.client(nil, nil).AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, csr(t)); problemName(err) != "tpm-credential-mismatch" {
		t.Fatalf("wrong secret = %v", err)
	}
	refusals = te.auditOf("node.attestation_refused", nodeID)
	last := refusals[len(refusals)-1]
	if n, _ := last["refusals_not_recorded"].(float64); len(refusals) != 4 || n < 3 {
		t.Fatalf("after a minute: %d records, the last %v; want 4, counting at least 3 not recorded", len(refusals), last)
	}
}

func mustIssue(t *testing.T, ca *tpmtest.CA) []byte {
	t.Helper()
	// A certificate of the right maker for some other EK.
	dev, err := attest.ParseTPM2BPublic("ek", mustEK(t))
	if err != nil {
		t.Fatal(err)
	}
	der, err := ca.IssueEKCert(dev.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// mustEK is the RSA EK public area of the TCG template with a made-up
// modulus: a well-formed EK of no TPM here.
func mustEK(t *testing.T) []byte {
	t.Helper()
	tmpl := tpm2.RSAEKTemplate
	n := bytes.Repeat([]byte{0xc3}, 256)
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: n})
	return tpm2.Marshal(tpm2.New2B(tmpl))
}

func b64s(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// attestedECCNode starts a simulator (seed) with an ECC EK on the
// allowlist, attests it, and returns it with its node credential and a
// client of it.
func attestedECCNode(t *testing.T, seed int64) (*tpmEnv, identity, *client.Client) {
	t.Helper()
	te := startTPM(t, seed, tpmSetup{ek: tpmdevice.EKECC, allowlist: true})
	node, err := te.attest(nil, nil)
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	return te, node, te.client(node.chain, node.key)
}

// answerFresh asks a challenge for the device and answers it honestly.
func (te *tpmEnv) answerFresh() (*client.TPMChallenge, client.TPMEvidence) {
	te.t.Helper()
	return te.answered(te.t, nil, nil)
}

// answered asks a challenge for the device as c (nil: anonymously), with
// the EK certificate cert if any, and answers it honestly; t is the
// (sub)test.
// drift extends PCR 16 (debug, resettable), as a changed boot would,
// and has the node renew over c: its renewal is refused, and the node
// marked drifted.
func (te *tpmEnv) drift(t testing.TB, c *client.Client) {
	t.Helper()
	if err := tpmdevice.ExtendPCR(te.tpm, 16, bytes.Repeat([]byte{0xcd}, 32)); err != nil {
		t.Fatal(err)
	}
	if _, err := te.attest(c, nil); problemName(err) != "tpm-pcr-policy-mismatch" {
		t.Fatalf("renewal after drift = %v, want tpm-pcr-policy-mismatch", err)
	}
}

func (te *tpmEnv) answered(t testing.TB, c *client.Client, cert []byte) (*client.TPMChallenge, client.TPMEvidence) {
	t.Helper()
	ch, err := te.challenge(c, te.dev.EKPublic(), cert, te.dev.AKPublic())
	if err != nil {
		t.Fatalf("challenge: %v", err)
	}
	ev, err := client.Answer(te.dev, ch)
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	return ch, ev
}

// evidence is an honest quote and PCR values for ch, without a secret.
func (te *tpmEnv) evidence(ch *client.TPMChallenge) client.TPMEvidence {
	te.t.Helper()
	q, sig := te.quote(ch.Nonce, ch.PCRSelection["sha256"])
	vals, err := te.dev.ReadPCRs(ch.PCRSelection["sha256"])
	if err != nil {
		te.t.Fatal(err)
	}
	return client.TPMEvidence{Quote: q, Signature: sig, PCRs: vals}
}

func (te *tpmEnv) quote(nonce []byte, pcrs []int) ([]byte, []byte) {
	te.t.Helper()
	q, sig, err := te.dev.Quote(nonce, pcrs)
	if err != nil {
		te.t.Fatal(err)
	}
	return q, sig
}

// certifyAK has the AK certify itself over nonce: a genuine TPM-signed
// TPMS_ATTEST, of type certify rather than quote.
func (te *tpmEnv) certifyAK(nonce []byte) ([]byte, []byte) {
	te.t.Helper()
	q, sig, err := te.dev.CertifyAK(nonce)
	if err != nil {
		te.t.Fatal(err)
	}
	return q, sig
}

func TestTPMDriftStopsRenewalAndAgents(t *testing.T) {
	te, node, nodeClient := attestedECCNode(t, 21)
	agent := te.registerAgent("edge-worker", node.id)
	a := te.agentSVID(node, agent)

	// Renewal over mTLS with a fresh quote, while the PCRs still match.
	renewed, err := te.attest(nodeClient, nil)
	if err != nil {
		t.Fatalf("renewal: %v", err)
	}
	if renewed.id != node.id || renewed.chain[0].SerialNumber.Cmp(node.chain[0].SerialNumber) == 0 {
		t.Fatalf("renewal gave %s serial %s", renewed.id, renewed.chain[0].SerialNumber)
	}
	// Renewal through /v1/svid/x509 without a quote is refused.
	_, csr, _ := client.NewKeyAndCSR()
	if _, err := nodeClient.X509SVID(ctxT(t), node.id.String(), csr); problemName(err) != "forbidden" {
		t.Fatalf("renewal without a quote = %v", err)
	}

	// The boot state changes: PCR 7 (secure boot policy) is extended.
	if err := tpmdevice.ExtendPCR(te.tpm, 7, bytes.Repeat([]byte{0xab}, 32)); err != nil {
		t.Fatal(err)
	}
	if _, err := te.attest(nodeClient, nil); problemName(err) != "tpm-pcr-policy-mismatch" {
		t.Fatalf("renewal after drift = %v, want tpm-pcr-policy-mismatch", err)
	}
	nodes, err := te.admin.ListNodes(ctxT(t))
	if err != nil || len(nodes) != 1 || !nodes[0].Drifted {
		t.Fatalf("node after drift: %+v, %v", nodes, err)
	}
	// Agents on it get nothing more: not through the node, not by renewing.
	key, _, _ := client.NewKeyAndCSR()
	acsr, _ := client.CSRFor(key, spiffeid.RequireFromString(agent))
	if _, err := nodeClient.X509SVID(ctxT(t), agent, acsr); problemName(err) != "node-drifted" {
		t.Fatalf("agent SVID through a drifted node = %v", err)
	}
	if _, err := te.client(a.chain, a.key).X509SVID(ctxT(t), agent, acsr); problemName(err) != "node-drifted" {
		t.Fatalf("agent renewal on a drifted node = %v", err)
	}
	if _, err := nodeClient.JWTSVID(ctxT(t), agent, []string{"x"}); problemName(err) != "node-drifted" {
		t.Fatalf("agent JWT through a drifted node = %v", err)
	}
	refusals := te.auditOf("node.attestation_refused", node.id.String())
	if len(refusals) != 1 || refusals[0]["node_marked"] != "drifted" || refusals[0]["pcrs_sha256"] == nil {
		t.Fatalf("drift record = %v", refusals)
	}

	// Another node's EK cannot renew this node, and this node cannot
	// renew with a foreign EK.
	if _, err := te.challenge(nodeClient, mustEK(t), nil, te.dev.AKPublic()); problemName(err) != "tpm-ek-untrusted" {
		t.Fatalf("renewal with another EK = %v", err)
	}
	// A node asks as many renewal challenges as it likes: none is stored.
	for i := range 20 {
		if _, err := te.challenge(nodeClient, te.dev.EKPublic(), nil, te.dev.AKPublic()); err != nil {
			t.Fatalf("renewal challenge %d: %v", i, err)
		}
	}
}

func TestAgentRequiringHardwareAttestation(t *testing.T) {
	te := startTPM(t, 31, tpmSetup{ek: tpmdevice.EKRSA, allowlist: true})
	hw, err := te.attest(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tokenNode := te.joinNode()
	id := spiffeid.RequireFromSegments(te.td, "agent", "sensitive").String()
	_, err = te.admin.CreateAgent(ctxT(t), &client.Agent{SPIFFEID: id, NodeIDs: []string{hw.id.String(), tokenNode.id.String()},
		RequireHardwareAttestation: true, Accountability: client.Accountability{Operator: "team-a"}})
	if err != nil {
		t.Fatal(err)
	}
	te.agentSVID(hw, id)
	key, _, _ := client.NewKeyAndCSR()
	acsr, _ := client.CSRFor(key, spiffeid.RequireFromString(id))
	if _, err := te.client(tokenNode.chain, tokenNode.key).X509SVID(ctxT(t), id, acsr); problemName(err) != "agent-not-allowed-on-node" {
		t.Fatalf("token-attested host = %v", err)
	}
}

// TestTPMAttestationDisabledByDefault: without attestation.tpm every
// request is tpm-attestation-disabled, but for a body that does not read
// (docs/attestation.md).
func TestTPMAttestationDisabledByDefault(t *testing.T) {
	e := start(t, "org-a.example")
	tests := []struct {
		name, path string
		body       map[string]string
		want       string
	}{
		{"challenge", "/v1/nodes/attest/tpm/challenge", map[string]string{"ek_public": b64s(mustEK(t)), "ak_public": b64s(mustEK(t))}, "tpm-attestation-disabled"},
		{"challenge of bytes that are no TPM2B_PUBLIC", "/v1/nodes/attest/tpm/challenge", map[string]string{"ek_public": "AAAA", "ak_public": "AAAA"}, "tpm-attestation-disabled"},
		{"challenge without ek_public", "/v1/nodes/attest/tpm/challenge", map[string]string{"ak_public": b64s(mustEK(t))}, "tpm-malformed"},
		{"challenge whose ek_public is not base64", "/v1/nodes/attest/tpm/challenge", map[string]string{"ek_public": "!", "ak_public": b64s(mustEK(t))}, "tpm-malformed"},
		{"challenge with an unknown field", "/v1/nodes/attest/tpm/challenge", map[string]string{"ek_public": b64s(mustEK(t)), "ak_public": b64s(mustEK(t)), "ek": "x"}, "unknown-field"},
		{"verify of nothing", "/v1/nodes/attest/tpm/verify", map[string]string{}, "tpm-attestation-disabled"},
		{"verify", "/v1/nodes/attest/tpm/verify", map[string]string{"session_id": "x", "secret": "AAAA", "quote": "AAAA", "signature": "AAAA", "csr": "x"}, "tpm-attestation-disabled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := e.client(nil, nil).Do(ctxT(t), http.MethodPost, tc.path, tc.body, nil)
			if problemName(err) != tc.want {
				t.Fatalf("POST %s = %v, want %s", tc.path, err, tc.want)
			}
		})
	}
}

// A device that proved its TPM (any TPM of a trusted maker) cannot grow
// the audit log without end: its refusals are recorded at most once a
// minute per EK, the next record counting those that were not. A refusal
// that marks a known node drifted changes the node, and is always
// recorded.
func TestTPMProvenRefusalsAreRateLimited(t *testing.T) {
	te := startTPM(t, 41, tpmSetup{ek: tpmdevice.EKECC, certs: true})
	cert := te.ekCert()
	nodeID := spiffeid.RequireFromSegments(te.td, "node", "tpm", ekHashOf(t, te.dev.EKPublic())).String()
	answer := func(mut func(ev *client.TPMEvidence)) error {
		t.Helper()
		ch, ev := te.answered(t, nil, cert)
		if mut != nil {
			mut(&ev)
		}
		_, csr, _ := client.NewKeyAndCSR()
		_, err := te.client(nil, nil).AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, csr)
		return err
	}
	wrongPCR := func(ev *client.TPMEvidence) { ev.PCRs[0] = bytes.Repeat([]byte{0xee}, 32) }
	refusals := func() []map[string]any { return te.auditOf("node.attestation_refused", nodeID) }
	minute := func() { te.skew.Add(int64(61 * time.Second)) }

	// A device never admitted: twenty refusals in a minute, one record.
	for range 20 {
		if err := answer(wrongPCR); problemName(err) != "tpm-pcr-digest-mismatch" {
			t.Fatalf("wrong PCR values = %v", err)
		}
	}
	if got := refusals(); len(got) != 1 || got[0]["reason"] == nil {
		t.Fatalf("after 20 proven refusals in a minute: %d records, want 1", len(got))
	}
	minute()
	if err := answer(wrongPCR); problemName(err) != "tpm-pcr-digest-mismatch" {
		t.Fatalf("wrong PCR values = %v", err)
	}
	got := refusals()
	if n, _ := got[len(got)-1]["refusals_not_recorded"].(float64); len(got) != 2 || n != 19 {
		t.Fatalf("a minute later: %d records, the last %v; want 2, counting 19 not recorded", len(got), got[len(got)-1])
	}

	// Admitted, then refused in the same minute: the drift marks the node
	// and is recorded, though a refusal was just recorded; refusals of
	// the node already drifted are limited again.
	minute()
	if err := answer(nil); err != nil {
		t.Fatalf("attest: %v", err)
	}
	if err := answer(wrongPCR); problemName(err) != "tpm-pcr-digest-mismatch" {
		t.Fatalf("wrong PCR values = %v", err)
	}
	if err := tpmdevice.ExtendPCR(te.tpm, 7, bytes.Repeat([]byte{0xab}, 32)); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := answer(nil); problemName(err) != "tpm-pcr-policy-mismatch" {
			t.Fatalf("after drift = %v", err)
		}
	}
	got = refusals()
	if len(got) != 4 || got[3]["node_marked"] != "drifted" {
		t.Fatalf("%d records, the last %v; want 4, the last marking the node drifted", len(got), got[len(got)-1])
	}
	nodes, err := te.admin.ListNodes(ctxT(t))
	if err != nil || len(nodes) != 1 || !nodes[0].Drifted {
		t.Fatalf("nodes = %+v, %v; want the node drifted", nodes, err)
	}
}

// One TPM holds a certified EK of each type. With ek_cert_key_types set
// to one, certificate trust admits that one only: a banned node's TPM
// cannot come back as another node with its other EK. The default admits
// both (the limitation docs/attestation.md states).
func TestTPMCertKeyTypesHoldABan(t *testing.T) {
	for _, tc := range []struct {
		name        string
		types       []string
		first, then string // EK types: the one banned, the other tried next
		want        string // problem for the other EK ("" admitted)
	}{
		{"default admits both", nil, tpmdevice.EKRSA, tpmdevice.EKECC, ""},
		{"rsa only", []string{"rsa"}, tpmdevice.EKRSA, tpmdevice.EKECC, "tpm-ek-untrusted"},
		{"ecc only", []string{"ecc"}, tpmdevice.EKECC, tpmdevice.EKRSA, "tpm-ek-untrusted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			te := startTPM(t, 51, tpmSetup{ek: tc.first, certs: true}, func(c *authority.Config) {
				c.Attestation.TPM.EKCertKeyTypes = tc.types
			})
			node, err := te.attest(nil, te.ekCert())
			if err != nil {
				t.Fatalf("attest with the %s EK: %v", tc.first, err)
			}
			if _, err := te.admin.BanNode(ctxT(t), node.id.String(), "stolen"); err != nil {
				t.Fatal(err)
			}
			if _, err := te.challenge(nil, te.dev.EKPublic(), te.ekCert(), te.dev.AKPublic()); problemName(err) != "node-banned" {
				t.Fatalf("a challenge for the banned %s EK = %v, want node-banned", tc.first, err)
			}
			te.dev.Close()
			if te.dev, err = tpmdevice.Open(te.tpm, tpmdevice.Options{EK: tc.then}); err != nil {
				t.Fatal(err)
			}
			other, err := te.attest(nil, te.ekCert())
			if problemName(err) != tc.want || (err == nil && other.id == node.id) {
				t.Fatalf("the banned TPM's %s EK = %v, %v; want %q", tc.then, other.id, err, tc.want)
			}
		})
	}
}

// A challenge outlives a restart (its state is sealed with a key kept in
// the data directory), and its EK's trust is checked again as configured
// at the answer: an EK removed from the allowlist meanwhile is refused.
// An allowlisted EK sent with a certificate that is not one for its key
// is refused at the challenge.
func TestTPMChallengeAcrossRestart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*authority.TPMConfig)
		want   string
	}{
		{"EK still allowlisted", func(*authority.TPMConfig) {}, ""},
		{"EK removed from the allowlist", func(c *authority.TPMConfig) { c.EKAllowlist = nil }, "tpm-ek-untrusted"},
		{"TPM attestation turned off", func(c *authority.TPMConfig) { *c = authority.TPMConfig{} }, "tpm-attestation-disabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			te := startTPM(t, 61, tpmSetup{ek: tpmdevice.EKRSA, allowlist: true, certs: true})
			for _, cert := range [][]byte{[]byte("garbage"), mustIssue(t, te.mfr)} {
				if _, err := te.challenge(nil, te.dev.EKPublic(), cert, te.dev.AKPublic()); problemName(err) != "tpm-ek-cert-invalid" {
					t.Fatalf("allowlisted EK with a certificate not for it = %v", err)
				}
			}
			ch, ev := te.answerFresh()
			te.stop()
			cfg := te.a.Config()
			again := start(t, "org-a.example", func(c *authority.Config) {
				c.DataDir, c.Attestation = cfg.DataDir, cfg.Attestation
				tc.change(&c.Attestation.TPM)
			})
			_, csr, _ := client.NewKeyAndCSR()
			_, err := again.client(nil, nil).AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, csr)
			if problemName(err) != tc.want {
				t.Fatalf("answer after the restart = %v, want %q", err, tc.want)
			}
			// Accepted, the challenge is used up; refused before the
			// secret was checked, it is left as it was.
			again2 := "tpm-challenge-used"
			if tc.want != "" {
				again2 = tc.want
			}
			if _, err := again.client(nil, nil).AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, csr); problemName(err) != again2 {
				t.Fatalf("the same answer again = %v, want %s", err, again2)
			}
		})
	}
}

// A challenge asked with an EK trusted by its certificate is answered
// after a restart that trusts the EK by the allowlist instead (its
// certificate's issuer no longer configured): the EK is trusted as
// configured at the answer.
func TestTPMChallengeAcrossRestartToTheAllowlist(t *testing.T) {
	te := startTPM(t, 62, tpmSetup{ek: tpmdevice.EKRSA, certs: true})
	ch, ev := te.answered(t, nil, te.ekCert())
	te.stop()
	cfg := te.a.Config()
	again := start(t, "org-a.example", func(c *authority.Config) {
		c.DataDir, c.Attestation = cfg.DataDir, cfg.Attestation
		c.Attestation.TPM.EKCARoots = nil
		c.Attestation.TPM.EKAllowlist = []string{ekHashOf(t, te.dev.EKPublic())}
	})
	_, csr, _ := client.NewKeyAndCSR()
	if _, err := again.client(nil, nil).AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, csr); err != nil {
		t.Fatalf("answer after a restart that allowlists the EK and drops its certificate's issuer = %v", err)
	}
}

// tpmMarks counts the used marks in a stopped authority's store.
func tpmMarks(t *testing.T, dataDir string) int {
	t.Helper()
	st, err := bolt.Open(filepath.Join(dataDir, "mandate.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n := 0
	err = st.View(ctxT(t), func(tx store.Tx) error {
		return tx.Scan(attest.BucketTPMSessions, nil, nil, func(_, _ []byte) error { n++; return nil })
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return n
}

// Whoever knows a device's EK public area (it is public) can ask
// challenges in its name and answer them with anything: such answers
// prove no TPM, are refused without writing to the store (no used mark),
// and the device still answers its own challenge after them. Only
// answers whose activated secret matched use a challenge up.
func TestTPMUnprovenAnswersWriteNothing(t *testing.T) {
	te, _, nodeClient := attestedECCNode(t, 71) // one mark
	_, goodCSR, err := client.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	anon := te.client(nil, nil)
	for _, tc := range []struct {
		name  string
		asker *client.Client // who asks the challenge and answers honestly
		send  func(ch *client.TPMChallenge, ev client.TPMEvidence) error
		want  string
	}{
		{"wrong secret", anon, func(ch *client.TPMChallenge, ev client.TPMEvidence) error {
			ev.Secret = bytes.Repeat([]byte{1}, 32)
			_, err := anon.AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, goodCSR)
			return err
		}, "tpm-credential-mismatch"},
		{"garbage evidence", anon, func(ch *client.TPMChallenge, _ client.TPMEvidence) error {
			ev := client.TPMEvidence{Secret: bytes.Repeat([]byte{1}, 32), Quote: []byte{1}, Signature: []byte{1}, PCRs: map[int][]byte{0: make([]byte, 32)}}
			_, err := anon.AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, goodCSR)
			return err
		}, "tpm-credential-mismatch"},
		{"unreadable answer", anon, func(ch *client.TPMChallenge, _ client.TPMEvidence) error {
			return anon.Do(ctxT(t), http.MethodPost, "/v1/nodes/attest/tpm/verify",
				map[string]any{"session_id": ch.SessionID, "secret": "!!", "quote": "x", "signature": "y", "csr": string(goodCSR)}, nil)
		}, "tpm-malformed"},
		{"bad CSR", anon, func(ch *client.TPMChallenge, ev client.TPMEvidence) error {
			_, err := anon.AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, []byte("not a CSR"))
			return err
		}, "invalid-csr"},
		{"renewal answered by another caller", nodeClient, func(ch *client.TPMChallenge, ev client.TPMEvidence) error {
			_, err := anon.AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, goodCSR)
			return err
		}, "forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, ev := te.answered(t, tc.asker, nil)
			for range 3 {
				if err := tc.send(ch, ev); problemName(err) != tc.want {
					t.Fatalf("unproven answer = %v, want %s", err, tc.want)
				}
			}
			_, csr, _ := client.NewKeyAndCSR()
			if _, err := tc.asker.AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, csr); err != nil {
				t.Fatalf("the device's answer after unproven ones = %v", err)
			}
			if _, err := tc.asker.AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, csr); problemName(err) != "tpm-challenge-used" {
				t.Fatalf("its replay = %v, want tpm-challenge-used", err)
			}
		})
	}
	te.stop()
	if got, want := tpmMarks(t, te.dataDir), 1+5; got != want {
		t.Fatalf("%d used marks stored, want %d (the accepted answers' only)", got, want)
	}
}

// A TPM node's SVID replaced by a renewal still gets its agents' SVIDs
// for 30 seconds; one the node held when it drifted gets none once an
// attestation matches again: every request made with it was refused
// since the drift (a copy taken from the device in its drifted state
// must not come back with the recovery).
func TestTPMDriftedSVIDGetsNoGraceAfterRecovery(t *testing.T) {
	te := startTPM(t, 23, tpmSetup{ek: tpmdevice.EKECC, allowlist: true})
	node, err := te.attest(nil, nil)
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	agent := te.registerAgent("edge-worker", node.id)
	asks := func(from identity) error {
		key, _, _ := client.NewKeyAndCSR()
		csr, _ := client.CSRFor(key, spiffeid.RequireFromString(agent))
		_, err := te.client(from.chain, from.key).X509SVID(ctxT(t), agent, csr)
		return err
	}
	renewed, err := te.attest(te.client(node.chain, node.key), nil)
	if err != nil {
		t.Fatalf("renewal: %v", err)
	}
	if err := asks(node); err != nil {
		t.Fatalf("an agent's SVID asked with the SVID a renewal just replaced = %v, want it (30 s grace)", err)
	}

	// PCR 16 (debug, resettable) is extended: the node drifts.
	te.drift(t, te.client(renewed.chain, renewed.key))
	if err := asks(renewed); problemName(err) != "node-drifted" {
		t.Fatalf("an agent's SVID through the drifted node = %v, want node-drifted", err)
	}
	// Back to the known-good state: the node attests again.
	if _, err := (tpm2.PCRReset{PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(16), Auth: tpm2.PasswordAuth(nil)}}).Execute(te.tpm); err != nil {
		t.Fatal(err)
	}
	recovered, err := te.attest(te.client(renewed.chain, renewed.key), nil)
	if err != nil {
		t.Fatalf("attestation after the PCRs match again: %v", err)
	}
	if err := asks(renewed); problemName(err) != "svid-superseded" {
		t.Errorf("an agent's SVID asked with the SVID the node held when it drifted = %v, want svid-superseded", err)
	}
	if err := asks(recovered); err != nil {
		t.Errorf("an agent's SVID asked with the node's latest SVID = %v", err)
	}
}

// A quote of the known-good state kept back, answered after the node was
// marked drifted, does not clear the mark: its challenge was made before
// the drift. The refusal uses the challenge up and is recorded; a fresh
// attestation in a good state clears the mark as before.
func TestTPMQuoteKeptBackDoesNotClearDrift(t *testing.T) {
	te, node, nodeClient := attestedECCNode(t, 24)
	// A renewal challenge answered in the good state, its answer kept.
	kept, ev := te.answered(t, nodeClient, nil)
	// The node drifts (PCR 16 extended) and its renewal says so.
	te.drift(t, nodeClient)
	answerKept := func() error {
		_, csr, _ := client.NewKeyAndCSR()
		_, err := nodeClient.AnswerTPMChallenge(ctxT(t), kept.SessionID, ev, csr)
		return err
	}
	if err := answerKept(); problemName(err) != "tpm-challenge-expired" {
		t.Fatalf("the answer kept from before the drift = %v, want tpm-challenge-expired", err)
	}
	if nodes, err := te.admin.ListNodes(ctxT(t)); err != nil || len(nodes) != 1 || !nodes[0].Drifted {
		t.Fatalf("nodes after the kept answer: %+v, %v; want the node still drifted", nodes, err)
	}
	if err := answerKept(); problemName(err) != "tpm-challenge-used" {
		t.Fatalf("the kept answer again = %v, want tpm-challenge-used (the refusal used it up)", err)
	}
	refusals := te.auditOf("node.attestation_refused", node.id.String())
	if len(refusals) < 2 || !strings.Contains(refusals[1]["reason"].(string), "drifted after this challenge was made") {
		t.Fatalf("refusals = %v; want the drift's, then the kept answer's", refusals)
	}
	// Back in the known-good state, a fresh attestation clears the mark.
	if _, err := (tpm2.PCRReset{PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(16), Auth: tpm2.PasswordAuth(nil)}}).Execute(te.tpm); err != nil {
		t.Fatal(err)
	}
	if _, err := te.attest(nodeClient, nil); err != nil {
		t.Fatalf("attestation after the PCRs match again: %v", err)
	}
	if nodes, err := te.admin.ListNodes(ctxT(t)); err != nil || len(nodes) != 1 || nodes[0].Drifted {
		t.Fatalf("nodes after recovery: %+v, %v; want the mark cleared", nodes, err)
	}
}

// Evicting a drifted node removes its drift mark with its record, not
// the rule the mark kept: an answer kept back from before the eviction
// (a quote of the good state) does not admit the node again. Only a
// challenge made after the eviction, answered with PCRs an allowed
// profile matches, does.
func TestTPMQuoteKeptBackDoesNotOutliveAnEviction(t *testing.T) {
	te, node, nodeClient := attestedECCNode(t, 25)
	kept, ev := te.answered(t, nodeClient, nil)
	te.drift(t, nodeClient)
	if _, err := te.admin.EvictNode(ctxT(t), node.id.String(), "drifted", false); err != nil {
		t.Fatalf("evict the drifted node: %v", err)
	}
	_, csr, _ := client.NewKeyAndCSR()
	if _, err := nodeClient.AnswerTPMChallenge(ctxT(t), kept.SessionID, ev, csr); problemName(err) != "tpm-challenge-expired" {
		t.Fatalf("the answer kept from before the eviction = %v, want tpm-challenge-expired", err)
	}
	if _, err := te.attest(nodeClient, nil); problemName(err) != "tpm-pcr-policy-mismatch" {
		t.Fatalf("a fresh attestation of the drifted state = %v, want tpm-pcr-policy-mismatch", err)
	}
	if nodes, err := te.admin.ListNodes(ctxT(t)); err != nil || len(nodes) != 0 {
		t.Fatalf("nodes after the refusals: %+v, %v; want none admitted", nodes, err)
	}
	if _, err := (tpm2.PCRReset{PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(16), Auth: tpm2.PasswordAuth(nil)}}).Execute(te.tpm); err != nil {
		t.Fatal(err)
	}
	if _, err := te.attest(nodeClient, nil); err != nil {
		t.Fatalf("a fresh attestation once the PCRs match again: %v", err)
	}
}

// TPM refusals that anyone can cause, as fast as they like, without a
// credential (an EK the authority does not trust, an answer to a session
// it never opened, a wrong answer to a challenge asked with a public EK)
// are logged at DEBUG only, as guesses at join tokens are, so that a
// flood of them does not fill the log; a refusal recorded in the audit
// log is still logged at INFO.
func TestTPMRefusalsAnyoneCausesLoggedAtDebug(t *testing.T) {
	te := startTPM(t, 73, tpmSetup{ek: tpmdevice.EKECC, allowlist: true})
	anon := te.client(nil, nil)
	_, csr, err := client.NewKeyAndCSR()
	if err != nil {
		t.Fatal(err)
	}
	ch, ev := te.answered(t, anon, nil)
	ev.Secret = bytes.Repeat([]byte{1}, 32) // a wrong answer, unproven
	// The first is recorded (and logged at INFO), the others limited.
	for range 3 {
		if _, err := anon.AnswerTPMChallenge(ctxT(t), ch.SessionID, ev, csr); problemName(err) != "tpm-credential-mismatch" {
			t.Fatalf("wrong secret = %v, want tpm-credential-mismatch", err)
		}
	}
	if _, err := te.challenge(anon, mustEK(t), nil, te.dev.AKPublic()); problemName(err) == "" {
		t.Fatal("an untrusted EK got a challenge")
	}
	if err := anon.Do(ctxT(t), http.MethodPost, "/v1/nodes/attest/tpm/verify",
		map[string]any{"session_id": "not-a-session", "secret": "AAAA", "quote": "AAAA", "signature": "AAAA", "csr": string(csr)}, nil); problemName(err) == "" {
		t.Fatal("an answer to no session was accepted")
	}
	logs := te.logs.String()
	if n := strings.Count(logs, `level=INFO msg="TPM attestation refused"`); n != 1 {
		t.Errorf("%d recorded refusals logged at INFO, want 1:\n%s", n, logs)
	}
	for _, msg := range []string{"TPM attestation refused (not recorded: rate limit)", "TPM challenge refused", "TPM answer refused"} {
		if strings.Contains(logs, msg) {
			t.Errorf("%q logged above DEBUG:\n%s", msg, logs)
		}
	}
}

// A node already marked drifted that briefly returns to its known-good
// state, keeps an answer made then, and drifts again, cannot clear the
// mark with that answer: its challenge was made before the latest quote
// that proved the drift, whether that quote's refusal was recorded or
// only counted (the rate limit of refusals of a node already drifted).
func TestTPMQuoteKeptBackDoesNotClearARenewedDrift(t *testing.T) {
	for i, limited := range []bool{false, true} {
		t.Run("limited="+strconv.FormatBool(limited), func(t *testing.T) {
			te, _, nodeClient := attestedECCNode(t, int64(25+i))
			extend := func() {
				if err := tpmdevice.ExtendPCR(te.tpm, 16, bytes.Repeat([]byte{0xcd}, 32)); err != nil {
					t.Fatal(err)
				}
			}
			reset := func() {
				if _, err := (tpm2.PCRReset{PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(16), Auth: tpm2.PasswordAuth(nil)}}).Execute(te.tpm); err != nil {
					t.Fatal(err)
				}
			}
			drift := func() {
				if _, err := te.attest(nodeClient, nil); problemName(err) != "tpm-pcr-policy-mismatch" {
					t.Fatalf("renewal in a drifted state = %v, want tpm-pcr-policy-mismatch", err)
				}
			}
			// The node drifts; its renewal marks it.
			extend()
			drift()
			if limited {
				// Refused again while drifted: the first refusal of the
				// minute, so the next one is only counted.
				drift()
			}
			// Back in the good state for a while: an answer is made, kept.
			reset()
			kept, ev := te.answered(t, nodeClient, nil)
			// Drifted again, and a fresh quote proves it.
			extend()
			drift()
			_, csr, _ := client.NewKeyAndCSR()
			if _, err := nodeClient.AnswerTPMChallenge(ctxT(t), kept.SessionID, ev, csr); problemName(err) != "tpm-challenge-expired" {
				t.Fatalf("the answer kept from before the latest drift = %v, want tpm-challenge-expired", err)
			}
			if nodes, err := te.admin.ListNodes(ctxT(t)); err != nil || len(nodes) != 1 || !nodes[0].Drifted {
				t.Fatalf("nodes after the kept answer: %+v, %v; want the node still drifted", nodes, err)
			}
		})
	}
}

// A refusal's audit entry quotes at most a bounded part of what the
// caller sent: anyone who knows a trusted device's public EK can ask a
// challenge and send answers to it, and each minute one of these is
// recorded, in a log that is never pruned. A PCR index, a bank name or a
// CSR's URI of tens of kilobytes was recorded whole.
func TestTPMRefusalRecordsAreBounded(t *testing.T) {
	long := strings.Repeat("A", 40<<10)
	for _, tc := range []struct {
		name string
		want string // problem type
		body func(te *tpmEnv, ch *client.TPMChallenge, csr string) map[string]any
	}{
		{"PCR index not hex", "tpm-malformed", func(te *tpmEnv, ch *client.TPMChallenge, csr string) map[string]any {
			return map[string]any{"session_id": ch.SessionID, "secret": "AAAA", "quote": "AAAA", "signature": "AAAA",
				"pcrs": map[string]any{"sha256": map[string]string{long: "zz"}}, "csr": csr}
		}},
		{"bank", "tpm-pcr-selection-mismatch", func(te *tpmEnv, ch *client.TPMChallenge, csr string) map[string]any {
			return map[string]any{"session_id": ch.SessionID, "secret": "AAAA", "quote": "AAAA", "signature": "AAAA",
				"pcrs": map[string]any{long: map[string]string{}}, "csr": csr}
		}},
		{"CSR URI", "csr-identity-mismatch", func(te *tpmEnv, ch *client.TPMChallenge, _ string) map[string]any {
			key, _, err := client.NewKeyAndCSR()
			if err != nil {
				t.Fatal(err)
			}
			csr := csrPEM(t, key, &x509.CertificateRequest{URIs: []*url.URL{{Scheme: "spiffe", Host: "org-a.example", Path: "/" + long}}})
			return map[string]any{"session_id": ch.SessionID, "secret": "AAAA", "quote": "AAAA", "signature": "AAAA", "csr": csr}
		}},
		{"PCR index not asked, device proven", "tpm-pcr-selection-mismatch", func(te *tpmEnv, ch *client.TPMChallenge, csr string) map[string]any {
			ev, err := client.Answer(te.dev, ch)
			if err != nil {
				t.Fatal(err)
			}
			pcrs := map[string]string{}
			for i, v := range ev.PCRs {
				pcrs[strconv.Itoa(i)] = hex.EncodeToString(v)
			}
			pcrs[long] = pcrs["16"]
			delete(pcrs, "16")
			return map[string]any{"session_id": ch.SessionID, "secret": b64s(ev.Secret), "quote": b64s(ev.Quote),
				"signature": b64s(ev.Signature), "pcrs": map[string]any{"sha256": pcrs}, "csr": csr}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			te := startTPM(t, 81, tpmSetup{allowlist: true})
			anon := te.client(nil, nil)
			ch, err := te.challenge(anon, te.dev.EKPublic(), nil, te.dev.AKPublic())
			if err != nil {
				t.Fatal(err)
			}
			_, csr, err := client.NewKeyAndCSR()
			if err != nil {
				t.Fatal(err)
			}
			err = anon.Do(ctxT(t), http.MethodPost, "/v1/nodes/attest/tpm/verify", tc.body(te, ch, string(csr)), nil)
			if problemName(err) != tc.want {
				t.Fatalf("answer = %v, want %s", err, tc.want)
			}
			got := te.auditOf("node.attestation_refused", "")
			if len(got) != 1 {
				t.Fatalf("%d refusals recorded, want 1", len(got))
			}
			reason, _ := got[0]["reason"].(string)
			if len(reason) > 1100 || !strings.Contains(reason, "AAAA") {
				t.Fatalf("recorded reason of %d bytes: %.120s…; want what was sent quoted in part, the reason under 1100 bytes", len(reason), reason)
			}
		})
	}
}

// An evicted TPM node is attested no more: its renewal through
// /v1/svid/x509 and its agents' SVIDs are refused (node-not-attested),
// until it attests again, which it may, with its old SVID as caller (its
// node run's renewal). A banned node is evicted only with lift_ban
// (409 node-ban-stands before), and then attests again unbanned. Each
// eviction is logged with its reason and whether it lifted a ban.
func TestEvictedTPMNodeAttestsAgain(t *testing.T) {
	te, node, nodeClient := attestedECCNode(t, 61)
	agent := te.registerAgent("edge-worker", node.id)
	te.agentSVID(node, agent)
	id := node.id.String()

	got, err := te.admin.EvictNode(ctxT(t), id, "host replaced", false)
	if err != nil || got.SPIFFEID != id {
		t.Fatalf("evict = %+v, %v", got, err)
	}
	if nodes, err := te.admin.ListNodes(ctxT(t)); err != nil || len(nodes) != 0 {
		t.Fatalf("nodes after the eviction: %+v, %v; want none", nodes, err)
	}
	key, _, _ := client.NewKeyAndCSR()
	acsr, _ := client.CSRFor(key, spiffeid.RequireFromString(agent))
	if _, err := nodeClient.X509SVID(ctxT(t), agent, acsr); problemName(err) != "node-not-attested" {
		t.Fatalf("agent SVID through an evicted node = %v, want node-not-attested", err)
	}
	if _, err := te.admin.EvictNode(ctxT(t), id, "again", false); problemName(err) != "not-found" {
		t.Fatalf("evict an evicted node = %v, want not-found", err)
	}

	again, err := te.attest(nodeClient, nil)
	if err != nil || again.id != node.id {
		t.Fatalf("attest again after the eviction: %v, %v", again.id, err)
	}
	te.agentSVID(again, agent)

	if _, err := te.admin.BanNode(ctxT(t), id, "stolen"); err != nil {
		t.Fatal(err)
	}
	if _, err := te.admin.EvictNode(ctxT(t), id, "", false); problemName(err) != "node-ban-stands" {
		t.Fatalf("evict a banned node without lift_ban = %v, want node-ban-stands", err)
	}
	if _, err := te.attest(nil, nil); problemName(err) != "node-banned" {
		t.Fatalf("attest after the refused eviction = %v, want node-banned", err)
	}
	if got, err := te.admin.EvictNode(ctxT(t), id, "found again", true); err != nil || !got.Banned {
		t.Fatalf("evict with lift_ban = %+v, %v; want the banned record", got, err)
	}
	back, err := te.attest(nil, nil)
	if err != nil {
		t.Fatalf("attest after the ban was lifted: %v", err)
	}
	te.agentSVID(back, agent)

	if got := te.metricsOf("mandate_nodes_evicted_total"); got[`mandate_nodes_evicted_total{by="admin"}`] != 2 || got[`mandate_nodes_evicted_total{by="prune"}`] != 0 {
		t.Errorf("metrics after two evictions by the admin: %v", got)
	}
	entries := te.auditOf("node.evicted", id)
	if len(entries) != 2 || entries[0]["reason"] != "host replaced" || entries[0]["ban_lifted"] != nil ||
		entries[1]["reason"] != "found again" || entries[1]["ban_lifted"] != true || entries[1]["ban_reason"] != "stolen" ||
		entries[0]["attestation_method"] != "tpm" || entries[0]["svid_serial"] != node.chain[0].SerialNumber.Text(16) {
		t.Fatalf("node.evicted entries = %v", entries)
	}
}

// A TPM node whose SPIFFE ID is revoked attests no more, for ever: no
// challenge is made for it, as a renewal or anew, even once evicted.
func TestRevokedTPMNodeAttestsNoMore(t *testing.T) {
	te, node, nodeClient := attestedECCNode(t, 62)
	if _, err := te.admin.RevokeSPIFFEID(ctxT(t), node.id.String(), "stolen"); err != nil {
		t.Fatal(err)
	}
	if _, err := te.attest(nodeClient, nil); problemName(err) != "spiffe-id-revoked" {
		t.Fatalf("renewal of a revoked TPM node = %v, want spiffe-id-revoked", err)
	}
	if _, err := te.admin.EvictNode(ctxT(t), node.id.String(), "gone", false); err != nil {
		t.Fatal(err)
	}
	if _, err := te.attest(nil, nil); problemName(err) != "spiffe-id-revoked" {
		t.Fatalf("attestation anew of a revoked TPM node = %v, want spiffe-id-revoked", err)
	}
}
