package workload

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	pb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Issuer obtains credentials from the authority (the node's client).
// An error with a RetryDelay() time.Duration method (the client's
// problems) that answers more than the server's own back-off is waited
// for before the call is made again (an HTTP Retry-After); for an
// X509-SVID, only up to half of what is left of the one held.
type Issuer interface {
	// X509SVID is a new X509-SVID of id, with a key made for it, and the
	// trust bundles the authority answered with (its own and those it
	// federates with).
	X509SVID(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, []*spiffebundle.Bundle, error)
	// JWTSVID is a new JWT-SVID of id for audience, and its expiry.
	JWTSVID(ctx context.Context, id spiffeid.ID, audience []string) (string, time.Time, error)
	// Sync is which of the identities ids the authority still lets
	// this host serve, and the trust bundles as it publishes them now
	// (with the X.509 CA and JWT key it has prepared, before they sign,
	// and those of the trust domains it federates with). An error
	// wrapping ErrNodeRefused is the authority refusing the node for
	// good (banned, say): the Workload API then stops.
	Sync(ctx context.Context, ids []spiffeid.ID) (*Sync, error)
}

// Sync is the authority's answer to a node's sync.
type Sync struct {
	// Bundles are every trust domain's bundle: the authority's own and
	// those it federates with.
	Bundles []*spiffebundle.Bundle
	// Refused are the identities asked about that the host may no
	// longer serve (their registration deleted, or no longer naming this
	// node), and why.
	Refused map[spiffeid.ID]error
}

// ErrNodeRefused is the authority refusing the node itself for good.
var ErrNodeRefused = errors.New("the authority refuses this node")

// Limits of what a caller may send or hold.
const (
	maxMessageBytes = 64 << 10
	// maxHeaderBytes bounds a call's header list (its metadata), which
	// gRPC would otherwise let reach 16 MiB, held while it arrives: any
	// local process may connect, before it is identified.
	maxHeaderBytes = 8 << 10
	maxStreams     = 64
	// maxJWTsHeld bounds the JWT-SVIDs kept for reuse, and
	// maxJWTsHeldPerUID those obtained for the callers of one user id.
	maxJWTsHeld       = 256
	maxJWTsHeldPerUID = 64
	// maxJWTCallsPerUID bounds the calls for JWT-SVIDs to the authority
	// that the callers of one user id may have under way at once.
	maxJWTCallsPerUID = 4
	// callTimeout bounds a call to the authority.
	callTimeout = 30 * time.Second
	// retryFloor and retryCeiling bound the wait before asking again for
	// an X509-SVID that could not be obtained.
	retryFloor, retryCeiling = time.Second, time.Minute
	// syncEvery is how often the authority is asked which identities
	// the host may still serve, and for the bundles (more often when
	// its own bundle's refresh hint is shorter).
	syncEvery = 30 * time.Second
	// MaxIdentities bounds the identities one host serves: one sync
	// asks about them all, and the authority answers a sync of at most
	// as many (authority.MaxSyncIDs).
	MaxIdentities = 256
)

// Server is the Workload API of one host. Make it with New, serve it
// with Serve.
type Server struct {
	pb.UnimplementedSpiffeWorkloadAPIServer

	entries []Entry
	// checks are each entry's selectors, in the order they are checked
	// (byCost).
	checks [][]Selector
	// digests are the callers' executables', computed once.
	digests *digests
	issuer  Issuer
	log     *slog.Logger
	now     func() time.Time
	// wallPoll is how often a renewal's wait reads the wall clock.
	wallPoll time.Duration

	mu     sync.Mutex
	svids  map[spiffeid.ID]*held
	failed map[spiffeid.ID]error // why the latest request of an identity's X509-SVID failed, until one succeeds
	// refused, by identity, is the request (see asks) whose sync answer
	// said the authority no longer lets this host serve it: an X509-SVID
	// asked for before is not served. Dropped when one asked for after
	// is answered, or a sync says it may be served again.
	refused map[spiffeid.ID]uint64
	// kick wakes an identity's keeper, to ask for its X509-SVID at once.
	kick    map[spiffeid.ID]chan struct{}
	bundles map[spiffeid.TrustDomain]*spiffebundle.Bundle
	// asks numbers the requests whose answers carry bundles (X509-SVIDs,
	// syncs) in the order they were made; setAsk is the one whose answer
	// gave the bundles: an answer to an earlier request, arriving late,
	// does not put back what a later one replaced.
	asks    uint64
	setAsk  uint64
	changed chan struct{} // closed, and replaced, at every change of svids or bundles
	jwts    map[string]heldJWT
	// jwtCalls are the JWT-SVIDs being obtained, by the key of jwts.
	jwtCalls map[string]*jwtCall
	// jwtSlots bound the calls for JWT-SVIDs under way, by caller's uid
	// (maxJWTCallsPerUID; in all, no more than so many for each of the
	// connections there may be).
	jwtSlots *slots
	// jwtWait is when the authority, having answered a JWT-SVID's
	// request with a Retry-After, may be asked for one again.
	jwtWait time.Time
	// resyncing is the sync asked for by a JWT-SVID's check under way.
	resyncing *resyncCall
	conns     *connLimit
	// receiving bound the calls whose requests are being received, by
	// caller's uid (admitCall).
	receiving *slots
	// receivingSaid is when admitCall last said it refused a call.
	receivingSaid time.Time
	// streams bound the streams open, by caller's uid (watch), and
	// streamsSaid is when one was last said to be refused.
	streams     *slots
	streamsSaid time.Time
	// uncheckedSaid is when unchecked last said something.
	uncheckedSaid time.Time
	// stopping is closed when Serve ends: streams end with it.
	stopping chan struct{}
}

// held is an X509-SVID ready to be served.
type held struct {
	svid  *x509svid.SVID
	certs []byte // the chain, leaf first, DER concatenated
	key   []byte // PKCS #8 DER
	ask   uint64 // the request it answered
}

type heldJWT struct {
	token   string
	renewAt time.Time
	uid     uint32 // of the caller it was obtained for
	// td and kid name the JWT authority that signed it: one that leaves
	// the bundle (revoked) ends its reuse.
	td  spiffeid.TrustDomain
	kid string
}

// New is the Workload API serving entries, each of an agent's
// identity, with credentials from is.
func New(entries []Entry, is Issuer, log *slog.Logger) (*Server, error) {
	if len(entries) == 0 {
		return nil, fmt.Errorf("%w: none given: the Workload API would serve no caller", ErrEntry)
	}
	for _, e := range entries {
		if len(e.Selectors) == 0 {
			return nil, fmt.Errorf("%w %s: no selector: it would select every caller", ErrEntry, e)
		}
		for _, sel := range e.Selectors {
			if got, err := parseSelector(sel.String()); err != nil || got != sel {
				return nil, fmt.Errorf("%w %s: the selector %s is not as ParseEntry reads it", ErrEntry, e, sel)
			}
		}
		if err := checkBound(e.Selectors); err != nil {
			return nil, fmt.Errorf("%w %s: %v", ErrEntry, e, err)
		}
		if err := checkAgentID(e.ID); err != nil {
			return nil, fmt.Errorf("%w %s: %v", ErrEntry, e, err)
		}
	}
	s := &Server{
		entries: slices.Clone(entries), issuer: is, log: log, now: time.Now, wallPoll: time.Minute,
		svids: map[spiffeid.ID]*held{}, failed: map[spiffeid.ID]error{}, refused: map[spiffeid.ID]uint64{}, kick: map[spiffeid.ID]chan struct{}{},
		bundles: map[spiffeid.TrustDomain]*spiffebundle.Bundle{}, changed: make(chan struct{}),
		jwts: map[string]heldJWT{}, jwtCalls: map[string]*jwtCall{}, jwtSlots: newSlots(maxConns*maxJWTCallsPerUID, maxJWTCallsPerUID), conns: newConnLimit(maxConnsPerUID, maxConns, log),
		receiving: newSlots(maxReceiving, maxReceivingPerUID), streams: newSlots(maxOpenStreams, maxOpenStreamsPerUID), stopping: make(chan struct{}),
	}
	for _, e := range s.entries {
		s.checks = append(s.checks, byCost(e.Selectors))
	}
	s.digests = newDigests()
	ids := s.ids()
	if len(ids) > MaxIdentities {
		return nil, fmt.Errorf("%w: %d identities given, more than the %d one host serves", ErrEntry, len(ids), MaxIdentities)
	}
	for _, id := range ids {
		s.kick[id] = make(chan struct{}, 1)
	}
	return s, nil
}

// Listen opens the Unix socket at path that any local process may
// connect to (what each gets is decided by its entries). A socket left
// there by a process that stopped is replaced; one another process
// listens on, or a file that is not a socket, is refused, and so is a
// directory another user could change, or one below such a directory
// (checkSocketDir, checkAboveSocketDir).
func Listen(path string) (net.Listener, error) {
	// The socket is made, then its mode set by its path: in a directory
	// others may write to without the sticky bit, or another user owns,
	// another user could put a link to a file of their choosing in its
	// place meanwhile.
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("workload: the socket's directory %s does not exist: make it first, written by its owner alone (mkdir -m 0755 %s), or give a path in another directory: %w", dir, dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("workload: the socket's directory: %w", err)
	}
	if err := checkSocketDir(dir, fi); err != nil {
		return nil, err
	}
	if err := checkAboveSocketDir(dir); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("workload: %s exists and is not a socket: give another --workload-api path", path)
		}
		// Stale only when no process listens on it (connection refused):
		// on Linux, a server too busy to queue another connection
		// answers EAGAIN, and one this process may not reach EACCES,
		// and either is in use. (Other systems refuse a busy server's
		// connection too, or say "refused" in their own codes: there,
		// any failure is taken for a stale socket.)
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("workload: %s is in use by another process", path)
		}
		if runtime.GOOS == "linux" && !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("workload: %s may be in use by another process (connecting to it: %w): stop that process, or remove the socket if none uses it", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("workload: remove the stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("workload: %w", err)
	}
	// Any local process may ask: the entries decide what it gets. The
	// directory's permissions may narrow who can reach the socket.
	if err := os.Chmod(path, 0o777); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("workload: %w", err)
	}
	return ln, nil
}

// checkSocketDir refuses the socket's directory dir, described by fi,
// when a user other than root and this one could replace the socket in
// it: one others may write to without the sticky bit, or one another
// user owns (its owner may rename or remove what is in it, sticky bit
// or not).
func checkSocketDir(dir string, fi fs.FileInfo) error {
	switch uid, known := ownerOf(fi); {
	case !fi.IsDir():
		return fmt.Errorf("workload: %s is not a directory", dir)
	case fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0:
		return fmt.Errorf("workload: %s may be written by other users (mode %v, without the sticky bit), who could replace the socket: put it in a directory only its owner writes, such as /run/mandate", dir, fi.Mode().Perm())
	case known && uid != 0 && uid != os.Geteuid():
		return fmt.Errorf("workload: %s is owned by user %d, neither root nor this user (%d), who could replace the socket: put it in a directory of this user's or root's, such as /run/mandate", dir, uid, os.Geteuid())
	}
	return nil
}

// checkAboveSocketDir refuses, as checkSocketDir does, a directory
// above the socket's directory dir: each one on its path as given (what
// the workloads' own path to the socket goes through, where a link may
// be), and each one above where that path leads. Who may rename one may
// put a directory of their own in its place, with a socket of theirs
// in it: the workloads would then connect to it.
func checkAboveSocketDir(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("workload: the socket's directory: %w", err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return fmt.Errorf("workload: the socket's directory: %w", err)
	}
	for _, p := range []string{abs, real} {
		for d := filepath.Dir(p); ; d = filepath.Dir(d) {
			fi, err := os.Stat(d)
			if err != nil {
				return fmt.Errorf("workload: a directory above the socket's: %w", err)
			}
			if err := checkSocketDir(d, fi); err != nil {
				return fmt.Errorf("%w (a directory above the socket's)", err)
			}
			if d == filepath.Dir(d) {
				break
			}
		}
	}
	return nil
}

// Serve serves the Workload API on ln, and keeps the X509-SVIDs of the
// entries renewed, until ctx ends, or the authority refuses the node
// for good (an error wrapping ErrNodeRefused); it then closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	g := grpc.NewServer(
		grpc.Creds(peerCreds{entries: s.entries}),
		grpc.MaxRecvMsgSize(maxMessageBytes),
		grpc.MaxHeaderListSize(maxHeaderBytes),
		grpc.MaxConcurrentStreams(maxStreams),
		grpc.ConnectionTimeout(10*time.Second),
		grpc.InTapHandle(s.admitCall),
	)
	pb.RegisterSpiffeWorkloadAPIServer(g, s)
	var wg sync.WaitGroup
	keep, stopKeeping := context.WithCancel(ctx)
	defer stopKeeping()
	for _, id := range s.ids() {
		wg.Go(func() { s.keep(keep, id) })
	}
	refused := make(chan error, 1)
	wg.Go(func() { refused <- s.keepSync(keep) })
	served := make(chan error, 1)
	go func() { served <- g.Serve(s.conns.listen(ln)) }()
	var err error
	servedDone := false
	select {
	case <-ctx.Done():
	case err = <-served:
		servedDone = true
	case err = <-refused:
		if err == nil { // keepSync ends with nil only when ctx did
			<-ctx.Done()
		}
	}
	close(s.stopping)
	stopKeeping()
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		g.Stop()
	}
	if !servedDone {
		// g.Serve closes ln (and so removes the socket) when it returns,
		// which it does once the server is stopped, also when it is
		// called only now: a ctx that ended at once must not leave the
		// socket behind.
		<-served
	}
	wg.Wait()
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("workload: %w", err)
	}
	return nil
}

// ids are the identities of the entries, each once.
func (s *Server) ids() []spiffeid.ID {
	var out []spiffeid.ID
	for _, e := range s.entries {
		if !slices.Contains(out, e.ID) {
			out = append(out, e.ID)
		}
	}
	return out
}

// keep obtains id's X509-SVID, and again at 40 to 50% of each one's
// life, until ctx ends; one that could not be renewed is served until it
// expires.
func (s *Server) keep(ctx context.Context, id spiffeid.ID) {
	retry := retryFloor
	for {
		ask := s.ask()
		callCtx, cancel := context.WithTimeout(ctx, callTimeout)
		svid, bundles, err := s.issuer.X509SVID(callCtx, id)
		cancel()
		if ctx.Err() != nil {
			return
		}
		var wait time.Duration
		if err == nil {
			var h *held
			if h, err = hold(svid, id, bundles, s.now()); err == nil {
				err = s.update(id, h, bundles, ask)
			}
			if err == nil {
				select { // a wake-up asked meanwhile is answered by this
				case <-s.kick[id]:
				default:
				}
				life := max(svid.Certificates[0].NotAfter.Sub(s.now()), 0)
				wait = max(life*2/5+rand.N(life/10+1), retryFloor)
				retry = retryFloor
			}
		}
		if err != nil {
			wait = s.failure(id, err, retry)
			retry = min(retry*2, retryCeiling)
		}
		if !s.wait(ctx, wait, s.kick[id]) {
			return
		}
	}
}

// keepSync asks the authority every syncEvery (or at its own bundle's
// refresh hint, when shorter) which identities the host may still serve,
// and for the trust bundles, until ctx ends (nil) or the authority
// refuses the node for good (that error): an agent deleted, or moved to
// another node, is served no more, without waiting for its renewal,
// and a CA or JWT key the authority prepares reaches the workloads
// before it signs (the authority publishes each a third of its life
// before, and keeps its refresh hint shorter than that), as do a
// federation added or a federated trust domain's new keys.
func (s *Server) keepSync(ctx context.Context) error {
	retry := retryFloor
	ids := s.ids()
	failing := false
	for {
		ask := s.ask()
		callCtx, cancel := context.WithTimeout(ctx, callTimeout)
		sync, err := s.issuer.Sync(callCtx, ids)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrNodeRefused) {
			return err // Serve ends with it
		}
		wait := retryWait(err, retry)
		if err == nil {
			s.synced(sync, ask, failing)
			wait, retry, failing = s.syncWait(sync.Bundles), retryFloor, false
		} else {
			failing = true
			retry = min(retry*2, retryCeiling)
			s.log.Warn("workload API: no sync with the authority", "retry_in", wait.String(), "err", err)
		}
		if !s.wait(ctx, wait, nil) {
			return nil
		}
	}
}

// syncWait is how long until the next sync: syncEvery, or the refresh
// hint of the entries' trust domain's bundle (at least retryFloor) when
// it is shorter. A federated trust domain's hint is its own authority's
// to follow, not the host's.
func (s *Server) syncWait(bundles []*spiffebundle.Bundle) time.Duration {
	wait := syncEvery
	for _, b := range bundles {
		if hint, ok := b.RefreshHint(); ok && hint > 0 && slices.ContainsFunc(s.entries, func(e Entry) bool { return e.ID.MemberOf(b.TrustDomain()) }) {
			wait = min(wait, max(hint, retryFloor))
		}
	}
	return wait
}

// synced takes the answer to sync request ask: its bundles, unless a
// later request's answer gave them, and its refusals. The X509-SVID and
// JWT-SVIDs of an identity refused are served no more; the keeper of
// one refused before and no longer is woken, and so, when the sync
// before failed (recovered: the authority unreachable, or the node's
// credential not there yet), is that of each one holding none, which
// may be waiting up to a minute to ask again.
func (s *Server) synced(sync *Sync, ask uint64, recovered bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setBundles(sync.Bundles, ask)
	for id, ch := range s.kick {
		why, refused := sync.Refused[id]
		switch {
		// An X509-SVID asked for after this sync was is one the
		// authority let the host have since: it is kept.
		case refused && s.refused[id] < ask && (s.svids[id] == nil || s.svids[id].ask < ask):
			if _, was := s.refused[id]; !was {
				s.log.Warn("workload API: the authority no longer lets this host serve an identity: its SVIDs are served no more", "spiffe_id", id.String(), "err", why)
			}
			s.refused[id] = ask
			delete(s.svids, id)
			s.failed[id] = fmt.Errorf("the authority no longer lets this host serve it: %w", why)
			prefix := id.String() + " "
			for k := range s.jwts {
				if strings.HasPrefix(k, prefix) {
					delete(s.jwts, k)
				}
			}
		case !refused && s.refused[id] != 0 && s.refused[id] < ask:
			s.log.Info("workload API: the authority lets this host serve an identity again", "spiffe_id", id.String())
			delete(s.refused, id)
			wake(ch)
		case !refused && recovered && s.svids[id] == nil:
			wake(ch)
		}
	}
	s.signal()
}

// wake wakes a keeper waiting on ch, or about to.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// ask numbers a request whose answer carries bundles.
func (s *Server) ask() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asks++
	return s.asks
}

// wait waits d as the wall clock counts it, reading it at least every
// wallPoll (a minute), or until woken by wake, and reports false if ctx
// ended first. Go's timers count no time while the host is suspended: a
// renewal timed by one alone would come that much later after a resume,
// perhaps after the SVID expired.
func (s *Server) wait(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	end := s.now().Round(0).Add(d)
	for {
		left := end.Sub(s.now().Round(0))
		if left <= 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-wake:
			return true
		case <-time.After(min(left, s.wallPoll)):
		}
	}
}

// hold checks an X509-SVID the authority answered for id (its identity,
// its validity, its chain to its trust domain's bundle, with go-spiffe)
// and makes it ready to serve.
func hold(svid *x509svid.SVID, id spiffeid.ID, bundles []*spiffebundle.Bundle, now time.Time) (*held, error) {
	if svid == nil || len(svid.Certificates) == 0 || svid.PrivateKey == nil {
		return nil, errors.New("the authority answered no X509-SVID")
	}
	if svid.ID != id {
		return nil, fmt.Errorf("the authority answered an X509-SVID of %s", svid.ID)
	}
	if pub, ok := svid.Certificates[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(svid.PrivateKey.Public()) {
		return nil, errors.New("the X509-SVID is not for the key made for it")
	}
	var roots *x509bundle.Bundle
	for _, b := range bundles {
		if b.TrustDomain() == id.TrustDomain() {
			roots = b.X509Bundle()
		}
	}
	if roots == nil {
		return nil, fmt.Errorf("the authority answered no bundle of %s", id.TrustDomain())
	}
	if _, _, err := x509svid.Verify(svid.Certificates, roots, x509svid.WithTime(now)); err != nil {
		return nil, fmt.Errorf("the X509-SVID does not verify: %w", err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("the X509-SVID's key: %w", err)
	}
	return &held{svid: svid, certs: concatDER(svid.Certificates), key: key}, nil
}

// update serves h as id's X509-SVID, and bundles, answered with it to
// request ask, as the trust bundles (setBundles); an X509-SVID asked for
// before a sync's answer said the host may not serve id is not served.
// One whose bundles a later request's answer replaced, and that does not
// verify with those (its CA revoked meanwhile), is not served either:
// that error, for its keeper to ask again.
func (s *Server) update(id spiffeid.ID, h *held, bundles []*spiffebundle.Bundle, ask uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if refusedAt, ok := s.refused[id]; !ok || ask > refusedAt {
		if ask < s.setAsk { // bundles is not served (setBundles)
			if err := s.unverified(id, h.svid, s.now()); err != nil {
				return fmt.Errorf("the X509-SVID answered does not verify with the trust bundle answered since (%w)", err)
			}
		}
		h.ask = ask
		s.svids[id] = h
		delete(s.failed, id)
		delete(s.refused, id)
	}
	s.setBundles(bundles, ask)
	s.signal()
	return nil
}

// unverified is why svid, id's X509-SVID, does not verify with the trust
// bundles served at now (s.mu held): nil when it does, or when it has
// expired (dropped as such).
func (s *Server) unverified(id spiffeid.ID, svid *x509svid.SVID, now time.Time) error {
	b := s.bundles[id.TrustDomain()]
	if b == nil {
		return fmt.Errorf("the authority answered no bundle of %s", id.TrustDomain())
	}
	if _, _, err := x509svid.Verify(svid.Certificates, b.X509Bundle(), x509svid.WithTime(now)); err != nil && now.Before(svid.Certificates[0].NotAfter) {
		return err
	}
	return nil
}

// setBundles serves bundles, every trust domain's as answered to
// request ask, as the trust bundles, unless a later request's answer
// gave them (s.mu held). An X509-SVID held that no longer verifies with
// them (its CA revoked) is served no more, and its keeper woken to ask
// for another at once; a JWT-SVID kept for reuse whose key left them
// (revoked) is not reused.
func (s *Server) setBundles(bundles []*spiffebundle.Bundle, ask uint64) {
	if ask <= s.setAsk {
		return
	}
	s.bundles, s.setAsk = map[spiffeid.TrustDomain]*spiffebundle.Bundle{}, ask
	for _, b := range bundles {
		s.bundles[b.TrustDomain()] = b
	}
	now := s.now()
	for id, h := range s.svids {
		err := s.unverified(id, h.svid, now)
		if err == nil {
			continue // valid, or expired (dropped as such)
		}
		s.log.Warn("workload API: an X509-SVID held no longer verifies with the trust bundle (its CA revoked?): asking for another", "spiffe_id", id.String(), "err", err)
		delete(s.svids, id)
		s.failed[id] = fmt.Errorf("the X509-SVID held no longer verifies with the trust bundle (%w); another is being asked for", err)
		wake(s.kick[id])
	}
	for k, h := range s.jwts {
		if b := s.bundles[h.td]; b == nil || !b.HasJWTAuthority(h.kid) {
			delete(s.jwts, k)
		}
	}
}

// retryWait is how long to wait before calling again after a call
// failed with err: retry, or longer when the authority's answer asked
// not to be called again sooner (an HTTP Retry-After: err has a
// RetryDelay method, as the client's errors do).
func retryWait(err error, retry time.Duration) time.Duration {
	var busy interface{ RetryDelay() time.Duration }
	if errors.As(err, &busy) {
		return max(retry, busy.RetryDelay())
	}
	return retry
}

// failure notes that id's X509-SVID could not be obtained, drops the
// one held if it has expired, and says how long to wait before asking
// again: retry, or what the authority asked (retryWait) up to half of
// what is left of the one held (so that it is renewed before it
// lapses), and less if the one held expires sooner.
func (s *Server) failure(id spiffeid.ID, err error, retry time.Duration) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	wait := retryWait(err, retry)
	if h := s.svids[id]; h != nil {
		left := h.svid.Certificates[0].NotAfter.Sub(s.now())
		if left <= 0 {
			delete(s.svids, id)
			s.signal()
		} else {
			wait = min(max(retry, min(wait, left/2)), max(left, retryFloor))
		}
	}
	s.failed[id] = err
	if s.svids[id] == nil {
		s.signal() // the streams waiting for a first answer say why there is none
	}
	s.log.Warn("workload API: no new X509-SVID", "spiffe_id", id.String(), "retry_in", wait.String(), "err", err)
	return wait
}

// signal wakes the streams waiting for a change (s.mu held).
func (s *Server) signal() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// entitled checks a call's security header and is the identities its
// caller may have.
func (s *Server) entitled(ctx context.Context) ([]spiffeid.ID, error) {
	// The call's request has been received whole: its place among those
	// being received is free (admitCall).
	if received, ok := ctx.Value(receivedKey{}).(func()); ok {
		received()
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if !slices.Contains(md.Get("workload.spiffe.io"), "true") {
		return nil, status.Error(codes.InvalidArgument, "security header missing from request")
	}
	who, ok := callerOfCall(ctx)
	if !ok {
		return nil, status.Error(codes.PermissionDenied, "the caller could not be identified")
	}
	var ids []spiffeid.ID
	a := newAttestation(ctx, who, s.digests)
	for i, e := range s.entries {
		if slices.Contains(ids, e.ID) {
			continue
		}
		ok, err := a.selects(s.checks[i])
		if err != nil {
			// Said in the log, not to the caller: what could not be
			// found out of it selects nothing (fails closed).
			s.unchecked(e, who, err)
		}
		if ok {
			ids = append(ids, e.ID)
		}
	}
	if len(ids) == 0 {
		return nil, status.Errorf(codes.PermissionDenied, "no identity issued: no entry selects this caller (uid %d, gid %d)", who.UID, who.GID)
	}
	return ids, nil
}

// Bounds of the calls whose requests are being received at once. A
// request arrives a frame at a time, and what has arrived (up to
// maxMessageBytes, and as much again of a second message, which a call
// of this API may not have) is held until it is whole, for as long as
// its caller takes to send the rest, and before the caller is checked
// against the entries: any local process may hold so much of the
// node's memory for each call it leaves unfinished. One user id's
// callers hold at most maxReceivingPerUID of them (more than one
// connection's maxStreams): the calls of others are still received.
const (
	maxReceivingPerUID = 128
	maxReceiving       = 1024
)

// Bounds of the streams open at once (FetchX509SVID, FetchX509Bundles,
// FetchJWTBundles), each of which holds its last answer (an SVID's with
// its key and the bundles) and a goroutine for as long as its caller
// keeps it: without them, the callers of one user id could hold as many
// as its connections carry (maxConnsPerUID × maxStreams). One user id's
// callers hold at most maxOpenStreamsPerUID (far more than a host's
// MaxIdentities need, each process holding a few), so that others' are
// still served.
const (
	maxOpenStreamsPerUID = 1024
	maxOpenStreams       = 8192
)

// receivedKey is the context key of a call's release of its place among
// the calls being received (admitCall).
type receivedKey struct{}

// ended is a context that has ended: a slot taken with it is one free at
// once, or none.
var ended = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// admitCall admits a call at its headers, before its request is
// received (gRPC's InTapHandle; ctx is the call's), while its caller's
// user id has fewer than maxReceivingPerUID calls being received, and
// all callers fewer than maxReceiving; else the call is refused
// (ResourceExhausted). The call holds its place until its request has
// been received (entitled, which every call begins with) or it ends.
func (s *Server) admitCall(ctx context.Context, _ *tap.Info) (context.Context, error) {
	who, ok := callerOfCall(ctx)
	if !ok {
		return ctx, status.Error(codes.PermissionDenied, "the caller could not be identified")
	}
	release, err := s.receiving.take(ended, who.UID)
	if err != nil {
		if s.onceAMinute(&s.receivingSaid) {
			s.log.Warn("workload API: call refused, too many requests being received at once (said once a minute)", "uid", who.UID, "pid", who.PID, "max", maxReceiving, "max_per_uid", maxReceivingPerUID)
		}
		return ctx, status.Errorf(codes.ResourceExhausted, "too many requests of user id %d being received at once", who.UID)
	}
	var once sync.Once
	free := func() { once.Do(release) }
	stop := context.AfterFunc(ctx, free)
	return context.WithValue(ctx, receivedKey{}, func() { stop(); free() }), nil
}

// unchecked says in the log, once a minute at most, that entry e's
// selectors could not be checked for caller who, and why.
func (s *Server) unchecked(e Entry, who Caller, err error) {
	if s.onceAMinute(&s.uncheckedSaid) {
		s.log.Warn("workload API: an entry's selector could not be checked, and does not select the caller (said once a minute)", "entry", e.String(), "pid", who.PID, "uid", who.UID, "err", err)
	}
}

// onceAMinute reports whether something last said at *said (under
// s.mu) may be said again now, a minute or more later, and if so
// records now as when it was.
func (s *Server) onceAMinute(said *time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if now.Sub(*said) < time.Minute {
		return false
	}
	*said = now
	return true
}

// callerOfCall is the caller of a call, as its connection's handshake
// found it.
func callerOfCall(ctx context.Context) (Caller, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Caller{}, false
	}
	who, ok := p.AuthInfo.(callerInfo)
	return who.Caller, ok
}

// unavailable is the error of a call that found nothing to serve
// because obtaining it failed, or because the one held expired before
// its renewal was answered (s.mu held): nil when neither (the first
// answer is on its way).
func (s *Server) unavailable(ids []spiffeid.ID) error {
	var why []string
	now := s.now()
	for _, id := range ids {
		err := s.failed[id]
		var expired string
		if h := s.svids[id]; h != nil && !now.Before(h.svid.Certificates[0].NotAfter) {
			expired = "the one held expired at " + h.svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339)
		}
		switch {
		case expired != "" && err != nil:
			why = append(why, id.String()+": "+expired+"; its latest renewal: "+err.Error())
		case expired != "":
			why = append(why, id.String()+": "+expired+", and its renewal is not answered yet")
		case err != nil:
			why = append(why, id.String()+": "+err.Error())
		}
	}
	if len(why) == 0 {
		return nil
	}
	return status.Errorf(codes.Unavailable, "no X509-SVID could be obtained: %s", strings.Join(why, "; "))
}

// watch sends what answer builds, at once and at every change of what
// it builds, until the call or the server ends. answer returns nil while
// there is nothing to send yet. A stream beyond the bounds of those
// open (maxOpenStreamsPerUID, maxOpenStreams) is refused at once
// (ResourceExhausted).
func watch[T proto.Message](s *Server, ctx context.Context, send func(T) error, answer func() (T, error)) error {
	who, ok := callerOfCall(ctx)
	if !ok {
		return status.Error(codes.PermissionDenied, "the caller could not be identified")
	}
	release, err := s.streams.take(ended, who.UID)
	if err != nil {
		if s.onceAMinute(&s.streamsSaid) {
			s.log.Warn("workload API: stream refused, too many open at once (said once a minute)", "uid", who.UID, "pid", who.PID, "max", maxOpenStreams, "max_per_uid", maxOpenStreamsPerUID)
		}
		return status.Errorf(codes.ResourceExhausted, "too many streams of user id %d open at once", who.UID)
	}
	defer release()
	var last T
	var sent bool
	for {
		s.mu.Lock()
		// The wait first, then the answer, in one hold of s.mu: an
		// SVID that expires in between wakes the stream once more, and
		// none is left out of both.
		wait := s.nextExpiry()
		ans, err := answer()
		changed := s.changed
		s.mu.Unlock()
		if err != nil {
			return err
		}
		if !isNil(ans) && (!sent || !proto.Equal(last, ans)) {
			if err := send(ans); err != nil {
				return err
			}
			last, sent = ans, true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return status.Error(codes.Unavailable, "the Workload API is stopping")
		case <-changed:
		case <-time.After(wait):
		}
	}
}

func isNil[T proto.Message](m T) bool { return !m.ProtoReflect().IsValid() }

// nextExpiry is how long until the next X509-SVID held expires (at
// most a minute), when answers must change (s.mu held). One that has
// expired already is out of every answer, and is passed over: what
// replaces or drops it is signalled, and waiting for it would wake the
// streams every millisecond until its renewal is answered.
func (s *Server) nextExpiry() time.Duration {
	next := time.Minute
	now := s.now()
	for _, h := range s.svids {
		if left := h.svid.Certificates[0].NotAfter.Sub(now); left > 0 {
			next = min(next, left+time.Millisecond)
		}
	}
	return next
}

// FetchX509SVID streams the caller's X509-SVIDs, their keys and the
// trust bundles.
func (s *Server) FetchX509SVID(_ *pb.X509SVIDRequest, stream grpc.ServerStreamingServer[pb.X509SVIDResponse]) error {
	ids, err := s.entitled(stream.Context())
	if err != nil {
		return err
	}
	return watch(s, stream.Context(), stream.Send, func() (*pb.X509SVIDResponse, error) {
		ans := &pb.X509SVIDResponse{}
		own := map[spiffeid.TrustDomain]bool{}
		now := s.now()
		for i, id := range ids {
			h, b := s.svids[id], s.bundles[id.TrustDomain()]
			if h == nil || b == nil || !now.Before(h.svid.Certificates[0].NotAfter) {
				if i == 0 {
					// The first is the caller's default identity (go-spiffe
					// takes the first SVID of the answer): another's is not
					// sent in its place.
					return nil, s.unavailable(ids[:1])
				}
				continue
			}
			own[id.TrustDomain()] = true
			ans.Svids = append(ans.Svids, &pb.X509SVID{SpiffeId: id.String(), X509Svid: h.certs, X509SvidKey: h.key, Bundle: concatDER(b.X509Authorities())})
		}
		if len(ans.Svids) == 0 {
			return nil, s.unavailable(ids)
		}
		for td, b := range s.bundles {
			if !own[td] && len(b.X509Authorities()) > 0 {
				if ans.FederatedBundles == nil {
					ans.FederatedBundles = map[string][]byte{}
				}
				ans.FederatedBundles[td.IDString()] = concatDER(b.X509Authorities())
			}
		}
		return ans, nil
	})
}

// FetchX509Bundles streams the X.509 authorities of every trust domain
// known.
func (s *Server) FetchX509Bundles(_ *pb.X509BundlesRequest, stream grpc.ServerStreamingServer[pb.X509BundlesResponse]) error {
	ids, err := s.entitled(stream.Context())
	if err != nil {
		return err
	}
	return watch(s, stream.Context(), stream.Send, func() (*pb.X509BundlesResponse, error) {
		ans := &pb.X509BundlesResponse{Bundles: map[string][]byte{}}
		for td, b := range s.bundles {
			if len(b.X509Authorities()) > 0 {
				ans.Bundles[td.IDString()] = concatDER(b.X509Authorities())
			}
		}
		if len(ans.Bundles) == 0 {
			return nil, s.unavailable(ids)
		}
		return ans, nil
	})
}

// FetchJWTBundles streams the JWT authorities of every trust domain
// known, as JWKS documents.
func (s *Server) FetchJWTBundles(_ *pb.JWTBundlesRequest, stream grpc.ServerStreamingServer[pb.JWTBundlesResponse]) error {
	ids, err := s.entitled(stream.Context())
	if err != nil {
		return err
	}
	return watch(s, stream.Context(), stream.Send, func() (*pb.JWTBundlesResponse, error) {
		ans := &pb.JWTBundlesResponse{Bundles: map[string][]byte{}}
		for td, b := range s.bundles {
			doc, err := jwks(b.JWTBundle())
			if err != nil {
				return nil, status.Errorf(codes.Internal, "the JWT bundle of %s: %v", td, err)
			}
			ans.Bundles[td.IDString()] = doc
		}
		if len(ans.Bundles) == 0 {
			return nil, s.unavailable(ids)
		}
		return ans, nil
	})
}

// FetchJWTSVID is a JWT-SVID for the audience asked, of each of the
// caller's identities, or of the one it names.
func (s *Server) FetchJWTSVID(ctx context.Context, req *pb.JWTSVIDRequest) (*pb.JWTSVIDResponse, error) {
	ids, err := s.entitled(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if req.SpiffeId != "" {
		id, err := spiffeid.FromString(req.SpiffeId)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "spiffe_id: %v", err)
		}
		if !slices.Contains(ids, id) {
			return nil, status.Errorf(codes.PermissionDenied, "no identity issued: %s is not this caller's", id)
		}
		ids = []spiffeid.ID{id}
	}
	who, _ := callerOfCall(ctx)
	ans := &pb.JWTSVIDResponse{}
	var why []string
	for i, id := range ids {
		tok, err := s.jwt(ctx, who.UID, id, req.Audience)
		if err != nil {
			why = append(why, "no JWT-SVID of "+id.String()+" could be obtained: "+err.Error())
			if i == 0 {
				// The first is the caller's default identity (go-spiffe
				// takes the first of the answer when no SPIFFE ID is
				// named): another's token is not handed out in its place.
				break
			}
			continue
		}
		ans.Svids = append(ans.Svids, &pb.JWTSVID{SpiffeId: id.String(), Svid: tok})
	}
	// Those of the caller's identities that could be obtained, the
	// default first: one the authority refuses does not take the others'.
	if len(ans.Svids) == 0 {
		return nil, status.Error(codes.Unavailable, strings.Join(why, "; "))
	}
	return ans, nil
}

// jwt is a JWT-SVID of id for audience: one obtained before, until half
// of its life has passed, else a new one. Callers asking at once for
// the same one share a single call to the authority; when that call
// ends because its own caller went away, the others ask again.
func (s *Server) jwt(ctx context.Context, uid uint32, id spiffeid.ID, audience []string) (string, error) {
	key := id.String()
	for _, a := range audience {
		key += " " + strconv.Quote(a)
	}
	for {
		s.mu.Lock()
		if h, ok := s.jwts[key]; ok && s.now().Before(h.renewAt) {
			s.mu.Unlock()
			return h.token, nil
		}
		c := s.jwtCalls[key]
		if c == nil && s.now().Before(s.jwtWait) {
			// The authority asked not to be asked again before then:
			// its limit is the node's, which renewals and syncs share.
			until := s.jwtWait
			s.mu.Unlock()
			return "", fmt.Errorf("the authority asked the node to wait until %s before asking for another JWT-SVID", until.UTC().Format(time.RFC3339))
		}
		if c == nil {
			c = &jwtCall{done: make(chan struct{})}
			s.jwtCalls[key] = c
			s.mu.Unlock()
			s.obtainJWT(ctx, uid, key, c, id, audience)
			return c.token, c.err
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-c.done:
		}
		if !c.gone {
			return c.token, c.err
		}
	}
}

// checkJWT validates a JWT-SVID the authority answered for id and
// audience with the JWT authorities of the latest bundles (go-spiffe),
// waiting for a first bundle if none has been answered yet: what is not
// verified is not served. One signed by a key those bundles do not
// hold, when they were asked for before the JWT-SVID was answered (a
// JWT key an admin activated at once, before the next sync), is
// validated again with the bundles of a sync asked for since: one
// that JWT-SVIDs answered meanwhile share (resync).
func (s *Server) checkJWT(ctx context.Context, tok string, id spiffeid.ID, audience []string) error {
	s.mu.Lock()
	since := s.asks // requests made after the JWT-SVID was answered are numbered above
	s.mu.Unlock()
	for {
		s.mu.Lock()
		b, changed, setAsk := s.bundles[id.TrustDomain()], s.changed, s.setAsk
		s.mu.Unlock()
		if b != nil {
			svid, err := jwtsvid.ParseAndValidate(tok, jwtbundle.NewSet(b.JWTBundle()), audience)
			if err != nil && setAsk <= since && !b.HasJWTAuthority(jwtKeyID(tok)) {
				if s.resync(ctx) == nil {
					continue
				}
			}
			switch {
			case err != nil:
				return fmt.Errorf("the JWT-SVID answered does not validate: %w", err)
			case svid.ID != id:
				return fmt.Errorf("the authority answered a JWT-SVID of %s", svid.ID)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no bundle of %s to validate the JWT-SVID with yet: %w", id.TrustDomain(), ctx.Err())
		case <-s.stopping:
			return errors.New("the Workload API is stopping")
		case <-changed:
		}
	}
}

// resyncCall is a sync out of keepSync's turn under way: request ask,
// done closed when it ends, with err; gone says it ended because its
// caller went away.
type resyncCall struct {
	ask  uint64
	done chan struct{}
	err  error
	gone bool
}

// resync is a sync with the authority out of keepSync's turn, its
// answer taken as keepSync takes one. One under way is waited for
// instead of asking again: its caller (checkJWT) then looks at the
// bundles again, and asks for its own only when they still lack what it
// needs and were asked for before its JWT-SVID was answered. nil when
// the sync was answered.
func (s *Server) resync(ctx context.Context) error {
	for {
		s.mu.Lock()
		c := s.resyncing
		if c == nil {
			s.asks++
			c = &resyncCall{ask: s.asks, done: make(chan struct{})}
			s.resyncing = c
			s.mu.Unlock()
			sync, err := s.issuer.Sync(ctx, s.ids())
			if err == nil {
				s.synced(sync, c.ask, false)
			}
			s.mu.Lock()
			s.resyncing = nil
			c.err, c.gone = err, ctx.Err() != nil
			close(c.done)
			s.mu.Unlock()
			return err
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
		}
		if !c.gone {
			return c.err
		}
	}
}

// jwtKeyID is the kid of the protected header of tok, a JWT-SVID
// already validated (checkJWT); "" if it has none.
func jwtKeyID(tok string) string {
	head, _, _ := strings.Cut(tok, ".")
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return ""
	}
	var h struct {
		KID string `json:"kid"`
	}
	if json.Unmarshal(b, &h) != nil {
		return ""
	}
	return h.KID
}

// jwtCall is a JWT-SVID being obtained from the authority: done is
// closed when it ends, with token or err; gone says it ended because its
// caller went away.
type jwtCall struct {
	done  chan struct{}
	token string
	err   error
	gone  bool
}

// obtainJWT makes the call c to the authority, keeps the JWT-SVID it
// answers for reuse, and ends c.
func (s *Server) obtainJWT(ctx context.Context, uid uint32, key string, c *jwtCall, id spiffeid.ID, audience []string) {
	callCtx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	var tok string
	var exp time.Time
	// One of the calls callers of uid may have under way at once: a
	// workload asking for many audiences at once waits for its own
	// calls, not for others', and the node makes at most that many such
	// requests at once for it.
	release, err := s.jwtSlots.take(callCtx, uid)
	if err == nil {
		tok, exp, err = s.issuer.JWTSVID(callCtx, id, audience)
		release()
	}
	if err == nil {
		err = s.checkJWT(callCtx, tok, id, audience)
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.jwtCalls, key)
	defer close(c.done)
	if err != nil {
		c.err, c.gone = err, ctx.Err() != nil
		// Asked to wait (429, Retry-After): no JWT-SVID is asked for
		// until then, a minute at most, so that callers asking for one
		// audience after another do not keep the node over its limit.
		if wait := min(retryWait(err, 0), retryCeiling); wait > 0 && now.Add(wait).After(s.jwtWait) {
			s.jwtWait = now.Add(wait)
		}
		return
	}
	kid := jwtKeyID(tok)
	if b := s.bundles[id.TrustDomain()]; b == nil || !b.HasJWTAuthority(kid) {
		// Validated with bundles a sync has replaced since, without
		// the key that signed it (revoked): not served.
		c.err = fmt.Errorf("the JWT-SVID answered was signed by a key no longer in the trust bundle of %s", id.TrustDomain())
		return
	}
	c.token = tok
	if _, refused := s.refused[id]; refused {
		return // asked for before a sync said the host may not serve id: not kept
	}
	s.makeRoomForJWT(uid, now)
	s.jwts[key] = heldJWT{token: tok, renewAt: now.Add(exp.Sub(now) / 2), uid: uid, td: id.TrustDomain(), kid: kid}
}

// makeRoomForJWT drops the JWT-SVIDs kept past their reuse, then, while
// the callers of uid hold maxJWTsHeldPerUID or all maxJWTsHeld, the one
// of theirs, or of all, to be renewed first: one user asking for many
// audiences drops its own, not the others' (s.mu held).
func (s *Server) makeRoomForJWT(uid uint32, now time.Time) {
	mine := 0
	for k, h := range s.jwts {
		switch {
		case !now.Before(h.renewAt):
			delete(s.jwts, k)
		case h.uid == uid:
			mine++
		}
	}
	for mine >= maxJWTsHeldPerUID || len(s.jwts) >= maxJWTsHeld {
		own := mine >= maxJWTsHeldPerUID
		first := ""
		for k, h := range s.jwts {
			if (!own || h.uid == uid) && (first == "" || h.renewAt.Before(s.jwts[first].renewAt)) {
				first = k
			}
		}
		if s.jwts[first].uid == uid {
			mine--
		}
		delete(s.jwts, first)
	}
}

// ValidateJWTSVID checks a JWT-SVID for an audience against the JWT
// authorities known, and returns its SPIFFE ID and claims.
func (s *Server) ValidateJWTSVID(ctx context.Context, req *pb.ValidateJWTSVIDRequest) (*pb.ValidateJWTSVIDResponse, error) {
	if _, err := s.entitled(ctx); err != nil {
		return nil, err
	}
	switch {
	case req.Audience == "":
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	case req.Svid == "":
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	s.mu.Lock()
	set := jwtbundle.NewSet()
	for _, b := range s.bundles {
		set.Add(b.JWTBundle())
	}
	s.mu.Unlock()
	svid, err := jwtsvid.ParseAndValidate(req.Svid, set, []string{req.Audience})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the JWT-SVID does not validate: %v", err)
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the JWT-SVID's claims: %v", err)
	}
	return &pb.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}

// jwks is b's JWT authorities as a JWKS document, in the order of their
// key IDs: the same authorities are always the same bytes, so that a
// stream sends them again only when they change (go-spiffe's Marshal
// writes them in a map's order, different from one call to the next).
func jwks(b *jwtbundle.Bundle) ([]byte, error) {
	auths := b.JWTAuthorities()
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(auths))}
	for _, kid := range slices.Sorted(maps.Keys(auths)) {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: auths[kid], KeyID: kid})
	}
	return json.Marshal(set)
}

func concatDER(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		b.Write(c.Raw)
	}
	return b.Bytes()
}
