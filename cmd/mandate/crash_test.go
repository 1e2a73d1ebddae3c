package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt"
)

// serveProcess starts `mandate serve` as a real child process and returns
// it with its URL once it serves.
func serveProcess(t *testing.T, bin, dataDir, addr string) (*exec.Cmd, string) {
	t.Helper()
	cmd, url, _ := startServeProcess(t, bin, dataDir, addr, false)
	return cmd, url
}

// startServeProcess is serveProcess, with the server's log to read when
// withLog (it must then be read, or the server waits on it; it ends when
// the process does), else discarded.
func startServeProcess(t *testing.T, bin, dataDir, addr string, withLog bool) (*exec.Cmd, string, io.Reader) {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--listen", addr, "--data-dir", dataDir)
	var logs io.Reader
	if withLog {
		var err error
		if logs, err = cmd.StderrPipe(); err != nil {
			t.Fatal(err)
		}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		if m := servingRE.FindStringSubmatch(lines.Text()); m != nil {
			go func() {
				for lines.Scan() {
				}
			}()
			return cmd, m[1], logs
		}
	}
	t.Fatalf("serve exited before serving: %v", lines.Err())
	return nil, "", nil
}

// loggedEntry is what the crash tests read of an entry.
type loggedEntry struct {
	Type         string `json:"type"`
	Subject      string `json:"subject"`
	DelegationID string `json:"delegation_id"`
	Details      struct {
		Kind   string `json:"kind"`
		Serial string `json:"serial"`
	} `json:"details"`
	leafHash string
}

// logEntries reads the log's first size entries.
func logEntries(t *testing.T, ctx context.Context, c *client.Client, size uint64) []loggedEntry {
	t.Helper()
	out := make([]loggedEntry, size)
	for i := range size {
		var ans struct {
			Entry    json.RawMessage `json:"entry"`
			LeafHash string          `json:"leaf_hash"`
		}
		if err := c.Do(ctx, "GET", fmt.Sprintf("/v1/audit/entries/%d", i), nil, &ans); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		_ = json.Unmarshal(ans.Entry, &out[i])
		out[i].leafHash = ans.LeafHash
	}
	return out
}

// missingFrom counts the ids of acked that are not in logged.
func missingFrom(acked, logged map[string]bool) int {
	n := 0
	for id := range acked {
		if !logged[id] {
			n++
		}
	}
	return n
}

// buildMandate builds this command into a temporary directory, which it
// returns with the binary's path.
func buildMandate(t *testing.T) (dir, bin string) {
	t.Helper()
	dir = t.TempDir()
	bin = filepath.Join(dir, "mandate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir, bin
}

// logVerifier is the verifier of the log kept in dataDir.
func logVerifier(t *testing.T, dataDir string) note.Verifier {
	t.Helper()
	vkey, err := os.ReadFile(filepath.Join(dataDir, "audit", "log.vkey"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func adminClient(t *testing.T, url, dataDir string) *client.Client {
	t.Helper()
	chain, key, bundle, err := credfile.Load(credfile.In(filepath.Join(dataDir, "admin")))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{Server: url, SVID: chain, Key: key, Bundle: bundle, MaxConns: 32})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func verifiedCheckpoint(t *testing.T, ctx context.Context, c *client.Client, v note.Verifier) (*log.Checkpoint, error) {
	raw, err := c.GetRaw(ctx, "/v1/audit/checkpoint")
	if err != nil {
		return nil, err
	}
	n, err := note.Open(raw, note.VerifierList(v))
	if err != nil {
		t.Fatalf("checkpoint signature: %v", err)
	}
	cp := new(log.Checkpoint)
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil {
		t.Fatal(err)
	}
	return cp, nil
}

// TestCrashKeepsAcknowledgedEntries kills the authority (SIGKILL, a real
// child process) while 32 writers are being answered, restarts it, and
// checks that every acknowledged event is in the log and that the log is
// consistent with every checkpoint handed out before the kill. It does so
// at several kill points.
func TestCrashKeepsAcknowledgedEntries(t *testing.T) {
	dir, bin := buildMandate(t)
	dataDir := filepath.Join(dir, "data")
	addr := freeAddr(t)
	for round, killAfter := range []time.Duration{150 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond} {
		cmd, url := serveProcess(t, bin, dataDir, addr)
		v := logVerifier(t, dataDir)
		c := adminClient(t, url, dataDir)
		ctx, cancel := context.WithCancel(context.Background())
		var mu sync.Mutex
		acked := map[string]bool{} // token ids whose creation was answered
		var seen []*log.Checkpoint
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				for ctx.Err() == nil {
					tok, err := c.CreateJoinToken(ctx, time.Minute)
					if err != nil {
						return // the server is gone
					}
					mu.Lock()
					acked[tok.ID] = true
					mu.Unlock()
				}
			})
		}
		wg.Go(func() {
			for ctx.Err() == nil {
				if cp, err := verifiedCheckpoint(t, ctx, c, v); err == nil {
					mu.Lock()
					seen = append(seen, cp)
					mu.Unlock()
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
		time.Sleep(killAfter)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		cancel()
		wg.Wait()
		c.CloseIdle()

		restarted, url := serveProcess(t, bin, dataDir, addr)
		c = adminClient(t, url, dataDir)
		ctx = context.Background()
		cp, err := verifiedCheckpoint(t, ctx, c, v)
		if err != nil {
			t.Fatal(err)
		}
		inLog := map[string]bool{}
		for _, e := range logEntries(t, ctx, c, cp.Size) {
			if e.Type == "join_token.created" {
				inLog[e.Subject] = true
			}
		}
		if missing := missingFrom(acked, inLog); missing > 0 {
			t.Errorf("round %d (kill after %s): %d of %d acknowledged join tokens missing from the log", round, killAfter, missing, len(acked))
		}
		for _, old := range seen {
			var cons struct{ Proof [][]byte }
			path := fmt.Sprintf("/v1/audit/proofs/consistency?from=%d&to=%d", old.Size, cp.Size)
			if err := c.Do(ctx, "GET", path, nil, &cons); err != nil {
				t.Fatalf("round %d: %s: %v", round, path, err)
			}
			if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, cp.Size, cons.Proof, old.Hash, cp.Hash); err != nil {
				t.Errorf("round %d: checkpoint of size %d seen before the kill is not consistent with size %d after: %v", round, old.Size, cp.Size, err)
			}
		}
		t.Logf("round %d: killed after %s with %d tokens acknowledged, %d checkpoints seen; log size %d after restart",
			round, killAfter, len(acked), len(seen), cp.Size)
		c.CloseIdle()
		_ = restarted.Process.Signal(syscall.SIGTERM)
		_ = restarted.Wait()
		// No token stored without its entry: a token is stored in the
		// commit that logs it, so the kill left none unlogged.
		withStore(t, dataDir, func(tx store.Tx) error {
			return tx.Scan(attest.BucketJoinTokens, nil, nil, func(_, v []byte) error {
				var rec attest.JoinToken
				if err := json.Unmarshal(v, &rec); err != nil {
					return err
				}
				if !inLog[rec.ID] {
					t.Errorf("round %d: join token %s is stored, but no join_token.created entry logs it", round, rec.ID)
				}
				return nil
			})
		})
	}
}

// withStore runs fn in a read transaction of the store of a stopped
// authority's data directory.
func withStore(t *testing.T, dataDir string, fn func(tx store.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dataDir, "mandate.db"), bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.View(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

// TestCrashKeepsSVIDs kills a real `mandate serve` (SIGKILL) while a node
// asks for its agent's X509-SVIDs; after a restart, every SVID that was
// answered has its svid.issued entry, and the serial index (written in
// the commit that logs the SVID) and the log agree both ways: each
// serial indexed points at the entry that names it, and each x509
// svid.issued entry is indexed.
func TestCrashKeepsSVIDs(t *testing.T) {
	dir, bin := buildMandate(t)
	dataDir := filepath.Join(dir, "data")
	addr := freeAddr(t)
	cmd, url := serveProcess(t, bin, dataDir, addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin := adminClient(t, url, dataDir)
	_, _, bundle, err := credfile.Load(credfile.In(filepath.Join(dataDir, "admin")))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := client.New(client.Config{Server: url, Bundle: bundle})
	if err != nil {
		t.Fatal(err)
	}
	joined, err := joinNewNode(ctx, admin, pub)
	if err != nil {
		t.Fatal(err)
	}
	agentID := "spiffe://mandate.localhost/agent/crash-svids"
	if _, err := admin.CreateAgent(ctx, &client.Agent{SPIFFEID: agentID, NodeIDs: []string{joined.id}}); err != nil {
		t.Fatal(err)
	}
	node, err := client.New(client.Config{Server: url, SVID: joined.chain, Key: joined.key, Bundle: bundle, MaxConns: 32})
	if err != nil {
		t.Fatal(err)
	}
	load := newCrashLoad() // answered: serials (hex) of the SVIDs
	for range 16 {
		_, csr, err := client.NewKeyAndCSR()
		if err != nil {
			t.Fatal(err)
		}
		load.wg.Go(func() {
			for ctx.Err() == nil {
				ans, err := node.X509SVID(ctx, agentID, csr)
				if err != nil {
					if !load.killed.Load() {
						t.Errorf("an X509-SVID was refused before the kill: %v", err)
					}
					return // the server is gone
				}
				chain, err := ans.Certificates()
				if err != nil || len(chain) == 0 {
					t.Errorf("an answered X509-SVID: %v", err)
					return
				}
				load.answer(chain[0].SerialNumber.Text(16))
			}
		})
	}
	load.kill(t, cmd, cancel)
	acked := load.answered

	restarted, c, cp, entries := restartedLog(t, bin, dataDir, addr)
	logged := map[string]uint64{} // serial → index of its svid.issued entry
	for i, e := range entries {
		if e.Type == "svid.issued" && e.Details.Kind == "x509" && e.Details.Serial != "" {
			logged[e.Details.Serial] = uint64(i)
		}
	}
	missing := 0
	for serial := range acked {
		if _, ok := logged[serial]; !ok {
			missing++
		}
	}
	if missing > 0 || len(acked) == 0 {
		t.Fatalf("%d of %d answered X509-SVIDs are missing from the log", missing, len(acked))
	}
	c.CloseIdle()
	_ = restarted.Process.Signal(syscall.SIGTERM)
	_ = restarted.Wait()
	indexed := 0
	withStore(t, dataDir, func(tx store.Tx) error {
		return tx.Scan("svids_by_serial", nil, nil, func(k, v []byte) error {
			indexed++
			at, ok := logged[string(k)]
			if !ok || len(v) != 8 || binary.BigEndian.Uint64(v) != at {
				t.Errorf("serial %s is indexed at %x; its svid.issued entry: %d (logged: %v)", k, v, at, ok)
			}
			return nil
		})
	})
	if indexed != len(logged) {
		t.Errorf("%d serials indexed, %d x509 svid.issued entries", indexed, len(logged))
	}
	t.Logf("killed with %d X509-SVIDs answered; %d issued in the log of size %d after restart", len(acked), len(logged), cp.Size)
}

// crashLoad is load on a serve process that is killed under it: what
// was answered, and whether the kill has come.
type crashLoad struct {
	mu       sync.Mutex
	answered map[string]bool // ids (or serials) of what was answered
	killed   atomic.Bool
	wg       sync.WaitGroup // the load's goroutines
}

func newCrashLoad() *crashLoad { return &crashLoad{answered: map[string]bool{}} }

// answer notes that id was answered.
func (l *crashLoad) answer(id string) {
	l.mu.Lock()
	l.answered[id] = true
	l.mu.Unlock()
}

// kill kills cmd (SIGKILL) once 32 answers came, others under way
// (however slow the machine: no fixed window; a minute at most), then
// ends the load (cancel) and waits for it: answered is then final.
func (l *crashLoad) kill(t *testing.T, cmd *exec.Cmd, cancel context.CancelFunc) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		l.mu.Lock()
		n := len(l.answered)
		l.mu.Unlock()
		if n >= 32 {
			break
		}
	}
	l.killed.Store(true)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	cancel()
	l.wg.Wait()
}

// restartedLog starts serve again on dataDir at addr and reads its log
// as an auditor does: the process, an admin client, the checkpoint
// verified with the log's key, and the entries up to it.
func restartedLog(t *testing.T, bin, dataDir, addr string) (*exec.Cmd, *client.Client, *log.Checkpoint, []loggedEntry) {
	t.Helper()
	restarted, url := serveProcess(t, bin, dataDir, addr)
	c := adminClient(t, url, dataDir)
	cp, err := verifiedCheckpoint(t, context.Background(), c, logVerifier(t, dataDir))
	if err != nil {
		t.Fatal(err)
	}
	return restarted, c, cp, logEntries(t, context.Background(), c, cp.Size)
}

// TestTamperedEntryIsNamed flips bytes of one stored entry in the
// authority's bbolt file while it is stopped; `mandate audit verify --full`
// then fails and names that entry.
func TestTamperedEntryIsNamed(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", "mandate-data"}, &out, &errOut)
	}()
	url := waitServing(t, &out, done)
	for range 5 {
		if _, err := cli(t, url, dir, "admin", "join-token", "create"); err != nil {
			t.Fatal(err)
		}
	}
	if o, err := cli(t, url, dir, "audit", "verify", "--full"); err != nil || !strings.Contains(o, "match the signed root") {
		t.Fatalf("audit verify --full on an intact log = %q, %v", o, err)
	}
	cancel()
	<-done

	// Tamper with entry 2: same length, one byte changed.
	changeEntry(t, filepath.Join(dir, "mandate-data"), 2, func(b []byte) { b[bytes.Index(b, []byte(`"type":"`))+8] ^= 0x01 })

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	out, errOut = syncBuffer{}, syncBuffer{}
	done = make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", "mandate-data"}, &out, &errOut)
	}()
	url = waitServing(t, &out, done)
	_, err := cli(t, url, dir, "audit", "verify", "--full", "--state", "other.state")
	if err == nil || !strings.Contains(err.Error(), "first bad entry 2") {
		t.Errorf("audit verify --full on a tampered log = %v, want it to name entry 2", err)
	}
	cancel()
	<-done
}

// TestUnreadableEntryIsLogged overwrites one stored entry of a stopped
// authority with bytes that are not JSON; asked for it (`mandate audit
// verify --full`), the authority answers 500 and says in its log which
// entry is damaged, with the request id the auditor was given.
func TestUnreadableEntryIsLogged(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	serveIn := func() (string, *syncBuffer, context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		var out, errOut syncBuffer
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", "mandate-data"}, &out, &errOut)
		}()
		return waitServing(t, &out, done), &errOut, cancel, done
	}
	url, _, stop, done := serveIn()
	for range 3 {
		if _, err := cli(t, url, dir, "admin", "join-token", "create"); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	<-done

	changeEntry(t, filepath.Join(dir, "mandate-data"), 2, func(b []byte) { b[0] = 0xff }) // no longer JSON

	url, errOut, stop, done := serveIn()
	defer func() { stop(); <-done }()
	_, err := cli(t, url, dir, "audit", "verify", "--full")
	m := regexp.MustCompile(`request_id=([0-9a-f]+)`).FindStringSubmatch(fmt.Sprint(err))
	if m == nil {
		t.Fatalf("audit verify --full on a log with an unreadable entry = %v, want a 500 with its request id", err)
	}
	for _, line := range strings.Split(errOut.String(), "\n") {
		if strings.Contains(line, "request_id="+m[1]) && strings.Contains(line, "audit entry 2 is damaged") {
			return
		}
	}
	t.Errorf("the server's log says nothing of the damaged entry for request %s:\n%s", m[1], errOut.String())
}

// waitServing waits for an in-process serve to print its URL.
func waitServing(t *testing.T, out *syncBuffer, done chan error) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := servingRE.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
		select {
		case err := <-done:
			t.Fatalf("serve exited: %v", err)
		default:
		}
	}
	t.Fatal("serve did not start")
	return ""
}

// TestRolledBackLogIsCaught: the authority's store is rolled back to an
// earlier copy; an auditor who remembers a later checkpoint is told, with
// both checkpoints as evidence.
func TestRolledBackLogIsCaught(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	serveIn := func() (string, context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		var out, errOut syncBuffer
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", "mandate-data"}, &out, &errOut)
		}()
		return waitServing(t, &out, done), cancel, done
	}
	_, stop0, done0 := serveIn()
	stop0()
	<-done0
	db := filepath.Join(dir, "mandate-data", "mandate.db")
	early, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}

	url, stop, done := serveIn()
	for range 3 {
		if _, err := cli(t, url, dir, "admin", "join-token", "create"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli(t, url, dir, "audit", "verify"); err != nil { // remembers the later checkpoint
		t.Fatal(err)
	}
	stop()
	<-done
	if err := os.WriteFile(db, early, 0o600); err != nil {
		t.Fatal(err)
	}

	url, stop, done = serveIn()
	defer func() { stop(); <-done }()
	_, err = cli(t, url, dir, "audit", "verify")
	if err == nil || !strings.Contains(err.Error(), "shrank") || !strings.Contains(err.Error(), "remembered checkpoint") {
		t.Errorf("audit verify after a rollback = %v, want the shrink reported with both checkpoints", err)
	}
}

// TestCrashKeepsDelegations kills a real `mandate serve` (SIGKILL) while
// agents delegate; after a restart, every delegation whose token was
// answered is in the log, and the log and the hops' records agree: each
// delegation.issued entry has its record (the status endpoint answers it
// with that entry's index and leaf hash), and no record lacks its entry.
func TestCrashKeepsDelegations(t *testing.T) {
	dir, bin := buildMandate(t)
	dataDir := filepath.Join(dir, "data")
	addr := freeAddr(t)
	cmd, url := serveProcess(t, bin, dataDir, addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := newDelegateWorld(ctx, url, filepath.Join(dataDir, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	load := newCrashLoad() // answered: ids of the delegations whose token was
	for range 16 {
		load.wg.Go(func() {
			for ctx.Err() == nil {
				body, err := w.request(0, 1, "alice", "", "")
				if err != nil {
					t.Error(err)
					return
				}
				var raw map[string]any
				_ = json.Unmarshal(body, &raw)
				var ans struct{ ID, Token string }
				if err := w.a.Do(ctx, "POST", "/v1/delegations", raw, &ans); err != nil {
					if !load.killed.Load() {
						t.Errorf("a delegation failed before the kill: %v", err)
					}
					return // the server is gone
				}
				load.answer(ans.ID)
			}
		})
	}
	load.kill(t, cmd, cancel)
	acked := load.answered

	restarted, c, cp, entries := restartedLog(t, bin, dataDir, addr)
	bg := context.Background()
	inLog := map[string]bool{}
	for i, e := range entries {
		if e.Type != "delegation.issued" {
			continue
		}
		inLog[e.DelegationID] = true
		var st struct {
			Status   string
			LogIndex uint64 `json:"log_index"`
			LeafHash string `json:"leaf_hash"`
		}
		if err := c.Do(bg, "GET", "/v1/delegations/"+e.DelegationID+"/status", nil, &st); err != nil || st.LogIndex != uint64(i) || st.LeafHash != e.leafHash {
			t.Errorf("entry %d issued %s, its record: %+v, %v", i, e.DelegationID, st, err)
		}
	}
	if missing := missingFrom(acked, inLog); missing > 0 || len(acked) == 0 {
		t.Fatalf("%d of %d answered delegations are missing from the log", missing, len(acked))
	}
	// No record without its entry: the records the authority holds are
	// exactly the logged ones.
	c.CloseIdle()
	_ = restarted.Process.Signal(syscall.SIGTERM)
	_ = restarted.Wait()
	db, err := bolt.Open(filepath.Join(dataDir, "mandate.db"), bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	records := 0
	if err := db.View(bg, func(tx store.Tx) error {
		return tx.Scan(delegation.BucketDelegations, nil, nil, func(k, _ []byte) error {
			records++
			if !inLog[string(k)] {
				t.Errorf("record %s has no delegation.issued entry", k)
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	if records != len(inLog) {
		t.Errorf("%d records, %d delegation.issued entries", records, len(inLog))
	}
	t.Logf("killed with %d delegations answered; %d issued in the log of size %d after restart", len(acked), len(inLog), cp.Size)
}

// changeEntry changes, with change, the stored bytes of audit entry index
// in the store of a stopped authority's data directory.
func changeEntry(t *testing.T, dataDir string, index byte, change func([]byte)) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dataDir, "mandate.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key := []byte{0, 0, 0, 0, 0, 0, 0, index}
	if err := db.Update(context.Background(), func(tx store.Tx) error {
		b, err := tx.Get("audit_entries", key)
		if err != nil {
			return err
		}
		change(b)
		return tx.Put("audit_entries", key, b)
	}); err != nil {
		t.Fatal(err)
	}
}
