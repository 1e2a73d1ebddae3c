package authority

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/ca/presented"
	"mandate.dev/mandate/witness"
)

// ErrNotWitnessed is the answer for the witnessed checkpoint while no
// witness of audit.witnesses has cosigned one.
var ErrNotWitnessed = errors.New("authority: no checkpoint cosigned by a witness yet")

// witnessPoll is how often the log's size is looked at for a checkpoint
// to submit to the witnesses; witnessTimeout bounds one submission.
const (
	witnessPoll    = 2 * time.Second
	witnessTimeout = 10 * time.Second
	// witnessRefresh is how old a witness's cosignature of the latest
	// checkpoint may grow before it is asked again for the same one (a
	// fresh timestamp): a log that logs nothing for a while still has
	// cosignatures an auditor's --witness-max-age takes.
	witnessRefresh = 10 * time.Minute
	// maxWitnessAnswer bounds a witness's answer: a few signature lines.
	maxWitnessAnswer = 16 << 10
)

// logWitness is one of audit.witnesses, as the log submits to it.
type logWitness struct {
	url      string // its add-checkpoint URL
	verifier note.Verifier
	hc       *http.Client
	// size is the size it cosigned last, as far as this run knows (0:
	// unknown; it then says, 409).
	size uint64
	// failing is whether its latest submission failed (said once in the
	// server log, until one succeeds).
	failing bool
	// cosigned is the size of the latest checkpoint it cosigned in this
	// run (0: none yet), for /metrics.
	cosigned atomic.Uint64
}

// WitnessCosigned is, by witness (its key's name), the size of the
// latest checkpoint of this log it cosigned since the authority started
// (0: none yet); empty when audit.witnesses is.
func (a *Authority) WitnessCosigned() map[string]uint64 {
	out := map[string]uint64{}
	if a.witnessing != nil {
		for _, lw := range a.witnessing.witnesses {
			out[lw.verifier.Name()] = lw.cosigned.Load()
		}
	}
	return out
}

// witnessing is the log's side of the witnesses: the checkpoints they
// cosigned that are served.
type witnessing struct {
	witnesses []*logWitness
	mu        sync.Mutex
	// kept are the checkpoints served, largest first: the latest one
	// each witness cosigned in this run, and each other one whose
	// witnesses no larger one kept was cosigned by all of (at most
	// len(witnesses) of those), with every cosignature had of each. A
	// witness that stops cosigning leaves the checkpoint it cosigned
	// last served, with the others' cosignatures of it: an auditor who
	// needs the cosignatures of several has one until it cosigns again,
	// and, when two witnesses fail in turn, the last they both cosigned.
	kept []*cosignedCheckpoint
	// The checkpoint submitted last, and by witness whether it refused
	// it (a 4xx answer: not asked again for it), and the checkpoint it
	// cosigned last (nil: none yet); only the rounds use them, one at a
	// time.
	cur     *cosignedCheckpoint
	refused []bool
	last    []*cosignedCheckpoint
}

// cosignedCheckpoint is a checkpoint of the log with the cosignature
// lines of it that the witnesses gave, by witness (nil: none); its sigs
// change only under witnessing.mu.
type cosignedCheckpoint struct {
	cp   []byte // the signed checkpoint
	size uint64
	sigs [][]byte
	at   []time.Time // when each of sigs was had (only the rounds use them)
}

// WitnessQuery chooses the witnessed checkpoint served: the largest kept
// that at least Cosignatures (0 counts as 1) of the witnesses Named
// (their keys' names; none: every one of audit.witnesses) cosigned.
type WitnessQuery struct {
	Cosignatures int
	Named        []string
}

// errRefused is a witness's refusal of a checkpoint (a 4xx answer, but
// 408 and 429): asking again for the same one would be refused again.
var errRefused = errors.New("refused")

// newWitnessing is the log's side of cfg's witnesses: a witness named
// with a trust domain is authenticated as that trust domain's server by
// its SPIFFE bundle (bundles, federated), any other by the Web PKI.
func newWitnessing(cfg []WitnessEndpoint, a *Authority) (*witnessing, error) {
	w := &witnessing{}
	for _, e := range cfg {
		v, err := fnote.NewVerifierForCosignatureV1(e.VKey)
		if err != nil {
			return nil, fmt.Errorf("audit.witnesses: %q: %w", e.VKey, err)
		}
		// Idle connections are closed before a witness's own idle timeout
		// would (Mandate's: http.idle_timeout, 120 s by default): a
		// submission never goes out on one the witness is closing.
		tr := &http.Transport{Proxy: http.ProxyFromEnvironment, MaxResponseHeaderBytes: maxWitnessAnswer, IdleConnTimeout: 30 * time.Second}
		if e.TrustDomain != "" {
			td, err := trustDomainOf(e.TrustDomain)
			if err != nil {
				return nil, fmt.Errorf("audit.witnesses: trust_domain %q: %w", e.TrustDomain, err)
			}
			tr.TLSClientConfig = presented.TLSClientConfig(a, tlsconfig.AuthorizeID(ServerID(td)))
		}
		w.witnesses = append(w.witnesses, &logWitness{url: strings.TrimRight(e.URL, "/") + "/add-checkpoint", verifier: v,
			hc: &http.Client{Timeout: witnessTimeout, Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}})
	}
	return w, nil
}

// WitnessedCheckpoint is the largest checkpoint kept that q's witnesses
// cosigned: the signed note with the log's signature and the
// cosignature of each witness that cosigned it, or ErrNotWitnessed. The
// log keeps the latest checkpoint each witness cosigned since the
// authority started.
func (a *Authority) WitnessedCheckpoint(c *Caller, q WitnessQuery) ([]byte, error) {
	if err := a.requireReader(c); err != nil {
		return nil, err
	}
	w := a.witnessing
	if w == nil {
		return nil, fmt.Errorf("%w: audit.witnesses is empty", ErrNotWitnessed)
	}
	need := max(q.Cosignatures, 1)
	counted := make([]bool, len(w.witnesses)) // by witness: whether q names it
	named := 0
	for i, lw := range w.witnesses {
		if counted[i] = len(q.Named) == 0 || slices.Contains(q.Named, lw.verifier.Name()); counted[i] {
			named++
		}
	}
	if need > named {
		return nil, fmt.Errorf("%w: %d cosignatures asked of %d witnesses of this log (audit.witnesses: %s)", ErrNotWitnessed, need, named, w.names())
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, k := range w.kept {
		n := 0
		for i, s := range k.sigs {
			if s != nil && counted[i] {
				n++
			}
		}
		if n >= need {
			out := bytes.Clone(k.cp)
			for _, s := range k.sigs {
				out = append(out, s...)
			}
			return out, nil
		}
	}
	if len(w.kept) == 0 {
		return nil, ErrNotWitnessed
	}
	return nil, fmt.Errorf("%w: none of the latest checkpoints each witness cosigned is cosigned by %d of those asked", ErrNotWitnessed, need)
}

// names lists the witnesses' key names.
func (w *witnessing) names() string {
	var names []string
	for _, lw := range w.witnesses {
		names = append(names, lw.verifier.Name())
	}
	return strings.Join(names, ", ")
}

// runWitnessing submits the log's checkpoint to its witnesses whenever
// the log has grown, until ctx is done; it then closes its connections
// to them (kept alive between submissions).
func (a *Authority) runWitnessing(ctx context.Context) error {
	t := time.NewTicker(witnessPoll)
	defer t.Stop()
	defer func() {
		for _, lw := range a.witnessing.witnesses {
			lw.hc.CloseIdleConnections()
		}
	}()
	for {
		a.witnessRound(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// witnessRound submits the latest checkpoint to every witness that has
// not cosigned it yet, at once, and keeps it with the cosignatures that
// came back.
func (a *Authority) witnessRound(ctx context.Context) {
	w := a.witnessing
	cp := a.audit.Checkpoint()
	size, err := checkpointSize(cp)
	if err != nil {
		return
	}
	if w.cur == nil || !bytes.Equal(w.cur.cp, cp) { // a new checkpoint: each witness is asked
		w.cur, w.refused = &cosignedCheckpoint{cp: bytes.Clone(cp), size: size, sigs: make([][]byte, len(w.witnesses)), at: make([]time.Time, len(w.witnesses))}, make([]bool, len(w.witnesses))
	}
	if w.last == nil {
		w.last = make([]*cosignedCheckpoint, len(w.witnesses))
	}
	cur, got, now := w.cur, make([][]byte, len(w.witnesses)), a.now()
	var wg sync.WaitGroup
	for i, lw := range w.witnesses {
		if cur.sigs[i] != nil && now.Sub(cur.at[i]) < witnessRefresh || w.refused[i] {
			continue // it cosigned this checkpoint lately, or refused it
		}
		wg.Go(func() {
			sig, err := a.submit(ctx, lw, cp, size)
			w.refused[i] = errors.Is(err, errRefused)
			switch {
			case err != nil && !lw.failing && ctx.Err() == nil:
				lw.failing = true
				a.log.WarnContext(ctx, "audit: a witness did not cosign the log's checkpoint; asked again every 2 s while it has not, or as the log grows if it refused it (said again once it cosigns)",
					"witness", lw.verifier.Name(), "url", lw.url, "size", size, "err", err)
			case err == nil && lw.failing:
				lw.failing = false
				a.log.InfoContext(ctx, "audit: a witness cosigns the log's checkpoints again", "witness", lw.verifier.Name(), "size", size)
			}
			got[i] = sig
		})
	}
	wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, sig := range got {
		if sig != nil {
			cur.sigs[i], cur.at[i], w.last[i] = sig, now, cur
		}
	}
	w.kept = keep(append(slices.Clone(w.kept), w.last...), w.last)
}

// keep is what of cands (checkpoints, some repeated, some nil) is kept,
// largest first: each cosigned checkpoint whose cosigners no larger one
// kept has all of (any query it answers, that one answers with a larger
// checkpoint), those of latest always, the others no more than
// len(latest).
func keep(cands, latest []*cosignedCheckpoint) []*cosignedCheckpoint {
	cands = slices.DeleteFunc(cands, func(k *cosignedCheckpoint) bool { return k == nil })
	slices.SortStableFunc(cands, func(x, y *cosignedCheckpoint) int { return cmp.Compare(y.size, x.size) })
	var kept []*cosignedCheckpoint
	others := 0
	for _, k := range cands {
		if slices.Contains(kept, k) || !slices.ContainsFunc(k.sigs, func(s []byte) bool { return s != nil }) {
			continue
		}
		if slices.ContainsFunc(kept, func(l *cosignedCheckpoint) bool { return cosignedByAllOf(l, k) }) {
			continue
		}
		if !slices.Contains(latest, k) {
			if others == len(latest) {
				continue
			}
			others++
		}
		kept = append(kept, k)
	}
	return kept
}

// cosignedByAllOf reports whether l has the cosignature of every witness
// that cosigned k.
func cosignedByAllOf(l, k *cosignedCheckpoint) bool {
	for i, s := range k.sigs {
		if s != nil && l.sigs[i] == nil {
			return false
		}
	}
	return true
}

// submit asks lw to cosign cp (of size), from the size it cosigned last:
// its cosignature line, checked with its key. A witness that holds
// another old size (409) is asked again from it, once.
func (a *Authority) submit(ctx context.Context, lw *logWitness, cp []byte, size uint64) ([]byte, error) {
	for range 2 {
		if lw.size > size {
			return nil, fmt.Errorf("the witness cosigned a checkpoint of size %d, larger than the log's %d: the log was rolled back, or another log signed with its key", lw.size, size)
		}
		var proof [][]byte
		if lw.size > 0 && lw.size < size {
			var err error
			if proof, err = a.audit.ConsistencyProof(ctx, lw.size, size); err != nil {
				return nil, err
			}
		}
		body := witness.Request(lw.size, proof, cp)
		status, ctype, ans, err := post(ctx, lw.hc, lw.url, body)
		if err != nil {
			return nil, err
		}
		switch {
		case status == http.StatusOK:
			n, err := note.Open(append(bytes.Clone(cp), ans...), note.VerifierList(lw.verifier))
			if err != nil {
				return nil, fmt.Errorf("its answer is no cosignature of its key %s+%08x: %v", lw.verifier.Name(), lw.verifier.KeyHash(), err)
			}
			// Signature lines only: an answer that starts a note of its
			// own (an empty line) signs another text than the checkpoint.
			if text := cp[:bytes.LastIndex(cp, []byte("\n\n"))+1]; n.Text != string(text) {
				return nil, errors.New("its answer is no cosignature of the checkpoint: its signature is of another text")
			}
			lw.size = size
			lw.cosigned.Store(size)
			var line []byte
			for _, s := range n.Sigs {
				line = fmt.Appendf(line, "— %s %s\n", s.Name, s.Base64)
			}
			return line, nil
		case status == http.StatusConflict && ctype == "text/x.tlog.size":
			held, err := strconv.ParseUint(strings.TrimSuffix(string(ans), "\n"), 10, 64)
			if err != nil || held == lw.size {
				return nil, fmt.Errorf("409 with the size %.40q", ans)
			}
			lw.size = held
		case status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests:
			return nil, fmt.Errorf("%w %d: %.200q", errRefused, status, ans)
		default:
			return nil, fmt.Errorf("%d: %.200q", status, ans)
		}
	}
	return nil, errors.New("its old size changed twice")
}

// post sends body to url, and reads at most maxWitnessAnswer of the
// answer.
func post(ctx context.Context, hc *http.Client, url string, body []byte) (int, string, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, witnessTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	ans, err := io.ReadAll(io.LimitReader(resp.Body, maxWitnessAnswer+1))
	if err != nil {
		return 0, "", nil, err
	}
	if len(ans) > maxWitnessAnswer {
		return 0, "", nil, fmt.Errorf("an answer of more than %d bytes", maxWitnessAnswer)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), ans, nil
}
