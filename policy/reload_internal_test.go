package policy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// agentsEngine is an engine of a policy directory whose authz.allow
// holds for the ids in data.mandate.agents, and a function that writes a
// file there.
func agentsEngine(t *testing.T) (*Engine, func(name, text string)) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("authz.rego", "package authz\nimport rego.v1\nallow if data.mandate.agents[input.id]\n")
	e, err := New(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return e, write
}

// A reload compiles and tests the new revision without holding up data
// writes and decisions: both complete while the reload is still at work
// (held at its end here until they have), and a write made meanwhile is
// in the revision the reload activates.
func TestDataWritesAndDecisionsDoNotWaitForAReload(t *testing.T) {
	e, write := agentsEngine(t)
	ctx := context.Background()
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

// Running the active revision's Rego tests (POST /v1/admin/policy/test)
// holds up no data write and so no decision: they run on a copy of its
// data, with data.mandate as it is when they start.
func TestRunningTheTestsHoldsUpNoWrite(t *testing.T) {
	e, write := agentsEngine(t)
	ctx := context.Background()
	if err := e.SetDocuments(ctx, map[string]any{"agents": map[string]any{"a": true}}); err != nil {
		t.Fatal(err)
	}
	write("authz_test.rego", "package authz_test\nimport rego.v1\ntest_a_is_known if data.mandate.agents.a\n")
	if _, _, err := e.Reload(ctx, nil); err != nil {
		t.Fatal(err)
	}

	running, release := make(chan struct{}), make(chan struct{})
	e.testHookTesting = func() { close(running); <-release }
	results := make(chan []TestResult, 1)
	go func() {
		res, err := e.Test(ctx)
		if err != nil {
			t.Error(err)
		}
		results <- res
	}()
	<-running // the run has its store open
	wrote := make(chan error, 1)
	go func() { wrote <- e.PatchDocuments(ctx, map[string]Patch{"agents": {Set: map[string]any{"b": true}}}) }()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // a deadlock, not a slow machine
		t.Fatal("a data write waited for the Rego tests to finish")
	}
	res, err := e.Eval(ctx, "authz/allow", ast.MustInterfaceToValue(map[string]any{"id": "b"}), EvalOptions{})
	if err != nil || res.Value != true {
		t.Errorf("a decision during the run = %v, %v; want the new data's allow", res.Value, err)
	}
	close(release)
	if got := <-results; len(got) != 1 || got[0].Fail || got[0].Error != "" {
		t.Errorf("the run's results = %+v, want its one test passing on the data it started with", got)
	}
}

// A reload its caller's deadline cuts short is not the policy's fault:
// its error is the context's, never ErrRejected naming a test that merely
// was running; the active revision stays.
func TestReloadCutShortIsNotRejected(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte("package authz\nimport rego.v1\nallow if input.ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := New(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	rev := e.Revision()
	if err := os.WriteFile(filepath.Join(dir, "authz_test.rego"), []byte("package authz_test\nimport rego.v1\ntest_allow if data.authz.allow with input as {\"ok\": true}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, cur, err := e.Reload(ctx, nil); !errors.Is(err, context.Canceled) || errors.Is(err, ErrRejected) || cur != rev || e.Revision() != rev {
		t.Errorf("Reload with its context ended = %v (revision changed: %v), want the context's error and the revision kept", err, e.Revision() != rev)
	}
	if _, _, err := e.Reload(context.Background(), nil); err != nil {
		t.Errorf("the same policies, given time = %v", err)
	}
	// Tests that end in errors because the deadline cut them short are
	// the deadline's, not the policy's.
	if err := os.WriteFile(filepath.Join(dir, "authz_test.rego"), []byte("package authz_test\nimport rego.v1\ntest_allow if data.authz.allow with input as {\"ok\": false}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := e.load(ctx, nil); !errors.Is(err, context.Canceled) || errors.Is(err, ErrRejected) {
		t.Errorf("load with failing tests and its context ended = %v, want the context's error", err)
	}
	if _, err := e.load(context.Background(), nil); !errors.Is(err, ErrRejected) {
		t.Errorf("load with a failing test = %v, want ErrRejected", err)
	}
}

// Running the active revision's Rego tests leaves its compiler alone:
// OPA's test runner compiles the modules again in the compiler it is
// given, and evaluations read the active compiler at any time (with the
// race detector, decisions made while the tests run show it).
func TestRunningTheTestsLeavesTheActiveCompilerAlone(t *testing.T) {
	e, write := agentsEngine(t)
	ctx := context.Background()
	write("authz_test.rego", "package authz_test\nimport rego.v1\ntest_unknown_is_denied if not data.authz.allow with input as {\"id\": \"x\"}\n")
	if _, _, err := e.Reload(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.SetDocuments(ctx, map[string]any{"agents": map[string]any{"a": true}}); err != nil {
		t.Fatal(err)
	}
	rev := e.cur.Load()
	tree, modules := rev.compiler.RuleTree, rev.compiler.Modules
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 20; i++ {
			res, err := e.Eval(ctx, "authz/allow", ast.MustInterfaceToValue(map[string]any{"id": "a"}), EvalOptions{})
			if err != nil || res.Value != true {
				t.Errorf("a decision while the tests run = %v, %v; want allow", res, err)
				return
			}
			if _, err := e.Eval(ctx, "authz", nil, EvalOptions{}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 3; i++ {
		res, err := e.Test(ctx)
		if err != nil || len(res) != 1 || res[0].Fail || res[0].Error != "" {
			t.Fatalf("Test = %+v, %v", res, err)
		}
	}
	<-done
	if rev.compiler.RuleTree != tree || !maps.Equal(rev.compiler.Modules, modules) {
		t.Fatal("running the tests compiled the active revision's modules again, in its compiler")
	}
}

// A directory written while it is read is not loaded as a mix of old and
// new files: it is read until two reads in a row agree (one file is
// changed after the first read here, as a second file of one change
// written a moment after the first), and refused if it never settles.
func TestReloadReadsADirectoryUntilItSettles(t *testing.T) {
	e, write := agentsEngine(t)
	ctx := context.Background()
	write("data.json", `{"level": "old"}`)
	if _, _, err := e.Reload(ctx, nil); err != nil {
		t.Fatal(err)
	}
	level := func() any {
		t.Helper()
		res, err := e.Eval(ctx, "authz/level", nil, EvalOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return res.Value
	}

	// The module changes with the first read; the data file after it.
	write("authz.rego", "package authz\nimport rego.v1\nallow if data.mandate.agents[input.id]\nlevel := data.level\n")
	reads := 0
	e.testHookRead = func() {
		if reads++; reads == 1 {
			write("data.json", `{"level": "new"}`)
		}
	}
	t.Cleanup(func() { e.testHookRead = nil })
	if _, _, err := e.Reload(ctx, nil); err != nil {
		t.Fatalf("Reload of a directory that settled = %v", err)
	}
	if got := level(); got != "new" {
		t.Fatalf("the revision loaded holds level %v, want the settled directory's (new)", got)
	}

	// Never settling: refused, the active revision stays.
	rev := e.Revision()
	n := 0
	e.testHookRead = func() {
		n++
		write("data.json", fmt.Sprintf(`{"level": "v%d"}`, n))
	}
	if _, _, err := e.Reload(ctx, nil); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "changed while it was read") {
		t.Fatalf("Reload of a directory that keeps changing = %v, want it refused", err)
	}
	if e.Revision() != rev || level() != "new" {
		t.Fatal("a refused reload changed the active revision")
	}
}
