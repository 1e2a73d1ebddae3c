package authority

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// The log serves a witness's answer only as a cosignature of its
// checkpoint: an answer whose signature line verifies with the witness's
// key over another text (here the signed checkpoint, made the note's
// text by an empty line before the line) is no cosignature, and is not
// served, where an honest witness's is.
func TestWitnessAnswerMustCosignTheCheckpoint(t *testing.T) {
	a := witnessingAuthority(t)
	signer, verifier := testCosigner(t, "witness.example/w1")
	// cosign answers a request with a cosignature of text(checkpoint),
	// after prefix.
	cosign := func(prefix string, text func(cp []byte) []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			_, cp, _ := bytes.Cut(body, []byte("\n\n"))
			txt := text(cp)
			signed, err := note.Sign(&note.Note{Text: string(txt)}, signer)
			if err != nil {
				t.Error(err)
			}
			_, _ = w.Write(append([]byte(prefix), signed[len(txt)+1:]...))
		}
	}
	for _, c := range []struct {
		name   string
		answer http.HandlerFunc
		served bool
	}{
		{"the checkpoint's note text", cosign("", func(cp []byte) []byte { n, _, _ := bytes.Cut(cp, []byte("\n\n")); return append(n, '\n') }), true},
		{"the signed checkpoint", cosign("\n", func(cp []byte) []byte { return cp }), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(c.answer)
			defer srv.Close()
			a.witnessing = &witnessing{witnesses: []*logWitness{{url: srv.URL + "/add-checkpoint", verifier: verifier, hc: srv.Client()}}}
			a.witnessRound(t.Context())
			cp := a.audit.Checkpoint()
			got := served(t, a, WitnessQuery{})
			if !c.served {
				if got != nil {
					t.Errorf("served %q, want nothing: the witness cosigned no checkpoint", got)
				}
				return
			}
			if _, err := note.Open(got, note.VerifierList(verifier)); err != nil || !bytes.HasPrefix(got, cp) {
				t.Errorf("served %q (%v), want the checkpoint with the witness's cosignature", got, err)
			}
		})
	}
}

// A witness that failed to cosign the log's checkpoint is asked again
// at the next look, though the log has not grown, and its cosignature
// is served with the others': one failure (as at a start, before its
// bundle is had) does not leave the checkpoint served without it until
// the log grows. One that refused the checkpoint (a 4xx answer, as
// 422 to a proof) is not asked again for it.
func TestWitnessThatFailedIsAskedAgain(t *testing.T) {
	a := witnessingAuthority(t)
	var verifiers []note.Verifier
	var failing atomic.Bool
	a.witnessing = &witnessing{}
	for i, name := range []string{"witness.example/w1", "witness.example/w2"} {
		lw := cosigningWitness(t, name, func() bool { return i == 1 && failing.Load() })
		verifiers = append(verifiers, lw.verifier)
		a.witnessing.witnesses = append(a.witnessing.witnesses, lw)
	}
	var refusals atomic.Int32
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refusals.Add(1)
		http.Error(w, "the proof does not verify", http.StatusUnprocessableEntity)
	}))
	defer refusing.Close()
	a.witnessing.witnesses = append(a.witnessing.witnesses, &logWitness{url: refusing.URL + "/add-checkpoint", verifier: verifiers[0], hc: refusing.Client()})
	failing.Store(true)
	a.witnessRound(t.Context())
	if n := cosignedBy(served(t, a, WitnessQuery{}), verifiers...); n != 1 {
		t.Fatalf("with w2 failing: cosigned by %d, want 1", n)
	}
	failing.Store(false)
	a.witnessRound(t.Context())
	if n := cosignedBy(served(t, a, WitnessQuery{}), verifiers...); n != 2 {
		t.Errorf("w2 back, the log the same: the served checkpoint is cosigned by %d, want 2", n)
	}
	if n := refusals.Load(); n != 1 {
		t.Errorf("the witness that refused the checkpoint was asked %d times for it, want 1", n)
	}
}

// A witness that stops cosigning leaves the latest checkpoint it
// cosigned served, with the other witnesses' cosignatures of it: an
// auditor who needs both witnesses (cosignatures=2, or witness=w2) is
// served that one while the other witness cosigns the log's newer
// checkpoints alone, and the newer one once both cosigned it.
func TestWitnessedCheckpointOfSeveralWitnesses(t *testing.T) {
	a := witnessingAuthority(t)
	runAuditLog(t, a)
	var failing atomic.Bool
	a.witnessing = &witnessing{}
	var vs []note.Verifier
	for i, name := range []string{"witness.example/w1", "witness.example/w2"} {
		lw := cosigningWitness(t, name, func() bool { return i == 1 && failing.Load() })
		a.witnessing.witnesses = append(a.witnessing.witnesses, lw)
		vs = append(vs, lw.verifier)
	}
	w1, w2 := vs[0], vs[1]
	sizeOf := func(cp []byte) uint64 {
		t.Helper()
		size, err := checkpointSize(cp)
		if err != nil {
			t.Fatalf("served %q: %v", cp, err)
		}
		return size
	}
	grow := func() {
		t.Helper()
		if _, _, err := a.CreateJoinToken(t.Context(), adminOf(t, a), 0); err != nil {
			t.Fatal(err)
		}
	}
	grow()
	a.witnessRound(t.Context())
	first := sizeOf(served(t, a, WitnessQuery{Cosignatures: 2}))

	failing.Store(true) // w2 stops cosigning; the log grows
	grow()
	a.witnessRound(t.Context())
	second := sizeOf(a.audit.Checkpoint())
	if second <= first {
		t.Fatalf("the log did not grow: size %d, then %d", first, second)
	}
	for _, c := range []struct {
		name string
		q    WitnessQuery
		size uint64 // 0: none served
		by   int
	}{
		{"any witness", WitnessQuery{}, second, 1},
		{"w1", WitnessQuery{Named: []string{"witness.example/w1"}}, second, 1},
		{"both", WitnessQuery{Cosignatures: 2}, first, 2},
		{"w2", WitnessQuery{Named: []string{"witness.example/w2"}}, first, 2},
		{"both, named", WitnessQuery{Cosignatures: 2, Named: []string{"witness.example/w2", "witness.example/w1"}}, first, 2},
		{"three", WitnessQuery{Cosignatures: 3}, 0, 0},
		{"a witness the log has not", WitnessQuery{Named: []string{"witness.example/w3"}}, 0, 0},
		{"two, one named", WitnessQuery{Cosignatures: 2, Named: []string{"witness.example/w1"}}, 0, 0},
	} {
		cp := served(t, a, c.q)
		if c.size == 0 {
			if cp != nil {
				t.Errorf("%s: served %q, want none", c.name, cp)
			}
			continue
		}
		if got := sizeOf(cp); got != c.size || cosignedBy(cp, w1, w2) != c.by {
			t.Errorf("%s: served size %d cosigned by %d, want size %d cosigned by %d", c.name, got, cosignedBy(cp, w1, w2), c.size, c.by)
		}
	}

	failing.Store(false) // w2 cosigns again
	a.witnessRound(t.Context())
	if cp := served(t, a, WitnessQuery{Cosignatures: 2}); sizeOf(cp) != second || cosignedBy(cp, w1, w2) != 2 {
		t.Errorf("both cosign again: served size %d cosigned by %d, want %d by 2", sizeOf(cp), cosignedBy(cp, w1, w2), second)
	}
	if n := len(a.witnessing.kept); n != 1 {
		t.Errorf("%d checkpoints kept, want 1: both witnesses' latest is the same", n)
	}
}

// Two witnesses that fail in turn, each while the log grows, cosign no
// checkpoint together after the last they both did: that one stays
// served to an auditor who needs both, beside the latest each cosigned
// alone; the log keeps no more than twice as many checkpoints as it
// has witnesses.
func TestWitnessedCheckpointOfWitnessesFailingInTurn(t *testing.T) {
	a := witnessingAuthority(t)
	runAuditLog(t, a)
	var failing [2]atomic.Bool
	a.witnessing = &witnessing{}
	var vs []note.Verifier
	for i, name := range []string{"witness.example/w1", "witness.example/w2"} {
		lw := cosigningWitness(t, name, failing[i].Load)
		a.witnessing.witnesses = append(a.witnessing.witnesses, lw)
		vs = append(vs, lw.verifier)
	}
	round := func(down int) uint64 { // the log grows; witness down (-1: none) fails
		t.Helper()
		if _, _, err := a.CreateJoinToken(t.Context(), adminOf(t, a), 0); err != nil {
			t.Fatal(err)
		}
		for i := range failing {
			failing[i].Store(i == down)
		}
		a.witnessRound(t.Context())
		size, err := checkpointSize(a.audit.Checkpoint())
		if err != nil {
			t.Fatal(err)
		}
		return size
	}
	both := round(-1)
	byW1 := round(1)
	byW2 := round(0)
	for _, c := range []struct {
		name string
		q    WitnessQuery
		size uint64
		by   int
	}{
		{"both", WitnessQuery{Cosignatures: 2}, both, 2},
		{"w1", WitnessQuery{Named: []string{"witness.example/w1"}}, byW1, 1},
		{"w2", WitnessQuery{Named: []string{"witness.example/w2"}}, byW2, 1},
		{"any", WitnessQuery{}, byW2, 1},
	} {
		cp := served(t, a, c.q)
		if cp == nil {
			t.Errorf("%s: none served, want size %d", c.name, c.size)
			continue
		}
		if size, err := checkpointSize(cp); err != nil || size != c.size || cosignedBy(cp, vs...) != c.by {
			t.Errorf("%s: served size %d (%v) cosigned by %d, want size %d cosigned by %d", c.name, size, err, cosignedBy(cp, vs...), c.size, c.by)
		}
	}
	for i := range 6 {
		round(i % 2)
	}
	if n := len(a.witnessing.kept); n > 2*len(a.witnessing.witnesses) {
		t.Errorf("%d checkpoints kept, more than twice the witnesses", n)
	}
	if size, _ := checkpointSize(served(t, a, WitnessQuery{Cosignatures: 2})); size != both {
		t.Errorf("both, after more rounds in turn: served size %d, want %d", size, both)
	}
}

// runAuditLog runs a's audit log, which then takes entries, until the
// test ends: none of Run's witness rounds runs beside the test's.
func runAuditLog(t *testing.T, a *Authority) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.audit.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// served is the witnessed checkpoint q asks, as an admin reads it; nil
// if there is none (ErrNotWitnessed).
func served(t *testing.T, a *Authority, q WitnessQuery) []byte {
	t.Helper()
	cp, err := a.WitnessedCheckpoint(&Caller{ID: spiffeid.RequireFromString(a.td.IDString() + "/mandate/admin")}, q)
	if errors.Is(err, ErrNotWitnessed) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// cosignedBy counts the witnesses of vs whose cosignature cp carries.
func cosignedBy(cp []byte, vs ...note.Verifier) (n int) {
	for _, v := range vs {
		if _, err := note.Open(cp, note.VerifierList(v)); err == nil {
			n++
		}
	}
	return n
}

// cosigningWitness is a witness named name, on a test server, that
// cosigns whatever checkpoint it is sent, but answers 503 while failing
// says so.
func cosigningWitness(t *testing.T, name string, failing func() bool) *logWitness {
	t.Helper()
	signer, v := testCosigner(t, name)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing() {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(r.Body)
		_, cp, _ := bytes.Cut(body, []byte("\n\n"))
		text, _, _ := bytes.Cut(cp, []byte("\n\n"))
		signed, err := note.Sign(&note.Note{Text: string(text) + "\n"}, signer)
		if err != nil {
			t.Error(err)
		}
		_, _ = w.Write(signed[len(text)+2:])
	}))
	t.Cleanup(srv.Close)
	return &logWitness{url: srv.URL + "/add-checkpoint", verifier: v, hc: srv.Client()}
}

// An authority that stops leaves no connection open to its witnesses:
// once runWitnessing has returned, the keep-alive connection of the last
// submission is closed (the next request on that client dials anew),
// not held until the witness closes it.
func TestWitnessingClosesItsConnectionsWhenItStops(t *testing.T) {
	a := witnessingAuthority(t)
	_, verifier := testCosigner(t, "witness.example/w1")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{}}
	a.witnessing = &witnessing{witnesses: []*logWitness{{url: srv.URL + "/add-checkpoint", verifier: verifier, hc: hc}}}
	a.witnessRound(t.Context()) // a submission: its connection is kept alive
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := a.runWitnessing(ctx); err != nil {
		t.Fatal(err)
	}
	var reused bool
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	hc.CloseIdleConnections()
	if reused {
		t.Error("a connection to the witness stayed open after the witnessing stopped")
	}
}

// witnessingAuthority is an authority of org-a.example for the
// witnessing tests (not running).
func witnessingAuthority(t *testing.T) *Authority {
	t.Helper()
	cfg := Config{TrustDomain: "org-a.example", DataDir: t.TempDir(), Listen: "127.0.0.1:0"}
	cfg.SetDefaults()
	a, err := New(t.Context(), cfg, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// testCosigner is a new witness key named name: its cosignature/v1
// signer and verifier.
func testCosigner(t *testing.T, name string) (*fnote.Signer, note.Verifier) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	cvkey, err := fnote.VKeyToCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := fnote.NewVerifierForCosignatureV1(cvkey)
	if err != nil {
		t.Fatal(err)
	}
	return signer, v
}

// A log that logs nothing for a while asks its witnesses again for the
// checkpoint they cosigned, once their cosignature is witnessRefresh
// old: an auditor's --witness-max-age finds a fresh one. Not sooner.
func TestWitnessesAskedAgainForAnUnchangedCheckpoint(t *testing.T) {
	a := witnessingAuthority(t)
	clock := &stepClock{now: time.Now()}
	a.now = clock.Now // before anything runs
	var asked atomic.Int32
	lw := cosigningWitness(t, "witness.example/w1", func() bool { asked.Add(1); return false })
	a.witnessing = &witnessing{witnesses: []*logWitness{lw}}
	for i, step := range []struct {
		after time.Duration
		asked int32
	}{
		{0, 1},
		{0, 1},
		{witnessRefresh - time.Second, 1},
		{time.Second, 2},
		{time.Minute, 2},
	} {
		clock.mu.Lock()
		clock.now = clock.now.Add(step.after)
		clock.mu.Unlock()
		a.witnessRound(t.Context())
		if got := asked.Load(); got != step.asked {
			t.Errorf("step %d: the witness was asked %d times, want %d", i, got, step.asked)
		}
	}
	if cosignedBy(served(t, a, WitnessQuery{}), lw.verifier) != 1 {
		t.Error("the checkpoint served is not cosigned")
	}
}
