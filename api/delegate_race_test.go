package api_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/client"
	"mandate.dev/mandate/policies"
)

// gatedDelegationPolicy writes the shipped policies to a directory, the
// delegation policy's allow waiting on an HTTP request (http.send) to a
// server the test holds: entered says a decision is waiting, release
// lets every one go on.
func gatedDelegationPolicy(t *testing.T) (dir string, entered <-chan struct{}, release func()) {
	t.Helper()
	in, out := make(chan struct{}, 8), make(chan struct{})
	gate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in <- struct{}{}
		<-out
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	}))
	var once sync.Once
	release = func() { once.Do(func() { close(out) }) }
	t.Cleanup(gate.Close)
	t.Cleanup(release) // before the server closes: cleanups run last first
	dir = t.TempDir()
	for _, f := range []string{"issuance.rego", "authzen.rego", "data.json", "delegation.rego"} {
		b, err := policies.FS.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if f == "delegation.rego" {
			const allow = "allow if count(deny) == 0"
			if !strings.Contains(string(b), allow) {
				t.Fatalf("delegation.rego has no %q to gate", allow)
			}
			b = []byte(strings.Replace(string(b), allow,
				"allow if {\n\tcount(deny) == 0\n\thttp.send({\"method\": \"GET\", \"url\": \""+gate.URL+"\"}).status_code == 200\n}", 1))
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, in, release
}

// An admin change committed while a hop is being decided (after the
// delegator's registration and host were read, before the hop's commit)
// is not outrun: the hop is refused as it would be if asked afterwards,
// and no token is handed out.
func TestAdminChangeDuringADelegationRefusesIt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		change  func(e *env, a identity) error
		problem string
	}{
		{"node banned", func(e *env, a identity) error {
			host, err := authority.HostNode(a.chain[0])
			if err != nil {
				return err
			}
			_, err = e.admin.BanNode(ctxT(e.t), host.String(), "compromised")
			return err
		}, "node-banned"},
		{"registration deleted", func(e *env, a identity) error {
			return e.admin.DeleteAgent(ctxT(e.t), e.registrationOf(a.id).ID)
		}, "agent-not-registered"},
		{"delegatee's registration deleted", func(e *env, a identity) error {
			return e.admin.DeleteAgent(ctxT(e.t), e.registrationOf(spiffeid.RequireFromSegments(e.td, "agent", "b")).ID)
		}, "invalid-request"},
		{"scope withdrawn from the registration", func(e *env, a identity) error {
			reg := e.registrationOf(a.id)
			reg.Scopes = []string{"calendar:write"}
			_, err := e.admin.UpdateAgent(ctxT(e.t), reg.ID, &reg)
			return err
		}, "scope-not-granted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, entered, release := gatedDelegationPolicy(t)
			e := start(t, "org-a.example", func(c *authority.Config) { c.Policy.Dir = dir })
			a := e.agentWithScopes("a", "calendar:read")
			b := e.agentWithScopes("b")
			type result struct {
				tok string
				p   *client.Problem
			}
			done := make(chan result, 1)
			go func() {
				tok, p := e.delegate(a, delegateReq{delegatee: b, scopes: []string{"calendar:read"}, principal: "alice"})
				done <- result{tok, p}
			}()
			<-entered // the delegator was read; the policy is deciding
			err := tc.change(e, a)
			release()
			r := <-done
			if err != nil {
				t.Fatal(err)
			}
			if r.p == nil || problemName(r.p) != tc.problem {
				t.Fatalf("the hop asked before the change, committed after: token %t, problem %+v; want %s", r.tok != "", r.p, tc.problem)
			}
			if issued := e.auditOf("delegation.issued", b.id.String()); len(issued) != 0 {
				t.Errorf("%d delegation.issued entries, want none", len(issued))
			}
		})
	}
}
