package policy

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// A reload compiles and tests the new revision without holding up data
// writes and decisions: both complete while the reload is still at work
// (held at its end here until they have), and a write made meanwhile is
// in the revision the reload activates.
func TestDataWritesAndDecisionsDoNotWaitForAReload(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("authz.rego", "package authz\nimport rego.v1\nallow if data.mandate.agents[input.id]\n")
	ctx := context.Background()
	e, err := New(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	allowed := func(id string) bool {
		t.Helper()
		res, err := e.Eval(ctx, "authz/allow", ast.MustInterfaceToValue(map[string]any{"id": id}), EvalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return res.Defined && res.Value == true
	}
	if err := e.SetDocuments(ctx, map[string]any{"agents": map[string]any{"a": true}}); err != nil {
		t.Fatal(err)
	}
	rev1 := e.Revision()

	building, release := make(chan struct{}), make(chan struct{})
	e.testHookBuilt = func() { close(building); <-release }
	write("extra.rego", "package extra\nimport rego.v1\nhello := \"world\"\n")
	reloaded := make(chan error, 1)
	go func() {
		_, _, err := e.Reload(ctx, nil)
		reloaded <- err
	}()
	<-building // the new revision is built and tested, not yet active
	if err := e.PatchDocuments(ctx, map[string]Patch{"agents": {Set: map[string]any{"b": true}}}); err != nil {
		t.Fatal(err)
	}
	if !allowed("a") || !allowed("b") || e.Revision() != rev1 {
		t.Fatalf("during a reload: a=%v b=%v revision changed=%v, want the old revision answering with the new data", allowed("a"), allowed("b"), e.Revision() != rev1)
	}
	close(release)
	if err := <-reloaded; err != nil {
		t.Fatal(err)
	}
	if e.Revision() == rev1 || !allowed("a") || !allowed("b") {
		t.Fatalf("after the reload: revision changed=%v a=%v b=%v, want the new revision with the data written during the reload", e.Revision() != rev1, allowed("a"), allowed("b"))
	}
}
