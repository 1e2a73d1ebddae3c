package workload

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	pb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// authority is a trust domain's X.509 and JWT authorities, minting
// what the authority's API would answer a node.
type authority struct {
	td      spiffeid.TrustDomain
	root    *x509.Certificate
	rootKey crypto.Signer
	jwtKey  *ecdsa.PrivateKey
	// moreJWT are further JWT authorities of the bundle (a key being
	// rotated in or out), by key ID.
	moreJWT map[string]crypto.PublicKey
	// moreRoots are further X.509 authorities of the bundle (a CA being
	// rotated in); hint is the bundle's refresh hint, when set.
	moreRoots []*x509.Certificate
	hint      time.Duration
	life      time.Duration

	x509Calls, jwtCalls atomic.Int32
	mu                  sync.Mutex
	fail                error // every call fails with it, when set
	delay               time.Duration
	// jwtDelay holds each JWT-SVID call; jwtInFlight and jwtMostInFlight
	// count the calls under way.
	jwtDelay                     time.Duration
	jwtInFlight, jwtMostInFlight atomic.Int32
	// jwtSubject, when set, is the sub of every JWT-SVID (a wrong
	// answer); jwtSigner, when set, signs them instead of the bundle's key.
	jwtSubject string
	jwtSigner  *ecdsa.PrivateKey
	// jwtKID, when set, is the kid of every JWT-SVID (jwtSigner's).
	jwtKID string
}

func newAuthority(t testing.TB, td string, life time.Duration) *authority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a := &authority{td: spiffeid.RequireTrustDomainFromString(td), rootKey: key, life: life}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: td},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs: []*url.URL{a.td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	if a.root, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	if a.jwtKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	return a
}

func (a *authority) bundle() *spiffebundle.Bundle {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := spiffebundle.New(a.td)
	b.AddX509Authority(a.root)
	for _, r := range a.moreRoots {
		b.AddX509Authority(r)
	}
	_ = b.AddJWTAuthority("jwt-1", a.jwtKey.Public())
	for kid, k := range a.moreJWT {
		_ = b.AddJWTAuthority(kid, k)
	}
	if a.hint > 0 {
		b.SetRefreshHint(a.hint)
	}
	return b
}

func (a *authority) failWith(err error) {
	a.mu.Lock()
	a.fail = err
	a.mu.Unlock()
}

func (a *authority) failing() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fail
}

// issuer answers as an authority federated with peers would.
type issuer struct {
	*authority
	peers []*authority // guarded by mu once served
	// gone are the identities no longer registered (guarded by mu):
	// refused, and named by syncs; syncs counts the syncs.
	gone  []spiffeid.ID
	syncs atomic.Int32
}

func (is *issuer) X509SVID(_ context.Context, id spiffeid.ID) (*x509svid.SVID, []*spiffebundle.Bundle, error) {
	is.x509Calls.Add(1)
	time.Sleep(is.delay)
	if err := is.failing(); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tpl := &x509.Certificate{
		SerialNumber: serial, NotBefore: time.Now().Add(-time.Second), NotAfter: time.Now().Add(is.life),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs: []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, is.root, key.Public(), is.rootKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	is.mu.Lock()
	gone := slices.Contains(is.gone, id)
	is.mu.Unlock()
	if gone {
		return nil, nil, errors.New("403 Agent not registered")
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}, is.bundles(), nil
}

func (is *issuer) Sync(_ context.Context, ids []spiffeid.ID) (*Sync, error) {
	is.syncs.Add(1)
	if err := is.failing(); err != nil {
		return nil, err
	}
	sync := &Sync{Bundles: is.bundles(), Refused: map[spiffeid.ID]error{}}
	is.mu.Lock()
	defer is.mu.Unlock()
	for _, id := range ids {
		if slices.Contains(is.gone, id) {
			sync.Refused[id] = errors.New("403 Agent not registered")
		}
	}
	return sync, nil
}

// bundles are the issuer's own bundle and its peers'.
func (is *issuer) bundles() []*spiffebundle.Bundle {
	bundles := []*spiffebundle.Bundle{is.bundle()}
	is.mu.Lock()
	peers := slices.Clone(is.peers)
	is.mu.Unlock()
	for _, p := range peers {
		bundles = append(bundles, p.bundle())
	}
	return bundles
}

func (is *issuer) JWTSVID(_ context.Context, id spiffeid.ID, audience []string) (string, time.Time, error) {
	is.jwtCalls.Add(1)
	n := is.jwtInFlight.Add(1)
	defer is.jwtInFlight.Add(-1)
	for m := is.jwtMostInFlight.Load(); n > m && !is.jwtMostInFlight.CompareAndSwap(m, n); m = is.jwtMostInFlight.Load() {
	}
	time.Sleep(is.jwtDelay)
	if err := is.failing(); err != nil {
		return "", time.Time{}, err
	}
	is.mu.Lock()
	if slices.Contains(is.gone, id) {
		is.mu.Unlock()
		return "", time.Time{}, errors.New("403 Agent not registered")
	}
	key, sub, kid := is.jwtKey, id.String(), "jwt-1"
	if is.jwtSigner != nil {
		key = is.jwtSigner
	}
	if is.jwtSubject != "" {
		sub = is.jwtSubject
	}
	if is.jwtKID != "" {
		kid = is.jwtKID
	}
	is.mu.Unlock()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		return "", time.Time{}, err
	}
	exp := time.Now().Add(5 * time.Minute)
	tok, err := jwt.Signed(sig).Claims(jwt.Claims{Subject: sub, Audience: audience, Expiry: jwt.NewNumericDate(exp), IssuedAt: jwt.NewNumericDate(time.Now())}).Serialize()
	return tok, exp, err
}

// serve starts the Workload API of entries on a socket in a new
// directory, and returns the socket's address for go-spiffe's client.
func serve(t *testing.T, is Issuer, entries ...Entry) string {
	t.Helper()
	return serveWith(t, is, nil, entries...)
}

// serveWith is serve, with the server changed by change first.
func serveWith(t *testing.T, is Issuer, change func(*Server), entries ...Entry) string {
	t.Helper()
	s, err := New(entries, is, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if change != nil {
		change(s)
	}
	path := filepath.Join(t.TempDir(), "api.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve = %v", err)
		}
	})
	return "unix://" + path
}

// rawClient is a gRPC client of the Workload API at addr, which sends
// only what the test gives it (no security header unless added).
func rawClient(t *testing.T, addr string) pb.SpiffeWorkloadAPIClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewSpiffeWorkloadAPIClient(conn)
}

func me(t testing.TB, id string) Entry {
	t.Helper()
	return entry(t, "uid:"+strconv.Itoa(os.Getuid())+"="+id)
}

func entry(t testing.TB, s string) Entry {
	t.Helper()
	e, err := ParseEntry(s)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A workload gets its X509-SVID with its key and bundles, and JWT-SVIDs
// that validate, through go-spiffe's own client.
func TestWorkloadAPIServesWhatGoSPIFFEAccepts(t *testing.T) {
	home, partner := newAuthority(t, "example.org", time.Hour), newAuthority(t, "partner.example", time.Hour)
	is := &issuer{authority: home, peers: []*authority{partner}}
	addr := serve(t, is, me(t, "spiffe://example.org/agent/planner"), entry(t, "uid:"+strconv.Itoa(os.Getuid()+1)+"=spiffe://example.org/agent/other"))
	ctx := ctxFor(t)

	c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	xc, err := c.FetchX509Context(ctx)
	if err != nil {
		t.Fatalf("FetchX509Context = %v", err)
	}
	if len(xc.SVIDs) != 1 || xc.SVIDs[0].ID.String() != "spiffe://example.org/agent/planner" {
		t.Fatalf("SVIDs = %v, want the planner's alone (the other entry selects another user)", xc.SVIDs)
	}
	svid := xc.SVIDs[0]
	if _, _, err := x509svid.Verify(svid.Certificates, xc.Bundles); err != nil {
		t.Errorf("the SVID does not verify against the bundles served: %v", err)
	}
	if pub, ok := svid.PrivateKey.Public().(*ecdsa.PublicKey); !ok || !pub.Equal(svid.Certificates[0].PublicKey) {
		t.Error("the key served is not the SVID's")
	}
	if _, err := xc.Bundles.GetX509BundleForTrustDomain(partner.td); err != nil {
		t.Errorf("the federated bundle is not served: %v", err)
	}

	jwtSVID, err := c.FetchJWTSVID(ctx, jwtsvidParams("billing"))
	if err != nil {
		t.Fatalf("FetchJWTSVID = %v", err)
	}
	again, err := c.FetchJWTSVID(ctx, jwtsvidParams("billing"))
	if err != nil || again.Marshal() != jwtSVID.Marshal() || is.jwtCalls.Load() != 1 {
		t.Errorf("a second JWT-SVID for the same audience: %v, same %v, %d calls to the authority; want the first reused", err, again != nil && again.Marshal() == jwtSVID.Marshal(), is.jwtCalls.Load())
	}
	got, err := c.ValidateJWTSVID(ctx, jwtSVID.Marshal(), "billing")
	if err != nil || got.ID.String() != "spiffe://example.org/agent/planner" {
		t.Errorf("ValidateJWTSVID = %v, %v", got, err)
	}
	if _, err := c.ValidateJWTSVID(ctx, jwtSVID.Marshal(), "someone-else"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ValidateJWTSVID for another audience = %v, want InvalidArgument", err)
	}
	jb, err := c.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := jb.GetJWTBundleForTrustDomain(home.td); err != nil || !b.HasJWTAuthority("jwt-1") {
		t.Errorf("JWT bundles = %v, %v, want the home JWT authority", b, err)
	}
	// Asking for an identity of another caller is refused.
	if _, err := c.FetchJWTSVID(ctx, jwtsvidParamsFor("billing", "spiffe://example.org/agent/other")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("FetchJWTSVID of another's identity = %v, want PermissionDenied", err)
	}
}

// An entry selects a caller only when all of its selectors match it;
// user and group names are those of the caller's ids.
func TestWorkloadAPISelectsByEverySelector(t *testing.T) {
	u, err := user.LookupId(strconv.Itoa(os.Getuid()))
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	uid, gid := strconv.Itoa(os.Getuid()), strconv.Itoa(os.Getgid())
	is := &issuer{authority: newAuthority(t, "example.org", time.Hour)}
	ctx := ctxFor(t)
	for _, tc := range []struct {
		entries []string
		want    []string // the SVIDs' IDs; none: PermissionDenied
	}{
		{[]string{"uid:" + uid + ",user:" + u.Username + ",group:" + g.Name + ",gid:" + gid + "=spiffe://example.org/agent/planner"}, []string{"spiffe://example.org/agent/planner"}},
		{[]string{"user:" + u.Username + "=spiffe://example.org/agent/planner"}, []string{"spiffe://example.org/agent/planner"}},
		{[]string{"uid:" + uid + ",gid:" + strconv.Itoa(os.Getgid()+1) + "=spiffe://example.org/agent/planner"}, nil},
		{[]string{"uid:" + uid + ",user:" + u.Username + "x=spiffe://example.org/agent/planner"}, nil},
		{[]string{"group:" + g.Name + "x,uid:" + uid + "=spiffe://example.org/agent/planner"}, nil},
		{[]string{
			"uid:" + uid + ",group:" + g.Name + "x=spiffe://example.org/agent/other",
			"group:" + g.Name + "=spiffe://example.org/agent/planner",
			"user:" + u.Username + ",uid:" + strconv.Itoa(os.Getuid()+1) + "=spiffe://example.org/agent/third",
		}, []string{"spiffe://example.org/agent/planner"}},
	} {
		var entries []Entry
		for _, e := range tc.entries {
			entries = append(entries, entry(t, e))
		}
		addr := serve(t, is, entries...)
		svids, err := workloadapi.FetchX509SVIDs(ctx, workloadapi.WithAddr(addr))
		if tc.want == nil {
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("entries %q: FetchX509SVIDs = %v, %v; want PermissionDenied", tc.entries, svids, err)
			}
			continue
		}
		var got []string
		for _, s := range svids {
			got = append(got, s.ID.String())
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("entries %q: FetchX509SVIDs = %q, %v; want %q", tc.entries, got, err, tc.want)
		}
	}
}

// A caller no entry selects gets nothing; a call without the security
// header is refused.
func TestWorkloadAPIRefuses(t *testing.T) {
	is := &issuer{authority: newAuthority(t, "example.org", time.Hour)}
	other := entry(t, "uid:"+strconv.Itoa(os.Getuid()+1)+"=spiffe://example.org/agent/other")
	addr := serve(t, is, other)
	ctx := ctxFor(t)
	if _, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(addr)); status.Code(err) != codes.PermissionDenied {
		t.Errorf("FetchX509SVID by a caller no entry selects = %v, want PermissionDenied", err)
	}
	if _, err := workloadapi.FetchJWTSVID(ctx, jwtsvidParams("x"), workloadapi.WithAddr(addr)); status.Code(err) != codes.PermissionDenied {
		t.Errorf("FetchJWTSVID by a caller no entry selects = %v, want PermissionDenied", err)
	}

	addr = serve(t, is, me(t, "spiffe://example.org/agent/planner"))
	raw := rawClient(t, addr)
	if _, err := raw.FetchJWTSVID(ctx, &pb.JWTSVIDRequest{Audience: []string{"x"}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("FetchJWTSVID without the security header = %v, want InvalidArgument", err)
	}
	stream, err := raw.FetchX509SVID(ctx, &pb.X509SVIDRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("FetchX509SVID without the security header = %v, want InvalidArgument", err)
	}
	withHeader := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	if _, err := raw.FetchJWTSVID(withHeader, &pb.JWTSVIDRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("FetchJWTSVID without an audience = %v, want InvalidArgument", err)
	}
	if _, err := raw.ValidateJWTSVID(withHeader, &pb.ValidateJWTSVIDRequest{Audience: "x", Svid: "not.a.token"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ValidateJWTSVID of garbage = %v, want InvalidArgument", err)
	}
}

// An X509-SVID is renewed before it expires, and the stream sends the
// new one; when renewals fail, the one held is served until it expires,
// and then the caller is told why there is none.
func TestWorkloadAPIRenewsAndFailsClosed(t *testing.T) {
	is := &issuer{authority: newAuthority(t, "example.org", 3*time.Second)}
	addr := serve(t, is, me(t, "spiffe://example.org/agent/planner"))
	ctx := ctxFor(t)
	stream, err := rawClient(t, addr).FetchX509SVID(metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true"), &pb.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	second, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if string(first.Svids[0].X509Svid) == string(second.Svids[0].X509Svid) {
		t.Fatal("the stream sent the same X509-SVID again, want the renewed one")
	}
	is.failWith(errors.New("the authority refuses: node-banned"))
	for {
		_, err := stream.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "node-banned") {
			t.Fatalf("once the SVID expired, the stream ended with %v, want Unavailable saying why", err)
		}
		break
	}
	if _, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(addr)); status.Code(err) != codes.Unavailable {
		t.Errorf("FetchX509SVID with no valid SVID = %v, want Unavailable", err)
	}
}

// A caller waiting for its first X509-SVID is told at once when it
// cannot be obtained, rather than left waiting.
func TestWorkloadAPISaysWhyThereIsNoSVID(t *testing.T) {
	is := &issuer{authority: newAuthority(t, "example.org", time.Hour)}
	is.failWith(errors.New("agent-not-hosted"))
	is.delay = 300 * time.Millisecond // the caller asks before the failure
	addr := serve(t, is, me(t, "spiffe://example.org/agent/planner"))
	ctx := ctxFor(t)
	_, err := workloadapi.FetchX509SVID(ctx, workloadapi.WithAddr(addr))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "agent-not-hosted") {
		t.Errorf("FetchX509SVID = %v, want Unavailable saying why", err)
	}
	if _, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr(addr)); status.Code(err) != codes.Unavailable {
		t.Errorf("FetchX509Bundles = %v, want Unavailable", err)
	}
}

// gids are n supplementary_gid selectors, each of another id.
func gids(n int) string {
	var sels []string
	for i := range n {
		sels = append(sels, "supplementary_gid:"+strconv.Itoa(i))
	}
	return strings.Join(sels, ",")
}

func TestParseEntry(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"uid:1000=spiffe://example.org/agent/planner", "uid:1000=spiffe://example.org/agent/planner"},
		{"gid:0=spiffe://example.org/agent/a", "gid:0=spiffe://example.org/agent/a"},
		{"uid:1000", ""},
		{"pid:1=spiffe://example.org/agent/a", ""},
		{"uid:-1=spiffe://example.org/agent/a", ""},
		{"uid:4294967296=spiffe://example.org/agent/a", ""},
		{"uid:1=spiffe://example.org", ""},
		{"uid:1=spiffe://Example.org/a", ""},
		{"uid:1=https://example.org/a", ""},
		// An agent's identity only: a node's own would give its caller
		// the node's credential, which obtains every agent's it hosts.
		{"uid:1=spiffe://example.org/node/join/0123456789abcdef", ""},
		{"uid:1=spiffe://example.org/a", ""},
		{"uid:1=spiffe://example.org/agent", ""},
		{"uid:1=spiffe://example.org/agents/a", ""},
		// Several selectors, all of which must match; SPIRE's "unix:"
		// prefix is dropped, an id written as its decimal.
		{"uid:1000,gid:100=spiffe://example.org/agent/a", "uid:1000,gid:100=spiffe://example.org/agent/a"},
		{"unix:uid:007,unix:user:alice=spiffe://example.org/agent/a", "uid:7,user:alice=spiffe://example.org/agent/a"},
		{"user:alice,group:agents=spiffe://example.org/agent/a", "user:alice,group:agents=spiffe://example.org/agent/a"},
		{"group:domain users=spiffe://example.org/agent/a", "group:domain users=spiffe://example.org/agent/a"},
		{"uid:1,uid:2=spiffe://example.org/agent/a", ""},
		{"user:a,user:a=spiffe://example.org/agent/a", ""},
		{"uid:1,=spiffe://example.org/agent/a", ""},
		{",uid:1=spiffe://example.org/agent/a", ""},
		{"=spiffe://example.org/agent/a", ""},
		{"user:=spiffe://example.org/agent/a", ""},
		{"user:a:b=spiffe://example.org/agent/a", ""},
		{"user:a\x00=spiffe://example.org/agent/a", ""},
		{"user:a\u202e=spiffe://example.org/agent/a", ""},
		{"user:" + strings.Repeat("a", 257) + "=spiffe://example.org/agent/a", ""},
		{"UID:1=spiffe://example.org/agent/a", ""},
		{"unix:unix:uid:1=spiffe://example.org/agent/a", ""},
		{"uid:1=spiffe://example.org/agent/a=b", ""},
		{strings.Repeat("supplementary_group:g,", 2) + "uid:1=spiffe://example.org/agent/a", ""},
		{gids(16) + "=spiffe://example.org/agent/a", gids(16) + "=spiffe://example.org/agent/a"},
		{gids(17) + "=spiffe://example.org/agent/a", ""},
		{"uid:1000,path:/opt/agents/planner=spiffe://example.org/agent/planner", "uid:1000,path:/opt/agents/planner=spiffe://example.org/agent/planner"},
		{"gid:5,path:/opt/a=b/planner=spiffe://example.org/agent/a", "gid:5,path:/opt/a=b/planner=spiffe://example.org/agent/a"},
		// Any local process may connect, then run the program at the path
		// (exec), having handed its connection to one of its own: a path
		// alone is bound to no one.
		{"path:/opt/a=b/planner=spiffe://example.org/agent/a", ""},
		{"uid:1,sha256:" + strings.Repeat("AB", 32) + "=spiffe://example.org/agent/a", "uid:1,sha256:" + strings.Repeat("ab", 32) + "=spiffe://example.org/agent/a"},
		{"user:alice,path:/opt/a,sha256:" + strings.Repeat("ab", 32) + "=spiffe://example.org/agent/a", "user:alice,path:/opt/a,sha256:" + strings.Repeat("ab", 32) + "=spiffe://example.org/agent/a"},
		{"path:/opt/a,sha256:" + strings.Repeat("ab", 32) + "=spiffe://example.org/agent/a", ""},
		{"supplementary_gid:1,path:/opt/a=spiffe://example.org/agent/a", ""},
		{"sha256:" + strings.Repeat("ab", 32) + "=spiffe://example.org/agent/a", ""}, // nothing binds it: refused
		{"supplementary_gid:1,sha256:" + strings.Repeat("ab", 32) + "=spiffe://example.org/agent/a", ""},
		{"supplementary_gid:10,supplementary_gid:20,supplementary_group:agents=spiffe://example.org/agent/a", "supplementary_gid:10,supplementary_gid:20,supplementary_group:agents=spiffe://example.org/agent/a"},
		{"supplementary_gid:10,supplementary_gid:10=spiffe://example.org/agent/a", ""},
		{"path:/a,path:/b=spiffe://example.org/agent/a", ""},
		{"path:opt/planner=spiffe://example.org/agent/a", ""},
		{"path:/opt/../planner=spiffe://example.org/agent/a", ""},
		{"path:/opt/planner/=spiffe://example.org/agent/a", ""},
		{"path:/opt/a,b=spiffe://example.org/agent/a", ""},
		{"path:=spiffe://example.org/agent/a", ""},
		{"path:/" + strings.Repeat("a", 4096) + "=spiffe://example.org/agent/a", ""},
		{"uid:1,sha256:abc=spiffe://example.org/agent/a", ""},
		{"uid:1,sha256:" + strings.Repeat("ag", 32) + "=spiffe://example.org/agent/a", ""},
		// Cgroups: a path, a unit, a container, a pod.
		{"cgroup:/system.slice/nginx.service=spiffe://example.org/agent/a", "cgroup:/system.slice/nginx.service=spiffe://example.org/agent/a"},
		{"cgroup:/=spiffe://example.org/agent/a", "cgroup:/=spiffe://example.org/agent/a"},
		{"cgroup:system.slice=spiffe://example.org/agent/a", ""},
		{"cgroup:/system.slice/=spiffe://example.org/agent/a", ""},
		{"systemd_unit:nginx.service=spiffe://example.org/agent/a", "systemd_unit:nginx.service=spiffe://example.org/agent/a"},
		{"systemd_unit:session-2.scope=spiffe://example.org/agent/a", "systemd_unit:session-2.scope=spiffe://example.org/agent/a"},
		{`systemd_unit:user@1000.service=spiffe://example.org/agent/a`, `systemd_unit:user@1000.service=spiffe://example.org/agent/a`},
		{"systemd_unit:system.slice=spiffe://example.org/agent/a", ""},
		{"systemd_unit:.service=spiffe://example.org/agent/a", ""},
		{"systemd_unit:a b.service=spiffe://example.org/agent/a", ""},
		{"systemd_unit:a/b.service=spiffe://example.org/agent/a", ""},
		{"uid:0,container_id:" + strings.Repeat("AB", 32) + "=spiffe://example.org/agent/a", "uid:0,container_id:" + strings.Repeat("ab", 32) + "=spiffe://example.org/agent/a"},
		{"group:docker,pod_uid:0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0=spiffe://example.org/agent/a", "group:docker,pod_uid:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0=spiffe://example.org/agent/a"},
		// A user names the cgroups systemd delegates to it as it likes:
		// a container's or a pod's name alone is not bound to anyone.
		{"container_id:" + strings.Repeat("ab", 32) + "=spiffe://example.org/agent/a", ""},
		{"path:/usr/bin/agent,container_id:" + strings.Repeat("ab", 32) + "=spiffe://example.org/agent/a", ""},
		{"cgroup:/system.slice/docker.service,pod_uid:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0=spiffe://example.org/agent/a", ""},
		{"uid:0,container_id:" + strings.Repeat("ab", 6) + "=spiffe://example.org/agent/a", ""},
		{"uid:0,pod_uid:0f1e2d3c4b5a697887 96a5b4c3d2e1f0=spiffe://example.org/agent/a", ""},
		{"uid:0,pod_uid:0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0=spiffe://example.org/agent/a", ""},
		{"cgroup:/a,cgroup:/b=spiffe://example.org/agent/a", ""},
	} {
		e, err := ParseEntry(tc.in)
		if tc.want == "" {
			if !errors.Is(err, ErrEntry) {
				t.Errorf("ParseEntry(%q) = %v, %v; want ErrEntry", tc.in, e, err)
			}
			continue
		}
		if err != nil || e.String() != tc.want {
			t.Errorf("ParseEntry(%q) = %v, %v; want %s", tc.in, e, err, tc.want)
		}
	}
	for _, bad := range []Entry{
		{ID: spiffeid.RequireFromString("spiffe://example.org/agent/a")},
		{Selectors: []Selector{{Kind: "uid", Value: "x"}}, ID: spiffeid.RequireFromString("spiffe://example.org/agent/a")},
		{Selectors: []Selector{{Kind: "pid", Value: "1"}}, ID: spiffeid.RequireFromString("spiffe://example.org/agent/a")},
		{Selectors: []Selector{{Kind: "sha256", Value: strings.Repeat("ab", 32)}}, ID: spiffeid.RequireFromString("spiffe://example.org/agent/a")},
		{Selectors: []Selector{{Kind: "container_id", Value: strings.Repeat("ab", 32)}}, ID: spiffeid.RequireFromString("spiffe://example.org/agent/a")},
	} {
		if _, err := New([]Entry{bad}, &issuer{}, slog.New(slog.DiscardHandler)); !errors.Is(err, ErrEntry) {
			t.Errorf("New with the entry %v = %v, want ErrEntry", bad, err)
		}
	}
	node := Entry{Selectors: []Selector{{Kind: "uid", Value: "1"}}, ID: spiffeid.RequireFromString("spiffe://example.org/node/join/0123456789abcdef")}
	if _, err := New([]Entry{node}, &issuer{}, slog.New(slog.DiscardHandler)); !errors.Is(err, ErrEntry) {
		t.Errorf("New with an entry of a node's identity = %v, want ErrEntry", err)
	}
}

// A socket left by a process that stopped is replaced; one in use, or a
// file that is not a socket, is refused and left as it is.
func TestListen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "api.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o777 {
		t.Errorf("socket mode = %v, %v; want every local process able to connect", fi.Mode(), err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("Listen on a socket in use = %v, want it refused", err)
	}
	// Left behind: the file stays when its listener does not remove it.
	ln.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	ln.Close()
	ln, err = Listen(path)
	if err != nil {
		t.Fatalf("Listen on a stale socket = %v, want it replaced", err)
	}
	ln.Close()
	// A directory that is not there: the error says to make it.
	if _, err := Listen(filepath.Join(dir, "none", "api.sock")); err == nil || !strings.Contains(err.Error(), "does not exist: make it first") {
		t.Errorf("Listen in a missing directory = %v, want it to say to make it", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); err == nil {
		t.Error("Listen on a regular file succeeded")
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep" {
		t.Errorf("the file was changed: %q, %v", b, err)
	}
	// A directory others may write to: only with the sticky bit.
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{{0o777, false}, {0o775, false}, {0o755, true}, {0o777 | os.ModeSticky, true}} {
		if err := os.Chmod(open, tc.mode); err != nil {
			t.Fatal(err)
		}
		ln, err := Listen(filepath.Join(open, "api.sock"))
		if (err == nil) != tc.ok {
			t.Errorf("Listen in a directory of mode %v = %v, want ok %v", tc.mode, err, tc.ok)
		}
		if ln != nil {
			ln.Close()
		}
	}
}

func jwtsvidParams(aud string) jwtsvid.Params { return jwtsvid.Params{Audience: aud} }

func jwtsvidParamsFor(aud, id string) jwtsvid.Params {
	return jwtsvid.Params{Audience: aud, Subject: spiffeid.RequireFromString(id)}
}

// A call whose headers are larger than any client needs is refused
// before it reaches the authority, and the server goes on serving: a
// caller cannot make it hold megabytes of metadata.
func TestWorkloadAPIBoundsHeaders(t *testing.T) {
	is := &issuer{authority: newAuthority(t, "example.org", time.Hour)}
	addr := serve(t, is, me(t, "spiffe://example.org/agent/planner"))
	ctx := ctxFor(t)
	raw := rawClient(t, addr)
	withHeader := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	for _, tc := range []struct {
		pad     int
		refused bool
	}{
		{pad: 64 << 10, refused: true},
		{pad: 1 << 20, refused: true},
		{pad: 1 << 10, refused: false},
	} {
		calls := is.jwtCalls.Load()
		_, err := raw.FetchJWTSVID(metadata.AppendToOutgoingContext(withHeader, "x-pad", strings.Repeat("a", tc.pad)), &pb.JWTSVIDRequest{Audience: []string{"billing-" + strconv.Itoa(tc.pad)}})
		if got := err != nil; got != tc.refused {
			t.Errorf("FetchJWTSVID with %d bytes of metadata = %v, want refused %v", tc.pad, err, tc.refused)
		}
		if tc.refused && is.jwtCalls.Load() != calls {
			t.Errorf("FetchJWTSVID with %d bytes of metadata reached the authority", tc.pad)
		}
	}
}

// A trust domain with several JWT authorities is sent once on the
// FetchJWTBundles stream, not again at every renewal of an X509-SVID
// when nothing in it changed.
func TestWorkloadAPISendsJWTBundlesOnChangeOnly(t *testing.T) {
	home := newAuthority(t, "example.org", 2*time.Second)
	home.moreJWT = map[string]crypto.PublicKey{}
	for i := range 6 {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		home.moreJWT["jwt-next-"+strconv.Itoa(i)] = k.Public()
	}
	is := &issuer{authority: home}
	addr := serve(t, is, me(t, "spiffe://example.org/agent/planner"))
	ctx, cancel := context.WithCancel(ctxFor(t))
	defer cancel()
	raw := rawClient(t, addr)
	withHeader := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	bundles, err := raw.FetchJWTBundles(withHeader, &pb.JWTBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := bundles.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if b, err := jwtbundle.Parse(home.td, first.Bundles[home.td.IDString()]); err != nil || len(b.JWTAuthorities()) != 7 {
		t.Fatalf("the JWT bundle sent = %v, %v; want the 7 authorities", b, err)
	}
	var again atomic.Int32
	go func() {
		for {
			if _, err := bundles.Recv(); err != nil {
				return
			}
			again.Add(1)
		}
	}()
	svids, err := raw.FetchX509SVID(withHeader, &pb.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for range 4 { // the SVID held, then three renewals
		if _, err := svids.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if n := again.Load(); n != 0 {
		t.Errorf("the JWT bundles were sent %d more times with no change", n)
	}
}

// stalling answers its first X509-SVID, then holds every later call
// until it is given up.
type stalling struct {
	*issuer
	calls, inFlight atomic.Int32
}

func (s *stalling) X509SVID(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, []*spiffebundle.Bundle, error) {
	if s.calls.Add(1) == 1 {
		return s.issuer.X509SVID(ctx, id)
	}
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	<-ctx.Done()
	return nil, nil, ctx.Err()
}

// A stream whose only X509-SVID expires while its renewal is still
// unanswered ends then, saying so: it does not stay silent (the caller
// keeping the expired SVID) until the authority answers.
func TestWorkloadAPIEndsStreamAtExpiry(t *testing.T) {
	is := &stalling{issuer: &issuer{authority: newAuthority(t, "example.org", 2*time.Second)}}
	addr := serve(t, is, me(t, "spiffe://example.org/agent/planner"))
	ctx := ctxFor(t)
	stream, err := rawClient(t, addr).FetchX509SVID(metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true"), &pb.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "expired") {
		t.Errorf("once the SVID expired, the stream ended with %v, want Unavailable saying it expired", err)
	}
	if is.inFlight.Load() == 0 {
		t.Error("the stream ended only when the renewal gave up, not when the SVID expired")
	}
}

// holding answers JWT-SVIDs, holding the first call until its callers
// are all in FetchJWTSVID, or until a second call comes.
type holding struct {
	*issuer
	callers int
	arrived atomic.Int32
}

func (h *holding) JWTSVID(ctx context.Context, id spiffeid.ID, audience []string) (string, time.Time, error) {
	if h.arrived.Add(1) == 1 {
		for h.arrived.Load() == 1 && inFetchJWTSVID() < h.callers {
			time.Sleep(time.Millisecond)
		}
	}
	return h.issuer.JWTSVID(ctx, id, audience)
}

// inFetchJWTSVID is how many goroutines are serving FetchJWTSVID.
func inFetchJWTSVID() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "workload.(*Server).FetchJWTSVID(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// Callers asking at once for a JWT-SVID of the same identity and
// audience share one call to the authority, as callers asking one
// after the other do.
func TestWorkloadAPIFetchesAJWTSVIDOnceForCallersAtOnce(t *testing.T) {
	const callers = 20
	is := &holding{issuer: &issuer{authority: newAuthority(t, "example.org", time.Hour)}, callers: callers}
	addr := serve(t, is, me(t, "spiffe://example.org/agent/planner"))
	ctx := ctxFor(t)
	var wg sync.WaitGroup
	tokens := make([]string, callers)
	for i := range callers {
		wg.Go(func() {
			svid, err := workloadapi.FetchJWTSVID(ctx, jwtsvidParams("billing"), workloadapi.WithAddr(addr))
			if err != nil {
				t.Errorf("FetchJWTSVID = %v", err)
				return
			}
			tokens[i] = svid.Marshal()
		})
	}
	wg.Wait()
	if n := is.jwtCalls.Load(); n != 1 {
		t.Errorf("%d callers at once made %d calls to the authority, want 1", callers, n)
	}
	for i, tok := range tokens {
		if tok != tokens[0] {
			t.Errorf("caller %d got another JWT-SVID than caller 0", i)
		}
	}
}

// abandoned holds its first JWT-SVID call until its caller goes away.
type abandoned struct {
	*issuer
	started chan struct{}
	arrived atomic.Int32
}

func (a *abandoned) JWTSVID(ctx context.Context, id spiffeid.ID, audience []string) (string, time.Time, error) {
	if a.arrived.Add(1) == 1 {
		close(a.started)
		<-ctx.Done()
		return "", time.Time{}, ctx.Err()
	}
	return a.issuer.JWTSVID(ctx, id, audience)
}

// A caller waiting for the JWT-SVID another caller asked for first is
// not failed when that caller hangs up: it asks the authority itself.
func TestWorkloadAPIJWTSVIDOutlivesTheFirstCaller(t *testing.T) {
	is := &abandoned{issuer: &issuer{authority: newAuthority(t, "example.org", time.Hour)}, started: make(chan struct{})}
	addr := serve(t, is, me(t, "spiffe://example.org/agent/planner"))
	ctx := ctxFor(t)
	first, hangUp := context.WithCancel(ctx)
	firstDone := make(chan error, 1)
	go func() {
		_, err := workloadapi.FetchJWTSVID(first, jwtsvidParams("billing"), workloadapi.WithAddr(addr))
		firstDone <- err
	}()
	<-is.started
	type answer struct {
		svid *jwtsvid.SVID
		err  error
	}
	second := make(chan answer, 1)
	go func() {
		svid, err := workloadapi.FetchJWTSVID(ctx, jwtsvidParams("billing"), workloadapi.WithAddr(addr))
		second <- answer{svid, err}
	}()
	for inFetchJWTSVID() < 2 {
		time.Sleep(time.Millisecond)
	}
	hangUp()
	if err := <-firstDone; err == nil {
		t.Error("the caller that hung up got a JWT-SVID")
	}
	got := <-second
	if got.err != nil || got.svid.ID.String() != "spiffe://example.org/agent/planner" {
		t.Errorf("the second caller got %v, %v; want its JWT-SVID", got.svid, got.err)
	}
	if n := is.arrived.Load(); n != 2 {
		t.Errorf("%d calls to the authority, want 2 (the abandoned one, and the second caller's)", n)
	}
}

// A JWT-SVID the authority answered is validated before it is served:
// one of another identity, or one the bundle's key did not sign, is not.
func TestWorkloadAPIServesOnlyJWTSVIDsThatValidate(t *testing.T) {
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, wrong := range map[string]func(*authority){
		"another identity": func(a *authority) { a.jwtSubject = "spiffe://example.org/agent/other" },
		"another key":      func(a *authority) { a.jwtSigner = other },
	} {
		t.Run(name, func(t *testing.T) {
			home := newAuthority(t, "example.org", time.Hour)
			wrong(home)
			addr := serve(t, &issuer{authority: home}, me(t, "spiffe://example.org/agent/planner"))
			_, err := workloadapi.FetchJWTSVID(ctxFor(t), jwtsvidParams("billing"), workloadapi.WithAddr(addr))
			if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "JWT-SVID") {
				t.Errorf("FetchJWTSVID of a wrong answer = %v, want Unavailable", err)
			}
		})
	}
}

// The callers of one user id asking for JWT-SVIDs of many audiences at
// once have at most maxJWTCallsPerUID calls to the authority under way;
// every one of them is answered.
func TestWorkloadAPIBoundsAUsersJWTSVIDCalls(t *testing.T) {
	home := newAuthority(t, "example.org", time.Hour)
	home.jwtDelay = 50 * time.Millisecond
	addr := serve(t, &issuer{authority: home}, me(t, "spiffe://example.org/agent/planner"))
	ctx := ctxFor(t)
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 4*maxJWTCallsPerUID)
	for i := range cap(errs) {
		wg.Go(func() {
			_, err := c.FetchJWTSVID(ctx, jwtsvidParams("aud-"+strconv.Itoa(i)))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("FetchJWTSVID = %v", err)
		}
	}
	if most := home.jwtMostInFlight.Load(); most > maxJWTCallsPerUID || most < 2 {
		t.Errorf("%d JWT-SVID calls to the authority at once, want 2 to %d", most, maxJWTCallsPerUID)
	}
}

// Connections over a user's share, or over the total, are closed at
// once; one closed makes room for another.
func TestWorkloadAPIBoundsConnections(t *testing.T) {
	for _, tc := range []struct {
		name          string
		perUID, total int
	}{
		{"per user", 2, 100},
		{"in all", 100, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := &issuer{authority: newAuthority(t, "example.org", time.Hour)}
			addr := serveWith(t, is, func(s *Server) { s.conns = newConnLimit(tc.perUID, tc.total, s.log) }, me(t, "spiffe://example.org/agent/planner"))
			path := strings.TrimPrefix(addr, "unix://")
			var held []net.Conn
			for range 2 {
				c, err := net.Dial("unix", path)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				held = append(held, c)
			}
			ctx := ctxFor(t)
			over, err := net.Dial("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer over.Close()
			_ = over.SetReadDeadline(time.Now().Add(20 * time.Second))
			if n, err := over.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("a connection over the limit read %d bytes, %v; want it closed at once", n, err)
			}
			held[0].Close()
			var got error
			for {
				// The close is counted once the server has read it.
				short, cancel := context.WithTimeout(ctx, time.Second)
				_, got = workloadapi.FetchX509SVID(short, workloadapi.WithAddr(addr))
				cancel()
				if got == nil || ctx.Err() != nil {
					break
				}
			}
			if got != nil {
				t.Errorf("FetchX509SVID once a connection closed = %v", got)
			}
		})
	}
}

// A call's request is held as it arrives, before its caller is checked
// against the entries, for as long as the caller takes to send the rest
// of it: the calls of one user id whose requests are being received at
// once are bounded (maxReceivingPerUID), those over the bound refused
// (ResourceExhausted), whoever the caller. A call whose request has
// been received, or that ended, holds no place.
func TestWorkloadAPIBoundsRequestsBeingReceived(t *testing.T) {
	is := &issuer{authority: newAuthority(t, "example.org", time.Hour)}
	addr := serve(t, is, entry(t, "uid:"+strconv.Itoa(os.Getuid()+1)+"=spiffe://example.org/agent/someone-else"))
	ctx := ctxFor(t)
	withHeader := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	call := func(conn *grpc.ClientConn) error {
		_, err := pb.NewSpiffeWorkloadAPIClient(conn).ValidateJWTSVID(withHeader, &pb.ValidateJWTSVIDRequest{Audience: "x", Svid: "not.a.token"})
		return err
	}
	// Calls received whole do not add up.
	conn := rawConn(t, addr)
	for range 2 * maxReceivingPerUID {
		if err := call(conn); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("ValidateJWTSVID of a caller no entry selects = %v; want PermissionDenied", err)
		}
	}
	// Calls whose request never ends (no half-close), on connections of
	// their own, each of which then makes a call whole: the one made once
	// maxReceivingPerUID are held is refused.
	stalled, stopStalling := context.WithCancel(withHeader)
	perConn := maxStreams - 1
	for held := 0; ; {
		conn := rawConn(t, addr)
		for i := range perConn {
			cs, err := conn.NewStream(stalled, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/SpiffeWorkloadAPI/FetchX509Bundles")
			if err != nil {
				t.Fatal(err)
			}
			// A call past the limit may be refused before its message is
			// sent: gRPC then says io.EOF, and RecvMsg would say why.
			if err := cs.SendMsg(&pb.X509BundlesRequest{}); err != nil && (held+i < maxReceivingPerUID || !errors.Is(err, io.EOF)) {
				t.Fatalf("call %d: %v", held+i, err)
			}
		}
		held += perConn
		err := call(conn)
		if held < maxReceivingPerUID {
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("a call with %d requests being received = %v; want PermissionDenied", held, err)
			}
			continue
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("a call with %d requests being received = %v; want ResourceExhausted", held, err)
		}
		break
	}
	stopStalling()
	for {
		// The calls ended are counted once the server has read their end.
		err := call(conn)
		if status.Code(err) == codes.PermissionDenied {
			break
		}
		if status.Code(err) != codes.ResourceExhausted || ctx.Err() != nil {
			t.Fatalf("a call once the others ended = %v; want PermissionDenied", err)
		}
	}
}

// rawConn is a gRPC connection to the Workload API at addr.
func rawConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// A renewal's wait follows the wall clock: after a suspend of the host
// (which Go's timers do not count) it ends once the wall clock has
// passed its end, not that much later.
func TestRenewalWaitFollowsTheWallClock(t *testing.T) {
	s, err := New([]Entry{me(t, "spiffe://example.org/agent/planner")}, &issuer{authority: newAuthority(t, "example.org", time.Hour)}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var skew atomic.Int64
	read := make(chan struct{})
	var once sync.Once
	s.now = func() time.Time {
		// Read before it says it was read: the skew set once it says so
		// is not in the first reading (the wait's end).
		now := time.Now().Add(time.Duration(skew.Load()))
		once.Do(func() { close(read) })
		return now
	}
	s.wallPoll = 10 * time.Millisecond
	done := make(chan bool, 1)
	go func() { done <- s.wait(ctxFor(t), time.Hour, nil) }()
	<-read                           // the wait has read when it ends
	skew.Store(int64(2 * time.Hour)) // the host slept
	select {
	case ok := <-done:
		if !ok {
			t.Error("wait = false, want it ended by the clock")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the wait did not end once the wall clock passed its end")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if s.wait(ctx, time.Hour, nil) {
		t.Error("wait with its context ended = true")
	}
}

// A stream waits for the next X509-SVID held to expire, not for one
// held that has expired already: that one is out of every answer, and
// what replaces or drops it is signalled (its renewal may be held up to
// callTimeout, and a stream would otherwise wake every millisecond
// until then, recomputing the same answer).
func TestNextExpiryPassesOverExpiredSVIDs(t *testing.T) {
	now := time.Now()
	heldUntil := func(notAfter time.Time) *held {
		return &held{svid: &x509svid.SVID{Certificates: []*x509.Certificate{{NotAfter: notAfter}}}}
	}
	for _, tc := range []struct {
		name string
		held []time.Time
		want time.Duration
	}{
		{"none held", nil, time.Minute},
		{"one valid for 10 s", []time.Time{now.Add(10 * time.Second)}, 10*time.Second + time.Millisecond},
		{"one valid for 2 minutes", []time.Time{now.Add(2 * time.Minute)}, time.Minute},
		{"one expired", []time.Time{now.Add(-time.Second)}, time.Minute},
		{"one expiring now", []time.Time{now}, time.Minute},
		{"one expired, one valid for 10 s", []time.Time{now.Add(-time.Second), now.Add(10 * time.Second)}, 10*time.Second + time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New([]Entry{me(t, "spiffe://example.org/agent/planner")}, &issuer{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			s.now = func() time.Time { return now }
			for i, at := range tc.held {
				s.svids[spiffeid.RequireFromString("spiffe://example.org/agent/a"+strconv.Itoa(i))] = heldUntil(at)
			}
			s.mu.Lock()
			got := s.nextExpiry()
			s.mu.Unlock()
			if got != tc.want {
				t.Errorf("nextExpiry = %v, want %v", got, tc.want)
			}
		})
	}
}

// One user asking for JWT-SVIDs of many audiences drops its own kept
// ones, not another user's: the other's is still reused.
func TestJWTSVIDsKeptPerUser(t *testing.T) {
	is := &issuer{authority: newAuthority(t, "example.org", time.Hour)}
	id := spiffeid.RequireFromString("spiffe://example.org/agent/planner")
	s, err := New([]Entry{{Selectors: []Selector{{Kind: "gid", Value: "7"}}, ID: id}}, is, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	svid, bundles, err := is.X509SVID(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	h, err := hold(svid, id, bundles, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s.update(id, h, bundles, s.ask())
	kept, err := s.jwt(t.Context(), 2, id, []string{"billing"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 * maxJWTsHeld {
		if _, err := s.jwt(t.Context(), 1, id, []string{"aud-" + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	calls := is.jwtCalls.Load()
	if again, err := s.jwt(t.Context(), 2, id, []string{"billing"}); err != nil || again != kept || is.jwtCalls.Load() != calls {
		t.Errorf("the other user's JWT-SVID after one user asked for %d audiences: reused %v (%v), want it reused", 2*maxJWTsHeld, again == kept, err)
	}
	if len(s.jwts) > maxJWTsHeldPerUID+1 {
		t.Errorf("%d JWT-SVIDs kept, want at most %d", len(s.jwts), maxJWTsHeldPerUID+1)
	}
}

// A CA and a JWT key the authority publishes before they sign reach the
// workloads before the X509-SVID is renewed (the authority's bundle is
// asked for at its refresh hint): a JWT-SVID the new key signs is
// served, and validates with the bundles served, from its first use.
func TestWorkloadAPIServesPublishedKeysBeforeRenewal(t *testing.T) {
	home := newAuthority(t, "example.org", time.Hour)
	home.hint = time.Second
	is := &issuer{authority: home}
	addr := workloadapi.WithAddr(serve(t, is, me(t, "spiffe://example.org/agent/planner")))
	ctx := ctxFor(t)
	client, err := workloadapi.New(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if _, err := client.FetchX509SVID(ctx); err != nil {
		t.Fatal(err)
	}
	next := newAuthority(t, "example.org", time.Hour) // the authority's next CA and JWT key
	home.mu.Lock()
	home.moreRoots = []*x509.Certificate{next.root}
	home.moreJWT = map[string]crypto.PublicKey{"jwt-2": next.jwtKey.Public()}
	home.mu.Unlock()
	for {
		xb, errX := client.FetchX509Bundles(ctx)
		jb, errJ := client.FetchJWTBundles(ctx)
		if errX == nil && errJ == nil {
			roots, _ := xb.GetX509BundleForTrustDomain(home.td)
			keys, _ := jb.GetJWTBundleForTrustDomain(home.td)
			if roots != nil && roots.HasX509Authority(next.root) && keys != nil && keys.HasJWTAuthority("jwt-2") {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("the CA and JWT key published did not reach the workload (%v, %v)", errX, errJ)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := is.x509Calls.Load(); n != 1 {
		t.Fatalf("the X509-SVID was asked for %d times, want once: the bundles came with a renewal", n)
	}
	home.mu.Lock()
	home.jwtSigner, home.jwtKID = next.jwtKey, "jwt-2"
	home.mu.Unlock()
	svid, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "billing"})
	if err != nil {
		t.Fatalf("FetchJWTSVID signed by the key published = %v", err)
	}
	keys, err := client.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Marshal(), keys, []string{"billing"}); err != nil {
		t.Errorf("the JWT-SVID does not validate with the bundles served: %v", err)
	}
}

// unserved is a Server of the planner's identity, id, with is, that
// serves nothing: the test calls its methods. obtain has is answer an
// X509-SVID of id, ready to serve, and its bundles.
func unserved(t *testing.T, is *issuer) (s *Server, id spiffeid.ID, obtain func() (*held, []*spiffebundle.Bundle)) {
	t.Helper()
	s, err := New([]Entry{me(t, "spiffe://example.org/agent/planner")}, is, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	id = s.entries[0].ID
	return s, id, func() (*held, []*spiffebundle.Bundle) {
		t.Helper()
		svid, bundles, err := is.X509SVID(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		h, err := hold(svid, id, bundles, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return h, bundles
	}
}

// The bundles served are those of the latest request made, not of the
// latest answer: an X509-SVID answered late, to a request made before
// the authority's bundle was asked for, does not put back the bundle
// without the key published since, and a bundle answered late does not
// put back a key dropped since.
func TestBundlesFollowTheLatestRequest(t *testing.T) {
	home := newAuthority(t, "example.org", time.Hour)
	is := &issuer{authority: home}
	s, id, obtain := unserved(t, is)
	published := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.bundles[home.td] != nil && s.bundles[home.td].HasJWTAuthority("jwt-2")
	}
	next := newAuthority(t, "example.org", time.Hour)

	early := s.ask()
	h, before := obtain()
	home.mu.Lock()
	home.moreJWT = map[string]crypto.PublicKey{"jwt-2": next.jwtKey.Public()}
	home.mu.Unlock()
	withKey := home.bundle()
	s.synced(&Sync{Bundles: []*spiffebundle.Bundle{withKey}}, s.ask(), false)
	s.update(id, h, before, early)
	if !published() {
		t.Error("an X509-SVID answered late put back the bundle without the key published since")
	}
	if s.svids[id] != h {
		t.Error("the X509-SVID answered late is not served")
	}

	stale := s.ask()
	home.mu.Lock()
	home.moreJWT = nil
	home.mu.Unlock()
	later := s.ask()
	h, after := obtain()
	s.update(id, h, after, later)
	s.synced(&Sync{Bundles: []*spiffebundle.Bundle{withKey}}, stale, false)
	if published() {
		t.Error("a bundle answered late put back a key dropped since")
	}
}

// refusing refuses the JWT-SVIDs of the identities in refused, as the
// authority does those of an agent no longer hosted here.
type refusing struct {
	*issuer
	refused []spiffeid.ID
}

func (r *refusing) X509SVID(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, []*spiffebundle.Bundle, error) {
	if slices.Contains(r.refused, id) {
		r.x509Calls.Add(1)
		return nil, nil, errors.New("403 Agent not allowed on this node")
	}
	return r.issuer.X509SVID(ctx, id)
}

// A caller of several identities gets the X509-SVIDs of those the
// authority answers, its default (the first) among them; when that one
// is refused, nothing, saying why, not another's in its place.
func TestWorkloadAPIServesTheX509SVIDsObtained(t *testing.T) {
	planner := spiffeid.RequireFromString("spiffe://example.org/agent/planner")
	booker := spiffeid.RequireFromString("spiffe://example.org/agent/booker")
	for name, tc := range map[string]struct {
		refused []spiffeid.ID
		want    []string // the identities answered; none: Unavailable
	}{
		"none refused":      {want: []string{planner.String(), booker.String()}},
		"one refused":       {refused: []spiffeid.ID{booker}, want: []string{planner.String()}},
		"the first refused": {refused: []spiffeid.ID{planner}},
	} {
		t.Run(name, func(t *testing.T) {
			is := &refusing{issuer: &issuer{authority: newAuthority(t, "example.org", time.Hour)}, refused: tc.refused}
			addr := serve(t, is, me(t, planner.String()), me(t, booker.String()))
			ctx := ctxFor(t)
			// The first answer once every identity was asked for.
			for is.x509Calls.Load() < 2 && ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
			}
			var got []string
			var err error
			for {
				var xc *workloadapi.X509Context
				xc, err = workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(addr))
				got = nil
				if xc != nil {
					for _, sv := range xc.SVIDs {
						got = append(got, sv.ID.String())
					}
				}
				if len(tc.want) == 0 || slices.Equal(got, tc.want) || ctx.Err() != nil {
					break
				}
			}
			if len(tc.want) == 0 {
				if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not allowed on this node") || len(got) != 0 {
					t.Errorf("FetchX509Context = %v, %v; want Unavailable with the authority's refusal", got, err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("FetchX509Context answered X509-SVIDs of %v (%v), want %v", got, err, tc.want)
			}
		})
	}
}

func (r *refusing) JWTSVID(ctx context.Context, id spiffeid.ID, audience []string) (string, time.Time, error) {
	if slices.Contains(r.refused, id) {
		return "", time.Time{}, errors.New("403 Agent not allowed on this node")
	}
	return r.issuer.JWTSVID(ctx, id, audience)
}

// A caller of several identities gets the JWT-SVIDs of those the
// authority answers, whichever others it refuses; nothing, saying why,
// when it refuses them all or the one asked for.
func TestWorkloadAPIServesTheJWTSVIDsObtained(t *testing.T) {
	planner := spiffeid.RequireFromString("spiffe://example.org/agent/planner")
	booker := spiffeid.RequireFromString("spiffe://example.org/agent/booker")
	for name, tc := range map[string]struct {
		refused []spiffeid.ID
		asked   string
		want    []string // the identities answered; none: Unavailable
	}{
		"none refused":          {want: []string{planner.String(), booker.String()}},
		"one refused":           {refused: []spiffeid.ID{booker}, want: []string{planner.String()}},
		"the first refused":     {refused: []spiffeid.ID{planner}}, // the default: not another's in its place
		"all refused":           {refused: []spiffeid.ID{planner, booker}},
		"the one asked for":     {refused: []spiffeid.ID{booker}, asked: booker.String()},
		"another one asked for": {refused: []spiffeid.ID{booker}, asked: planner.String(), want: []string{planner.String()}},
	} {
		t.Run(name, func(t *testing.T) {
			is := &refusing{issuer: &issuer{authority: newAuthority(t, "example.org", time.Hour)}, refused: tc.refused}
			addr := serve(t, is, me(t, planner.String()), me(t, booker.String()))
			ctx := ctxFor(t)
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ans, err := pb.NewSpiffeWorkloadAPIClient(conn).FetchJWTSVID(metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true"),
				&pb.JWTSVIDRequest{Audience: []string{"billing"}, SpiffeId: tc.asked})
			if len(tc.want) == 0 {
				if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not allowed on this node") {
					t.Errorf("FetchJWTSVID = %v, %v; want Unavailable with the authority's refusal", ans, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("FetchJWTSVID = %v", err)
			}
			var got []string
			for _, s := range ans.Svids {
				got = append(got, s.SpiffeId)
				if s.Svid == "" {
					t.Errorf("the JWT-SVID of %s is empty", s.SpiffeId)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("FetchJWTSVID answered JWT-SVIDs of %v, want %v", got, tc.want)
			}
		})
	}
}

// busy is an authority's refusal that asks to be left alone for after,
// as a client.Problem with a Retry-After does.
type busy struct{ after time.Duration }

func (b busy) Error() string             { return "429 rate-limited" }
func (b busy) RetryDelay() time.Duration { return b.after }

// busyJWT answers the JWT-SVID calls made while busy is set with a
// refusal that asks to be left alone for a minute (429, Retry-After), and
// counts them.
type busyJWT struct {
	*issuer
	busy  atomic.Bool
	calls atomic.Int32
}

func (b *busyJWT) JWTSVID(ctx context.Context, id spiffeid.ID, audience []string) (string, time.Time, error) {
	b.calls.Add(1)
	if b.busy.Load() {
		return "", time.Time{}, busy{time.Minute}
	}
	return b.issuer.JWTSVID(ctx, id, audience)
}

// Once the authority answers a JWT-SVID's request asking the node to
// wait (429, Retry-After: its rate limit is the node's, which its
// renewals and syncs share), the node asks it for none until then: a
// caller asking for JWT-SVIDs of one audience after another would
// otherwise keep the node's requests over the limit, and its X509-SVIDs
// from being renewed. The callers are answered Unavailable meanwhile.
func TestJWTSVIDsWaitAsTheAuthorityAsks(t *testing.T) {
	is := &busyJWT{issuer: &issuer{authority: newAuthority(t, "example.org", time.Hour)}}
	is.busy.Store(true)
	var skew atomic.Int64
	addr := serveWith(t, is, func(s *Server) {
		s.now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	}, me(t, "spiffe://example.org/agent/planner"))
	ctx := ctxFor(t)
	for _, aud := range []string{"a", "b", "c"} {
		if _, err := workloadapi.FetchJWTSVID(ctx, jwtsvidParams(aud), workloadapi.WithAddr(addr)); status.Code(err) != codes.Unavailable {
			t.Fatalf("FetchJWTSVID for %s = %v; want Unavailable", aud, err)
		}
	}
	if n := is.calls.Load(); n != 1 {
		t.Errorf("the authority was asked %d times within its Retry-After; want once", n)
	}
	is.busy.Store(false)
	skew.Store(int64(time.Minute + time.Second))
	if _, err := workloadapi.FetchJWTSVID(ctx, jwtsvidParams("d"), workloadapi.WithAddr(addr)); err != nil {
		t.Errorf("FetchJWTSVID once the Retry-After has passed = %v", err)
	}
}

// A call the authority refused asking not to be called again for a
// while (Retry-After) is made again no sooner, unless the X509-SVID held
// expires before: then at its expiry, as after any failure. The
// server's own back-off stands when it is the longer.
func TestFailedCallsWaitAsTheAuthorityAsks(t *testing.T) {
	id := spiffeid.RequireFromString("spiffe://example.org/agent/planner")
	is := &issuer{authority: newAuthority(t, "example.org", 5*time.Minute)}
	s, err := New([]Entry{me(t, id.String())}, is, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	wrapped := errors.Join(errors.New("renew"), busy{10 * time.Minute})
	for _, c := range []struct {
		name  string
		err   error
		retry time.Duration
		want  time.Duration
	}{
		{"a plain failure", errors.New("connection refused"), 2 * time.Second, 2 * time.Second},
		{"a Retry-After", wrapped, 2 * time.Second, 10 * time.Minute},
		{"a Retry-After shorter than the back-off", busy{time.Second}, 8 * time.Second, 8 * time.Second},
	} {
		if got := s.failure(id, c.err, c.retry); got != c.want {
			t.Errorf("%s: wait %s, want %s", c.name, got, c.want)
		}
		if got := retryWait(c.err, c.retry); got != c.want {
			t.Errorf("%s: the sync waits %s, want %s", c.name, got, c.want)
		}
	}

	// An X509-SVID held that expires in 5 minutes: asked again within
	// half of that, so that it is renewed before it lapses.
	svid, bundles, err := is.X509SVID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	h, err := hold(svid, id, bundles, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.update(id, h, bundles, s.ask()); err != nil {
		t.Fatal(err)
	}
	if got := s.failure(id, wrapped, 2*time.Second); got > 5*time.Minute/2 || got < 2*time.Minute {
		t.Errorf("with an X509-SVID held for 5 more minutes: wait %s, want half of that", got)
	}
	// The server's own back-off is not shortened by the cap.
	if got := s.failure(id, busy{time.Second}, 8*time.Second); got != 8*time.Second {
		t.Errorf("a short Retry-After, an X509-SVID held for 5 more minutes: wait %s, want the back-off, 8s", got)
	}
}

// The streams one user id's callers hold open are bounded: each holds
// its last answer and a goroutine for as long as its caller keeps it.
// One more is refused (ResourceExhausted), and admitted again once one
// of them ends.
func TestWorkloadAPIBoundsStreamsPerUID(t *testing.T) {
	is := &issuer{authority: newAuthority(t, "example.org", time.Hour)}
	addr := serve(t, is, me(t, "spiffe://example.org/agent/planner"))
	ctx := metadata.AppendToOutgoingContext(ctxFor(t), "workload.spiffe.io", "true")
	open := func(ctx context.Context, c pb.SpiffeWorkloadAPIClient) error {
		st, err := c.FetchX509Bundles(ctx, &pb.X509BundlesRequest{})
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	var c pb.SpiffeWorkloadAPIClient
	var held []context.CancelFunc
	defer func() {
		for _, cancel := range held {
			cancel()
		}
	}()
	for i := range maxOpenStreamsPerUID {
		if i%(maxStreams-1) == 0 {
			c = pb.NewSpiffeWorkloadAPIClient(rawConn(t, addr))
		}
		sctx, cancel := context.WithCancel(ctx)
		held = append(held, cancel)
		if err := open(sctx, c); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	c = pb.NewSpiffeWorkloadAPIClient(rawConn(t, addr))
	if err := open(ctx, c); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("stream %d of one user id = %v; want ResourceExhausted", maxOpenStreamsPerUID+1, err)
	}
	held[0]()
	for {
		// The stream ended is counted once the server has seen its end.
		sctx, cancel := context.WithCancel(ctx)
		err := open(sctx, c)
		cancel()
		if err == nil {
			break
		}
		if status.Code(err) != codes.ResourceExhausted || ctx.Err() != nil {
			t.Fatalf("a stream once another ended = %v; want it served", err)
		}
	}
}
