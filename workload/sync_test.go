package workload

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	pb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// An identity the authority no longer lets the host serve (its agent
// deleted, or moved to another node) is served no more from the next
// sync, long before its X509-SVID's renewal: the stream ends saying
// why, and its JWT-SVIDs kept are dropped. Registered again, it is
// served again from the next sync, without waiting for its keeper's
// retry.
func TestWorkloadAPIStopsServingWhatTheAuthorityRefuses(t *testing.T) {
	home := newAuthority(t, "example.org", time.Hour)
	home.hint = time.Second // a sync a second
	is := &issuer{authority: home}
	id := spiffeid.RequireFromString("spiffe://example.org/agent/planner")
	addr := serve(t, is, me(t, id.String()))
	ctx := ctxFor(t)
	withHeader := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	stream, err := rawClient(t, addr).FetchX509SVID(withHeader, &pb.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := workloadapi.FetchJWTSVID(ctx, jwtsvidParams("billing"), workloadapi.WithAddr(addr)); err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	is.gone = []spiffeid.ID{id}
	is.mu.Unlock()
	for {
		_, err := stream.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no longer lets this host serve it") {
			t.Fatalf("once refused, the stream ended with %v, want Unavailable saying why", err)
		}
		break
	}
	if _, err := workloadapi.FetchJWTSVID(ctx, jwtsvidParams("billing"), workloadapi.WithAddr(addr)); status.Code(err) != codes.Unavailable {
		t.Errorf("FetchJWTSVID once refused = %v, want Unavailable (the one kept dropped)", err)
	}
	if n := is.x509Calls.Load(); n != 1 {
		t.Errorf("the X509-SVID was asked for %d times, want once: the refusal came with a sync", n)
	}

	is.mu.Lock()
	is.gone = nil
	is.mu.Unlock()
	for {
		svid, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(addr))
		if err == nil {
			if svid.ID != id {
				t.Errorf("served %s, want %s", svid.ID, id)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("registered again, FetchX509SVID = %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A federation the authority adds, or drops, reaches the workloads with
// the next sync, not with an X509-SVID's renewal.
func TestWorkloadAPIServesFederationsAsSynced(t *testing.T) {
	home := newAuthority(t, "example.org", time.Hour)
	home.hint = time.Second
	peer := newAuthority(t, "peer.example", time.Hour)
	is := &issuer{authority: home}
	addr := workloadapi.WithAddr(serve(t, is, me(t, "spiffe://example.org/agent/planner")))
	ctx := ctxFor(t)
	has := func(want bool) {
		t.Helper()
		for {
			b, err := workloadapi.FetchX509Bundles(ctx, addr)
			if err != nil {
				t.Fatal(err)
			}
			if _, got := b.Get(peer.td); got == want {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("%s's bundle served: %v, want %v", peer.td, !want, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	has(false)
	is.mu.Lock()
	is.peers = []*authority{peer}
	is.mu.Unlock()
	has(true)
	is.mu.Lock()
	is.peers = nil
	is.mu.Unlock()
	has(false)
	if n := is.x509Calls.Load(); n != 1 {
		t.Errorf("the X509-SVID was asked for %d times, want once", n)
	}
}

// nodeRefused refuses every sync, as the authority does a banned node.
type nodeRefused struct{ *issuer }

func (nodeRefused) Sync(context.Context, []spiffeid.ID) (*Sync, error) {
	return nil, fmt.Errorf("%w: 403 node-banned", ErrNodeRefused)
}

// A node the authority refuses for good serves nothing more: Serve
// ends, saying why, and the socket is removed.
func TestWorkloadAPIStopsWhenTheNodeIsRefused(t *testing.T) {
	s, err := New([]Entry{me(t, "spiffe://example.org/agent/planner")}, nodeRefused{&issuer{authority: newAuthority(t, "example.org", time.Hour)}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "api.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctxFor(t), ln) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNodeRefused) || !strings.Contains(err.Error(), "node-banned") {
			t.Errorf("Serve = %v, want the node's refusal", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Serve went on serving a node the authority refuses")
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket is still there (%v)", err)
	}
}

// A sync's answer is taken in the order of the requests: one asked for
// before an X509-SVID was does not drop it, and an X509-SVID asked for
// before a sync that refused its identity is not served.
func TestSyncsFollowTheLatestRequest(t *testing.T) {
	is := &issuer{authority: newAuthority(t, "example.org", time.Hour)}
	s, id, obtain := unserved(t, is)
	refusal := &Sync{Bundles: is.bundles(), Refused: map[spiffeid.ID]error{id: errors.New("403 agent-not-registered")}}

	staleSync := s.ask()
	h, bundles := obtain()
	s.update(id, h, bundles, s.ask())
	s.synced(refusal, staleSync, false)
	if s.svids[id] != h {
		t.Error("a sync asked for before the X509-SVID dropped it")
	}

	staleSVID := s.ask()
	s.synced(refusal, s.ask(), false)
	if s.svids[id] != nil {
		t.Fatal("a refusal left the X509-SVID served")
	}
	h, bundles = obtain()
	s.update(id, h, bundles, staleSVID)
	if s.svids[id] != nil {
		t.Error("an X509-SVID asked for before the refusal was served")
	}
	h, bundles = obtain()
	s.update(id, h, bundles, s.ask())
	if s.svids[id] != h {
		t.Error("an X509-SVID asked for after the refusal was not served")
	}
}

// A sync that succeeds after one that failed (the authority was
// unreachable, or the node's credential not there yet) wakes the
// keepers holding no X509-SVID, which may be waiting up to a minute to
// ask again; one holding an SVID is left to its renewal, and so is every
// keeper while syncs succeed (one whose request is refused by policy
// keeps its backoff).
func TestRecoveredSyncWakesKeepersHoldingNothing(t *testing.T) {
	is := &issuer{authority: newAuthority(t, "example.org", time.Hour)}
	s, id, obtain := unserved(t, is)
	woken := func() bool {
		select {
		case <-s.kick[id]:
			return true
		default:
			return false
		}
	}
	sync := &Sync{Bundles: is.bundles()}
	s.synced(sync, s.ask(), false)
	if woken() {
		t.Error("a sync after one that succeeded woke the keeper")
	}
	s.synced(sync, s.ask(), true)
	if !woken() {
		t.Error("a sync after one that failed left the keeper holding nothing asleep")
	}
	h, bundles := obtain()
	s.update(id, h, bundles, s.ask())
	s.synced(sync, s.ask(), true)
	if woken() {
		t.Error("a sync after one that failed woke a keeper holding an X509-SVID")
	}
}

// An X509-SVID whose CA leaves the bundle (revoked before it expired)
// is served no more once the bundle without it is, and its keeper is
// woken to ask for another at once.
func TestX509SVIDOfARevokedCAIsReplaced(t *testing.T) {
	home := newAuthority(t, "example.org", time.Hour)
	is := &issuer{authority: home}
	s, id, obtain := unserved(t, is)
	h, bundles := obtain()
	s.update(id, h, bundles, s.ask())
	next := newAuthority(t, "example.org", time.Hour)
	s.synced(&Sync{Bundles: []*spiffebundle.Bundle{next.bundle()}}, s.ask(), false)
	if s.svids[id] != nil {
		t.Error("an X509-SVID whose CA left the bundle is still served")
	}
	select {
	case <-s.kick[id]:
	default:
		t.Error("the keeper was not woken to ask for another")
	}
	if err := s.unavailable([]spiffeid.ID{id}); err == nil || !strings.Contains(err.Error(), "no longer verifies") {
		t.Errorf("a caller is told %v; want why", err)
	}
}

// A JWT-SVID kept for reuse whose key leaves the bundle (revoked
// before it expired) is reused no more once the bundle without it is
// served: the next caller gets one signed by a key the bundle holds.
func TestJWTSVIDOfARevokedKeyIsNotReused(t *testing.T) {
	home := newAuthority(t, "example.org", time.Hour)
	old, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	home.moreJWT = map[string]crypto.PublicKey{"jwt-0": old.Public()}
	home.jwtSigner, home.jwtKID = old, "jwt-0"
	is := &issuer{authority: home}
	s, id, obtain := unserved(t, is)
	h, bundles := obtain()
	s.update(id, h, bundles, s.ask())
	first, err := s.jwt(t.Context(), 1000, id, []string{"billing"})
	if err != nil {
		t.Fatal(err)
	}
	if again, err := s.jwt(t.Context(), 1000, id, []string{"billing"}); err != nil || again != first {
		t.Fatalf("the JWT-SVID is not reused while its key is in the bundle: %v", err)
	}
	// The key is revoked: the authority signs with another, and the
	// bundle synced no longer holds it.
	home.mu.Lock()
	home.moreJWT, home.jwtSigner, home.jwtKID = nil, nil, ""
	home.mu.Unlock()
	s.synced(&Sync{Bundles: is.bundles()}, s.ask(), false)
	got, err := s.jwt(t.Context(), 1000, id, []string{"billing"})
	if err != nil {
		t.Fatal(err)
	}
	if got == first {
		t.Fatal("a JWT-SVID whose key left the bundle is still served")
	}
	if _, err := jwtsvid.ParseAndValidate(got, jwtbundle.NewSet(home.bundle().JWTBundle()), []string{"billing"}); err != nil {
		t.Errorf("the JWT-SVID served does not validate with the bundle: %v", err)
	}
}

// A JWT-SVID signed by a key the bundles served do not hold yet (a JWT
// key activated at once, between two syncs) is served once a sync
// asked for then answers the bundle with it.
func TestJWTSVIDOfAKeyNotSyncedYetIsServed(t *testing.T) {
	home := newAuthority(t, "example.org", time.Hour)
	is := &issuer{authority: home}
	s, id, obtain := unserved(t, is)
	h, bundles := obtain()
	s.update(id, h, bundles, s.ask())
	next, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	home.mu.Lock()
	home.moreJWT = map[string]crypto.PublicKey{"jwt-2": next.Public()}
	home.jwtSigner, home.jwtKID = next, "jwt-2"
	home.mu.Unlock()
	tok, err := s.jwt(t.Context(), 1000, id, []string{"billing"})
	if err != nil {
		t.Fatalf("a JWT-SVID of a key published since the last sync: %v", err)
	}
	if jwtKeyID(tok) != "jwt-2" || !s.bundles[id.TrustDomain()].HasJWTAuthority("jwt-2") {
		t.Error("the bundle served does not hold the key of the JWT-SVID served")
	}
}

// An X509-SVID asked for before a sync whose bundle no longer has its
// CA (revoked meanwhile), and answered after it, is not served: it
// would verify with no bundle served, and its keeper asks for another.
func TestX509SVIDAnsweredLateOfARevokedCAIsNotServed(t *testing.T) {
	is := &issuer{authority: newAuthority(t, "example.org", time.Hour)}
	s, id, obtain := unserved(t, is)
	early := s.ask()
	h, bundles := obtain()
	next := newAuthority(t, "example.org", time.Hour)
	s.synced(&Sync{Bundles: []*spiffebundle.Bundle{next.bundle()}}, s.ask(), false)
	err := s.update(id, h, bundles, early)
	if s.svids[id] != nil {
		t.Error("an X509-SVID of a CA the bundle served since left is served")
	}
	if err == nil || !strings.Contains(err.Error(), "does not verify with the trust bundle answered since") {
		t.Errorf("update = %v, want why it is not served (its keeper then asks again)", err)
	}
	// One that verifies with the bundle served since is served.
	nextIs := &issuer{authority: next}
	svid, nextBundles, err := nextIs.X509SVID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	h, err = hold(svid, id, nextBundles, s.now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.update(id, h, nextBundles, early); err != nil || s.svids[id] != h {
		t.Errorf("update of an X509-SVID that verifies with the bundle served = %v, want it served", err)
	}
}

// gatedSync is is, whose syncs wait for open (the authority slow to
// answer), counted in syncs.
type gatedSync struct {
	*issuer
	open  chan struct{}
	syncs atomic.Int32
}

func (g *gatedSync) Sync(ctx context.Context, ids []spiffeid.ID) (*Sync, error) {
	g.syncs.Add(1)
	select {
	case <-g.open:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.issuer.Sync(ctx, ids)
}

// JWT-SVIDs signed by a key the host's bundle does not hold yet (a JWT
// key activated at once), asked for at once for many audiences, lead to
// one sync with the authority, not one each.
func TestJWTSVIDsOfANewKeyShareOneSync(t *testing.T) {
	home := newAuthority(t, "example.org", time.Hour)
	g := &gatedSync{issuer: &issuer{authority: home}, open: make(chan struct{})}
	s, err := New([]Entry{me(t, "spiffe://example.org/agent/planner")}, g, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	id := s.entries[0].ID
	s.mu.Lock()
	s.asks++
	s.setBundles(g.bundles(), s.asks) // without the new key
	s.mu.Unlock()
	next := newAuthority(t, "example.org", time.Hour)
	home.mu.Lock()
	home.moreJWT = map[string]crypto.PublicKey{"jwt-2": next.jwtKey.Public()}
	home.jwtSigner, home.jwtKID = next.jwtKey, "jwt-2"
	home.mu.Unlock()

	const calls = 12
	ctx := ctxFor(t)
	errs := make(chan error, calls)
	for i := range calls {
		go func() {
			_, err := s.jwt(ctx, 1000, id, []string{"aud-" + strconv.Itoa(i)})
			errs <- err
		}()
	}
	// Every call has its JWT-SVID before a sync is answered: the sync
	// is let through once all have asked for one, or once those that
	// do not ask have had a second to.
	for g.jwtCalls.Load() < calls {
		time.Sleep(time.Millisecond)
	}
	for start := time.Now(); g.syncs.Load() < calls && time.Since(start) < time.Second; {
		time.Sleep(time.Millisecond)
	}
	close(g.open)
	for range calls {
		if err := <-errs; err != nil {
			t.Errorf("jwt = %v", err)
		}
	}
	if n := g.syncs.Load(); n != 1 {
		t.Errorf("%d JWT-SVIDs of a new key led to %d syncs, want 1", calls, n)
	}
}
