package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
)

// A patch made after a reload is seen by the evaluations of the new
// revision, and not by an evaluation of the old one still in flight:
// the two revisions' stores share no document a patch changes in place.
func TestAPatchAfterAReloadLeavesTheOldRevisionAlone(t *testing.T) {
	e, write := agentsEngine(t)
	ctx := context.Background()
	if err := e.SetDocuments(ctx, map[string]any{"agents": map[string]any{"a": true}}); err != nil {
		t.Fatal(err)
	}
	if err := e.PatchDocuments(ctx, map[string]Patch{"agents": {Set: map[string]any{"b": true}}}); err != nil {
		t.Fatal(err)
	}
	old := e.cur.Load()
	q, err := old.query(ctx, "authz/allow")
	if err != nil {
		t.Fatal(err)
	}
	// An evaluation of the old revision in flight: it holds its store's
	// read transaction from start to end.
	txn, err := old.store.NewTransaction(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer old.store.Abort(ctx, txn)
	oldAllowed := func(id string) bool {
		t.Helper()
		rs, err := q.Eval(ctx, rego.EvalTransaction(txn), rego.EvalParsedInput(ast.MustInterfaceToValue(map[string]any{"id": id})))
		if err != nil {
			t.Fatal(err)
		}
		return len(rs) > 0 && rs[0].Expressions[0].Value == true
	}
	if !oldAllowed("a") || !oldAllowed("b") || oldAllowed("c") {
		t.Fatal("the old revision before the reload: want a and b allowed, c not")
	}

	write("extra.rego", "package extra\nimport rego.v1\nhello := \"world\"\n")
	if _, _, err := e.Reload(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if e.cur.Load() == old {
		t.Fatal("the reload activated no new revision")
	}
	if err := e.PatchDocuments(ctx, map[string]Patch{"agents": {Set: map[string]any{"c": true}, Delete: []string{"a"}}}); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"a": false, "b": true, "c": true} {
		res, err := e.Eval(ctx, "authz/allow", ast.MustInterfaceToValue(map[string]any{"id": id}), EvalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Defined && res.Value == true; got != want {
			t.Errorf("the new revision after the patch: allow %s = %v, want %v", id, got, want)
		}
	}
	if !oldAllowed("a") || !oldAllowed("b") || oldAllowed("c") {
		t.Errorf("the old revision's evaluation in flight saw the patch: a=%v b=%v c=%v, want a and b allowed, c not",
			oldAllowed("a"), oldAllowed("b"), oldAllowed("c"))
	}
	v, err := old.store.Read(ctx, txn, storage.Path{"mandate", "agents"})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(v); string(b) != `{"a":true,"b":true}` {
		t.Errorf("the old revision's data.mandate.agents after the patch: %s, want {\"a\":true,\"b\":true}", b)
	}
}

// Evaluations, patches, whole-document writes, reloads and test runs at
// the same time: the race detector finds no value changed under a
// reader, every evaluation (and Rego test) sees data.mandate.agents and
// nodes with the same keys (each patch changes both: all or none), and
// the data written last is what the engine ends with, reloads and all.
func TestConcurrentPatchesEvaluationsAndReloads(t *testing.T) {
	e, write := agentsEngine(t)
	ctx := context.Background()
	if err := e.SetDocuments(ctx, map[string]any{"agents": map[string]any{}, "nodes": map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	// The Rego tests, run by each reload and test run, read the documents.
	write("authz_test.rego", "package authz_test\nimport rego.v1\n"+
		"test_agents_and_nodes_agree if object.keys(data.mandate.agents) == object.keys(data.mandate.nodes)\n")
	const writes, reloads = 300, 3
	var reloaded atomic.Int64
	want := map[string]any{}
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() { // the one writer: want is the data it leaves
		defer close(done)
		for i := 0; i < writes || reloaded.Load() < reloads; i++ {
			id, gone := fmt.Sprintf("id%d", i%17), fmt.Sprintf("id%d", (i+5)%17)
			var err error
			if i%50 == 49 { // now and then, the whole documents
				doc := maps.Clone(want)
				err = e.SetDocuments(ctx, map[string]any{"agents": doc, "nodes": doc})
			} else {
				want[id] = map[string]any{"n": float64(i)}
				delete(want, gone)
				p := Patch{Set: map[string]any{id: map[string]any{"n": i}}, Delete: []string{gone}}
				err = e.PatchDocuments(ctx, map[string]Patch{"agents": p, "nodes": p})
			}
			if err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			write("extra.rego", fmt.Sprintf("package extra\nimport rego.v1\nn := %d\n", i%2))
			if _, _, err := e.Reload(ctx, nil); err != nil {
				t.Error(err)
				return
			}
			res, err := e.Test(ctx)
			if err != nil || len(res) != 1 || res[0].Fail || res[0].Error != "" {
				t.Errorf("a test run: %+v, %v; want its one test passing", res, err)
				return
			}
			reloaded.Add(1)
		}
	})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				res, err := e.Eval(ctx, "mandate", nil, EvalOptions{})
				if err != nil {
					t.Error(err)
					return
				}
				m := res.Value.(map[string]any)
				agents, nodes := m["agents"].(map[string]any), m["nodes"].(map[string]any)
				if a, n := slices.Sorted(maps.Keys(agents)), slices.Sorted(maps.Keys(nodes)); !slices.Equal(a, n) {
					t.Errorf("an evaluation saw a patch half done: agents %v, nodes %v", a, n)
					return
				}
				if _, err := e.Eval(ctx, "authz/allow", ast.MustInterfaceToValue(map[string]any{"id": "id3"}), EvalOptions{}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	check := func(when string) {
		t.Helper()
		res, err := e.Eval(ctx, "mandate", nil, EvalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wantJSON, _ := json.Marshal(map[string]any{"agents": want, "nodes": want})
		if got, _ := json.Marshal(res.Value); string(got) != string(wantJSON) {
			t.Errorf("data.mandate %s: %s, want %s", when, got, wantJSON)
		}
	}
	check("after the writes")
	write("extra.rego", "package extra\nimport rego.v1\nn := 2\n")
	if _, _, err := e.Reload(ctx, nil); err != nil {
		t.Fatal(err)
	}
	check("after one more reload")
}
