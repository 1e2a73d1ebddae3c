package api_test

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/witness"
)

// addCheckpointBody is a C2SP tlog-witness request for org's latest
// checkpoint, from size old.
func addCheckpointBody(t *testing.T, org *env, old uint64) (body, checkpoint []byte, size uint64) {
	t.Helper()
	cp, err := org.admin.AuditCheckpoint(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	_, after, _ := bytes.Cut(cp, []byte("\n"))
	fmt.Sscan(string(after), &size)
	var proof [][]byte
	if old > 0 && old < size {
		cons, err := org.admin.AuditConsistency(ctxT(t), old, size)
		if err != nil {
			t.Fatal(err)
		}
		proof = cons.Proof
	}
	return witness.Request(old, proof, cp), cp, size
}

// witnessPair is org-a, and org-b witnessing org-a's log.
func witnessPair(t *testing.T) (orgA, orgB *env) {
	t.Helper()
	orgA = start(t, "org-a.example")
	orgB = start(t, "org-b.example", func(c *authority.Config) { c.Audit.Witness.Logs = []string{orgA.a.AuditVerifierKey()} })
	return orgA, orgB
}

// addCheckpoint posts body to w's add-checkpoint, anonymously: its
// status, Content-Type and answer.
func addCheckpoint(t *testing.T, w *env, body []byte) (int, string, []byte) {
	t.Helper()
	resp, err := w.rawClient(nil, nil).Post(w.url+"/v1/witness/add-checkpoint", "text/plain", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

// An authority given a federated peer's log verifier key witnesses that
// log (C2SP tlog-witness): it cosigns the peer's checkpoints as the log
// grows, refuses one not from the size it cosigned last (409,
// text/x.tlog.size), one whose proof does not verify (422), logs it
// does not witness (404); and its cosignatures verify with the key it
// publishes, by transparency-dev's cosignature/v1 verifier.
func TestWitnessCosignsAPeersLog(t *testing.T) {
	orgA, orgB := witnessPair(t)
	anon := orgB.rawClient(nil, nil)
	post := func(body []byte) (int, string, []byte) { t.Helper(); return addCheckpoint(t, orgB, body) }

	// The witness's key: served, and written in the data directory.
	resp, err := anon.Get(orgB.url + "/v1/witness/verifier-key")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	keyPath, vkeyPath := authority.WitnessPaths(orgB.dataDir)
	written, err := os.ReadFile(vkeyPath)
	if err != nil || !bytes.Equal(written, served) || !strings.HasPrefix(string(served), "org-b.example/witness+") {
		t.Fatalf("witness verifier key: served %q, written %q (%v)", served, written, err)
	}
	if _, err := credfile.ReadPrivate(keyPath); err != nil {
		t.Errorf("the witness's signing key %s is not private: %v", keyPath, err)
	}
	v, err := fnote.NewVerifierForCosignatureV1(strings.TrimSpace(string(served)))
	if err != nil {
		t.Fatal(err)
	}
	cosigned := func(cp, cosig []byte) {
		t.Helper()
		n, err := note.Open(append(bytes.Clone(cp), cosig...), note.VerifierList(v))
		if err != nil || len(n.Sigs) != 1 {
			t.Fatalf("cosignature %q does not verify with the witness's key: %v", cosig, err)
		}
	}

	body, cp, first := addCheckpointBody(t, orgA, 0)
	status, ctype, ans := post(body)
	if status != http.StatusOK || ctype != "text/plain; charset=utf-8" {
		t.Fatalf("first checkpoint: %d %s %s", status, ctype, ans)
	}
	cosigned(cp, ans)

	orgA.joinNode() // the log grows
	body, cp, size := addCheckpointBody(t, orgA, first)
	if size <= first {
		t.Fatalf("the log did not grow: %d, then %d", first, size)
	}
	if status, _, ans = post(body); status != http.StatusOK {
		t.Fatalf("%d → %d: %d %s", first, size, status, ans)
	}
	cosigned(cp, ans)

	// From the older size again: 409 with the size it holds.
	body, _, _ = addCheckpointBody(t, orgA, first)
	if status, ctype, ans = post(body); status != http.StatusConflict || ctype != "text/x.tlog.size" || string(ans) != fmt.Sprintf("%d\n", size) {
		t.Errorf("from a stale size: %d %s %q, want 409 text/x.tlog.size %d", status, ctype, ans, size)
	}
	// A proof that does not verify: 422, and said in the server log.
	orgA.joinNode()
	body, _, _ = addCheckpointBody(t, orgA, size)
	i := bytes.Index(body, []byte("\n")) + 1
	copy(body[i:], "AAAA")
	if status, _, ans = post(body); status != http.StatusUnprocessableEntity || !bytes.Contains(ans, []byte("witness-inconsistent")) {
		t.Errorf("a tampered proof: %d %s, want 422 witness-inconsistent", status, ans)
	}
	if !strings.Contains(orgB.logs.String(), "evidence that the log forked") {
		t.Error("the server log does not keep the inconsistent checkpoint")
	}
	// Its own log is not one it witnesses: 404.
	if status, _, ans = post(func() []byte { b, _, _ := addCheckpointBody(t, orgB, 0); return b }()); status != http.StatusNotFound || !bytes.Contains(ans, []byte("witness-unknown-log")) {
		t.Errorf("a log it does not witness: %d %s, want 404 witness-unknown-log", status, ans)
	}
	metrics := string(orgB.scrape())
	for _, want := range []string{`mandate_witness_checkpoints_total{outcome="cosigned"} 2`, `mandate_witness_checkpoints_total{outcome="size_conflict"} 1`,
		`mandate_witness_checkpoints_total{outcome="inconsistent"} 1`, `mandate_witness_checkpoints_total{outcome="refused"} 1`} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics has no line %s", want)
		}
	}

	// An authority that witnesses nothing answers 404 on both.
	for _, r := range []struct{ method, path string }{{"POST", "/v1/witness/add-checkpoint"}, {"GET", "/v1/witness/verifier-key"}} {
		req, _ := http.NewRequest(r.method, orgA.url+r.path, strings.NewReader(""))
		resp, err := orgA.rawClient(nil, nil).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if status, typ := problemOfAnswer(t, resp); status != http.StatusNotFound || typ != "not-found" {
			t.Errorf("%s %s of an authority witnessing nothing: %d %s", r.method, r.path, status, typ)
		}
	}
}

// witnessedCheckpoint waits (a minute at most) for e's witnessed
// checkpoint of at least size min, and returns it.
func witnessedCheckpoint(t *testing.T, e *env, min uint64) ([]byte, uint64) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		cp, err := e.admin.GetRaw(ctxT(t), "/v1/audit/checkpoint/witnessed")
		var size uint64
		if err == nil {
			_, after, _ := bytes.Cut(cp, []byte("\n"))
			fmt.Sscan(string(after), &size)
			if size >= min {
				return cp, size
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no witnessed checkpoint of size %d or more: %v (size %d)", min, err, size)
		}
	}
}

// A log given witnesses (audit.witnesses) submits its checkpoints to
// them as it grows, and serves the latest cosigned one, with the log's
// signature and the witness's cosignature: a witness that is a federated
// authority, authenticated by its bundle. After a restart, which forgot
// the size the witness holds, it is asked again from the size the
// witness says (409).
func TestLogSubmitsItsCheckpointsToWitnesses(t *testing.T) {
	orgA := start(t, "org-a.example")
	if _, err := orgA.admin.GetRaw(ctxT(t), "/v1/audit/checkpoint/witnessed"); err == nil || !strings.Contains(err.Error(), "checkpoint-not-witnessed") {
		t.Errorf("the witnessed checkpoint of a log without witnesses: %v, want 404 checkpoint-not-witnessed", err)
	}
	logKey := orgA.a.AuditVerifierKey()
	orgB := start(t, "org-b.example", func(c *authority.Config) { c.Audit.Witness.Logs = []string{logKey} })
	orgA.federate(orgB) // org-a authenticates org-b's server by its bundle
	witnessKey := orgB.a.Witness().VerifierKey()
	withWitness := func(c *authority.Config) {
		c.DataDir = orgA.dataDir
		c.Audit.Witnesses = []authority.WitnessEndpoint{{URL: orgB.url + "/v1/witness", VKey: witnessKey, TrustDomain: "org-b.example"}}
	}
	orgA.stop()
	orgA = start(t, "org-a.example", withWitness)

	lv, err := note.NewVerifier(logKey)
	if err != nil {
		t.Fatal(err)
	}
	wv, err := fnote.NewVerifierForCosignatureV1(witnessKey)
	if err != nil {
		t.Fatal(err)
	}
	check := func(cp []byte) {
		t.Helper()
		n, err := note.Open(cp, note.VerifierList(lv, wv))
		if err != nil || len(n.Sigs) != 2 {
			t.Fatalf("witnessed checkpoint %q: %v, want the log's signature and the witness's", cp, err)
		}
	}
	cp, first := witnessedCheckpoint(t, orgA, 1)
	check(cp)
	// The query chooses among the checkpoints kept: how many of which
	// witnesses cosigned it.
	for q, want := range map[string]string{
		"?witness=org-b.example/witness&cosignatures=1": "",
		"?cosignatures=2":                "checkpoint-not-witnessed",
		"?witness=org-c.example/witness": "checkpoint-not-witnessed",
		"?cosignatures=0":                "invalid-request",
		"?cosignatures=1&cosignatures=1": "invalid-request",
		"?witness=":                      "invalid-request",
		"?tree_size=1":                   "invalid-request",
		"?cosignatures=%zz":              "invalid-request",
	} {
		got, err := orgA.admin.GetRaw(ctxT(t), "/v1/audit/checkpoint/witnessed"+q)
		if want == "" && err == nil {
			check(got)
		} else if want == "" || err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("witnessed checkpoint %s: %v, want %s", q, err, cmp.Or(want, "it"))
		}
	}

	// The log grows: the next one is cosigned from the first (a proof).
	orgA.joinNode()
	cp, size := witnessedCheckpoint(t, orgA, first+1)
	check(cp)

	// Restarted, the log asks from 0; the witness answers 409 with the
	// size it holds, and is asked again from it.
	orgA.stop()
	orgA = start(t, "org-a.example", withWitness)
	orgA.joinNode()
	cp, _ = witnessedCheckpoint(t, orgA, size+1)
	check(cp)
	if !regexp.MustCompile(`mandate_audit_witness_cosigned_tree_size\{witness="org-b.example/witness"\} [1-9]`).Match(orgA.scrape()) {
		t.Errorf("/metrics does not say the size org-b cosigned:\n%s", grepLines(string(orgA.scrape()), "mandate_audit_witness"))
	}
	if strings.Contains(orgA.logs.String(), "did not cosign") {
		t.Errorf("the log said a witness did not cosign:\n%s", orgA.logs.String())
	}
	metrics := string(orgB.scrape())
	if !strings.Contains(metrics, `mandate_witness_checkpoints_total{outcome="size_conflict"} 1`+"\n") {
		t.Errorf("the witness was not asked again after a size conflict:\n%s", grepLines(metrics, "mandate_witness"))
	}
}

// A consistency proof between equal sizes, sent with the checkpoint the
// witness cosigned last, is refused 422 but is no evidence of a fork:
// the root hash is the one cosigned, and anyone who read that
// checkpoint can send it. It is counted refused, not inconsistent, and
// not said in the server log as a fork.
func TestWitnessProofBetweenEqualSizesIsNoForkEvidence(t *testing.T) {
	orgA, orgB := witnessPair(t)
	post := func(body []byte) (int, []byte) {
		t.Helper()
		status, _, ans := addCheckpoint(t, orgB, body)
		return status, ans
	}
	body, _, size := addCheckpointBody(t, orgA, 0)
	if status, ans := post(body); status != http.StatusOK {
		t.Fatalf("first checkpoint: %d %s", status, ans)
	}
	body, _, _ = addCheckpointBody(t, orgA, size)
	i := bytes.Index(body, []byte("\n")) + 1
	body = slices.Concat(body[:i], []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n"), body[i:])
	if status, ans := post(body); status != http.StatusUnprocessableEntity || !bytes.Contains(ans, []byte("witness-inconsistent")) {
		t.Errorf("a proof between equal sizes: %d %s, want 422 witness-inconsistent", status, ans)
	}
	if strings.Contains(orgB.logs.String(), "forked") {
		t.Errorf("the server log says the log forked:\n%s", orgB.logs.String())
	}
	metrics := string(orgB.scrape())
	for _, want := range []string{`mandate_witness_checkpoints_total{outcome="cosigned"} 1`, `mandate_witness_checkpoints_total{outcome="refused"} 1`} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics has no line %s", want)
		}
	}
	if strings.Contains(metrics, `outcome="inconsistent"`) {
		t.Error("/metrics counts the request inconsistent")
	}
}
