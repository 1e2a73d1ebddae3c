package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/client"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/delegation"
	"mandate.dev/mandate/policies"
)

func runBenchDelegate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench delegate", "bench delegate [flags]", stderr)
	conc := fs.Int("concurrency", 16, "delegation requests in flight")
	dur := fs.Duration("duration", 5*time.Second, "how long to measure each part")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *conc < 1 || *conc > 1024 {
		return usagef("--concurrency must be 1..1024")
	}
	tuneGC()
	tmp, err := os.MkdirTemp("", "mandate-bench-delegate-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	pdir := filepath.Join(tmp, "policies")
	if err := os.CopyFS(pdir, policies.FS); err != nil {
		return err
	}
	srv, err := startMandateServer(ctx, tmp, pdir)
	if err != nil {
		return err
	}
	defer srv.stop()
	w, err := newDelegateWorld(ctx, srv.url, filepath.Join(tmp, "mandate-data", "admin"))
	if err != nil {
		return fmt.Errorf("bench setup: %w", err)
	}

	// End to end: the same root hop requested again and again.
	body, err := w.rootRequest()
	if err != nil {
		return err
	}
	cpu0 := srv.cpu()
	res, err := load(ctx, "delegate", *conc, *dur, func(int) (*benchConn, error) {
		return newBenchConn(srv.url, "/v1/delegations", body, w.a.TLSConfig())
	}, func(ans []byte) error {
		var a struct{ Token string }
		if json.Unmarshal(ans, &a) != nil || a.Token == "" {
			return fmt.Errorf("bench: no token in %.200s", ans)
		}
		return nil
	})
	if err != nil {
		return err
	}
	cpu := (srv.cpu() - cpu0) / time.Duration(max(res.ops, 1))

	// Offline: a 3-hop chain verified again and again.
	tok, err := w.chain(ctx)
	if err != nil {
		return err
	}
	verifies, vlat, err := benchVerify(ctx, tok, w.set, w.d, *dur)
	if err != nil {
		return err
	}

	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "measure\tconcurrency\tops\tops/s\tp50\tp99\tserver CPU per op\ttarget")
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	fmt.Fprintf(tw, "delegations (mTLS → policy → sign → durable audit → answer)\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s (≥ 3,000/s, p99 < 20ms)\n",
		*conc, res.ops, res.opsPerSec(), res.p50.Round(time.Microsecond), res.p99.Round(time.Microsecond), cpu.Round(time.Microsecond),
		verdict(res.opsPerSec() >= 3000 && res.p99 < 20*time.Millisecond))
	fmt.Fprintf(tw, "offline 3-hop chain verifications (one goroutine per core)\t-\t%d\t%.0f\t%s\t\t\t%s (≥ 10,000/s)\n",
		verifies, float64(verifies)/dur.Seconds(), vlat.Round(time.Microsecond), verdict(float64(verifies)/dur.Seconds() >= 10000))
	tw.Flush()
	if res.errors > 0 {
		fmt.Fprintf(stdout, "%d errors; first: %v\n", res.errors, res.firstErr)
	}
	return nil
}

// delegateWorld is a node with four agents on the bench server: a may
// delegate calendar:read; b, c and d receive.
type delegateWorld struct {
	a, b, c *client.Client
	ids     [4]spiffeid.ID
	keys    [4]crypto.Signer
	chains  [4][]*x509.Certificate
	set     *spiffebundle.Set
	d       spiffeid.ID
}

func newDelegateWorld(ctx context.Context, url, adminCreds string) (*delegateWorld, error) {
	chain, key, bundle, err := credfile.Load(credfile.In(adminCreds))
	if err != nil {
		return nil, err
	}
	admin, err := client.New(client.Config{Server: url, SVID: chain, Key: key, Bundle: bundle})
	if err != nil {
		return nil, err
	}
	tok, err := admin.CreateJoinToken(ctx, time.Minute)
	if err != nil {
		return nil, err
	}
	nodeKey, csr, err := client.NewKeyAndCSR()
	if err != nil {
		return nil, err
	}
	pub, err := client.New(client.Config{Server: url, Bundle: bundle})
	if err != nil {
		return nil, err
	}
	nodeAns, err := pub.Join(ctx, tok.Token, csr)
	if err != nil {
		return nil, err
	}
	nodeChain, err := nodeAns.Certificates()
	if err != nil {
		return nil, err
	}
	node, err := client.New(client.Config{Server: url, SVID: nodeChain, Key: nodeKey, Bundle: bundle})
	if err != nil {
		return nil, err
	}
	w := &delegateWorld{}
	var clients [4]*client.Client
	for i, name := range []string{"bench-a", "bench-b", "bench-c", "bench-d"} {
		id := spiffeid.RequireFromSegments(admin.TrustDomain(), "agent", name)
		var scopes []string
		if i == 0 {
			scopes = []string{"calendar:read"}
		}
		if _, err := admin.CreateAgent(ctx, &client.Agent{SPIFFEID: id.String(), NodeIDs: []string{nodeAns.SPIFFEID}, Scopes: scopes}); err != nil {
			return nil, err
		}
		k, csr, err := client.NewKeyAndCSR()
		if err != nil {
			return nil, err
		}
		ans, err := node.X509SVID(ctx, id.String(), csr)
		if err != nil {
			return nil, err
		}
		ch, err := ans.Certificates()
		if err != nil {
			return nil, err
		}
		if clients[i], err = client.New(client.Config{Server: url, SVID: ch, Key: k, Bundle: bundle, MaxConns: 64}); err != nil {
			return nil, err
		}
		w.ids[i], w.keys[i], w.chains[i] = id, k, ch
		if i == 0 {
			m, err := ans.ParseBundles()
			if err != nil {
				return nil, err
			}
			w.set = spiffebundle.NewSet()
			for _, b := range m {
				w.set.Add(b)
			}
		}
	}
	w.a, w.b, w.c, w.d = clients[0], clients[1], clients[2], w.ids[3]
	return w, nil
}

// request is the body of a hop from agent i to agent j.
func (w *delegateWorld) request(i, j int, principal, parent, parentID string) ([]byte, error) {
	st := delegation.Statement{Delegator: w.ids[i].String(), Delegatee: w.ids[j].String(), Principal: principal, Scopes: []string{"calendar:read"}, Parent: parentID}
	if parentID != "" {
		st.ParentIssuer = w.ids[0].TrustDomain().IDString()
	}
	sig, err := delegation.SignStatement(st, w.keys[i], w.chains[i])
	if err != nil {
		return nil, err
	}
	body := map[string]any{"delegatee": w.ids[j].String(), "scopes": st.Scopes, "delegator_signature": sig}
	if parent != "" {
		body["parent_token"] = parent
	} else {
		body["principal"] = principal
	}
	return json.Marshal(body)
}

func (w *delegateWorld) rootRequest() ([]byte, error) { return w.request(0, 1, "alice", "", "") }

// chain issues a → b → c → d and returns the last token.
func (w *delegateWorld) chain(ctx context.Context) (string, error) {
	clients := []*client.Client{w.a, w.b, w.c}
	tok, parentID := "", ""
	for i := range 3 {
		principal := "alice"
		body, err := w.request(i, i+1, principal, tok, parentID)
		if err != nil {
			return "", err
		}
		var raw map[string]any
		_ = json.Unmarshal(body, &raw)
		var ans struct{ ID, Token string }
		if err := clients[i].Do(ctx, http.MethodPost, "/v1/delegations", raw, &ans); err != nil {
			return "", fmt.Errorf("hop %d: %w", i+1, err)
		}
		tok, parentID = ans.Token, ans.ID
	}
	return tok, nil
}

// benchVerify verifies tok repeatedly, one goroutine per core, for dur.
func benchVerify(ctx context.Context, tok string, set *spiffebundle.Set, holder spiffeid.ID, dur time.Duration) (int, time.Duration, error) {
	if _, err := delegation.Verify(tok, set, delegation.VerifyOptions{Presenter: holder}); err != nil {
		return 0, 0, err
	}
	deadline := time.Now().Add(dur)
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			var mine []time.Duration
			var err error
			for time.Now().Before(deadline) && ctx.Err() == nil && err == nil {
				t := time.Now()
				if _, err = delegation.Verify(tok, set, delegation.VerifyOptions{Presenter: holder}); err == nil {
					mine = append(mine, time.Since(t))
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if firstErr != nil {
		return 0, 0, fmt.Errorf("bench: a verification failed: %w", firstErr)
	}
	if len(lat) == 0 {
		return 0, 0, fmt.Errorf("bench: no verification succeeded")
	}
	slices.Sort(lat)
	return len(lat), lat[len(lat)/2], nil
}
