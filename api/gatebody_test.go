package api_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"testing"
	"time"
)

// TestRoleCheckedBeforeBodyIsAsked: a caller without an endpoint's role
// is refused before the server asks for the request's body (no 100
// Continue) or waits for it.
func TestRoleCheckedBeforeBodyIsAsked(t *testing.T) {
	e := start(t, "org-a.example")
	node := e.joinNode()
	for _, tc := range []struct {
		name   string
		c      *http.Client
		path   string
		status int
		typ    string
	}{
		{"anonymous to an admin endpoint", e.rawClient(nil, nil), "/v1/admin/agents", 401, "unauthenticated"},
		{"anonymous to delegations", e.rawClient(nil, nil), "/v1/delegations", 401, "unauthenticated"},
		{"anonymous to svid", e.rawClient(nil, nil), "/v1/svid/x509", 401, "unauthenticated"},
		{"anonymous to authzen", e.rawClient(nil, nil), "/access/v1/evaluation", 401, "unauthenticated"},
		{"node to an admin endpoint", e.rawClient(node.chain, node.key), "/v1/admin/join-tokens", 403, "forbidden"},
		{"node to delegations", e.rawClient(node.chain, node.key), "/v1/delegations", 403, "forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, w := io.Pipe()
			defer w.Close()
			var asked atomic.Bool
			ctx := httptrace.WithClientTrace(ctxT(t), &httptrace.ClientTrace{Got100Continue: func() {
				// The server waits for a body that will not come.
				asked.Store(true)
				w.CloseWithError(errors.New("the body was asked for"))
			}})
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url+tc.path, body)
			req.ContentLength = 100
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Expect", "100-continue")
			tc.c.Transport.(*http.Transport).ExpectContinueTimeout = time.Minute
			resp, err := tc.c.Do(req)
			if asked.Load() {
				t.Fatal("the server asked for the body (100 Continue) of a caller without the role")
			}
			if err != nil {
				t.Fatal(err)
			}
			if status, typ := problemOfAnswer(t, resp); status != tc.status || typ != tc.typ {
				t.Fatalf("answer %d %s, want %d %s", status, typ, tc.status, tc.typ)
			}
		})
	}
}
