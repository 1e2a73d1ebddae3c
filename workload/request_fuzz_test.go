package workload

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	pb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// FuzzWorkloadRequests hands the Workload API's unary calls what a local
// caller may send (a token to validate, audiences, a SPIFFE ID): every
// answer is a JWT-SVID or a status the specification names, never a
// panic or an internal error.
func FuzzWorkloadRequests(f *testing.F) {
	home := newAuthority(f, "example.org", time.Hour)
	is := &issuer{authority: home}
	s, err := New([]Entry{me(f, "spiffe://example.org/agent/planner")}, is, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	svid, bundles, err := is.X509SVID(context.Background(), s.entries[0].ID)
	if err != nil {
		f.Fatal(err)
	}
	h, err := hold(svid, s.entries[0].ID, bundles, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	s.update(s.entries[0].ID, h, bundles, s.ask())
	good, _, err := is.JWTSVID(context.Background(), s.entries[0].ID, []string{"billing"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, "billing", "")
	f.Add(good, "other", "spiffe://example.org/agent/planner")
	f.Add("e30.e30.", "billing", "spiffe://example.org/agent/other")
	f.Add("not a token", "", "spiffe://EXAMPLE.org/x")
	f.Add(good[:len(good)-3]+"AAA", "billing\x00", "spiffe://example.org/agent/planner/")
	ctx := peer.NewContext(metadata.NewIncomingContext(context.Background(), metadata.Pairs("workload.spiffe.io", "true")),
		&peer.Peer{AuthInfo: callerInfo{Caller{UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}}})
	allowed := map[codes.Code]bool{codes.InvalidArgument: true, codes.PermissionDenied: true, codes.Unavailable: true}
	f.Fuzz(func(t *testing.T, token, audience, spiffeID string) {
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if ans, err := s.ValidateJWTSVID(callCtx, &pb.ValidateJWTSVIDRequest{Svid: token, Audience: audience}); err != nil {
			if !allowed[status.Code(err)] {
				t.Fatalf("ValidateJWTSVID = %v", err)
			}
		} else if ans.SpiffeId != "spiffe://example.org/agent/planner" {
			t.Fatalf("ValidateJWTSVID validated a token of %q", ans.SpiffeId)
		}
		var aud []string
		if audience != "" {
			aud = []string{audience}
		}
		if ans, err := s.FetchJWTSVID(callCtx, &pb.JWTSVIDRequest{Audience: aud, SpiffeId: spiffeID}); err != nil {
			if !allowed[status.Code(err)] {
				t.Fatalf("FetchJWTSVID = %v", err)
			}
		} else if len(ans.Svids) != 1 || ans.Svids[0].SpiffeId != "spiffe://example.org/agent/planner" {
			t.Fatalf("FetchJWTSVID = %v", ans)
		}
	})
}
