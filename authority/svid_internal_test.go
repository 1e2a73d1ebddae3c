package authority

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
)

// An agent renewing by itself gets nothing once its host node's latest
// SVID has expired: the node has not renewed nor attested again since,
// so it is attested no longer, and an agent's key (taken from a host
// that stopped) does not renew for ever. Neither does a node's own copy.
func TestAgentDoesNotOutliveItsLapsedNode(t *testing.T) {
	clock := &testClock{now: time.Now().Truncate(time.Second)}
	a, _ := runAuthorityWith(t, Options{Now: clock.Now})
	ctx := t.Context()
	h := hostAnAgent(t, a, registry.Agent{SPIFFEID: a.td.IDString() + "/agent/w", X509TTLSeconds: int64(registry.MaxTTLSeconds)})
	nodeSVID, agentSVID, node, agent, reg := h.nodeSVID, h.agentSVID, h.node, h.agent, h.reg
	if _, err := a.MintX509(ctx, agent, reg.SPIFFEID, newCSR(t)); err != nil {
		t.Fatalf("renewal while the node is attested: %v", err)
	}
	if h := a.hostFacts(ctx, nodeSVID.ID); h["lapsed"] != false {
		t.Errorf("the delegation policy's host facts of an attested node: %v, want not lapsed", h)
	}
	clock.Advance(nodeSVID.ExpiresAt.Sub(clock.Now()) + time.Second)
	if !clock.Now().Before(agentSVID.ExpiresAt) {
		t.Fatal("the agent's SVID expired with the node's: the test proves nothing")
	}
	if _, err := a.MintX509(ctx, agent, reg.SPIFFEID, newCSR(t)); !errors.Is(err, ErrNodeUnknown) {
		t.Errorf("X509 renewal by the agent after its node's SVID expired = %v, want ErrNodeUnknown", err)
	}
	if _, err := a.MintJWT(ctx, agent, "", []string{"x"}); !errors.Is(err, ErrNodeUnknown) {
		t.Errorf("JWT-SVID for the agent after its node's SVID expired = %v, want ErrNodeUnknown", err)
	}
	if _, err := a.MintJWT(ctx, node, reg.SPIFFEID, []string{"x"}); !errors.Is(err, ErrNodeUnknown) {
		t.Errorf("JWT-SVID asked with the node's expired SVID = %v, want ErrNodeUnknown", err)
	}
	// The delegation policy is told so of the agent's host.
	if h := a.hostFacts(ctx, nodeSVID.ID); h["lapsed"] != true {
		t.Errorf("the delegation policy's host facts of a node whose SVID expired: %v, want lapsed", h)
	}
}

// A JWT-SVID audience is text: one of control characters is refused as
// an invalid request. And an issuance whose svid.issued entry would not
// fit the log with the decision's input (a large registration, long
// audiences that escape to twice their size) is logged with the input
// left out, not answered 500 after its SVID was made.
func TestJWTAudienceCannotOverflowItsEntry(t *testing.T) {
	a := startAuthority(t)
	ctx, admin := t.Context(), adminOf(t, a)
	nodeID := putNode(t, a, "n1")
	node := &Caller{ID: spiffeid.RequireFromString(nodeID)}
	var sels []string
	for i := range registry.MaxListLen {
		sels = append(sels, fmt.Sprintf("%03d%s", i, strings.Repeat("s", 250)))
	}
	small, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/small", NodeIDs: []string{nodeID}, Selectors: sels})
	if err != nil {
		t.Fatal(err)
	}
	aud := func(s string) []string {
		out := make([]string, maxAudiences)
		for i := range out {
			out[i] = fmt.Sprintf("%02d", i) + strings.Repeat(s, (maxAudienceLen-2)/len(s))
		}
		return out
	}
	for _, bad := range []string{"\x01", "\n", "\u202e", "\ufffd"} {
		if _, err := a.MintJWT(ctx, node, small.SPIFFEID, aud(bad)); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("JWT-SVID for audiences of %q = %v, want ErrInvalidRequest", bad, err)
		}
	}
	// A registration whose issuance input is near the bound kept whole.
	ctl := strings.Repeat(`"`, registry.MaxStringLen)
	var many []string
	for i := range 64 {
		many = append(many, fmt.Sprintf("%03d%s", i, strings.Repeat(`"`, 240)))
	}
	large, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/large", NodeIDs: []string{nodeID}, Selectors: many, Scopes: many[:28],
		Accountability: registry.Accountability{Operator: ctl, ModelProvider: ctl, Model: ctl, ResponsibleParty: ctl}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.MintJWT(ctx, node, large.SPIFFEID, aud(`"`)); err != nil {
		t.Fatalf("JWT-SVID with long quoted audiences for a large registration = %v", err)
	}
	got, _, err := a.SearchAudit(ctx, admin, audit.Query{Type: "svid.issued", SPIFFEID: large.SPIFFEID, Limit: 10})
	if err != nil || len(got) != 1 {
		t.Fatalf("svid.issued entries of the large registration: %d, %v; want 1", len(got), err)
	}
	var d struct {
		Audience []string `json:"audience"`
		Decision struct {
			Input   json.RawMessage `json:"input"`
			Omitted string          `json:"input_omitted"`
		} `json:"decision"`
	}
	e, err := audit.Decode(got[0].Entry)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.ReadDetails(&d); err != nil {
		t.Fatal(err)
	}
	if len(d.Audience) != maxAudiences || d.Decision.Input != nil || d.Decision.Omitted == "" {
		t.Errorf("the entry keeps %d audiences, input %d bytes, omitted %q; want every audience, the input omitted", len(d.Audience), len(d.Decision.Input), d.Decision.Omitted)
	}
}

// latestNodeSVID takes a node's latest SVID, and the one it replaced for
// supersededGrace after the latest was issued; nothing else, and never a
// caller without a certificate (the serial of none is no previous SVID).
func TestLatestNodeSVID(t *testing.T) {
	now := time.Now()
	id := spiffeid.RequireFromString("spiffe://org-a.example/node/join/n1")
	caller := func(serial int64) *Caller {
		c := &Caller{ID: id}
		if serial != 0 {
			c.Cert = &x509.Certificate{SerialNumber: big.NewInt(serial)}
		}
		return c
	}
	renewed := &registry.Node{SVIDSerial: "b", PrevSVIDSerial: "a", SVIDIssuedAt: now.Add(-10 * time.Second)}
	joined := &registry.Node{SVIDSerial: "b", SVIDIssuedAt: now.Add(-10 * time.Second)}
	for _, tc := range []struct {
		name string
		node *registry.Node
		c    *Caller
		ok   bool
	}{
		{"the latest", renewed, caller(0xb), true},
		{"the one replaced, 10 s after", renewed, caller(0xa), true},
		{"the one replaced, 31 s after", &registry.Node{SVIDSerial: "b", PrevSVIDSerial: "a", SVIDIssuedAt: now.Add(-31 * time.Second)}, caller(0xa), false},
		{"the one replaced, on a record without an issue time", &registry.Node{SVIDSerial: "b", PrevSVIDSerial: "a"}, caller(0xa), false},
		{"another", renewed, caller(0xc), false},
		{"no certificate, after a first join", joined, caller(0), false},
		{"a record without a serial", &registry.Node{}, caller(0xc), true},
		{"issued after the latest the record knows (restored from a backup)", joined, issuedAt(caller(0xc), now.Add(-5*time.Second)), true},
		{"issued before the latest the record knows", joined, issuedAt(caller(0xc), now.Add(-15*time.Second)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := latestNodeSVID(tc.node, tc.c, now)
			if tc.ok != (err == nil) || err != nil && !errors.Is(err, ErrSVIDSuperseded) {
				t.Errorf("latestNodeSVID = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// issuedAt is c with a certificate valid from t.
func issuedAt(c *Caller, t time.Time) *Caller {
	c.Cert.NotBefore = t
	return c
}

// joinedOnAClock is an authority on a clock the test moves, and the
// SVID of a node joined to it.
func joinedOnAClock(t *testing.T) (*Authority, *testClock, *ca.X509SVID) {
	t.Helper()
	clock := &testClock{now: time.Now()}
	a, _ := runAuthorityWith(t, Options{Now: clock.Now})
	secret, _, err := a.CreateJoinToken(t.Context(), adminOf(t, a), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	joined, err := a.JoinNode(t.Context(), secret, newCSR(t))
	if err != nil {
		t.Fatal(err)
	}
	return a, clock, joined
}

// A join-token node whose record was restored from a backup made before
// its last renewal renews with the SVID it holds, which the record does
// not know, and gets its agents' SVIDs with it; a copy of the SVID that
// one replaced is still refused.
func TestNodeRenewsOnARestoredRecord(t *testing.T) {
	a, clock, joined := joinedOnAClock(t)
	ctx, admin := t.Context(), adminOf(t, a)
	nodeOf := func(svid *ca.X509SVID) *Caller { return &Caller{ID: svid.ID, Cert: svid.Certificates[0]} }
	var backup *registry.Node
	if err := a.store.View(ctx, func(tx store.Tx) (err error) { backup, err = registry.GetNode(tx, joined.ID.String()); return err }); err != nil {
		t.Fatal(err)
	}
	clock.Advance(30 * time.Minute)
	renewed, err := a.MintX509(ctx, nodeOf(joined), joined.ID.String(), newCSR(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.store.Update(ctx, func(tx store.Tx) error { return registry.PutNode(tx, backup) }); err != nil {
		t.Fatal(err)
	}
	a.hosting.invalidate()
	agent, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/w", NodeIDs: []string{joined.ID.String()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.MintX509(ctx, nodeOf(renewed), agent.SPIFFEID, newCSR(t)); err != nil {
		t.Errorf("an agent's SVID asked with the node's SVID the restored record does not know = %v, want it issued", err)
	}
	clock.Advance(30 * time.Minute)
	// Its sync too, when the restored record reads as lapsed.
	if sync, err := a.SyncNode(ctx, nodeOf(renewed), []string{agent.SPIFFEID}); err != nil || len(sync.Hosted) != 1 {
		t.Errorf("a sync with the node's SVID the restored record does not know, the record lapsed = %+v, %v; want its agent hosted", sync, err)
	}
	if _, err := a.MintX509(ctx, nodeOf(renewed), joined.ID.String(), newCSR(t)); err != nil {
		t.Errorf("a renewal with the node's SVID the restored record does not know = %v, want it renewed", err)
	}
	if _, err := a.MintX509(ctx, nodeOf(joined), joined.ID.String(), newCSR(t)); !errors.Is(err, ErrSVIDSuperseded) {
		t.Errorf("a renewal with the SVID replaced before = %v, want ErrSVIDSuperseded", err)
	}
}

// An SVID replaced since is refused even after the authority's clock
// stepped back: the record's newest issue time does not move back with
// it, so a copy of an SVID issued before the step is not taken as one
// the record lost. So too for a record an earlier release wrote, which
// has only the latest SVID's issue time.
func TestNodeCopyRefusedAfterTheClockSteppedBack(t *testing.T) {
	for _, tc := range []struct {
		name string
		// record rewrites the node's record before the step, as kept.
		record func(*registry.Node)
	}{
		{"record as written", func(*registry.Node) {}},
		{"record without newest_svid_at", func(n *registry.Node) { n.NewestSVIDAt = time.Time{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, clock, held := joinedOnAClock(t)
			ctx := t.Context()
			renew := func(from *ca.X509SVID) (*ca.X509SVID, error) {
				return a.MintX509(ctx, &Caller{ID: from.ID, Cert: from.Certificates[0]}, from.ID.String(), newCSR(t))
			}
			clock.Advance(30 * time.Minute)
			copied, err := renew(held)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.store.Update(ctx, func(tx store.Tx) error {
				n, err := registry.GetNode(tx, copied.ID.String())
				if err != nil {
					return err
				}
				tc.record(n)
				return registry.PutNode(tx, n)
			}); err != nil {
				t.Fatal(err)
			}
			clock.Advance(-20 * time.Minute) // the authority's clock steps back
			if held, err = renew(copied); err != nil {
				t.Fatal(err)
			}
			if _, err = renew(held); err != nil {
				t.Fatal(err)
			}
			if _, err := renew(copied); !errors.Is(err, ErrSVIDSuperseded) {
				t.Errorf("a renewal with a copy of an SVID replaced twice since, issued before the clock stepped back = %v, want ErrSVIDSuperseded", err)
			}
		})
	}
}

// A ban committed after an agent SVID request was checked (here: one the
// hosting cache has not seen yet) is not outrun: the commit that would
// log the SVID checks the node again, and nothing is issued or logged as
// issued. The allow is not lost from the log: it is recorded on its own,
// a policy.decision entry, as for an SVID that could not be minted.
func TestAgentSVIDRechecksItsNodeInItsCommit(t *testing.T) {
	for _, kind := range []string{"x509", "jwt"} {
		t.Run(kind, func(t *testing.T) {
			a := startAuthority(t)
			ctx, admin := t.Context(), adminOf(t, a)
			nodeID := putNode(t, a, "n1")
			agent, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/w", NodeIDs: []string{nodeID}})
			if err != nil {
				t.Fatal(err)
			}
			node := &Caller{ID: spiffeid.RequireFromString(nodeID)}
			mint := func() error {
				if kind == "x509" {
					_, err := a.MintX509(ctx, node, agent.SPIFFEID, newCSR(t))
					return err
				}
				_, err := a.MintJWT(ctx, node, agent.SPIFFEID, []string{"x"})
				return err
			}
			if err := mint(); err != nil {
				t.Fatalf("first SVID: %v", err)
			}
			if err := a.store.Update(ctx, func(tx store.Tx) error {
				_, _, err := registry.BanNode(tx, nodeID, "stolen", time.Now())
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if err := mint(); !errors.Is(err, registry.ErrBanned) {
				t.Fatalf("SVID after the ban = %v, want registry.ErrBanned", err)
			}
			issued, _, err := a.SearchAudit(ctx, admin, audit.Query{Type: "svid.issued", SPIFFEID: agent.SPIFFEID, Limit: 10})
			if err != nil || len(issued) != 1 { // the first only
				t.Errorf("the agent's svid.issued entries: %d (%v), want 1", len(issued), err)
			}
			got, _, err := a.SearchAudit(ctx, admin, audit.Query{Type: "policy.decision", SPIFFEID: agent.SPIFFEID, Limit: 10})
			if err != nil || len(got) != 1 {
				t.Fatalf("the agent's policy.decision entries: %d (%v), want the allow whose SVID was refused", len(got), err)
			}
			var e struct {
				DecisionID string         `json:"decision_id"`
				Details    map[string]any `json:"details"`
			}
			if err := json.Unmarshal(got[0].Entry, &e); err != nil {
				t.Fatal(err)
			}
			if e.DecisionID == "" || e.Details["allow"] != true || e.Details["point"] != "issuance" {
				t.Fatalf("the decision's entry: %s", got[0].Entry)
			}
		})
	}
}

// TestMintServerSVIDWaitsNoLongerThanItsCaller: a server certificate is
// minted during a TLS handshake, which holds the others; when its record
// cannot be made durable (the store busy), the mint gives up at the
// caller's deadline (at most 10 s), not at the record's own (30 s).
func TestMintServerSVIDWaitsNoLongerThanItsCaller(t *testing.T) {
	a := startAuthority(t)
	held, release := make(chan struct{}), make(chan struct{})
	updated := make(chan error, 1)
	go func() {
		updated <- a.store.Update(context.Background(), func(store.Tx) error { close(held); <-release; return nil })
	}()
	<-held
	// The store is released once the mint returns, or after 5 s: a mint
	// that waited for its record then succeeds, and the test fails.
	timer := time.AfterFunc(5*time.Second, func() { close(release) })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	svid, _, err := a.MintServerSVID(ctx)
	if timer.Stop() {
		close(release)
	}
	if err := <-updated; err != nil {
		t.Fatal(err)
	}
	if svid != nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("MintServerSVID with the store held: %v, %v; want no certificate, the caller's deadline passed", svid, err)
	}
}

// heldRecord holds the first record of a flow whose context names it
// (holdKey), after the flow's checks and before its commit: reached is
// closed when the flow gets there, and it goes on once release is
// closed. An admin change made meanwhile is acknowledged before the
// flow commits.
type heldRecord struct {
	once             sync.Once
	reached, release chan struct{}
}

type holdKey struct{}

// holding is ctx naming a new heldRecord.
func holding(ctx context.Context) (context.Context, *heldRecord) {
	h := &heldRecord{reached: make(chan struct{}), release: make(chan struct{})}
	return context.WithValue(ctx, holdKey{}, h), h
}

// whileHeld runs flow with its first record held, makes change once the
// flow has reached it (its checks made, its commit to come), then lets
// the flow on and returns its error.
func whileHeld(ctx context.Context, flow func(context.Context) error, change func()) error {
	hctx, h := holding(ctx)
	done := make(chan error, 1)
	go func() { done <- flow(hctx) }()
	<-h.reached
	change()
	close(h.release)
	return <-done
}

// holdRecords makes recordContext hold the records of flows whose
// context names a heldRecord; set before the authority runs, and put
// back once it has stopped (cleanups run last first).
func holdRecords(t *testing.T) {
	was := recordContext
	t.Cleanup(func() { recordContext = was })
	recordContext = func(ctx context.Context) (context.Context, context.CancelFunc) {
		if h, ok := ctx.Value(holdKey{}).(*heldRecord); ok {
			h.once.Do(func() { close(h.reached); <-h.release })
		}
		return was(ctx)
	}
}

// An agent SVID whose decision was made on a registration that an admin
// updated before its commit (the update acknowledged first) is not
// issued: its TTL, and the accountable party its entry names, would be
// those of a registration no longer in force. The allow is recorded on
// its own, and a new request is decided on the registration as it is.
func TestAgentSVIDIsNotIssuedOnAChangedRegistration(t *testing.T) {
	for _, kind := range []string{"x509", "jwt"} {
		for _, tc := range []struct {
			name   string
			change func(*registry.Agent)
		}{
			{"accountability", func(ag *registry.Agent) { ag.Accountability.Operator = "team-b" }},
			{"lifetime", func(ag *registry.Agent) { ag.X509TTLSeconds, ag.JWTTTLSeconds = 60, 60 }},
		} {
			t.Run(kind+" "+tc.name, func(t *testing.T) {
				a, _, reg, mint := mintOnNode(t, kind, registry.Accountability{Operator: "team-a"})
				ctx, admin := t.Context(), adminOf(t, a)
				upd := updated(reg, tc.change)
				err := whileHeld(ctx, mint, func() {
					if _, err := a.UpdateAgent(ctx, admin, reg.ID, upd); err != nil {
						t.Error(err)
					}
				})
				if !errors.Is(err, ErrChangedMeanwhile) {
					t.Fatalf("SVID decided before the update, committed after = %v, want ErrChangedMeanwhile", err)
				}
				of := func(typ string) int {
					got, _, err := a.SearchAudit(ctx, admin, audit.Query{Type: typ, SPIFFEID: reg.SPIFFEID, Limit: 10})
					if err != nil {
						t.Fatal(err)
					}
					return len(got)
				}
				if n := of("svid.issued"); n != 0 {
					t.Errorf("the agent's svid.issued entries: %d, want none", n)
				}
				if n := of("policy.decision"); n != 1 {
					t.Errorf("the agent's policy.decision entries: %d, want the allow whose SVID was refused", n)
				}
				if err := mint(ctx); err != nil {
					t.Fatalf("asked again: %v", err)
				}
				got, _, err := a.SearchAudit(ctx, admin, audit.Query{Type: "svid.issued", SPIFFEID: reg.SPIFFEID, Limit: 10})
				if err != nil || len(got) != 1 {
					t.Fatalf("svid.issued entries after asking again: %d (%v)", len(got), err)
				}
				e, err := audit.Decode(got[0].Entry)
				if err != nil {
					t.Fatal(err)
				}
				if len(e.Accountable) != 1 || e.Accountable[0].Operator != upd.Accountability.Operator {
					t.Errorf("the entry's accountable party: %+v, want the registration's as updated", e.Accountable)
				}
			})
		}
	}
}

// An agent SVID asked through a node that an admin evicts before its
// commit (the eviction acknowledged first) is not issued, and is refused
// as one asked after the eviction is: the node is not attested
// (ErrNodeUnknown, node-not-attested), which a node run takes as
// refused for good, not as a registration not found.
func TestAgentSVIDOfANodeEvictedMeanwhile(t *testing.T) {
	for _, kind := range []string{"x509", "jwt"} {
		t.Run(kind, func(t *testing.T) {
			a, nodeID, reg, mint := mintOnNode(t, kind, registry.Accountability{})
			ctx, admin := t.Context(), adminOf(t, a)
			err := whileHeld(ctx, mint, func() {
				if _, err := a.EvictNode(ctx, admin, nodeID, "retired", false); err != nil {
					t.Error(err)
				}
			})
			if !errors.Is(err, ErrNodeUnknown) || errors.Is(err, registry.ErrNotFound) {
				t.Fatalf("SVID checked before the eviction, committed after = %v, want ErrNodeUnknown", err)
			}
			if err := mint(ctx); !errors.Is(err, ErrNodeUnknown) {
				t.Fatalf("SVID asked after the eviction = %v, want ErrNodeUnknown", err)
			}
			got, _, err := a.SearchAudit(ctx, admin, audit.Query{Type: "svid.issued", SPIFFEID: reg.SPIFFEID, Limit: 10})
			if err != nil || len(got) != 0 {
				t.Fatalf("the agent's svid.issued entries: %d (%v), want none", len(got), err)
			}
		})
	}
}

// The checks of an agent's SVID come in the order docs/api.md gives: a
// registration that does not allow the node is said so before the ID's
// revocation; one that allows it is refused as revoked.
func TestRevokedAgentRefusalOrder(t *testing.T) {
	a, _, nodeSVID := joinedOnAClock(t)
	ctx, admin := t.Context(), adminOf(t, a)
	node := &Caller{ID: nodeSVID.ID, Cert: nodeSVID.Certificates[0]}
	for _, tc := range []struct {
		name    string
		nodeIDs []string
		want    error
	}{
		{"hosted", []string{nodeSVID.ID.String()}, ErrIDRevoked},
		{"elsewhere", []string{a.td.IDString() + "/node/join/0000000000000000"}, registry.ErrNotHosted},
	} {
		id := a.td.IDString() + "/agent/" + tc.name
		if _, err := a.CreateAgent(ctx, admin, &registry.Agent{SPIFFEID: id, NodeIDs: tc.nodeIDs}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Revoke(ctx, admin, "", id, "compromised"); err != nil {
			t.Fatal(err)
		}
		if _, err := a.MintX509(ctx, node, id, newCSR(t)); !errors.Is(err, tc.want) {
			t.Errorf("X509-SVID of the revoked agent %s = %v, want %v", tc.name, err, tc.want)
		}
		if _, err := a.MintJWT(ctx, node, id, []string{"x"}); !errors.Is(err, tc.want) {
			t.Errorf("JWT-SVID of the revoked agent %s = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// mintOnNode starts an authority whose records flows may hold
// (holdRecords), with agent w (accountable acc) registered on node n1,
// and returns them with a mint of w's SVID of kind (x509 or jwt) asked
// by that node.
func mintOnNode(t *testing.T, kind string, acc registry.Accountability) (a *Authority, nodeID string, reg *registry.Agent, mint func(context.Context) error) {
	t.Helper()
	holdRecords(t)
	a = startAuthority(t)
	nodeID = putNode(t, a, "n1")
	reg, err := a.CreateAgent(t.Context(), adminOf(t, a), &registry.Agent{SPIFFEID: a.td.IDString() + "/agent/w", NodeIDs: []string{nodeID}, Accountability: acc})
	if err != nil {
		t.Fatal(err)
	}
	node := &Caller{ID: spiffeid.RequireFromString(nodeID)}
	return a, nodeID, reg, func(ctx context.Context) error {
		if kind == "x509" {
			_, err := a.MintX509(ctx, node, reg.SPIFFEID, newCSR(t))
			return err
		}
		_, err := a.MintJWT(ctx, node, reg.SPIFFEID, []string{"x"})
		return err
	}
}

// hosted is a join-token node and an agent registered on it, as callers
// (each with its SVID): the node's from its join, the agent's as the
// node obtained it.
type hosted struct {
	node, agent         *Caller
	nodeSVID, agentSVID *ca.X509SVID
	reg                 *registry.Agent
}

// hostAnAgent joins a node with a join token, registers agent on it
// (its NodeIDs set to the node's), and has the node obtain its SVID.
func hostAnAgent(t *testing.T, a *Authority, agent registry.Agent) hosted {
	t.Helper()
	ctx, admin := t.Context(), adminOf(t, a)
	secret, _, err := a.CreateJoinToken(ctx, admin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var h hosted
	if h.nodeSVID, err = a.JoinNode(ctx, secret, newCSR(t)); err != nil {
		t.Fatal(err)
	}
	agent.NodeIDs = []string{h.nodeSVID.ID.String()}
	if h.reg, err = a.CreateAgent(ctx, admin, &agent); err != nil {
		t.Fatal(err)
	}
	h.node = &Caller{ID: h.nodeSVID.ID, Cert: h.nodeSVID.Certificates[0]}
	if h.agentSVID, err = a.MintX509(ctx, h.node, h.reg.SPIFFEID, newCSR(t)); err != nil {
		t.Fatal(err)
	}
	h.agent = &Caller{ID: h.agentSVID.ID, Cert: h.agentSVID.Certificates[0]}
	return h
}
