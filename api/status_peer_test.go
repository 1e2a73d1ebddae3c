package api_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/delegation"
)

// statusFront is a TLS front for peer, presenting peer's server SVID,
// that passes every request through and lets a test edit the members
// of the status answers.
type statusFront struct {
	url   string
	edit  atomic.Pointer[func(members map[string]any)]
	route atomic.Pointer[func(path string) string]
	hold  atomic.Pointer[func(r *http.Request)]
}

func newStatusFront(t *testing.T, peer *env) *statusFront {
	t.Helper()
	svid, key, err := peer.a.MintServerSVID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	raw := make([][]byte, len(svid.Certificates))
	for i, c := range svid.Certificates {
		raw[i] = c.Raw
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: raw, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	f := &statusFront{url: "https://" + ln.Addr().String()}
	up := peer.rawClient(nil, nil)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hold := f.hold.Load(); hold != nil && strings.HasSuffix(r.URL.Path, "/status") {
			(*hold)(r)
		}
		uri := r.URL.RequestURI()
		if route := f.route.Load(); route != nil {
			uri = (*route)(uri)
		}
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, peer.url+uri, r.Body)
		req.Header = r.Header.Clone()
		resp, err := up.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if edit := f.edit.Load(); edit != nil && strings.HasSuffix(r.URL.Path, "/status") && json.Unmarshal(body, &m) == nil {
			(*edit)(m)
			body, _ = json.Marshal(m)
		}
		for k, v := range resp.Header {
			if k != "Content-Length" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(body)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return f
}

// editAnswers makes front edit each status answer with edit (nil: pass
// them as they are).
func (f *statusFront) editAnswers(edit func(members map[string]any)) {
	if edit == nil {
		f.edit.Store(nil)
		return
	}
	f.edit.Store(&edit)
}

// routeRequests makes front ask peer for route(URI) where it is asked
// for URI (nil: as asked).
func (f *statusFront) routeRequests(route func(uri string) string) {
	if route == nil {
		f.route.Store(nil)
		return
	}
	f.route.Store(&route)
}

// holdRequests makes front call hold with each status request before it
// passes it on (nil: pass them at once).
func (f *statusFront) holdRequests(hold func(r *http.Request)) {
	if hold == nil {
		f.hold.Store(nil)
		return
	}
	f.hold.Store(&hold)
}

// statusHold holds the requests it is given (statusFront.holdRequests)
// until the test lets them go, and counts them.
type statusHold struct {
	t       *testing.T
	mu      sync.Mutex
	arrived int           // requests held so far
	held    int           // requests held now
	peak    int           // most held at once
	changed chan struct{} // closed (and replaced) at each arrival
	all     chan struct{} // closed: every request goes
	once    sync.Once
}

// newStatusHold holds requests until the test lets them go, or ends.
func newStatusHold(t *testing.T) *statusHold {
	h := &statusHold{t: t, changed: make(chan struct{}), all: make(chan struct{})}
	t.Cleanup(h.releaseAll)
	return h
}

func (h *statusHold) hold(r *http.Request) {
	h.mu.Lock()
	h.arrived++
	h.held++
	h.peak = max(h.peak, h.held)
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
	select {
	case <-h.all:
	case <-r.Context().Done(): // its asker gave up
	}
	h.mu.Lock()
	h.held--
	h.mu.Unlock()
}

// await waits until n requests have been held.
func (h *statusHold) await(n int) {
	h.t.Helper()
	ctx := ctxT(h.t)
	for {
		h.mu.Lock()
		arrived, changed := h.arrived, h.changed
		h.mu.Unlock()
		if arrived >= n {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			h.t.Fatalf("%d requests held, waiting for %d", arrived, n)
		}
	}
}

// releaseAll lets every request go, those to come too.
func (h *statusHold) releaseAll() {
	h.once.Do(func() { close(h.all) })
}

// mostHeld is the most requests held at once so far.
func (h *statusHold) mostHeld() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.peak
}

// frontedPeers are org-a, federated with org-b through a statusFront,
// and hops of org-a below a hop of org-b.
func frontedPeers(t *testing.T) (orgA, orgB *env, front *statusFront, hops crossHops) {
	orgA, orgB = start(t, "org-a.example"), start(t, "org-b.example")
	orgB.federate(orgA)
	front = newStatusFront(t, orgB)
	orgA.federateVia(orgB, front.url)
	return orgA, orgB, front, belowAnotherAuthority(t, orgA, orgB)
}

// A peer whose status answers do not say where its hop is logged: an
// active hop of it is not extended (the link to the parent's log entry
// is part of the next hop), but its revocation is learned all the same.
func TestStatusAnswersWithoutLogFields(t *testing.T) {
	orgA, orgB, front, hops := frontedPeers(t)
	helper, worker, t1, chain := hops.helper, hops.worker, hops.t1, hops.chain
	// As the contract shapes an answer: id, status, revoked_at and
	// reason, without where the hop is logged.
	front.editAnswers(func(m map[string]any) { delete(m, "log_index"); delete(m, "leaf_hash") })
	orgA.skew.Add(int64(10 * time.Second)) // past what org-a remembers of org-b's answers
	if _, p := orgA.delegate(helper, delegateReq{delegatee: worker, scopes: []string{"calendar:read"}, parent: t1}); p == nil || p.Name() != "delegation-status-unavailable" {
		t.Fatalf("extending an active hop whose issuer does not say where it is logged: %+v, want delegation-status-unavailable", p)
	}
	if err := orgB.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"delegation_id": chain[0].ID, "reason": "withdrawn"}, nil); err != nil {
		t.Fatal(err)
	}
	orgA.skew.Add(int64(10 * time.Second))
	var st map[string]any
	if err := orgA.client(nil, nil).Do(ctxT(t), http.MethodGet, "/v1/delegations/"+chain[1].ID+"/status", nil, &st); err != nil || st["status"] != "revoked" {
		t.Fatalf("status of org-a's hop below org-b's revoked hop, told without log fields: %v %v; want revoked", st, err)
	}
}

// A peer that said its hop was revoked, and later says it is active
// again (restored from a backup, or hostile): a revocation is final, so
// the hops below it here that were not asked about yet are revoked too,
// and no chain through it is extended any more; after a restart too.
func TestPeerRevocationIsFinal(t *testing.T) {
	orgA, _, front, hops := frontedPeers(t)
	other, last := orgA.agentWithScopes("other"), orgA.agentWithScopes("last")
	below := func() (string, []*delegation.Claims) {
		t.Helper()
		tok := orgA.mustDelegate(hops.helper, delegateReq{delegatee: other, scopes: []string{"calendar:read"}, parent: hops.t1})
		chain, err := delegation.Verify(tok, orgA.a, delegation.VerifyOptions{AnyHolder: true})
		if err != nil {
			t.Fatal(err)
		}
		return tok, chain
	}
	t2b, second := below()
	_, third := below()
	var orgAURL string
	status := func(id string) string {
		t.Helper()
		var st map[string]any
		if err := orgA.client(nil, nil).Do(ctxT(t), http.MethodGet, "/v1/delegations/"+id+"/status", nil, &st); err != nil {
			t.Fatalf("status of %s at %s: %v", id, orgAURL, err)
		}
		return st["status"].(string)
	}
	front.editAnswers(func(m map[string]any) {
		m["status"], m["revoked_at"], m["reason"] = "revoked", time.Now().UTC(), "withdrawn"
	})
	orgA.skew.Add(int64(10 * time.Second))
	if got := status(hops.chain[1].ID); got != "revoked" {
		t.Fatalf("status below a hop its issuer says is revoked: %s", got)
	}
	front.editAnswers(nil) // org-b says "active" again
	orgA.skew.Add(int64(10 * time.Second))
	if got := status(second[1].ID); got != "revoked" {
		t.Errorf("status of another hop below the hop its issuer said was revoked: %s, want revoked", got)
	}
	for _, tc := range []struct {
		name   string
		holder identity
		parent string
	}{{"the issuer's own hop", hops.helper, hops.t1}, {"a hop below it issued here", other, t2b}} {
		if _, p := orgA.delegate(tc.holder, delegateReq{delegatee: last, scopes: []string{"calendar:read"}, parent: tc.parent}); p == nil || p.Name() != "delegation-revoked" {
			t.Errorf("extending %s after its issuer said it was revoked: %+v, want delegation-revoked", tc.name, p)
		}
	}

	// A restart forgets nothing of it: the revocation was kept.
	orgA.stop()
	orgA = start(t, "org-a.example", func(c *authority.Config) { c.DataDir = orgA.dataDir })
	orgAURL = orgA.url
	if got := status(third[len(third)-1].ID); got != "revoked" {
		t.Errorf("after a restart, status of a hop below the hop its issuer said was revoked, not asked about before: %s, want revoked", got)
	}
	if _, p := orgA.delegate(hops.helper, delegateReq{delegatee: last, scopes: []string{"calendar:read"}, parent: hops.t1}); p == nil || p.Name() != "delegation-revoked" {
		t.Errorf("after a restart, extending the hop its issuer said was revoked: %+v, want delegation-revoked", p)
	}
}

// A hostile peer that gives its hop the id of a hop of org-a above it
// (ids are unique per issuer only): org-a's hop below it is still found
// below org-a's, and revoking org-a's hop revokes it, in the answer and
// in its record.
func TestRevocationReachesHopsBelowAPeerHopReusingAnID(t *testing.T) {
	orgA, orgB := start(t, "org-a.example"), start(t, "org-b.example")
	orgB.federate(orgA)
	front := newStatusFront(t, orgB)
	orgA.federateVia(orgB, front.url)
	helper, worker, t2 := backThroughOrgB(t, orgA, orgB)
	honest, err := delegation.Verify(t2, orgA.a, delegation.VerifyOptions{AnyHolder: true})
	if err != nil {
		t.Fatal(err)
	}
	rootID, realID := honest[0].ID, honest[1].ID
	// org-b re-signs its hop under org-a's root's id, and answers for it
	// as for its hop.
	reused := reSigned(t, orgB, t2, func(c *delegation.Claims) { c.ID = rootID })
	front.routeRequests(func(uri string) string {
		return strings.Replace(uri, "/v1/delegations/"+rootID+"/", "/v1/delegations/"+realID+"/", 1)
	})
	front.editAnswers(func(m map[string]any) {
		if m["id"] == realID {
			m["id"] = rootID
		}
	})
	t3 := orgA.mustDelegate(helper, delegateReq{delegatee: worker, scopes: []string{"calendar:read"}, parent: reused})
	chain, err := delegation.Verify(t3, orgA.a, delegation.VerifyOptions{AnyHolder: true})
	if err != nil || len(chain) != 3 || chain[0].ID != chain[1].ID || chain[0].Issuer == chain[1].Issuer {
		t.Fatalf("chain: %v %v", chain, err)
	}
	var out struct{ Revoked []string }
	if err := orgA.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"delegation_id": rootID, "reason": "withdrawn"}, &out); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(out.Revoked, chain[2].ID) {
		t.Errorf("revoking %s revoked %v, not org-a's hop %s below org-b's hop of the same id", rootID, out.Revoked, chain[2].ID)
	}
	// Revoked by that revocation, not found revoked later by the server.
	var st map[string]any
	if err := orgA.client(nil, nil).Do(ctxT(t), http.MethodGet, "/v1/delegations/"+chain[2].ID+"/status", nil, &st); err != nil ||
		st["status"] != "revoked" || st["reason"] != "withdrawn" {
		t.Errorf("status of org-a's hop below the revoked root: %v %v, want revoked for the reason given", st, err)
	}
}

// Public status requests for hops of org-a below hops of org-b, a peer
// that holds its status requests (slow, or hostile): org-a asks org-b at
// most its share of the requests it asks at once (half), so that the
// status of a hop below a hop of org-c is still answered while org-b
// holds every request it was sent; org-b's are answered once let go.
func TestSlowPeerLeavesStatusSlotsToOthers(t *testing.T) {
	orgA, orgB, orgC := start(t, "org-a.example"), start(t, "org-b.example"), start(t, "org-c.example")
	orgB.federate(orgA)
	orgC.federate(orgA)
	front := newStatusFront(t, orgB)
	orgA.federateVia(orgB, front.url)
	orgA.federate(orgC)
	helper, worker := orgA.agentWithScopes("helper"), orgA.agentWithScopes("worker")
	// below issues a hop of peer's booker to helper, and org-a's hop
	// helper → worker below it; it returns org-a's hop's id.
	below := func(peer *env, booker identity) string {
		t.Helper()
		t1 := peer.mustDelegate(booker, delegateReq{delegatee: helper, scopes: []string{"calendar:read"}, principal: "alice"})
		t2 := orgA.mustDelegate(helper, delegateReq{delegatee: worker, scopes: []string{"calendar:read"}, parent: t1})
		chain, err := delegation.Verify(t2, orgA.a, delegation.VerifyOptions{AnyHolder: true})
		if err != nil || len(chain) != 2 {
			t.Fatalf("chain: %v %v", chain, err)
		}
		return chain[1].ID
	}
	const all = 16 // as many requests as org-a asks at once
	bookerB := orgB.agentWithScopes("booker", "calendar:read")
	var viaB []string
	for range all {
		viaB = append(viaB, below(orgB, bookerB))
	}
	viaC := below(orgC, orgC.agentWithScopes("booker", "calendar:read"))
	orgA.skew.Add(int64(10 * time.Second)) // past what org-a remembers of the peers' answers

	public := orgA.client(nil, nil)
	status := func(id string) (string, error) {
		var st map[string]any
		if err := public.Do(ctxT(t), http.MethodGet, "/v1/delegations/"+id+"/status", nil, &st); err != nil {
			return "", err
		}
		s, _ := st["status"].(string)
		return s, nil
	}
	hold := newStatusHold(t)
	front.holdRequests(hold.hold)
	type answer struct {
		id, status string
		err        error
	}
	answers := make(chan answer, len(viaB))
	for _, id := range viaB {
		go func() {
			st, err := status(id)
			answers <- answer{id, st, err}
		}()
	}
	hold.await(all / 2) // org-b holds its share
	if st, err := status(viaC); err != nil || st != "active" {
		t.Errorf("status of org-a's hop below org-c's while org-b holds its requests: %q %v, want active", st, err)
	}
	if n := len(answers); n > 0 {
		t.Errorf("org-c's hop answered after %d of org-b's requests ended unanswered", n)
	}
	// Let org-b's requests go, at once (the first have waited since they
	// came, within org-a's status timeout): org-a asks the rest as those
	// are answered, never more at once.
	hold.releaseAll()
	hold.await(all)
	if most := hold.mostHeld(); most > all/2 {
		t.Errorf("org-a had %d status requests at org-b at once, want at most %d", most, all/2)
	}
	failed := 0
	for range viaB {
		if a := <-answers; a.err != nil || a.status != "active" {
			if failed++; failed == 1 {
				t.Errorf("status of org-a's hop %s below org-b's, once org-b answers: %q %v, want active", a.id, a.status, a.err)
			}
		}
	}
	if failed > 1 {
		t.Errorf("and %d more of them", failed-1)
	}
}

// A revocation one issuer states is not hidden by another issuer that
// cannot be asked: in chains org-a → org-b → org-c, with org-b down,
// org-c refuses to extend a chain holding a hop of its own it revoked as
// revoked (not 503: it knows), and once org-a revokes the root, org-c
// answers that its hop below is revoked, and refuses to extend it as
// revoked.
func TestRevocationKnownWhileAnotherIssuerIsDown(t *testing.T) {
	orgA, orgB, orgC := start(t, "org-a.example"), start(t, "org-b.example"), start(t, "org-c.example")
	for _, e := range []*env{orgA, orgB, orgC} {
		for _, peer := range []*env{orgA, orgB, orgC} {
			if e != peer {
				e.federate(peer)
			}
		}
	}
	planner, booker := orgA.agentWithScopes("planner", "calendar:read"), orgB.agentWithScopes("booker")
	payer, clerk, helper := orgC.agentWithScopes("payer"), orgC.agentWithScopes("clerk"), orgC.agentWithScopes("helper")
	t1 := orgA.mustDelegate(planner, delegateReq{delegatee: booker, scopes: []string{"calendar:read"}, principal: "alice"})
	t2 := orgB.mustDelegate(booker, delegateReq{delegatee: payer, scopes: []string{"calendar:read"}, parent: t1})
	revokedHere := orgC.mustDelegate(payer, delegateReq{delegatee: clerk, scopes: []string{"calendar:read"}, parent: t2})
	other := orgC.mustDelegate(payer, delegateReq{delegatee: clerk, scopes: []string{"calendar:read"}, parent: t2})
	chainOf := func(tok string) []*delegation.Claims {
		t.Helper()
		chain, err := delegation.Verify(tok, orgC.a, delegation.VerifyOptions{AnyHolder: true})
		if err != nil || len(chain) != 3 {
			t.Fatalf("chain: %v %v", chain, err)
		}
		return chain
	}
	mine, below := chainOf(revokedHere), chainOf(other)
	revoke := func(e *env, id string) {
		t.Helper()
		if err := e.admin.Do(ctxT(t), http.MethodPost, "/v1/admin/revocations", map[string]string{"delegation_id": id, "reason": "done"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	revoke(orgC, mine[2].ID)
	orgB.stop()
	orgC.skew.Add(int64(10 * time.Second)) // past what org-c remembers of the peers' answers
	if _, p := orgC.delegate(clerk, delegateReq{delegatee: helper, scopes: []string{"calendar:read"}, parent: revokedHere}); p == nil || p.Name() != "delegation-revoked" {
		t.Errorf("extending org-c's own revoked hop while org-b is down: %+v, want delegation-revoked", p)
	}

	revoke(orgA, below[0].ID)
	orgC.skew.Add(int64(10 * time.Second))
	var st map[string]any
	if err := orgC.client(nil, nil).Do(ctxT(t), http.MethodGet, "/v1/delegations/"+below[2].ID+"/status", nil, &st); err != nil ||
		st["status"] != "revoked" || !strings.Contains(fmt.Sprint(st["reason"]), below[0].ID) {
		t.Errorf("status of org-c's hop below org-a's revoked root while org-b is down: %v %v, want revoked, naming the root", st, err)
	}
	if _, p := orgC.delegate(clerk, delegateReq{delegatee: helper, scopes: []string{"calendar:read"}, parent: other}); p == nil || p.Name() != "delegation-revoked" {
		t.Errorf("extending below org-a's revoked root while org-b is down: %+v, want delegation-revoked", p)
	}
}
