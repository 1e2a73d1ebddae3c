package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/audit"
)

// audit verify --witness verifies the latest checkpoint the log's
// witnesses cosigned: org-b witnesses org-a's log, org-a submits its
// checkpoints to org-b (audit.witnesses), and an auditor of org-a needs
// org-b's cosignature; one asking for a witness that did not cosign is
// refused.
func TestAuditVerifyWithWitnesses(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	serveIn := func(dir string, extra ...string) (string, func()) {
		ctx, cancel := context.WithCancel(context.Background())
		var out, errOut syncBuffer
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "mandate-data")}, extra...), &out, &errOut)
		}()
		url := waitServing(t, &out, done)
		stop := sync.OnceFunc(func() { cancel(); <-done })
		t.Cleanup(stop)
		return url, stop
	}
	_, stopA := serveIn(dirA, "--trust-domain", "org-a.example")
	logKey, err := os.ReadFile(filepath.Join(dirA, "mandate-data", "audit", "log.vkey"))
	if err != nil {
		t.Fatal(err)
	}
	stopA()

	confB := filepath.Join(dirB, "mandate.yaml")
	if err := os.WriteFile(confB, fmt.Appendf(nil, "trust_domain: org-b.example\naudit:\n  witness:\n    logs: [%q]\n", strings.TrimSpace(string(logKey))), 0o600); err != nil {
		t.Fatal(err)
	}
	urlB, _ := serveIn(dirB, "--config", confB)
	witnessKey := filepath.Join(dirB, "mandate-data", "audit", "witness.vkey")
	wkey, err := os.ReadFile(witnessKey)
	if err != nil {
		t.Fatal(err)
	}
	bundleB := filepath.Join(dirA, "org-b.bundle.json")
	doc := mustCLI(t, urlB, dirB, "bundle", "show", "--bundle", filepath.Join(dirB, "mandate-data", "admin", "bundle.pem"))
	if err := os.WriteFile(bundleB, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	confA := filepath.Join(dirA, "mandate.yaml")
	if err := os.WriteFile(confA, fmt.Appendf(nil, `trust_domain: org-a.example
federation:
  trust_domains:
    - trust_domain: org-b.example
      bundle_endpoint_url: %s/v1/bundle
      bundle_file: %s
audit:
  witnesses:
    - url: %s/v1/witness
      vkey: %q
      trust_domain: org-b.example
`, urlB, bundleB, urlB, strings.TrimSpace(string(wkey))), 0o600); err != nil {
		t.Fatal(err)
	}
	urlA, _ := serveIn(dirA, "--config", confA)

	// The first round runs as the authority starts; a few seconds at most.
	var out string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		out, err = cli(t, urlA, dirA, "audit", "verify", "--witness", witnessKey, "--state", filepath.Join(dirA, "audit.state"))
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || !strings.Contains(out, "cosigned by 1 of 1 witnesses (org-b.example/witness)") {
		t.Fatalf("audit verify --witness: %v\n%s", err, out)
	}

	_, otherKey, err := note.GenerateKey(rand.Reader, "org-c.example/witness")
	if err != nil {
		t.Fatal(err)
	}
	// One of two witnesses given (--witnesses 1): the log's.
	out, err = cli(t, urlA, dirA, "audit", "verify", "--witness", witnessKey, "--witness", otherKey, "--witnesses", "1", "--state", filepath.Join(dirA, "audit.state"))
	if err != nil || !strings.Contains(out, "cosigned by 1 of 2 witnesses (org-b.example/witness)") {
		t.Errorf("audit verify with one of two witnesses: %v\n%s", err, out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--witness", witnessKey, "--witness", otherKey}, "no checkpoint cosigned by 2 of the 2 witnesses given"},
		{[]string{"--witness", witnessKey, "--witnesses", "2"}, "--witnesses 2"},
		{[]string{"--witness", witnessKey, "--witness", witnessKey}, "given twice"},
		// The same key under another name: one witness, not two.
		{[]string{"--witness", witnessKey, "--witness", "org-c.example/w+00000000+" + strings.SplitN(strings.TrimSpace(string(wkey)), "+", 3)[2]}, "given twice"},
		{[]string{"--witness", "no-such-file"}, "--witness no-such-file"},
		{[]string{"--witnesses", "1"}, "--witnesses 1"},
	} {
		_, err := cli(t, urlA, dirA, append([]string{"audit", "verify", "--state", filepath.Join(dirA, "audit.state")}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("audit verify %q: %v, want an error saying %q", c.args, err, c.want)
		}
	}
}

// A --witness key that is the log's own key (--vkey), given as it is or
// as a cosignature/v1 key, under its name or another, is refused before
// anything is asked of the server: the log holds it, and could cosign
// its own checkpoints, a fork among them.
func TestAuditVerifyRefusesTheLogsKeyAsAWitness(t *testing.T) {
	_, logKey, err := note.GenerateKey(rand.Reader, "org-a.example/audit")
	if err != nil {
		t.Fatal(err)
	}
	asCosigner, err := fnote.VKeyToCosignatureV1(logKey)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.SplitN(logKey, "+", 3)[2])
	if err != nil {
		t.Fatal(err)
	}
	renamed, err := note.NewEd25519VerifierKey("witness.example/w1", ed25519.PublicKey(raw[1:]))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, k := range []string{logKey, asCosigner, renamed} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), []string{"audit", "verify", "--server", "https://127.0.0.1:1", "--data-dir", dir, "--vkey", logKey,
			"--witness", k, "--state", filepath.Join(dir, "audit.state")}, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), "the log's own key") {
			t.Errorf("audit verify --witness %s (the log's key): %v, want a refusal naming the log's own key", k, err)
		}
	}
}

// audit verify --witness says when each witness counted made its
// cosignature (the timestamp it signed, C2SP tlog-cosignature): the
// log chooses which cosigned checkpoint it serves, and one it has kept
// serving since long ago (a log that withholds the newer ones its
// witnesses cosigned) shows as that old.
func TestAuditVerifyWithWitnessesSaysWhenTheyCosigned(t *testing.T) {
	skey, vkey, err := note.GenerateKey(rand.Reader, "org-a.example/audit")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	l := newRlog(t, s, "org-a.example/audit")
	l.add(mustEncodeEntry(t, audit.Entry{Time: time.Unix(1000, 0), Type: "x", Actor: audit.ActorSystem, Subject: "s"}))
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	wkey := "org-b.example/witness+00000000+" + base64.StdEncoding.EncodeToString(append([]byte{0x04}, pub...))
	wv, err := fnote.NewVerifierForCosignatureV1(wkey)
	if err != nil {
		t.Fatal(err)
	}
	signed := []byte(l.checkpoint(""))
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	const at = 1700000000 // 2023-11-14T22:13:20Z
	sig := binary.BigEndian.AppendUint32(nil, wv.KeyHash())
	sig = binary.BigEndian.AppendUint64(sig, at)
	sig = append(sig, ed25519.Sign(priv, fmt.Appendf(nil, "cosignature/v1\ntime %d\n%s", at, n.Text))...)
	cosigned := fmt.Appendf(signed, "— %s %s\n", wv.Name(), base64.StdEncoding.EncodeToString(sig))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/audit/checkpoint/witnessed", func(w http.ResponseWriter, r *http.Request) { w.Write(cosigned) })
	c := fakeServer(t, mux)
	f := &auditFlags{state: filepath.Join(t.TempDir(), "mandate-audit.state"), witnessKeys: stringList{wkey}, logKey: vkey}
	if err := loadWitnesses(f); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := auditVerify(context.Background(), f, c, v, nil, &out); err != nil {
		t.Fatalf("audit verify --witness: %v\n%s", err, out.String())
	}
	if want := "org-b.example/witness cosigned it at 2023-11-14T22:13:20Z"; !strings.Contains(out.String(), want) {
		t.Errorf("audit verify --witness printed\n%s\nwant it to say %q", out.String(), want)
	}

	// --witness-max-age: a cosignature older than it counts for nothing.
	for _, c2 := range []struct {
		maxAge time.Duration
		ok     bool
	}{{time.Hour, false}, {time.Since(time.Unix(at, 0)) + time.Hour, true}} {
		f := &auditFlags{state: filepath.Join(t.TempDir(), "mandate-audit.state"), witnessKeys: stringList{wkey}, logKey: vkey, witnessMaxAge: c2.maxAge}
		if err := loadWitnesses(f); err != nil {
			t.Fatal(err)
		}
		err := auditVerify(context.Background(), f, c, v, nil, io.Discard)
		switch {
		case c2.ok && err != nil:
			t.Errorf("--witness-max-age %s, the cosignature younger: %v", c2.maxAge, err)
		case !c2.ok && (err == nil || !strings.Contains(err.Error(), "older than --witness-max-age 1h0m0s: org-b.example/witness at 2023-11-14T22:13:20Z")):
			t.Errorf("--witness-max-age %s, the cosignature older: %v, want a refusal naming it", c2.maxAge, err)
		}
	}
	f = &auditFlags{witnessMaxAge: time.Hour}
	if err := loadWitnesses(f); err == nil {
		t.Error("--witness-max-age without --witness was taken")
	}
}
