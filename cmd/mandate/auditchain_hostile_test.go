package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/delegation"
)

const tdA = "spiffe://org-a.example"

// rlog is the log of an authority an auditor does not trust: it holds
// the log key and writes whatever it likes, signing every checkpoint
// with the key the auditor was given.
type rlog struct {
	t          *testing.T
	serialOnly bool // svid.issued entries without certificate_sha256, as older authorities log them
	tree       *testonly.Tree
	entries    [][]byte
	signer     note.Signer
	origin     string
}

func newRlog(t *testing.T, s note.Signer, origin string) *rlog {
	return &rlog{t: t, tree: testonly.New(rfc6962.DefaultHasher), signer: s, origin: origin}
}

func (l *rlog) add(b []byte) uint64 {
	l.entries = append(l.entries, b)
	l.tree.AppendData(b)
	return uint64(len(l.entries) - 1)
}

func (l *rlog) checkpoint(origin string) string {
	if origin == "" {
		origin = l.origin
	}
	cp := log.Checkpoint{Origin: origin, Size: l.tree.Size(), Hash: l.tree.Hash()}
	n, err := note.Sign(&note.Note{Text: string(cp.Marshal())}, l.signer)
	if err != nil {
		l.t.Fatal(err)
	}
	return string(n)
}

func (l *rlog) proven(i uint64) map[string]any {
	p, err := l.tree.InclusionProof(i, l.tree.Size())
	if err != nil {
		l.t.Fatal(err)
	}
	return map[string]any{"index": i, "entry_b64": l.entries[i], "leaf_hash": hex.EncodeToString(rfc6962.DefaultHasher.HashLeaf(l.entries[i])),
		"tree_size": l.tree.Size(), "inclusion_proof": p, "checkpoint": l.checkpoint("")}
}

// selfSVID is a self-signed certificate naming id with this serial: no CA
// issued it.
func selfSVID(t *testing.T, id string, serial int64) (*ecdsa.PrivateKey, []*x509.Certificate) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), URIs: []*url.URL{u}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return key, []*x509.Certificate{c}
}

// hopExpiry is when every hop of these logs expires: no child after
// its parent.
var hopExpiry = time.Now().Add(time.Hour)

type hopSpec struct {
	id, delegator, delegatee, principal string
	scopes                              []string
	depth                               int
	parent                              string
	parentLink                          *authority.LogLink
	notAfter                            int64  // signed by the delegator (0: none)
	cnf, boundTo                        string // the x5t#S256 signed by the delegator, and the one logged
	ancestors                           []delegation.Ancestor
	// signer, when set, is the delegator's SVID key and chain to sign
	// with (else a new one).
	signer *signerSVID
	// edit, when set, changes the delegation.issued entry before it is
	// logged.
	edit func(e *audit.Entry)
}

// logHop logs, as the authority, an svid.issued entry for a certificate
// it made (with its serial and SHA-256, unless reuse names another
// certificate's), and a delegation.issued entry signed with it.
func (l *rlog) logHop(h hopSpec, serial int64, reuse ...*x509.Certificate) uint64 {
	t := l.t
	key, chain := selfSVID(t, h.delegator, serial)
	if h.signer != nil {
		key, chain = h.signer.key, h.signer.chain
	}
	logged := chain[0]
	if len(reuse) > 0 {
		logged = reuse[0]
	}
	details := fmt.Sprintf(`{"kind":"x509","serial":%q,"certificate_sha256":%q}`, logged.SerialNumber.Text(16), authority.CertificateSHA256(logged))
	if l.serialOnly {
		details = fmt.Sprintf(`{"kind":"x509","serial":%q}`, logged.SerialNumber.Text(16))
	}
	svidIdx := l.add(mustEncodeEntry(t, audit.Entry{Time: time.Now(), Type: "svid.issued", Actor: audit.ActorSystem, Subject: h.delegator,
		Details: json.RawMessage(details)}))
	st := delegation.Statement{Delegator: h.delegator, Delegatee: h.delegatee, Principal: h.principal, Scopes: h.scopes, Purpose: "p", NotAfter: h.notAfter}
	if h.cnf != "" {
		st.Cnf = &delegation.Confirmation{X5tS256: h.cnf}
	}
	if h.parent != "" {
		st.Parent, st.ParentIssuer = h.parent, tdA
	}
	sig, err := delegation.SignStatement(st, key, chain)
	if err != nil {
		t.Fatal(err)
	}
	d := authority.IssuedDetails{ID: h.id, Delegator: h.delegator, Delegatee: h.delegatee, Principal: h.principal, Scopes: h.scopes,
		Depth: h.depth, Purpose: "p", ExpiresAt: hopExpiry, ParentID: h.parent, ParentLink: h.parentLink,
		Signature: sig, SignerSVID: &authority.SVIDEntry{Serial: chain[0].SerialNumber.Text(16), LogIndex: svidIdx}, BoundTo: h.boundTo,
		Ancestors: h.ancestors}
	if h.parent != "" {
		d.ParentIssuer = tdA
	}
	d.Decision.Allow = true
	db, _ := json.Marshal(d)
	party := func(id string) audit.Party {
		return audit.Party{SPIFFEID: spiffeid.RequireFromString(id), Operator: "ops-of-" + id, ResponsibleParty: "someone"}
	}
	e := audit.Entry{Time: time.Now(), Type: "delegation.issued", Actor: h.delegator, Subject: h.delegatee,
		Accountable: []audit.Party{party(h.delegator), party(h.delegatee)}, DecisionID: "dec-" + h.id, PolicyRevision: "rev1",
		DelegationID: h.id, Details: db}
	if h.edit != nil {
		h.edit(&e)
	}
	return l.add(mustEncodeEntry(t, e))
}

// signerSVID is a delegator's X509-SVID key and chain.
type signerSVID struct {
	key   *ecdsa.PrivateKey
	chain []*x509.Certificate
}

// editDetails replaces old, which must be in details, with new.
func editDetails(t *testing.T, details []byte, old, new string) []byte {
	t.Helper()
	if !bytes.Contains(details, []byte(old)) {
		t.Fatalf("%s not in %s", old, details)
	}
	return bytes.Replace(details, []byte(old), []byte(new), 1)
}

func mustEncodeEntry(t *testing.T, e audit.Entry) []byte {
	b, err := audit.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hopAnswer(h hopSpec, p map[string]any) map[string]any {
	m := map[string]any{"id": h.id, "issuer": tdA, "delegator": h.delegator, "delegatee": h.delegatee, "principal": h.principal,
		"scopes": h.scopes, "depth": h.depth}
	for k, v := range p {
		m[k] = v
	}
	return m
}

// nextPage, last in what a fake search returns, is its page's
// next_page_token.
type nextPage string

// fakeAuthority serves the chain answer, /v1/audit/entries/N of a
// (possibly different) view and, with search, /v1/audit/search (else no
// entry is found) over TLS as spiffe://org-a.example/mandate/server.
func fakeAuthority(t *testing.T, chain func() any, entries func(i uint64) map[string]any, search ...func(q url.Values) []any) *client.Client {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/audit/chains/{id}", func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(chain()) })
	mux.HandleFunc("GET /v1/audit/checkpoint", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, entries(0)["checkpoint"].(string))
	})
	mux.HandleFunc("GET /v1/audit/entries/{i}", func(w http.ResponseWriter, r *http.Request) {
		i, _ := strconv.ParseUint(r.PathValue("i"), 10, 64)
		json.NewEncoder(w).Encode(entries(i))
	})
	mux.HandleFunc("GET /v1/audit/search", func(w http.ResponseWriter, r *http.Request) {
		found := []any{}
		if len(search) > 0 {
			found = search[0](r.URL.Query())
		}
		page := map[string]any{"entries": found}
		if n := len(found); n > 0 {
			if next, ok := found[n-1].(nextPage); ok {
				page["entries"], page["next_page_token"] = found[:n-1], string(next)
			}
		}
		json.NewEncoder(w).Encode(page)
	})
	return fakeServer(t, mux)
}

// fakeServer serves mux over TLS as org-a.example's authority (its
// server SVID from a CA of its own) and returns a client of it.
func fakeServer(t *testing.T, mux *http.ServeMux) *client.Client {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	td, _ := url.Parse(tdA)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), URIs: []*url.URL{td}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caT, caT, caKey.Public(), caKey)
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sid, _ := url.Parse(tdA + "/mandate/server")
	st := &x509.Certificate{SerialNumber: big.NewInt(2), URIs: []*url.URL{sid}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	sDER, _ := x509.CreateCertificate(rand.Reader, st, ca, srvKey.Public(), caKey)
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{sDER}, PrivateKey: srvKey}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c, err := client.New(client.Config{Server: srv.URL, TrustDomain: spiffeid.RequireTrustDomainFromString("org-a.example"), Bundle: []*x509.Certificate{ca}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func keys(t *testing.T) (note.Signer, note.Verifier) {
	skey, vkey, err := note.GenerateKey(rand.Reader, "org-a.example/audit")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	return s, v
}

func leafHex(b []byte) string { return hex.EncodeToString(rfc6962.DefaultHasher.HashLeaf(b)) }

// verifyAgainst runs mandate audit chain ID --verify against c, the log
// key v, and returns its output and error.
func verifyAgainst(t *testing.T, c *client.Client, v note.Verifier, id string, asJSON bool, serialOnly ...bool) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := auditChain(context.Background(), &auditFlags{verify: true, asJSON: asJSON, serialOnly: len(serialOnly) > 0 && serialOnly[0]}, c, v, []string{id}, &out)
	return out.String(), err
}

// TestAuditChainSerialOnlySVIDEntries: a log whose svid.issued entries
// name the serial only (as authorities logged them before they recorded
// the certificate's SHA-256) is refused, unless --serial-only-svids
// accepts it, and then the hop says so.
func TestAuditChainSerialOnlySVIDEntries(t *testing.T) {
	s, v := keys(t)
	l := newRlog(t, s, "org-a.example/audit")
	l.serialOnly = true
	h := hopSpec{id: "d1", delegator: tdA + "/agent/a", delegatee: tdA + "/agent/b", principal: "alice", scopes: []string{"read"}, depth: 1}
	i := l.logHop(h, 0x40)
	c := fakeAuthority(t, func() any { return map[string]any{"hops": []any{hopAnswer(h, l.proven(i))}} }, l.proven)
	if _, err := verifyAgainst(t, c, v, "d1", false); err == nil || !strings.Contains(err.Error(), "--serial-only-svids") {
		t.Fatalf("verify = %v, want refused", err)
	}
	if out, err := verifyAgainst(t, c, v, "d1", false, true); err != nil || !strings.Contains(out, "names its serial only") {
		t.Fatalf("verify --serial-only-svids = %v\n%s", err, out)
	}
}

// TestAuditChainHostileLog: an auditor verifies a chain without trusting
// the authority that serves it. A log that says what an honest one says
// verifies; one that invents another trust domain's agent's act, backs a
// signature with another certificate's entry, shows two histories,
// widens a parent's scopes, or serves another log's checkpoint does not.
func TestAuditChainHostileLog(t *testing.T) {
	s, v := keys(t)
	root := hopSpec{id: "d1", delegator: tdA + "/agent/a", delegatee: tdA + "/agent/b", principal: "alice", scopes: []string{"read"}, depth: 1}
	childOf := func(l *rlog, r uint64, scopes ...string) hopSpec {
		return hopSpec{id: "d2", delegator: tdA + "/agent/b", delegatee: tdA + "/agent/c", principal: "alice", scopes: scopes, depth: 2,
			parent: "d1", parentLink: &authority.LogLink{LogIndex: r, LeafHash: leafHex(l.entries[r])}}
	}
	chainOf := func(l *rlog, hops ...hopSpec) func() any {
		return func() any {
			var out []any
			for i, h := range hops {
				out = append(out, hopAnswer(h, l.proven(uint64(2*i+1))))
			}
			return map[string]any{"hops": out}
		}
	}

	t.Run("an honest log", func(t *testing.T) {
		l := newRlog(t, s, "org-a.example/audit")
		r := l.logHop(root, 0x10)
		child := childOf(l, r, "read")
		l.logHop(child, 0x11)
		out, err := verifyAgainst(t, fakeAuthority(t, chainOf(l, root, child), l.proven), v, "d2", false)
		if err != nil || strings.Contains(out, "REVOKED") {
			t.Fatalf("verify: %v\n%s", err, out)
		}
	})
	// In --json, a proven hop's log_url is where it was proven (as the
	// API gives it: the chain's URL at that authority), not what the
	// answer said.
	t.Run("a log_url the answer made up", func(t *testing.T) {
		l := newRlog(t, s, "org-a.example/audit")
		l.logHop(root, 0x10)
		c := fakeAuthority(t, func() any {
			h := hopAnswer(root, l.proven(1))
			h["log_url"] = "https://elsewhere.example"
			return map[string]any{"hops": []any{h}}
		}, l.proven)
		out, err := verifyAgainst(t, c, v, "d1", true)
		var got struct {
			Hops []struct {
				LogURL string `json:"log_url"`
			}
		}
		if err != nil || json.Unmarshal([]byte(out), &got) != nil || len(got.Hops) != 1 || got.Hops[0].LogURL != c.Server()+"/v1/audit/chains/"+root.id {
			t.Fatalf("verify --json: %v\n%s\nwant the hop's log_url %s/v1/audit/chains/%s, where it was proven", err, out, c.Server(), root.id)
		}
	})
	// An auditor remembers each log's latest checkpoint: a later run
	// that sees another history is a fork, and a remembered checkpoint
	// that does not verify is refused.
	t.Run("a history other than the one remembered", func(t *testing.T) {
		mem := t.TempDir()
		run := func(l *rlog) (string, error) {
			var out bytes.Buffer
			err := auditChain(context.Background(), &auditFlags{verify: true, remember: mem}, fakeAuthority(t, chainOf(l, root), l.proven), v, []string{"d1"}, &out)
			return out.String(), err
		}
		filler := func(l *rlog, subject string) {
			l.add(mustEncodeEntry(t, audit.Entry{Time: time.Now(), Type: "other.event", Actor: audit.ActorSystem, Subject: subject}))
		}
		l1 := newRlog(t, s, "org-a.example/audit")
		l1.logHop(root, 0x10)
		filler(l1, "x")
		if out, err := run(l1); err != nil || !strings.Contains(out, "remembered in "+mem+" (a later run must prove these logs consistent with it): org-a.example/audit at size 3") {
			t.Fatalf("first run: %v\n%s", err, out)
		}
		if out, err := run(l1); err != nil || strings.Contains(out, "remembered in") {
			t.Fatalf("the same history again: %v\n%s", err, out)
		}
		l2 := newRlog(t, s, "org-a.example/audit")
		l2.logHop(root, 0x10)
		filler(l2, "y")
		if out, err := run(l2); !errors.Is(err, errFork) || !strings.Contains(err.Error(), "two roots for size 3") || !strings.Contains(err.Error(), "remembered in "+mem) {
			t.Fatalf("another history of the remembered size: %v, want a fork\n%s", err, out)
		}
		if err := os.WriteFile(filepath.Join(mem, memoryFile(logKey(v))), []byte("not a checkpoint\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := run(l1); err == nil || !strings.Contains(err.Error(), "the checkpoint remembered in") {
			t.Fatalf("a remembered checkpoint that does not verify: %v\n%s", err, out)
		}
		// A memory that cannot be written (here a link to nowhere) does
		// not hide what the run proved.
		mem = filepath.Join(t.TempDir(), "mem")
		if err := os.Symlink(filepath.Join(t.TempDir(), "missing", "dir"), mem); err != nil {
			t.Fatal(err)
		}
		if out, err := run(l1); err != nil || !strings.Contains(out, "proven in org-a.example's log") || !strings.Contains(out, "not remembered: ") {
			t.Fatalf("a memory that cannot be written: %v\n%s", err, out)
		}
	})
	// Two runs at once: the one that ends last does not put back a
	// smaller checkpoint than the other remembered.
	t.Run("a larger checkpoint remembered meanwhile", func(t *testing.T) {
		l := newRlog(t, s, "org-a.example/audit")
		l.add(mustEncodeEntry(t, audit.Entry{Time: time.Now(), Type: "other.event", Actor: audit.ActorSystem}))
		small := []byte(l.checkpoint(""))
		l.add(mustEncodeEntry(t, audit.Entry{Time: time.Now(), Type: "other.event", Actor: audit.ActorSystem, Subject: "x"}))
		large := []byte(l.checkpoint(""))
		cp, err := openCheckpoint(small, v)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		lv := newLogViews()
		lv.of(v, nil)(cp, small)
		if err := lv.recall(dir); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, memoryFile(logKey(v)))
		if err := os.WriteFile(file, large, 0o600); err != nil { // the other run
			t.Fatal(err)
		}
		if kept, err := lv.keep(); err != nil || len(kept) != 0 {
			t.Fatalf("keep = %v, %v; want nothing written", kept, err)
		}
		if got, _ := os.ReadFile(file); !bytes.Equal(got, large) {
			t.Fatalf("remembered %q, want the larger checkpoint kept", got)
		}
		// Another run remembered another root for the same size: a fork.
		other := newRlog(t, s, "org-a.example/audit")
		other.add(mustEncodeEntry(t, audit.Entry{Time: time.Now(), Type: "other.event", Actor: audit.ActorSystem, Subject: "other"}))
		if err := os.WriteFile(file, []byte(other.checkpoint("")), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := lv.keep(); !errors.Is(err, errFork) {
			t.Fatalf("keep over another root for the same size = %v, want errFork", err)
		}
	})
	// A revocation the log proves is shown on the hop it revokes and
	// below; one of another hop, or one it cannot prove, is not.
	revokedLog := func(t *testing.T) (*rlog, uint64, func() any) {
		l := newRlog(t, s, "org-a.example/audit")
		r := l.logHop(root, 0x10)
		child := childOf(l, r, "read")
		l.logHop(child, 0x11)
		rev := func(id, spiffeID string) uint64 {
			d, _ := json.Marshal(map[string]any{"delegation_id": id, "spiffe_id": spiffeID, "reason": "lost laptop", "revoked": []string{id}})
			return l.add(mustEncodeEntry(t, audit.Entry{Time: time.Now(), Type: "delegation.revoked", Actor: tdA + "/mandate/admin",
				Subject: id + spiffeID, DelegationID: id, Details: d}))
		}
		rev("d9", "")
		return l, rev("d1", ""), chainOf(l, root, child)
	}
	t.Run("a proven revocation", func(t *testing.T) {
		l, i, chain := revokedLog(t)
		c := fakeAuthority(t, chain, l.proven, func(q url.Values) []any {
			if q.Get("delegation_id") == "" {
				return []any{l.proven(i - 1)} // another hop's revocation, for a party
			}
			return []any{l.proven(i)}
		})
		out, err := verifyAgainst(t, c, v, "d2", false)
		if err != nil || strings.Count(out, "REVOKED") != 2 || !strings.Contains(out, `"lost laptop" (this hop; org-a.example's log, entry 5)`) ||
			!strings.Contains(out, `(with the hop above, d1; org-a.example's log, entry 5)`) || strings.Contains(out, "d9") {
			t.Fatalf("verify = %v\n%s", err, out)
		}
	})
	// A node the delegatee may hold the hop on, as the hop's entry
	// names it, is one of its parties: its revocation is the hop's.
	t.Run("a revocation of a node the delegatee holds the hop on", func(t *testing.T) {
		l := newRlog(t, s, "org-a.example/audit")
		h := root
		const node = tdA + "/node/stolen"
		h.edit = func(e *audit.Entry) {
			e.Details = editDetails(t, e.Details, `"delegator_host":""`, `"delegator_host":"","delegatee_hosts":["`+node+`"]`)
		}
		l.logHop(h, 0x12)
		d, _ := json.Marshal(map[string]any{"spiffe_id": node, "reason": "stolen device"})
		i := l.add(mustEncodeEntry(t, audit.Entry{Time: time.Now(), Type: "delegation.revoked", Actor: tdA + "/mandate/admin",
			Subject: node, Details: d}))
		c := fakeAuthority(t, chainOf(l, h), l.proven, func(q url.Values) []any {
			if q.Get("spiffe_id") == node {
				return []any{l.proven(i)}
			}
			return nil
		})
		out, err := verifyAgainst(t, c, v, "d1", false)
		if err != nil || !strings.Contains(out, `REVOKED`) || !strings.Contains(out, "stolen device") {
			t.Fatalf("verify = %v\n%s", err, out)
		}
	})
	t.Run("a revocation only the chain answer claims", func(t *testing.T) {
		l, i, _ := revokedLog(t)
		c := fakeAuthority(t, func() any {
			hops := []any{hopAnswer(root, l.proven(1)), hopAnswer(childOf(l, 1, "read"), l.proven(3))}
			hops[0].(map[string]any)["revoked"] = map[string]any{"of": "d1", "log": tdA, "index": i, "revoked_at": "2020-01-01T00:00:00Z", "reason": "forged"}
			return map[string]any{"hops": hops}
		}, l.proven)
		if out, err := verifyAgainst(t, c, v, "d2", true); err != nil || strings.Contains(out, "forged") || strings.Contains(out, `"revoked"`) {
			t.Fatalf("verify = %v\n%s", err, out)
		}
	})
	t.Run("a revocation without proof", func(t *testing.T) {
		l, i, chain := revokedLog(t)
		c := fakeAuthority(t, chain, l.proven, func(url.Values) []any {
			p := l.proven(i)
			p["index"] = i - 1
			return []any{p}
		})
		if out, err := verifyAgainst(t, c, v, "d2", false); err == nil || !strings.Contains(err.Error(), "inclusion proof") {
			t.Fatalf("verify = %v, want refused\n%s", err, out)
		}
	})
	// The parties above a proven hop are those its own entry names (its
	// ancestors, as its issuer enforces revocations), not those of a hop
	// above that is not proven, which are only the chain answer's word
	// (without --verify, where such a hop is printed): a revocation of
	// one is shown only when the proven entry names it.
	t.Run("a revocation of a party above an unproven hop", func(t *testing.T) {
		z := tdA + "/agent/z"
		for _, named := range []bool{false, true} {
			l, _, _ := revokedLog(t)
			child := childOf(l, 1, "read")
			child.id = "d3"
			if named {
				child.ancestors = []delegation.Ancestor{{ID: "d1", Issuer: tdA, Delegator: z, Delegatee: tdA + "/agent/b"}}
			}
			ic := l.logHop(child, 0x12)
			d, _ := json.Marshal(map[string]any{"delegation_id": "", "spiffe_id": z, "reason": "fired", "revoked": []string{}})
			iz := l.add(mustEncodeEntry(t, audit.Entry{Time: time.Now(), Type: "delegation.revoked", Actor: tdA + "/mandate/admin", Subject: z, Details: d}))
			c := fakeAuthority(t, func() any {
				unproven := hopAnswer(hopSpec{id: "d1", delegator: z, delegatee: tdA + "/agent/b", principal: "alice", scopes: []string{"read"}, depth: 1}, nil)
				return map[string]any{"hops": []any{unproven, hopAnswer(child, l.proven(ic))}}
			}, l.proven, func(q url.Values) []any {
				if q.Get("spiffe_id") == z {
					return []any{l.proven(iz)}
				}
				return nil
			})
			var out bytes.Buffer
			err := auditChain(context.Background(), &auditFlags{}, c, v, []string{"d3"}, &out)
			shown := strings.Contains(out.String(), `REVOKED at`) && strings.Contains(out.String(), `"fired" (spiffe://org-a.example/agent/z;`)
			if err != nil || shown != named || !strings.Contains(out.String(), "not proven: d1 (no log to ask)") {
				t.Fatalf("the proven entry naming z above: %v; audit chain = %v\n%s", named, err, out.String())
			}
		}
	})
	// A hop logged as lasting longer than its delegator signed for
	// (not_after) is the issuer's word against the delegator's: refused.
	t.Run("a hop logged beyond its signed not_after", func(t *testing.T) {
		for _, tc := range []struct {
			notAfter int64
			ok       bool
		}{{hopExpiry.Unix(), true}, {hopExpiry.Unix() - 60, false}} {
			l := newRlog(t, s, "org-a.example/audit")
			h := root
			h.notAfter = tc.notAfter
			l.logHop(h, 0x10)
			out, err := verifyAgainst(t, fakeAuthority(t, chainOf(l, h), l.proven), v, "d1", false)
			if tc.ok != (err == nil) || !tc.ok && !strings.Contains(err.Error(), "after the not_after its delegator signed") {
				t.Fatalf("not_after %d (the hop expires at %d): %v, want ok=%v\n%s", tc.notAfter, hopExpiry.Unix(), err, tc.ok, out)
			}
		}
	})
	// A hop logged as bound otherwise than its delegator signed (cnf), or
	// unbound, is refused too.
	t.Run("a hop logged bound otherwise than its signed cnf", func(t *testing.T) {
		mine, other := strings.Repeat("A", 43), strings.Repeat("B", 43)
		for _, tc := range []struct {
			boundTo string
			ok      bool
		}{{mine, true}, {other, false}, {"", false}} {
			l := newRlog(t, s, "org-a.example/audit")
			h := root
			h.cnf, h.boundTo = mine, tc.boundTo
			l.logHop(h, 0x10)
			out, err := verifyAgainst(t, fakeAuthority(t, chainOf(l, h), l.proven), v, "d1", false)
			if tc.ok != (err == nil) || !tc.ok && !strings.Contains(err.Error(), "not to the certificate its delegator signed for") {
				t.Fatalf("logged bound to %q: %v, want ok=%v\n%s", tc.boundTo, err, tc.ok, out)
			}
		}
	})
	// A hop bound to a certificate is continued only with that
	// certificate's key: a hop below it whose delegator signed with
	// another certificate (one its issuer made and logged, say) is not
	// the holder's, as delegation.Verify says of the same chain.
	t.Run("a bound hop continued with another certificate", func(t *testing.T) {
		key, chain := selfSVID(t, tdA+"/agent/b", 0x11)
		holder := &signerSVID{key, chain}
		for _, tc := range []struct {
			signer *signerSVID
			ok     bool
		}{{holder, true}, {nil, false}} {
			l := newRlog(t, s, "org-a.example/audit")
			h := root
			h.boundTo = delegation.Thumbprint(chain[0])
			r := l.logHop(h, 0x10)
			child := childOf(l, r, "read")
			child.signer = tc.signer
			l.logHop(child, 0x11)
			out, err := verifyAgainst(t, fakeAuthority(t, chainOf(l, h, child), l.proven), v, "d2", false)
			if tc.ok != (err == nil) || !tc.ok && !strings.Contains(err.Error(), "not its holder") {
				t.Fatalf("continued by its holder: %v: %v, want ok=%v\n%s", tc.signer != nil, err, tc.ok, out)
			}
		}
	})
	// A log whose search fails for one hop does not hide the proven
	// revocation of another: without --verify both are printed.
	t.Run("a failed search beside a proven revocation", func(t *testing.T) {
		l, _, chain := revokedLog(t)
		d, _ := json.Marshal(map[string]any{"delegation_id": "d2", "spiffe_id": "", "reason": "done", "revoked": []string{"d2"}})
		i2 := l.add(mustEncodeEntry(t, audit.Entry{Time: time.Now(), Type: "delegation.revoked", Actor: tdA + "/mandate/admin",
			Subject: "d2", DelegationID: "d2", Details: d}))
		c := fakeAuthority(t, chain, l.proven, func(q url.Values) []any {
			switch q.Get("delegation_id") {
			case "d1":
				p := l.proven(i2)
				p["index"] = 0
				return []any{p}
			case "d2":
				return []any{l.proven(i2)}
			}
			return nil
		})
		var out bytes.Buffer
		err := auditChain(context.Background(), &auditFlags{}, c, v, []string{"d2"}, &out)
		if err != nil || !strings.Contains(out.String(), `"done" (this hop; org-a.example's log, entry 6)`) ||
			!strings.Contains(out.String(), "not proven: hop d1: revocations in spiffe://org-a.example's log:") {
			t.Fatalf("audit chain = %v\n%s", err, out.String())
		}
	})
	for _, tc := range []struct {
		name string
		make func(t *testing.T) (*client.Client, string)
		want string
	}{
		{"another trust domain's agent delegating", func(t *testing.T) (*client.Client, string) {
			l := newRlog(t, s, "org-a.example/audit")
			h := hopSpec{id: "d1", delegator: "spiffe://org-b.example/agent/bob", delegatee: tdA + "/agent/mallory", principal: "alice@org-b",
				scopes: []string{"payments.write"}, depth: 1}
			l.logHop(h, 0x77)
			return fakeAuthority(t, chainOf(l, h), l.proven), "d1"
		}, "a delegator of another trust domain"},
		{"a signature backed by another certificate's entry", func(t *testing.T) (*client.Client, string) {
			l := newRlog(t, s, "org-a.example/audit")
			_, genuine := selfSVID(t, root.delegator, 0x10) // same serial, another key
			l.logHop(root, 0x10, genuine[0])
			return fakeAuthority(t, chainOf(l, root), l.proven), "d1"
		}, "does not record issuing"},
		{"two histories", func(t *testing.T) (*client.Client, string) {
			l1 := newRlog(t, s, "org-a.example/audit")
			r := l1.logHop(root, 0x10)
			child := childOf(l1, r, "read")
			l2 := newRlog(t, s, "org-a.example/audit")
			l2.add(mustEncodeEntry(t, audit.Entry{Time: time.Now(), Type: "other.event", Actor: audit.ActorSystem}))
			l2.add(mustEncodeEntry(t, audit.Entry{Time: time.Now(), Type: "other.event", Actor: audit.ActorSystem, Subject: "x"}))
			c2 := l2.logHop(child, 0x11)
			for l1.tree.Size() < l2.tree.Size() {
				l1.add(mustEncodeEntry(t, audit.Entry{Time: time.Now(), Type: "filler", Actor: audit.ActorSystem}))
			}
			return fakeAuthority(t, func() any {
				return map[string]any{"hops": []any{hopAnswer(root, l1.proven(r)), hopAnswer(child, l2.proven(c2))}}
			}, func(i uint64) map[string]any {
				if i == 2 { // d2's SVID entry, in the second history
					return l2.proven(i)
				}
				return l1.proven(i)
			}), "d2"
		}, "two roots for size"},
		{"a child wider than its parent", func(t *testing.T) (*client.Client, string) {
			l := newRlog(t, s, "org-a.example/audit")
			r := l.logHop(root, 0x20)
			child := childOf(l, r, "admin", "read")
			l.logHop(child, 0x21)
			return fakeAuthority(t, chainOf(l, root, child), l.proven), "d2"
		}, `the scope "admin"`},
		{"another log's checkpoint", func(t *testing.T) (*client.Client, string) {
			l := newRlog(t, s, "org-a.example/audit")
			i := l.logHop(root, 0x30)
			return fakeAuthority(t, func() any {
				p := l.proven(i)
				p["checkpoint"] = l.checkpoint("some-other-log.example/audit")
				return map[string]any{"hops": []any{hopAnswer(root, p)}}
			}, l.proven), "d1"
		}, "checkpoint of the log"},
		{"a leaf hash the entry does not have", func(t *testing.T) (*client.Client, string) {
			l := newRlog(t, s, "org-a.example/audit")
			i := l.logHop(root, 0x30)
			return fakeAuthority(t, func() any {
				p := l.proven(i)
				p["leaf_hash"] = strings.Repeat("ab", 32)
				return map[string]any{"hops": []any{hopAnswer(root, p)}}
			}, l.proven), "d1"
		}, "tree size or leaf hash"},
		// A hop is issued only on a decision that allowed it; what the
		// proven entry says is read as every JSON reader reads it.
		{"a hop logged with its decision a deny", func(t *testing.T) (*client.Client, string) {
			l := newRlog(t, s, "org-a.example/audit")
			h := root
			h.edit = func(e *audit.Entry) {
				e.Details = editDetails(t, e.Details, `"decision":{"allow":true,"reasons":null}`, `"decision":{"allow":false,"reasons":["policy said no"]}`)
			}
			l.logHop(h, 0x40)
			return fakeAuthority(t, chainOf(l, h), l.proven), "d1"
		}, "without a policy decision that allowed it"},
		{"a hop logged without a decision", func(t *testing.T) (*client.Client, string) {
			l := newRlog(t, s, "org-a.example/audit")
			h := root
			h.edit = func(e *audit.Entry) { e.DecisionID = "" }
			l.logHop(h, 0x41)
			return fakeAuthority(t, chainOf(l, h), l.proven), "d1"
		}, "without a policy decision that allowed it"},
		{"a deny beside a key that only folds to decision", func(t *testing.T) (*client.Client, string) {
			l := newRlog(t, s, "org-a.example/audit")
			h := root
			h.edit = func(e *audit.Entry) {
				e.Details = editDetails(t, e.Details, `"decision":{"allow":true,"reasons":null}`,
					`"decision":{"allow":false,"reasons":["denied"]},"deci\u017fion":{"allow":true,"reasons":[]}`)
			}
			l.logHop(h, 0x42)
			return fakeAuthority(t, chainOf(l, h), l.proven), "d1"
		}, "without a policy decision that allowed it"},
		{"the delegator's accountable party named twice, differently", func(t *testing.T) (*client.Client, string) {
			l := newRlog(t, s, "org-a.example/audit")
			h := root
			h.edit = func(e *audit.Entry) {
				scapegoat := e.Accountable[0]
				scapegoat.Operator = "scapegoat"
				e.Accountable = append(e.Accountable, scapegoat)
			}
			l.logHop(h, 0x43)
			return fakeAuthority(t, chainOf(l, h), l.proven), "d1"
		}, "twice, differently"},
		// No chain is deeper than delegation.MaxDepth: a longer answer
		// is refused before any of its hops is asked for.
		{"more hops than any chain has", func(t *testing.T) (*client.Client, string) {
			l := newRlog(t, s, "org-a.example/audit")
			i := l.logHop(root, 0x50)
			var hops []any
			for range delegation.MaxDepth + 1 {
				hops = append(hops, hopAnswer(root, l.proven(i)))
			}
			return fakeAuthority(t, func() any { return map[string]any{"hops": hops} }, func(i uint64) map[string]any {
				t.Errorf("entry %d asked for", i)
				return l.proven(i)
			}), "d1"
		}, "no chain has more than 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, id := tc.make(t)
			if out, err := verifyAgainst(t, c, v, id, true); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("verify = %v, want %q\n%s", err, tc.want, out)
			}
		})
	}
}

// TestAuditSearchHostileLog: a search follows its pages in log order and
// ends: a log that finds an entry again, or out of order, or hands back
// a page token it gave before, is refused instead of looping forever.
func TestAuditSearchHostileLog(t *testing.T) {
	s, v := keys(t)
	l := newRlog(t, s, "org-a.example/audit")
	for i := range 4 {
		l.add(mustEncodeEntry(t, audit.Entry{Time: time.Now(), Type: "other.event", Actor: audit.ActorSystem, Subject: fmt.Sprint("s", i)}))
	}
	for _, tc := range []struct {
		name  string
		pages map[string][]any // by page_token
		want  string           // in the error; "" for none
	}{
		{"pages in log order", map[string][]any{"": {l.proven(0), nextPage("a")}, "a": {nextPage("b")}, "b": {l.proven(2), l.proven(3)}}, ""},
		{"an entry found again on the next page", map[string][]any{"": {l.proven(1), nextPage("a")}, "a": {l.proven(1)}}, "found entry 1 after entry 1"},
		{"entries out of order", map[string][]any{"": {l.proven(2), l.proven(0)}}, "found entry 0 after entry 2"},
		{"the same page again and again", map[string][]any{"": {l.proven(0), nextPage("a")}, "a": {nextPage("a")}}, `page token "a" again`},
		{"two tokens taking turns", map[string][]any{"": {nextPage("a")}, "a": {nextPage("b")}, "b": {nextPage("a")}}, `page token "a" again`},
		{"a token seen before a hit, again after it", map[string][]any{"": {nextPage("a")}, "a": {l.proven(1), nextPage("b")}, "b": {nextPage("a")}},
			"found entry 1 after entry 1"},
		{"a new token on every empty page", nil, "5 pages in a row without a hit, more than the 4 entries of the log"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			c := fakeAuthority(t, func() any { return nil }, l.proven, func(q url.Values) []any {
				if calls++; calls > 10 {
					t.Errorf("search called %d times", calls)
					return nil
				}
				if tc.pages == nil {
					return []any{nextPage(fmt.Sprint("t", calls))}
				}
				return tc.pages[q.Get("page_token")]
			})
			var found []uint64
			err := searchProven(context.Background(), c, v, client.AuditQuery{Type: "other.event"}, nil, func(p *provenEntry) error {
				found = append(found, p.index)
				return nil
			})
			if tc.want == "" {
				if err != nil || fmt.Sprint(found) != "[0 2 3]" {
					t.Fatalf("search = %v, %v; want entries [0 2 3]", found, err)
				}
				return
			}
			if !errors.Is(err, errSearchOrder) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("search = %v, %v; want refused: %s", found, err, tc.want)
			}
		})
	}
}

// An authority names its hops in its chain answer, and the auditor
// prints those names, proven or not: a name that is not what an
// authority issues (a line break that would print a hop of its own, a
// terminal escape that would hide "NOT PROVEN") is refused before
// anything is printed, with or without --verify.
func TestAuditChainRefusesBentNames(t *testing.T) {
	s, v := keys(t)
	ghost := "\n   └─ spiffe://org-a.example/agent/b → spiffe://org-a.example/agent/admin  [admin:all]\n" +
		"      delegation d-ghost, issued by org-a.example; proven in org-a.example's log, entry 42"
	for _, tc := range []struct {
		name, field string
		value       any
		want        string
	}{
		{"a delegatee with a line break", "delegatee", tdA + "/agent/b" + ghost, "is not a SPIFFE ID"},
		{"a delegator with an escape", "delegator", tdA + "/agent/a\x1b[8m", "is not a SPIFFE ID"},
		{"an id with an escape", "id", "d1\x1b[8m", "is not a delegation id"},
		{"an issuer saying more", "issuer", tdA + "; proven in org-a.example's log, entry 9\x1b[8m", "is not spiffe://<trust domain>"},
		{"a principal with a line break", "principal", "alice" + ghost, "principal"},
		{"a scope with a space", "scopes", []string{"read write"}, "is not a scope"},
		{"no scope", "scopes", []string{}, "no scope"},
	} {
		for _, verify := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s, --verify=%v", tc.name, verify), func(t *testing.T) {
				l := newRlog(t, s, "org-a.example/audit")
				h := hopSpec{id: "d1", delegator: tdA + "/agent/a", delegatee: tdA + "/agent/b", principal: "alice", scopes: []string{"read"}, depth: 1}
				i := l.logHop(h, 0x40)
				c := fakeAuthority(t, func() any {
					a := hopAnswer(h, l.proven(i))
					a[tc.field] = tc.value
					return map[string]any{"hops": []any{a}}
				}, l.proven)
				var out bytes.Buffer
				err := auditChain(context.Background(), &auditFlags{verify: verify}, c, v, []string{"d1"}, &out)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want one saying %q; printed:\n%s", err, tc.want, out.String())
				}
				if out.Len() > 0 {
					t.Errorf("printed before refusing:\n%s", out.String())
				}
				if msg := shownError(err); strings.ContainsAny(msg, "\n\x1b") {
					t.Errorf("the error as printed holds a line break or an escape: %s", msg)
				}
			})
		}
	}
}

// What a log proved may still be any text (an operator's name, a scope,
// a decision id): the chain prints it quoted, so that no line it prints
// is the log's.
func TestPrintChainQuotesLoggedText(t *testing.T) {
	idx := uint64(3)
	h := chainHop{ChainHop: authority.ChainHop{ID: "d1", Issuer: tdA, Delegator: tdA + "/agent/a", Delegatee: tdA + "/agent/b",
		Principal: "alice\u202e", Scopes: []string{"read\x1b[8m", "write"}, Index: &idx,
		Decision:       &authority.ChainDecision{ID: "dec 1; proven", Result: "allow", PolicyRevision: "rev\n1"},
		Accountability: map[string]map[string]any{"delegator": {"operator": "ops\n└─ spiffe://org-a.example/agent/x → y", "responsible_party": "\x1b[2K"}}}}
	h.verifiedBy = tdA
	h.Revoked = &hopRevocation{Of: "d1\nfake", Log: tdA, RevokedBy: "admin\x1b[8m", Reason: "why\n"}
	var out bytes.Buffer
	printChain(&out, []chainHop{h})
	got := out.String()
	if strings.ContainsAny(got, "\x1b\u202e") {
		t.Errorf("an escape or a bidirectional override printed as is:\n%q", got)
	}
	if n := strings.Count(got, "\n"); n != 6 {
		t.Errorf("%d lines, want 6 (principal, hop, id, revocation, decision, accountability):\n%s", n, got)
	}
	for _, want := range []string{`on behalf of "alice\u202e"`, `["read\x1b[8m" write]`, `decision "dec 1; proven": allow (policy revision "rev\n1")`,
		`operator "ops\n└─ spiffe://org-a.example/agent/x → y"`, `responsible "\x1b[2K"`, `by "admin\x1b[8m": "why\n" ("d1\nfake"`} {
		if !strings.Contains(got, want) {
			t.Errorf("no %s in:\n%s", want, got)
		}
	}
}

// An accountable party's field left blank prints as -, one that says -
// as "-": never as nothing, and never the one for the other.
func TestPrintChainBlankAccountableFields(t *testing.T) {
	idx := uint64(1)
	h := chainHop{ChainHop: authority.ChainHop{ID: "d1", Issuer: tdA, Delegator: tdA + "/agent/a", Delegatee: tdA + "/agent/b", Principal: "alice", Index: &idx,
		Accountability: map[string]map[string]any{
			"delegator": {"operator": "", "model_provider": "", "model": "", "responsible_party": ""},
			"delegatee": {"operator": "-", "model_provider": "", "model": "m1", "responsible_party": "bob"}}}}
	var out bytes.Buffer
	printChain(&out, []chainHop{h})
	for _, want := range []string{"delegator accountable: operator -, model -, responsible -\n",
		`delegatee accountable: operator "-", model -/m1, responsible bob` + "\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in:\n%s", want, out.String())
		}
	}
}

// audit show, tail and search print a proven entry's fields: a log that
// logged a subject with a line break cannot print an entry of its own.
func TestPrintEntryQuotesLoggedText(t *testing.T) {
	var out bytes.Buffer
	p := &provenEntry{index: 4, entry: mustEncodeEntry(t, audit.Entry{Time: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), Type: "x", Actor: audit.ActorSystem,
		Subject: "s\n#5 2025-01-02T00:00:00.000000000Z delegation.revoked actor=spiffe://org-a.example/admin subject=d1\x1b[8m",
		Details: json.RawMessage(`{"note":"pay \u202egnp.exe\u200b \ud83d\ude00"}`)})}
	if err := printEntry(&out, p, false); err != nil {
		t.Fatal(err)
	}
	want := `#4 2025-01-01T00:00:00.000000000Z x actor=system subject="s\n#5 2025-01-02T00:00:00.000000000Z delegation.revoked actor=spiffe://org-a.example/admin subject=d1\x1b[8m"` + "\n" +
		`    details: {"note":"pay \u202egnp.exe\u200b 😀"}` + "\n"
	if out.String() != want {
		t.Errorf("printed\n%q\nwant\n%q", out.String(), want)
	}
}

// An entry's policy revision is printed with its decision: which policy
// decided is what an operator reads a decision's entry for, as much as
// the decision.
func TestPrintEntryShowsThePolicyRevision(t *testing.T) {
	for _, tc := range []struct{ name, entry, want string }{
		{"a decision", `{"v":1,"time":"2025-01-01T00:00:00.000000000Z","type":"policy.decision","actor":"system","subject":"s","decision_id":"d1","policy_revision":"ab12","details":{"allow":false}}`,
			"#4 2025-01-01T00:00:00.000000000Z policy.decision actor=system subject=s\n    decision_id: \"d1\"\n    policy_revision: \"ab12\"\n    details: {\"allow\":false}\n"},
		{"a start", `{"v":1,"time":"2025-01-01T00:00:00.000000000Z","type":"authority.started","actor":"system","subject":"s","policy_revision":"cd34"}`,
			"#4 2025-01-01T00:00:00.000000000Z authority.started actor=system subject=s\n    policy_revision: \"cd34\"\n"},
		{"none", `{"v":1,"time":"2025-01-01T00:00:00.000000000Z","type":"x","actor":"system","subject":"s"}`,
			"#4 2025-01-01T00:00:00.000000000Z x actor=system subject=s\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := printEntry(&out, &provenEntry{index: 4, entry: []byte(tc.entry)}, false); err != nil {
				t.Fatal(err)
			}
			if out.String() != tc.want {
				t.Errorf("printed\n%q\nwant\n%q", out.String(), tc.want)
			}
		})
	}
}

// printableJSON escapes what is not printable, and only that: the JSON
// reads the same.
func TestPrintableJSON(t *testing.T) {
	in := map[string]string{"a": "x\u202ey\U000e0001z\x7f", "b": "é 😀 <&>"}
	b, _ := json.Marshal(in)
	got := printableJSON(b)
	var back map[string]string
	if err := json.Unmarshal([]byte(got), &back); err != nil || back["a"] != in["a"] || back["b"] != in["b"] {
		t.Fatalf("printableJSON(%s) = %s, which reads back as %q (%v)", b, got, back, err)
	}
	if strings.ContainsAny(got, "\u202e\U000e0001\x7f") || !strings.Contains(got, "é 😀") {
		t.Errorf("printableJSON(%s) = %s: want the format and control characters escaped, the printable ones as they are", b, got)
	}
}

// printJSON, which prints what an authority answered, shows it as it
// reads: indented JSON that reads back the same, format characters
// escaped.
func TestPrintJSON(t *testing.T) {
	in := map[string]any{"operator": "Acme \u202egnp.exe\u200b", "scopes": []string{"read\x7f", "é 😀"}, "n": 1}
	var out strings.Builder
	if err := printJSON(&out, in); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	var back map[string]any
	if err := json.Unmarshal([]byte(got), &back); err != nil || back["operator"] != in["operator"] || fmt.Sprint(back["scopes"]) != fmt.Sprint(in["scopes"]) {
		t.Fatalf("printJSON printed\n%s\nwhich reads back as %v (%v)", got, back, err)
	}
	if strings.ContainsAny(got, "\u202e\u200b\x7f") || !strings.Contains(got, "é 😀") {
		t.Errorf("printJSON printed\n%s\nwant the format and control characters escaped, the printable ones as they are", got)
	}
	if want, _ := json.MarshalIndent(map[string]int{"a": 1}, "", "  "); func() string {
		var b strings.Builder
		_ = printJSON(&b, map[string]int{"a": 1})
		return b.String()
	}() != string(want)+"\n" {
		t.Errorf("printJSON of plain JSON is not json.MarshalIndent's, with a newline")
	}
}

func TestShownError(t *testing.T) {
	for _, tc := range []struct{ err, want string }{
		{"plain", "plain"},
		{"two\nlines", "two\nlines"},
		{"hop d1\x1b[8m: refused", `"hop d1\x1b[8m: refused"`},
		{"ok\nbad\rline", "ok\n\"bad\\rline\""},
	} {
		if got := shownError(errors.New(tc.err)); got != tc.want {
			t.Errorf("shownError(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// show, tail, search and prove prove the checkpoints they were shown
// one history, with each other and with the one audit chain remembered:
// a log that shows this auditor another history (here: another entry 2
// under the same size) is a fork, and tail, show and prove print nothing
// of it.
func TestShowTailSearchProveOneHistory(t *testing.T) {
	s, v := keys(t)
	honest, other := newRlog(t, s, "org-a.example/audit"), newRlog(t, s, "org-a.example/audit")
	for i, l := range []*rlog{honest, other} {
		for j := range 3 {
			l.add(mustEncodeEntry(t, audit.Entry{Time: time.Unix(int64(1000+j), 0), Type: "x", Actor: audit.ActorSystem, Subject: fmt.Sprintf("s%d-%d", j, i*j)}))
		}
	}
	// The checkpoint (entries(0)) from the honest view, entries 1 and 2
	// from the other.
	split := func(i uint64) map[string]any {
		if i == 0 {
			return honest.proven(i)
		}
		return other.proven(i)
	}
	mem := t.TempDir()
	if err := os.WriteFile(filepath.Join(mem, memoryFile(logKey(v))), []byte(honest.checkpoint("")), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "mandate-audit.state") // what audit verify remembers
	if err := os.WriteFile(state, []byte(honest.checkpoint("")), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		run     func(w io.Writer) error
		printed bool // search prints what it finds as it goes
	}{
		{"show, another history than the one audit verify remembered", func(w io.Writer) error {
			return auditShow(ctx, &auditFlags{state: state}, fakeAuthority(t, func() any { return nil }, other.proven), v, []string{"2"}, w)
		}, false},
		{"tail, another history than the one audit verify remembered", func(w io.Writer) error {
			return auditTail(ctx, &auditFlags{n: 2, state: state}, fakeAuthority(t, func() any { return nil }, other.proven), v, nil, w)
		}, false},
		{"search, another history than the one audit verify remembered", func(w io.Writer) error {
			c := fakeAuthority(t, func() any { return nil }, other.proven, func(url.Values) []any { return []any{other.proven(2)} })
			return auditSearch(ctx, &auditFlags{state: state}, c, v, nil, w)
		}, true},
		{"prove, another history than the one audit verify remembered", func(w io.Writer) error {
			return auditProve(ctx, &auditFlags{state: state}, fakeAuthority(t, func() any { return nil }, other.proven), v, []string{"2"}, w)
		}, false},
		{"prove, another history than the one remembered", func(w io.Writer) error {
			return auditProve(ctx, &auditFlags{remember: mem}, fakeAuthority(t, func() any { return nil }, other.proven), v, []string{"2"}, w)
		}, false},
		{"tail, split between the checkpoint and the entries", func(w io.Writer) error {
			return auditTail(ctx, &auditFlags{n: 2}, fakeAuthority(t, func() any { return nil }, split), v, nil, w)
		}, false},
		{"show, another history than the one remembered", func(w io.Writer) error {
			return auditShow(ctx, &auditFlags{remember: mem}, fakeAuthority(t, func() any { return nil }, other.proven), v, []string{"2"}, w)
		}, false},
		{"search, hits of two histories", func(w io.Writer) error {
			c := fakeAuthority(t, func() any { return nil }, other.proven, func(url.Values) []any { return []any{honest.proven(1), other.proven(2)} })
			return auditSearch(ctx, &auditFlags{}, c, v, nil, w)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := tc.run(&out)
			if !errors.Is(err, errFork) {
				t.Fatalf("err = %v, want a fork", err)
			}
			if !tc.printed && out.Len() > 0 {
				t.Errorf("printed before the fork was found:\n%s", out.String())
			}
		})
	}
	// audit verify's memory of another authority's log (an auditor of
	// several in one directory) is not this log's: passed over.
	s2, _ := keys(t)
	elsewhere := newRlog(t, s2, "org-b.example/audit")
	elsewhere.add(mustEncodeEntry(t, audit.Entry{Time: time.Unix(1000, 0), Type: "x", Actor: audit.ActorSystem}))
	otherState := filepath.Join(t.TempDir(), "mandate-audit.state")
	if err := os.WriteFile(otherState, []byte(elsewhere.checkpoint("")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := auditShow(ctx, &auditFlags{state: otherState}, fakeAuthority(t, func() any { return nil }, honest.proven), v, []string{"2"}, io.Discard); err != nil {
		t.Errorf("show with another log's checkpoint in --state: %v", err)
	}
	// One history, remembered or not, is printed.
	var out bytes.Buffer
	if err := auditShow(ctx, &auditFlags{remember: mem}, fakeAuthority(t, func() any { return nil }, honest.proven), v, []string{"2"}, &out); err != nil || !strings.Contains(out.String(), "subject=s2-0") {
		t.Fatalf("show of the remembered history: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := auditTail(ctx, &auditFlags{n: 2}, fakeAuthority(t, func() any { return nil }, honest.proven), v, nil, &out); err != nil || strings.Count(out.String(), "\n") != 2 {
		t.Fatalf("tail of one history: %v\n%s", err, out.String())
	}
}

// audit checkpoint prints the signed note line by line as shown shows
// text: a note verifies with signature lines of keys the auditor does
// not know, whose names anyone may choose, and these may not move the
// cursor or reorder what is shown. An honest checkpoint prints as it is.
func TestCheckpointPrintsForeignSignaturesQuoted(t *testing.T) {
	s, v := keys(t)
	l := newRlog(t, s, "org-a.example/audit")
	l.add(mustEncodeEntry(t, audit.Entry{Time: time.Unix(1000, 0), Type: "x", Actor: audit.ActorSystem}))
	honest := l.checkpoint("")
	foreign := "\u2014 witness\u202e.example\u009b2J AAAAAAE=\n"
	hostile := honest + foreign
	if _, err := note.Open([]byte(hostile), note.VerifierList(v)); err != nil {
		t.Fatalf("the checkpoint with a foreign signature does not verify: %v", err)
	}
	for _, tc := range []struct{ name, served, want string }{
		{"an honest checkpoint", honest, honest},
		{"a foreign signature line", hostile, honest + strconv.Quote(strings.TrimSuffix(foreign, "\n")) + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fakeAuthority(t, func() any { return nil }, func(uint64) map[string]any { return map[string]any{"checkpoint": tc.served} })
			var out bytes.Buffer
			if err := auditCheckpointCmd(context.Background(), &auditFlags{}, c, v, nil, &out); err != nil || out.String() != tc.want {
				t.Errorf("audit checkpoint = %v, printed %q; want %q", err, out.String(), tc.want)
			}
		})
	}
}

// audit show --json and tail --json print an entry's logged bytes as
// they are, once they are JSON on one line: a log's bytes that are not
// (which no log encodes) would print an entry of their own in JSON Lines,
// or a terminal control, and are refused.
func TestShowTailJSONRefuseWhatIsNotOneLineOfJSON(t *testing.T) {
	s, v := keys(t)
	honest := mustEncodeEntry(t, audit.Entry{Time: time.Unix(1000, 0), Type: "x", Actor: audit.ActorSystem, Subject: "pay \u202egnp.exe"})
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		entry []byte
		ok    bool
	}{
		{"an entry the log encoded", honest, true},
		{"two JSON objects on two lines", []byte(`{"v":1}` + "\n" + `{"v":1,"type":"delegation.revoked"}`), false},
		{"one JSON object over two lines", []byte("{\"v\":1,\n\"type\":\"x\"}"), false},
		{"a carriage return between members", []byte("{\"v\":1,\r\"type\":\"x\"}"), false},
		{"a terminal control, not JSON", []byte("{\"v\":1,\"type\":\"\x1b[2J\"}"), false},
		// JSON as encoding/json reads it, but no UTF-8, as every entry a
		// log encodes is: 0x9b is CSI to a terminal reading 8-bit controls.
		{"an 8-bit terminal control", []byte("{\"v\":1,\"type\":\"\x9b2J\"}"), false},
		{"not JSON", []byte("entry"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newRlog(t, s, "org-a.example/audit")
			l.add(tc.entry)
			c := fakeAuthority(t, func() any { return nil }, l.proven)
			var show, tail bytes.Buffer
			errShow := auditShow(ctx, &auditFlags{asJSON: true}, c, v, []string{"0"}, &show)
			errTail := auditTail(ctx, &auditFlags{asJSON: true, n: 1}, c, v, nil, &tail)
			want := string(tc.entry) + "\n"
			if !tc.ok {
				want = ""
			}
			for _, r := range []struct {
				cmd string
				err error
				out string
			}{{"show", errShow, show.String()}, {"tail", errTail, tail.String()}} {
				if (r.err == nil) != tc.ok || r.out != want {
					t.Errorf("%s --json = %v, printed %q; want ok %v, printed %q", r.cmd, r.err, r.out, tc.ok, want)
				}
			}
		})
	}
}

// Numbers are printed as the log holds them (never through a float64,
// which refuses 1e400 and rounds a 20-digit serial), and an absent field
// as "-".
func TestPrintEntryNumbersAsLogged(t *testing.T) {
	var out bytes.Buffer
	p := &provenEntry{index: 7, entry: []byte(`{"v":1,"time":"2025-01-01T00:00:00.000000000Z","type":"policy.decision","actor":"system","details":{"big":12345678901234567890123,"n":1e400,"serial":18446744073709551615}}`)}
	if err := printEntry(&out, p, false); err != nil {
		t.Fatal(err)
	}
	want := "#7 2025-01-01T00:00:00.000000000Z policy.decision actor=system subject=-\n" +
		`    details: {"big":12345678901234567890123,"n":1e400,"serial":18446744073709551615}` + "\n"
	if out.String() != want {
		t.Errorf("printed\n%q\nwant\n%q", out.String(), want)
	}
}

// prefixLogs are one log at size 3 (small) and at size 5 (large, the
// same first three entries), and its verifier key.
func prefixLogs(t *testing.T) (note.Verifier, *rlog, *rlog) {
	s, v := keys(t)
	small, large := newRlog(t, s, "org-a.example/audit"), newRlog(t, s, "org-a.example/audit")
	for j := range 5 {
		e := mustEncodeEntry(t, audit.Entry{Time: time.Unix(int64(1000+j), 0), Type: "x", Actor: audit.ActorSystem, Subject: fmt.Sprintf("s%d", j)})
		if j < 3 {
			small.add(e)
		}
		large.add(e)
	}
	return v, small, large
}

// audit verify tells a checkpoint older than the one it remembers, that
// the log proves consistent with it (a stale answer), from a log that
// cannot prove the size it signed before (it lost entries): the first is
// not a fork, the second is, with both checkpoints shown. Either fails,
// and neither is remembered in place of the larger.
func TestVerifyStaleCheckpointIsNotAFork(t *testing.T) {
	v, small, large := prefixLogs(t)
	state := filepath.Join(t.TempDir(), "state")
	if err := os.WriteFile(state, []byte(large.checkpoint("")), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name           string
		canProve, fork bool
		says           string
	}{
		{"stale: the log proves the remembered size", true, false, "older than the size 5 this auditor remembers; the two are consistent (not a fork)"},
		{"shrank: the log cannot prove the size it signed", false, true, "the log shrank: it signed a checkpoint of size 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("GET /v1/audit/checkpoint", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, small.checkpoint("")) })
			mux.HandleFunc("GET /v1/audit/proofs/consistency", func(w http.ResponseWriter, r *http.Request) {
				from, _ := strconv.ParseUint(r.URL.Query().Get("from"), 10, 64)
				to, _ := strconv.ParseUint(r.URL.Query().Get("to"), 10, 64)
				if !tc.canProve {
					w.Header().Set("Content-Type", "application/problem+json")
					w.WriteHeader(http.StatusBadRequest)
					io.WriteString(w, `{"type":"https://mandate.dev/problems/invalid-tree-size","title":"Invalid tree size","status":400}`)
					return
				}
				p, err := large.tree.ConsistencyProof(from, to)
				if err != nil {
					t.Error(err)
				}
				json.NewEncoder(w).Encode(map[string]any{"from": from, "to": to, "proof": p})
			})
			var out bytes.Buffer
			err := auditVerify(context.Background(), &auditFlags{state: state}, fakeServer(t, mux), v, nil, &out)
			if err == nil || !strings.Contains(err.Error(), tc.says) || errors.Is(err, errFork) != tc.fork {
				t.Fatalf("audit verify = %v, want an error saying %q (a fork: %v)", err, tc.says, tc.fork)
			}
			if tc.fork && !strings.Contains(err.Error(), "--- remembered checkpoint (") {
				t.Errorf("a fork without the remembered checkpoint shown: %v", err)
			}
			if got, _ := os.ReadFile(state); string(got) != large.checkpoint("") {
				t.Errorf("remembered %q, want the larger checkpoint kept", got)
			}
		})
	}
}

// check-proof prints the entry of a proof file (anyone's text) with what
// a terminal acts on escaped: a bidirectional override, a C1 control.
func TestCheckProofPrintsEntryEscaped(t *testing.T) {
	s, v := keys(t)
	l := newRlog(t, s, "org-a.example/audit")
	l.add(mustEncodeEntry(t, audit.Entry{Time: time.Unix(1000, 0), Type: "x", Actor: audit.ActorSystem, Subject: "ops\u202eevil\u009b31m"}))
	pr := l.proven(0)
	p := &provenEntry{index: 0, entry: pr["entry_b64"].([]byte), proof: pr["inclusion_proof"].([][]byte), checkpoint: []byte(pr["checkpoint"].(string))}
	file := filepath.Join(t.TempDir(), "e.tlog-proof")
	if err := os.WriteFile(file, p.marshalProof(), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := auditCheckProof(context.Background(), &auditFlags{}, nil, v, []string{file}, &out); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); strings.ContainsAny(got, "\u202e\u009b") || !strings.Contains(got, `ops\u202eevil\u009b31m`) {
		t.Errorf("check-proof printed %q, want the override and the control escaped", got)
	}
}

// Two audit verify runs at once: one remembers a newer checkpoint between
// the other's fetch and its reading of the memory. The other asks the log
// again and passes, instead of calling a healthy log stale.
func TestVerifyOverlappingRuns(t *testing.T) {
	v, small, large := prefixLogs(t)
	state := filepath.Join(t.TempDir(), "state")
	if err := os.WriteFile(state, []byte(small.checkpoint("")), 0o600); err != nil {
		t.Fatal(err)
	}
	asked := 0
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/audit/checkpoint", func(w http.ResponseWriter, r *http.Request) {
		if asked++; asked == 1 { // the other run remembers size 5 as this one is answered size 3
			if err := os.WriteFile(state, []byte(large.checkpoint("")), 0o600); err != nil {
				t.Error(err)
			}
			io.WriteString(w, small.checkpoint(""))
			return
		}
		io.WriteString(w, large.checkpoint(""))
	})
	mux.HandleFunc("GET /v1/audit/proofs/consistency", func(w http.ResponseWriter, r *http.Request) {
		from, _ := strconv.ParseUint(r.URL.Query().Get("from"), 10, 64)
		to, _ := strconv.ParseUint(r.URL.Query().Get("to"), 10, 64)
		p, err := large.tree.ConsistencyProof(from, to)
		if err != nil {
			t.Error(err)
		}
		json.NewEncoder(w).Encode(map[string]any{"from": from, "to": to, "proof": p})
	})
	var out bytes.Buffer
	if err := auditVerify(context.Background(), &auditFlags{state: state}, fakeServer(t, mux), v, nil, &out); err != nil || asked != 2 {
		t.Fatalf("audit verify while another run remembered a newer checkpoint = %v (asked %d times), want it to ask again and pass", err, asked)
	}
	if got, _ := os.ReadFile(state); string(got) != large.checkpoint("") {
		t.Errorf("remembered %q, want the newer checkpoint", got)
	}
}

// TestAuditSearchHoldsNoPageTokens: a log whose search answers page
// after empty page, each with a new page token of a megabyte (its
// signed checkpoint claims entries enough for that), does not make the
// auditor hold every token it was given.
func TestAuditSearchHoldsNoPageTokens(t *testing.T) {
	s, v := keys(t)
	cp := log.Checkpoint{Origin: "org-a.example/audit", Size: 1 << 40, Hash: make([]byte, 32)}
	signed, err := note.Sign(&note.Note{Text: string(cp.Marshal())}, s)
	if err != nil {
		t.Fatal(err)
	}
	heapNow := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	const pages = 100
	calls := 0
	var before, after uint64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/audit/checkpoint", func(w http.ResponseWriter, r *http.Request) { w.Write(signed) })
	mux.HandleFunc("GET /v1/audit/search", func(w http.ResponseWriter, r *http.Request) {
		calls++
		page := map[string]any{"entries": []any{}}
		switch {
		case calls == 2:
			before = heapNow()
		case calls == pages:
			after = heapNow()
		}
		if calls < pages {
			page["next_page_token"] = fmt.Sprint(calls) + strings.Repeat("x", 900<<10)
		}
		json.NewEncoder(w).Encode(page)
	})
	c := fakeServer(t, mux)
	if err := searchProven(context.Background(), c, v, client.AuditQuery{Type: "other.event"}, nil, func(*provenEntry) error { return nil }); err != nil {
		t.Fatalf("search = %v", err)
	}
	if calls != pages {
		t.Fatalf("search asked %d pages, want %d", calls, pages)
	}
	if grown := int64(after) - int64(before); grown > 32<<20 {
		t.Errorf("after %d pages of a 900 KiB token each, the auditor holds %d MiB more", pages, grown>>20)
	}
}

// audit search prints only hits that match what it asked: a log whose
// search answers other entries (proven, but not about what was searched
// for) is refused before they are printed; hits that match (a SPIFFE ID
// as an accountable party, a time at since) are printed.
func TestAuditSearchRefusesHitsThatDoNotMatch(t *testing.T) {
	s, v := keys(t)
	l := newRlog(t, s, "org-a.example/audit")
	at := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	l.add(mustEncodeEntry(t, audit.Entry{Time: at, Type: "svid.issued", Actor: tdA + "/node/n1", Subject: tdA + "/agent/a",
		Accountable: []audit.Party{{SPIFFEID: spiffeid.RequireFromString(tdA + "/agent/b")}}, DecisionID: "d1", DelegationID: "g1"}))
	type query = struct {
		spiffeID, typ, since, until, decision, delegation string
		limit                                             int
	}
	for _, tc := range []struct {
		name  string
		q     query
		match bool
	}{
		{"type", query{typ: "svid.issued"}, true},
		{"another type", query{typ: "node.attested"}, false},
		{"actor", query{spiffeID: tdA + "/node/n1"}, true},
		{"subject", query{spiffeID: tdA + "/agent/a"}, true},
		{"accountable party", query{spiffeID: tdA + "/agent/b"}, true},
		{"another SPIFFE ID", query{spiffeID: tdA + "/agent/c"}, false},
		{"decision", query{decision: "d1"}, true},
		{"another decision", query{decision: "d2"}, false},
		{"another delegation", query{delegation: "g2"}, false},
		{"since its time", query{since: "2026-01-01T12:00:00Z"}, true},
		{"since after it", query{since: "2026-01-01T12:00:00.000000001Z"}, false},
		{"until its time", query{until: "2026-01-01T13:00:00+01:00"}, false},
		{"one criterion of two not met", query{typ: "svid.issued", spiffeID: tdA + "/agent/c"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fakeAuthority(t, func() any { return nil }, l.proven, func(url.Values) []any { return []any{l.proven(0)} })
			var out bytes.Buffer
			err := auditSearch(context.Background(), &auditFlags{q: tc.q}, c, v, nil, &out)
			if tc.match {
				if err != nil || !strings.HasPrefix(out.String(), "#0 ") {
					t.Fatalf("audit search = %v, printed %q; want entry 0", err, out.String())
				}
				return
			}
			if !errors.Is(err, errSearchOrder) || !strings.Contains(err.Error(), "entry 0, which does not match the search") || out.Len() > 0 {
				t.Fatalf("audit search = %v, printed %q; want the hit refused, nothing printed", err, out.String())
			}
		})
	}
	// Flags it cannot read are refused before the log is asked (a
	// negative limit is not "all").
	for _, q := range []query{{since: "yesterday"}, {until: "2026-01-01"}, {limit: -1}} {
		if err := auditSearch(context.Background(), &auditFlags{q: q}, nil, v, nil, io.Discard); !errors.As(err, new(usageError)) {
			t.Errorf("audit search %+v = %v, want a usage error", q, err)
		}
	}
}

// show and prove take an INDEX written with leading zeroes as the entry
// it names, not as a server answering another entry than asked.
func TestShowIndexWithLeadingZeroes(t *testing.T) {
	s, v := keys(t)
	l := newRlog(t, s, "org-a.example/audit")
	for i := range 3 {
		l.add(mustEncodeEntry(t, audit.Entry{Time: time.Unix(int64(1000+i), 0), Type: "x", Actor: audit.ActorSystem, Subject: fmt.Sprint("s", i)}))
	}
	c := fakeAuthority(t, func() any { return nil }, l.proven)
	for _, idx := range []string{"1", "01", "001"} {
		var out bytes.Buffer
		if err := auditShow(context.Background(), &auditFlags{}, c, v, []string{idx}, &out); err != nil || !strings.Contains(out.String(), "subject=s1") {
			t.Errorf("audit show %s = %v, printed %q; want entry 1", idx, err, out.String())
		}
		out.Reset()
		if err := auditProve(context.Background(), &auditFlags{}, c, v, []string{idx}, &out); err != nil || !strings.Contains(out.String(), "\nindex 1\n") {
			t.Errorf("audit prove %s = %v, wrote %q; want entry 1's proof", idx, err, out.String())
		}
	}
}

// audit verify says it remembered the checkpoint only once it has: an
// empty --state is refused before the log is asked, and a memory that
// cannot be written fails the run without a word of remembering.
func TestVerifyRemembersBeforeSayingSo(t *testing.T) {
	v, _, large := prefixLogs(t)
	c := fakeAuthority(t, func() any { return nil }, func(uint64) map[string]any { return map[string]any{"checkpoint": large.checkpoint("")} })
	dir := t.TempDir()
	for _, tc := range []struct{ name, state string }{
		{"empty --state", ""},
		{"--state in no directory", filepath.Join(dir, "missing", "state")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := auditVerify(context.Background(), &auditFlags{state: tc.state}, c, v, nil, &out)
			if err == nil || out.Len() > 0 {
				t.Fatalf("audit verify --state %q = %v, printed %q; want an error and nothing printed", tc.state, err, out.String())
			}
		})
	}
	var out bytes.Buffer
	state := filepath.Join(dir, "state")
	if err := auditVerify(context.Background(), &auditFlags{state: state}, c, v, nil, &out); err != nil || out.String() != "first checkpoint seen: size 5; remembered in "+state+"\n" {
		t.Fatalf("audit verify = %v, printed %q", err, out.String())
	}
	if got, _ := os.ReadFile(state); string(got) != large.checkpoint("") {
		t.Errorf("remembered %q, want the checkpoint", got)
	}
}

// An entry is printed only when its proven bytes are an audit entry as a
// log encodes them (audit.Decode): bytes that are JSON but read one way
// here and another elsewhere (a key twice, a key in another case, an
// actor that is no SPIFFE ID) are refused by audit show (as text or
// JSON), tail and check-proof, as search and chain refuse them, nothing
// printed.
func TestShowTailCheckProofRefuseEntriesNotInTheLogsEncoding(t *testing.T) {
	s, v := keys(t)
	const head = `{"v":1,"time":"2025-01-01T00:00:00.000000000Z","type":"x","actor":"system"`
	ctx := context.Background()
	for _, tc := range []struct{ name, entry string }{
		{"a key twice", head + `,"subject":"spiffe://org-a.example/agent/a","subject":"spiffe://org-a.example/agent/b"}`},
		{"a type twice", head + `,"type":"delegation.revoked"}`},
		{"a key in another case", head + `,"Subject":"spiffe://org-a.example/agent/b"}`},
		{"a details key twice", head + `,"details":{"reason":"a","reason":"b"}}`},
		{"an actor with a line break", `{"v":1,"time":"2025-01-01T00:00:00.000000000Z","type":"x","actor":"system\n#5 x"}`},
		{"another version", `{"v":2,"time":"2025-01-01T00:00:00.000000000Z","type":"x","actor":"system"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newRlog(t, s, "org-a.example/audit")
			l.add([]byte(tc.entry))
			c := fakeAuthority(t, func() any { return nil }, l.proven)
			pr := l.proven(0)
			p := &provenEntry{index: 0, entry: pr["entry_b64"].([]byte), proof: pr["inclusion_proof"].([][]byte), checkpoint: []byte(pr["checkpoint"].(string))}
			file := filepath.Join(t.TempDir(), "e.tlog-proof")
			if err := os.WriteFile(file, p.marshalProof(), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, r := range []struct {
				cmd string
				run func(w io.Writer) error
			}{
				{"show", func(w io.Writer) error { return auditShow(ctx, &auditFlags{}, c, v, []string{"0"}, w) }},
				{"show --json", func(w io.Writer) error { return auditShow(ctx, &auditFlags{asJSON: true}, c, v, []string{"0"}, w) }},
				{"tail", func(w io.Writer) error { return auditTail(ctx, &auditFlags{n: 1}, c, v, nil, w) }},
				{"tail --json", func(w io.Writer) error { return auditTail(ctx, &auditFlags{n: 1, asJSON: true}, c, v, nil, w) }},
				{"check-proof", func(w io.Writer) error { return auditCheckProof(ctx, &auditFlags{}, nil, v, []string{file}, w) }},
			} {
				var out bytes.Buffer
				err := r.run(&out)
				if err == nil || strings.Contains(out.String(), "#0") || strings.Contains(out.String(), `"v"`) {
					t.Errorf("%s = %v, printed %q; want an error and no entry printed", r.cmd, err, out.String())
				}
			}
		})
	}
}

// A checkpoint is read as C2SP tlog-checkpoint writes it, signature or
// not: its size in decimal without leading zeroes, its root a SHA-256
// hash in standard base64, and the tree of no entries with the empty
// tree's root. audit verify remembers no other, and says none verified:
// a root no tree has, or one of two spellings of a size, is no
// checkpoint of the log's history.
func TestVerifyRefusesCheckpointsNoTreeHas(t *testing.T) {
	s, v := keys(t)
	root := bytes.Repeat([]byte{7}, 32)
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	// A 32-byte root ends in one "=" after a character with two bits to
	// spare: set one, and it decodes to the same root.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	loose := []byte(b64(root))
	loose[len(loose)-2] = alphabet[strings.IndexByte(alphabet, loose[len(loose)-2])|1]
	if d, err := base64.StdEncoding.DecodeString(string(loose)); err != nil || !bytes.Equal(d, root) {
		t.Fatalf("%s decodes to %x, %v", loose, d, err)
	}
	for _, tc := range []struct {
		name, text string
		ok         bool
	}{
		{"a checkpoint", "org-a.example/audit\n7\n" + b64(root) + "\n", true},
		{"the empty tree", "org-a.example/audit\n0\n" + b64(rfc6962.DefaultHasher.EmptyRoot()) + "\n", true},
		{"a size with a leading zero", "org-a.example/audit\n07\n" + b64(root) + "\n", false},
		{"a size with a sign", "org-a.example/audit\n+7\n" + b64(root) + "\n", false},
		{"a root of 31 bytes", "org-a.example/audit\n7\n" + b64(root[:31]) + "\n", false},
		{"a root of 33 bytes", "org-a.example/audit\n7\n" + b64(append(root, 1)) + "\n", false},
		{"no root", "org-a.example/audit\n7\n\n", false},
		{"a root not in standard base64", "org-a.example/audit\n7\n" + base64.RawStdEncoding.EncodeToString(root) + "\n", false},
		{"a root with bits set past the hash", "org-a.example/audit\n7\n" + string(loose) + "\n", false},
		{"the empty tree with another root", "org-a.example/audit\n0\n" + b64(root) + "\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			signed, err := note.Sign(&note.Note{Text: tc.text}, s)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := openCheckpoint(signed, v); (err == nil) != tc.ok {
				t.Errorf("openCheckpoint = %v, want ok %v", err, tc.ok)
			}
			c := fakeAuthority(t, func() any { return nil }, func(uint64) map[string]any { return map[string]any{"checkpoint": string(signed)} })
			state := filepath.Join(t.TempDir(), "mandate-audit.state")
			var out bytes.Buffer
			err = auditVerify(context.Background(), &auditFlags{state: state}, c, v, nil, &out)
			_, statErr := os.Stat(state)
			if (err == nil) != tc.ok || (statErr == nil) != tc.ok {
				t.Errorf("audit verify = %v, printed %q, remembered %v; want ok %v", err, out.String(), statErr == nil, tc.ok)
			}
		})
	}
}

// audit prove writes the proof (to standard output, without --out) with
// the checkpoint as the log signed it and the log's signature only: a
// signature line of another key, whose name is anyone's (a C1 control,
// a bidirectional override, which a note may hold), is not written, and
// the proof still verifies.
func TestProveWritesTheLogsSignatureOnly(t *testing.T) {
	s, v := keys(t)
	l := newRlog(t, s, "org-a.example/audit")
	l.add(mustEncodeEntry(t, audit.Entry{Time: time.Unix(1000, 0), Type: "x", Actor: audit.ActorSystem, Subject: "s"}))
	skey, _, err := note.GenerateKey(rand.Reader, "w\u009b2J\u202eevil")
	if err != nil {
		t.Fatal(err)
	}
	other, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	c := fakeAuthority(t, func() any { return nil }, func(i uint64) map[string]any {
		p := l.proven(i)
		n, err := note.Open([]byte(p["checkpoint"].(string)), note.VerifierList(v))
		if err != nil {
			t.Fatal(err)
		}
		signed, err := note.Sign(&note.Note{Text: n.Text}, other, s)
		if err != nil {
			t.Fatal(err)
		}
		p["checkpoint"] = string(signed)
		return p
	})
	var out bytes.Buffer
	if err := auditProve(context.Background(), &auditFlags{}, c, v, []string{"0"}, &out); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(out.String(), "\u009b\u202e") || strings.Contains(out.String(), "evil") {
		t.Errorf("audit prove wrote %q, with another key's signature line", out.String())
	}
	file := filepath.Join(t.TempDir(), "e.tlog-proof")
	if err := os.WriteFile(file, out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := auditCheckProof(context.Background(), &auditFlags{}, nil, v, []string{file}, io.Discard); err != nil {
		t.Errorf("the proof written does not verify: %v", err)
	}
}

// A checkpoint whose text (an extension line the log signed) is not
// printable is no proof audit prove writes: a Mandate log writes none.
func TestProveRefusesACheckpointNotPrintable(t *testing.T) {
	s, v := keys(t)
	l := newRlog(t, s, "org-a.example/audit")
	l.add(mustEncodeEntry(t, audit.Entry{Time: time.Unix(1000, 0), Type: "x", Actor: audit.ActorSystem, Subject: "s"}))
	c := fakeAuthority(t, func() any { return nil }, func(i uint64) map[string]any {
		p := l.proven(i)
		n, err := note.Open([]byte(p["checkpoint"].(string)), note.VerifierList(v))
		if err != nil {
			t.Fatal(err)
		}
		signed, err := note.Sign(&note.Note{Text: n.Text + "ext \u009b2J\u202e\n"}, s)
		if err != nil {
			t.Fatal(err)
		}
		p["checkpoint"] = string(signed)
		return p
	})
	var out bytes.Buffer
	if err := auditProve(context.Background(), &auditFlags{}, c, v, []string{"0"}, &out); err == nil || out.Len() > 0 {
		t.Errorf("audit prove = %v, wrote %q; want an error and nothing written", err, out.String())
	}
}

// The signed checkpoint audit search asks for, to bound its pages
// without a hit by the log's size, is one the log showed: it must be
// one history with the one this auditor remembers, as the checkpoints
// of the hits must. A log that signs another history's (a larger size,
// to keep the search going) fails the search as a fork.
func TestAuditSearchHoldsTheSizeItAskedToOneHistory(t *testing.T) {
	s, v := keys(t)
	honest, forked := newRlog(t, s, "org-a.example/audit"), newRlog(t, s, "org-a.example/audit")
	for j := range 5 {
		if j < 3 {
			honest.add(mustEncodeEntry(t, audit.Entry{Time: time.Unix(int64(1000+j), 0), Type: "x", Actor: audit.ActorSystem, Subject: fmt.Sprint("h", j)}))
		}
		forked.add(mustEncodeEntry(t, audit.Entry{Time: time.Unix(int64(1000+j), 0), Type: "x", Actor: audit.ActorSystem, Subject: fmt.Sprint("f", j)}))
	}
	state := filepath.Join(t.TempDir(), "mandate-audit.state")
	if err := os.WriteFile(state, []byte(honest.checkpoint("")), 0o600); err != nil {
		t.Fatal(err)
	}
	pages := 0
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/audit/checkpoint", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, forked.checkpoint("")) })
	mux.HandleFunc("GET /v1/audit/proofs/consistency", func(w http.ResponseWriter, r *http.Request) {
		from, _ := strconv.ParseUint(r.URL.Query().Get("from"), 10, 64)
		to, _ := strconv.ParseUint(r.URL.Query().Get("to"), 10, 64)
		p, err := forked.tree.ConsistencyProof(from, to)
		if err != nil {
			t.Error(err)
		}
		json.NewEncoder(w).Encode(map[string]any{"from": from, "to": to, "proof": p})
	})
	mux.HandleFunc("GET /v1/audit/search", func(w http.ResponseWriter, r *http.Request) {
		page := map[string]any{"entries": []any{}}
		if pages++; pages < 4 {
			page["next_page_token"] = fmt.Sprint("t", pages)
		}
		json.NewEncoder(w).Encode(page)
	})
	c := fakeServer(t, mux)
	f := &auditFlags{state: state}
	f.q.typ = "x"
	var out bytes.Buffer
	if err := auditSearch(context.Background(), f, c, v, nil, &out); !errors.Is(err, errFork) {
		t.Errorf("audit search = %v, printed %q; want a fork", err, out.String())
	}
}

// audit show and tail --json print the logged bytes as they are, but a
// terminal control: a log's encoding escapes the ASCII ones, but writes
// a C1 control (U+0080 to U+009F: U+009B is CSI to a terminal reading
// C1 controls in UTF-8) as it was given, as any party whose words are
// logged (a reason, a name, a decision's input) may give it. It is
// printed as its \u escape, the same JSON value: an export of the log
// (tail --json) does not stop at it. Without --json, it is escaped too.
func TestShowTailJSONEscapeC1Controls(t *testing.T) {
	s, v := keys(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		e    audit.Entry
	}{
		{"a CSI in the subject", audit.Entry{Time: time.Unix(1000, 0), Type: "x", Actor: audit.ActorSystem, Subject: "a\u009b2Jb"}},
		{"a next line in the details", audit.Entry{Time: time.Unix(1000, 0), Type: "x", Actor: audit.ActorSystem, Subject: "s", Details: json.RawMessage(`{"reason":"a\u0085b"}`)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newRlog(t, s, "org-a.example/audit")
			l.add(mustEncodeEntry(t, tc.e))
			c := fakeAuthority(t, func() any { return nil }, l.proven)
			for _, r := range []struct {
				cmd string
				run func(w io.Writer) error
			}{
				{"show --json", func(w io.Writer) error { return auditShow(ctx, &auditFlags{asJSON: true}, c, v, []string{"0"}, w) }},
				{"tail --json", func(w io.Writer) error { return auditTail(ctx, &auditFlags{n: 1, asJSON: true}, c, v, nil, w) }},
			} {
				// Printed, the control as its \u escape: the same JSON.
				var out bytes.Buffer
				if err := r.run(&out); err != nil || strings.ContainsAny(out.String(), "\u009b\u0085") {
					t.Errorf("%s = %v, printed %q; want it printed, the control escaped", r.cmd, err, out.String())
					continue
				}
				var got, want any
				if err := json.Unmarshal(out.Bytes(), &got); err != nil {
					t.Fatalf("%s printed %q: %v", r.cmd, out.String(), err)
				}
				if err := json.Unmarshal(l.entries[0], &want); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s printed %q, which is not the JSON of the entry logged, %q", r.cmd, out.String(), l.entries[0])
				}
			}
			var out bytes.Buffer
			if err := auditShow(ctx, &auditFlags{}, c, v, []string{"0"}, &out); err != nil || strings.ContainsAny(out.String(), "\u009b\u0085") {
				t.Errorf("show = %v, printed %q; want it printed, the control escaped", err, out.String())
			}
		})
	}
}
