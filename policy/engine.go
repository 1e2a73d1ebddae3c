package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/util"

	"mandate.dev/mandate/policies"
	"mandate.dev/mandate/store"
)

// Errors callers branch on.
var (
	// ErrRejected: a policy set did not compile, or its tests failed. The
	// error's text holds the compiler's (or the tests') messages.
	ErrRejected = errors.New("policy: rejected")
	// ErrEval: evaluation failed (a conflict, a builtin error, a timeout).
	ErrEval = errors.New("policy: evaluation failed")
	// ErrBadPath: a data path that names no document Mandate will evaluate.
	ErrBadPath = errors.New("policy: invalid data path")
	// ErrTimeout: evaluation ran out of time (it matches ErrEval too).
	ErrTimeout = fmt.Errorf("%w: timed out", ErrEval)
	// ErrCanceled: the caller gave up before evaluation ended, its
	// context canceled (a client that hung up); it matches ErrEval too.
	ErrCanceled = fmt.Errorf("%w: canceled by its caller", ErrEval)
)

// errTimedOut is the cause of an evaluation's own timeout.
var errTimedOut = errors.New("policy: the evaluation timeout passed")

// DefaultTimeout bounds one evaluation: generous, since the bound is there
// to stop a runaway policy, not to shed load (an evaluation that waits for
// a CPU on a busy server still counts its wait).
const DefaultTimeout = time.Second

// maxPrepared bounds the prepared queries kept per revision: paths come
// from callers, and a query outside the cache is prepared for one use.
// Only paths of the policy's rule tree are kept (see namesRules), so a
// policy of fewer rules and packages than this is never refused a slot.
const maxPrepared = 1024

// Options configure an Engine.
type Options struct {
	// Dir is a policy directory replacing the embedded policies (*.rego,
	// *_test.rego, data.json / data.yaml at any depth, as OPA loads them).
	Dir string
	// Timeout bounds one evaluation (default DefaultTimeout).
	Timeout time.Duration
	// Required are data paths ("mandate/issuance/decision") every
	// revision must define, by a rule or a data document: a revision
	// that leaves one of them out is refused (ErrRejected), since every
	// evaluation of it would be undefined.
	Required []string
	// Now is the clock evaluations see (time.now_ns; default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Engine evaluates Rego policies. It is safe for concurrent use; a reload
// swaps in a whole new revision atomically, so an evaluation sees one
// revision from start to end. A reload builds and tests the new revision
// without holding up evaluations or data writes: they wait, if at all,
// only for the swap.
type Engine struct {
	opts Options
	cur  atomic.Pointer[revision]

	reloading chan struct{} // holds one token while a reload runs: serializes reloads

	mu sync.Mutex // serializes data writes and a reload's swap; guards dyn and dynGen
	// dyn are Mandate's own documents under data.mandate (kept across
	// reloads), as the active revision's store holds them. Its objects
	// are the engine's own, changed in place by patches: no store holds
	// them (each store has objects of its own, see ownCopy), nor does
	// anything read them without mu. The values inside them are never
	// changed in place, so stores and dyn share those.
	dyn    map[string]any
	dynGen uint64 // counts data writes, so that a reload knows its copy of dyn is stale

	testHookBuilt   func() // tests: called once a reload's revision is built and tested
	testHookRead    func() // tests: called between two reads of a policy directory
	testHookTesting func() // tests: called once Test's Rego tests hold their store's read transaction
}

// revision is one loaded, compiled and tested policy set.
type revision struct {
	id       string
	dynGen   uint64 // the data writes its data.mandate holds
	files    []string
	compiler *ast.Compiler
	store    storage.Store
	modules  map[string]*ast.Module
	docs     []byte // the data files' documents (JSON), without data.mandate

	preparedMu sync.RWMutex
	prepared   map[string]*rego.PreparedEvalQuery
}

// New loads the policies (the embedded ones unless opts.Dir is set),
// compiles them and runs their tests; it fails with ErrRejected if either
// fails.
func New(ctx context.Context, opts Options) (*Engine, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{opts: opts, dyn: map[string]any{}, reloading: make(chan struct{}, 1)}
	rev, err := e.build(ctx)
	if err != nil {
		return nil, err
	}
	e.cur.Store(rev)
	return e, nil
}

// Revision is the id of the active revision: the SHA-256 of every module
// and data document loaded.
func (e *Engine) Revision() string { return e.cur.Load().id }

// Files lists the modules of the active revision.
func (e *Engine) Files() []string { return slices.Clone(e.cur.Load().files) }

// Reload re-reads the policies, and activates them if they compile and
// their tests pass; otherwise the active revision stays and the error
// (ErrRejected) says why. approve (if not nil) is called with the old and
// the new revision ids before the new one is activated; if it fails,
// nothing changes. Reload returns the old and the active revision ids.
//
// Loading, compiling and testing the new revision hold up nothing but
// another reload: evaluations go on with the active revision, and data
// writes made meanwhile are carried into the new one when it is swapped
// in. Only the swap (and approve) waits for data writes, and they for it
// (and for the copy of data.mandate the reload starts with: a copy of
// each document's entries, not of their values).
// ctx bounds the Rego tests (each is also bounded at 10 s).
func (e *Engine) Reload(ctx context.Context, approve func(old, cur string) error) (old, cur string, err error) {
	select { // another reload first, but no longer than ctx allows
	case e.reloading <- struct{}{}:
	case <-ctx.Done():
		return e.cur.Load().id, e.cur.Load().id, fmt.Errorf("policy: waiting for another reload: %w", ctx.Err())
	}
	defer func() { <-e.reloading }()
	if err := ctx.Err(); err != nil { // its caller gave up while it waited
		return e.cur.Load().id, e.cur.Load().id, fmt.Errorf("policy: waiting for another reload: %w", err)
	}
	old = e.cur.Load().id
	rev, err := e.build(ctx)
	if err != nil {
		return old, old, err
	}
	if e.testHookBuilt != nil {
		e.testHookBuilt()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.catchUp(ctx, rev); err != nil {
		return old, old, err
	}
	if approve != nil {
		if err := approve(old, rev.id); err != nil {
			return old, old, err
		}
	}
	e.cur.Store(rev)
	return old, rev.id, nil
}

// build loads, compiles and tests a revision, with data.mandate as the
// data writes so far left it.
func (e *Engine) build(ctx context.Context) (*revision, error) {
	e.mu.Lock()
	dyn, gen := ownCopy(e.dyn), e.dynGen
	e.mu.Unlock()
	rev, err := e.load(ctx, dyn)
	if err != nil {
		return nil, err
	}
	rev.dynGen = gen
	return rev, nil
}

// catchUp writes into rev's store the documents data writes changed since
// rev was built. e.mu is held.
func (e *Engine) catchUp(ctx context.Context, rev *revision) error {
	if rev.dynGen == e.dynGen {
		return nil
	}
	if err := writeStore(ctx, rev.store, ownCopy(e.dyn)); err != nil {
		return err
	}
	rev.dynGen = e.dynGen
	return nil
}

// source is the file system the policies come from.
func (e *Engine) source() (fs.FS, string) {
	if e.opts.Dir != "" {
		return os.DirFS(e.opts.Dir), e.opts.Dir
	}
	return policies.FS, "embedded policies"
}

// policyFiles is what one read of a policy directory found: its
// modules and data, and the revision id they make.
type policyFiles struct {
	res   *loader.Result
	id    string
	files []string
	docs  []byte
}

// read reads the policies once.
func (e *Engine) read() (*policyFiles, error) {
	fsys, name := e.source()
	res, err := loader.NewFileLoader().WithFS(fsys).WithRegoVersion(ast.RegoV1).All([]string{"."})
	if err != nil {
		return nil, fmt.Errorf("%w: load %s: %v", ErrRejected, name, err)
	}
	if len(res.Modules) == 0 {
		return nil, fmt.Errorf("%w: %s holds no .rego module", ErrRejected, name)
	}
	h := sha256.New()
	var files []string
	for _, k := range slices.Sorted(maps.Keys(res.Modules)) {
		f := res.Modules[k]
		files = append(files, f.Name)
		fmt.Fprintf(h, "module %d %s\n", len(f.Name), f.Name)
		h.Write(f.Raw)
		h.Write([]byte{'\n'})
	}
	docs, err := json.Marshal(res.Documents) // keys sorted: a canonical form
	if err != nil {
		return nil, fmt.Errorf("%w: data: %v", ErrRejected, err)
	}
	fmt.Fprintf(h, "data %d\n", len(docs))
	h.Write(docs)
	return &policyFiles{res: res, id: hex.EncodeToString(h.Sum(nil)), files: files, docs: docs}, nil
}

// readSettled reads a policy directory until two reads in a row find
// the same files: a directory being written while it is read (a file
// renamed into place, several files changed one after the other) is
// not loaded as a mix of old and new files. After maxPolicyReads reads
// that differ it is refused; the embedded policies are read once.
func (e *Engine) readSettled(ctx context.Context) (*policyFiles, error) {
	last, err := e.read()
	if e.opts.Dir == "" {
		return last, err
	}
	for range maxPolicyReads - 1 {
		if e.testHookRead != nil {
			e.testHookRead()
		}
		cur, cerr := e.read()
		if err == nil && cerr == nil && cur.id == last.id {
			return cur, nil
		}
		last, err = cur, cerr
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("policy: %s: %w", e.opts.Dir, ctx.Err())
		case <-time.After(policyReadPause):
		}
	}
	if err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: %s changed while it was read, %d times: load it once its writes are done", ErrRejected, e.opts.Dir, maxPolicyReads-1)
}

// maxPolicyReads bounds the reads of a policy directory that keeps
// changing; policyReadPause is the pause between two that differ.
const (
	maxPolicyReads  = 4
	policyReadPause = 100 * time.Millisecond
)

// load loads, compiles and tests the policies, with dyn under
// data.mandate.
func (e *Engine) load(ctx context.Context, dyn map[string]any) (*revision, error) {
	_, name := e.source()
	pf, err := e.readSettled(ctx)
	if err != nil {
		return nil, err
	}
	res, files, docs := pf.res, pf.files, pf.docs
	modules := res.ParsedModules()

	compiler := newCompiler()
	if compiler.Compile(modules); compiler.Failed() {
		return nil, fmt.Errorf("%w: %s does not compile:\n%s", ErrRejected, name, formatErrors(compiler.Errors))
	}
	var missing []string
	for _, p := range e.opts.Required {
		ref, err := PathRef(p)
		if err != nil {
			return nil, fmt.Errorf("%w: required document %q: %v", ErrRejected, p, err)
		}
		if !defines(compiler, res.Documents, ref) {
			missing = append(missing, "  "+ref.String())
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s defines no rule or data document for what Mandate asks (each would be undefined, a deny):\n%s",
			ErrRejected, name, strings.Join(missing, "\n"))
	}
	data := res.Documents
	if data == nil {
		data = map[string]any{}
	}
	mergeMandate(data, dyn)
	store := inmem.NewFromObjectWithOpts(data, inmem.OptRoundTripOnWrite(false))
	rev := &revision{id: pf.id, files: files, compiler: compiler, store: store,
		modules: modules, docs: docs, prepared: map[string]*rego.PreparedEvalQuery{}}
	err = rev.test(ctx, store)
	if ctx.Err() != nil {
		// Cut short by the caller's deadline: never activated, whatever
		// the tests that ran said (those that did not run said nothing),
		// and not refused either (ErrRejected would name a test that
		// merely was running).
		return nil, fmt.Errorf("policy: %s: the Rego tests did not finish: %w", name, ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrRejected, name, err)
	}
	return rev, nil
}

// defines reports whether a revision of these rules and data documents
// may define the document at ref: a rule at ref or below it, a rule
// above it (whose value may hold it), or a data document at ref.
func defines(c *ast.Compiler, docs map[string]any, ref ast.Ref) bool {
	node := c.RuleTree
	for _, t := range ref {
		if len(node.Values) > 0 {
			break // a rule above ref: its value may hold ref
		}
		if node = node.Child(t.Value); node == nil {
			break
		}
	}
	if node != nil {
		return true
	}
	var doc any = docs
	for _, s := range refSegments(ref) {
		m, ok := doc.(map[string]any)
		if !ok {
			return false
		}
		if doc, ok = m[s]; !ok {
			return false
		}
	}
	return true
}

// newCompiler is a compiler as a revision's modules are compiled with.
func newCompiler() *ast.Compiler { return ast.NewCompiler().WithStrict(false) }

// mergeMandate puts Mandate's own documents under data.mandate, next to
// what the operator's data files put there.
func mergeMandate(data, dyn map[string]any) {
	m, _ := data["mandate"].(map[string]any)
	if m == nil {
		m = map[string]any{}
		data["mandate"] = m
	}
	maps.Copy(m, dyn)
}

func formatErrors(errs ast.Errors) string {
	var b strings.Builder
	for _, e := range errs {
		b.WriteString("  ")
		b.WriteString(e.Error())
		b.WriteByte('\n')
	}
	return strings.TrimRight(b.String(), "\n")
}

// TestResult is one Rego test's outcome.
type TestResult struct {
	Package, Name string
	Fail          bool
	Error         string
	Duration      time.Duration
}

// test runs the revision's Rego tests on st; any failure or error
// rejects it.
func (r *revision) test(ctx context.Context, st storage.Store) error {
	results, err := r.runTests(ctx, st, nil)
	if err != nil {
		return err
	}
	var bad []string
	for _, t := range results {
		switch {
		case t.Error != "":
			bad = append(bad, fmt.Sprintf("  %s.%s: error: %s", t.Package, t.Name, t.Error))
		case t.Fail:
			bad = append(bad, fmt.Sprintf("  %s.%s: FAIL", t.Package, t.Name))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d of %d Rego tests fail:\n%s", len(bad), len(results), strings.Join(bad, "\n"))
	}
	return nil
}

// runTests runs the revision's Rego tests on st, in one read transaction
// (hook, if not nil, is called once it is open). They run on a compiler
// of their own: OPA's test runner compiles its modules again, with
// stages of its own, in the compiler it is given, and the revision's
// compiler is the one its evaluations read, at any time.
func (r *revision) runTests(ctx context.Context, st storage.Store, hook func()) ([]TestResult, error) {
	txn, err := st.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	defer st.Abort(ctx, txn)
	if hook != nil {
		hook()
	}
	ch, err := tester.NewRunner().SetCompiler(newCompiler()).SetStore(st).SetModules(r.modules).
		SetTimeout(10*time.Second).RunTests(ctx, txn)
	if err != nil {
		return nil, fmt.Errorf("run Rego tests: %w", err)
	}
	var out []TestResult
	for res := range ch {
		t := TestResult{Package: strings.TrimPrefix(res.Package, "data."), Name: res.Name, Fail: res.Fail, Duration: res.Duration}
		if res.Error != nil {
			t.Error = res.Error.Error()
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b TestResult) int { return strings.Compare(a.Package+"."+a.Name, b.Package+"."+b.Name) })
	return out, nil
}

// Test runs the Rego tests of the active revision, on a copy of its data
// (the data files' documents and data.mandate as it is now): a test run,
// however long, holds up no data write and so no decision (they wait
// only for the copy of data.mandate's entries it starts with).
func (e *Engine) Test(ctx context.Context) ([]TestResult, error) {
	e.mu.Lock()
	rev, dyn := e.cur.Load(), ownCopy(e.dyn)
	e.mu.Unlock()
	var data map[string]any
	if err := util.UnmarshalJSON(rev.docs, &data); err != nil {
		return nil, fmt.Errorf("policy: data: %w", err)
	}
	if data == nil {
		data = map[string]any{}
	}
	mergeMandate(data, dyn)
	return rev.runTests(ctx, inmem.NewFromObjectWithOpts(data, inmem.OptRoundTripOnWrite(false)), e.testHookTesting)
}

// SetData sets one of Mandate's own documents, data.mandate.<key> (the
// trust domain, federated trust domains, agents, nodes). It is kept
// across reloads.
func (e *Engine) SetData(ctx context.Context, key string, value any) error {
	return e.SetDocuments(ctx, map[string]any{key: value})
}

// SetDocuments sets several of Mandate's own documents in one store
// transaction: an evaluation sees all of them changed, or none.
func (e *Engine) SetDocuments(ctx context.Context, docs map[string]any) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	vals := make(map[string]any, len(docs))
	for key, value := range docs {
		v, err := jsonValue(value)
		if err != nil {
			return fmt.Errorf("policy: data.mandate.%s: %w", key, err)
		}
		vals[key] = v
	}
	if err := writeStore(ctx, e.cur.Load().store, vals); err != nil {
		return err
	}
	maps.Copy(e.dyn, ownCopy(vals)) // the store has vals' objects
	e.dynGen++
	return nil
}

// jsonValue is value as a round trip through JSON gives it back: the
// store holds JSON values only. What is already made of them (objects of
// map[string]any, arrays of []any or []string, strings of valid UTF-8,
// finite float64, bools and nil) is copied as it is, without being
// encoded: a rebuild of data.mandate.agents encodes no registration. Any
// other value, and a map or slice holding one (or a string that is not
// valid UTF-8, which JSON changes), is round-tripped (roundTrip).
func jsonValue(value any) (any, error) {
	v, ok := jsonNative(value, 0)
	if ok {
		return v, nil
	}
	return roundTrip(value)
}

// maxNativeDepth is the nesting jsonNative copies; a deeper value is
// round-tripped, so that one deeper than a decoding accepts is refused,
// and one that holds itself found (encoding/json looks for cycles past
// this depth), as the round trip does.
const maxNativeDepth = 1000

// jsonNative is jsonValue's copy of value when value is made of JSON
// values only, and ok; else not ok. depth is value's nesting.
func jsonNative(value any, depth int) (v any, ok bool) {
	if depth > maxNativeDepth {
		return nil, false
	}
	switch x := value.(type) {
	case nil, bool:
		return x, true
	case string:
		return x, utf8.ValidString(x)
	case float64:
		return x, !math.IsNaN(x) && !math.IsInf(x, 0)
	case map[string]any:
		if x == nil {
			return nil, true // null
		}
		out := make(map[string]any, len(x))
		for k, e := range x {
			if !utf8.ValidString(k) {
				return nil, false
			}
			if out[k], ok = jsonNative(e, depth+1); !ok {
				return nil, false
			}
		}
		return out, true
	case []any:
		return nativeSlice(x, depth)
	case []string:
		return nativeSlice(x, depth)
	}
	return nil, false
}

// nativeSlice is jsonNative of a slice: an array of jsonNative's copies
// of its elements, or null for a nil slice.
func nativeSlice[T any](x []T, depth int) (any, bool) {
	if x == nil {
		return nil, true
	}
	out := make([]any, len(x))
	for i, e := range x {
		v, ok := jsonNative(e, depth+1)
		if !ok {
			return nil, false
		}
		out[i] = v
	}
	return out, true
}

// roundTrip is value encoded as JSON and decoded again.
func roundTrip(value any) (any, error) {
	b, err := json.Marshal(value)
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// ownCopy is a copy of documents in which each object is a copy of its
// own (a shallow one: the values inside are shared, never changed in
// place). A store is given objects no other store or dyn holds, since
// patches change them in place.
func ownCopy(docs map[string]any) map[string]any {
	out := make(map[string]any, len(docs))
	for key, v := range docs {
		if m, ok := v.(map[string]any); ok {
			v = maps.Clone(m)
		}
		out[key] = v
	}
	return out
}

// Patch changes some entries of one of Mandate's own documents that is
// an object (data.mandate.agents, say): Set adds or replaces entries,
// Delete removes them.
type Patch struct {
	Set    map[string]any
	Delete []string
}

// entry is a patch's change of one entry: its new value, or deleted.
type entry struct {
	value   any
	deleted bool
}

// writeByEntry reports whether a patch of n entries of documents of size
// entries in all is written into the store one entry at a time, rather
// than each patched document whole (a copy with the patch applied): a
// store transaction compares each write with those before it, so n
// writes cost about n² comparisons, and a copy about its size (a
// comparison costs a fraction of a copied entry).
func writeByEntry(n, size int) bool { return n <= 64 || n*n <= 4*size }

// PatchDocuments applies patches to Mandate's own object documents in
// one store transaction, as SetDocuments would the whole documents: an
// evaluation sees all of them changed, or none, and a patch that fails
// changes nothing. Only the patched entries are encoded and written, the
// others kept as they are, so that a change of one agent among thousands
// costs that agent only. A document not set yet (or not an object)
// starts empty.
func (e *Engine) PatchDocuments(ctx context.Context, patches map[string]Patch) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	changes := make(map[string]map[string]entry, len(patches))
	n, size := 0, 0
	for key, p := range patches {
		c := make(map[string]entry, len(p.Set)+len(p.Delete))
		for id, value := range p.Set {
			v, err := jsonValue(value)
			if err != nil {
				return fmt.Errorf("policy: data.mandate.%s[%q]: %w", key, id, err)
			}
			c[id] = entry{value: v}
		}
		for _, id := range p.Delete {
			c[id] = entry{deleted: true}
		}
		changes[key] = c
		n += len(c)
		if m, ok := e.dyn[key].(map[string]any); ok {
			size += len(m)
		}
	}
	perEntry := writeByEntry(n, size)
	st := e.cur.Load().store
	txn, err := st.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return fmt.Errorf("policy: data.mandate: %w", err)
	}
	for key, c := range changes {
		if err := writePatch(ctx, st, txn, key, e.dyn[key], c, perEntry); err != nil {
			st.Abort(ctx, txn)
			return fmt.Errorf("policy: data.mandate.%s: %w", key, err)
		}
	}
	if err := st.Commit(ctx, txn); err != nil {
		return fmt.Errorf("policy: data.mandate: %w", err)
	}
	for key, c := range changes {
		m, ok := e.dyn[key].(map[string]any)
		if !ok {
			m = make(map[string]any, len(c))
			e.dyn[key] = m
		}
		applyEntries(m, c)
	}
	e.dynGen++
	return nil
}

// writePatch writes into st (in txn) the change c of the document key,
// whose value is cur (as dyn holds it, and so the store): entry by entry
// if perEntry and cur is an object, otherwise as a whole new object.
func writePatch(ctx context.Context, st storage.Store, txn storage.Transaction, key string, cur any, c map[string]entry, perEntry bool) error {
	old, isObject := cur.(map[string]any)
	if !isObject || !perEntry {
		m := make(map[string]any, len(old)+len(c))
		maps.Copy(m, old)
		applyEntries(m, c)
		return st.Write(ctx, txn, storage.AddOp, storage.Path{"mandate", key}, m)
	}
	for id, en := range c {
		path := storage.Path{"mandate", key, id}
		switch _, present := old[id]; {
		case en.deleted && !present: // nothing to remove
		case en.deleted:
			if err := st.Write(ctx, txn, storage.RemoveOp, path, nil); err != nil {
				return fmt.Errorf("[%q]: %w", id, err)
			}
		default:
			if err := st.Write(ctx, txn, storage.AddOp, path, en.value); err != nil {
				return fmt.Errorf("[%q]: %w", id, err)
			}
		}
	}
	return nil
}

// applyEntries applies the change c to the object m.
func applyEntries(m map[string]any, c map[string]entry) {
	for id, en := range c {
		if en.deleted {
			delete(m, id)
		} else {
			m[id] = en.value
		}
	}
}

// writeStore writes JSON values under data.mandate in st, in one
// transaction.
func writeStore(ctx context.Context, st storage.Store, vals map[string]any) error {
	txn, err := st.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return fmt.Errorf("policy: data.mandate: %w", err)
	}
	for key, v := range vals {
		if err := st.Write(ctx, txn, storage.AddOp, storage.Path{"mandate", key}, v); err != nil {
			st.Abort(ctx, txn)
			return fmt.Errorf("policy: data.mandate.%s: %w", key, err)
		}
	}
	if err := st.Commit(ctx, txn); err != nil {
		return fmt.Errorf("policy: data.mandate: %w", err)
	}
	return nil
}

// EvalOptions are the per-evaluation options of the Data API.
type EvalOptions struct {
	Metrics bool
	// Instrument adds the evaluator's finer metrics (OPA's instrument).
	Instrument bool
	// StrictBuiltinErrors makes a builtin's error (to_number("x")) an
	// evaluation error (ErrEval), as OPA's strict-builtin-errors does;
	// without it, the expression is undefined, as OPA's default.
	StrictBuiltinErrors bool
	// Time replaces the clock for this evaluation (time.now_ns()): a
	// recorded decision replays with its recorded eval_time.
	Time time.Time
}

// Result is one evaluation.
type Result struct {
	Revision string
	Defined  bool
	// Value is JSON-compatible (map[string]any, []any, json.Number...),
	// the caller's own: a copy, never the store's value.
	Value    any
	Metrics  map[string]any
	EvalTime time.Time
}

// Eval evaluates the document at path (slash-separated, relative to data;
// empty for the whole of data) with input (nil: no input).
func (e *Engine) Eval(ctx context.Context, path string, input ast.Value, opts EvalOptions) (*Result, error) {
	rev := e.cur.Load()
	q, err := rev.query(ctx, path)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, e.opts.Timeout, errTimedOut)
	defer cancel()
	now := opts.Time
	if now.IsZero() {
		now = e.opts.Now()
	}
	// The store is read in a transaction of Eval's own, held until the
	// result is copied out of it: a result that is (or holds) a data
	// document is the store's own value, which a data write changes in
	// place once the transaction ends.
	txn, err := rev.store.NewTransaction(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEval, err)
	}
	defer rev.store.Abort(ctx, txn)
	// The evaluation stops once ctx is done (its timeout, or its caller
	// gone): a callback of ctx's, where OPA would start a goroutine of
	// its own to wait for it.
	stop := topdown.NewCancel()
	defer context.AfterFunc(ctx, stop.Cancel)()
	evalOpts := make([]rego.EvalOption, 0, 7)
	evalOpts = append(evalOpts, rego.EvalTime(now), rego.EvalTransaction(txn), rego.EvalExternalCancel(stop))
	if input != nil {
		evalOpts = append(evalOpts, rego.EvalParsedInput(input))
	}
	var m metrics.Metrics
	if opts.Metrics {
		m = metrics.New()
		evalOpts = append(evalOpts, rego.EvalMetrics(m))
		if opts.Instrument {
			evalOpts = append(evalOpts, rego.EvalInstrument(true))
		}
	} else {
		evalOpts = append(evalOpts, rego.EvalMetrics(metrics.NoOp())) // OPA's own otherwise, kept by none
	}
	var builtinErrs []topdown.Error
	if opts.StrictBuiltinErrors {
		evalOpts = append(evalOpts, rego.EvalBuiltinErrorList(&builtinErrs))
	}
	rs, err := q.Eval(ctx, evalOpts...)
	res := &Result{Revision: rev.id, EvalTime: now}
	if m != nil {
		res.Metrics = m.All()
	}
	if err == nil && len(builtinErrs) > 0 {
		err = &builtinErrs[0]
	}
	if err != nil {
		switch cause := context.Cause(ctx); {
		case cause == errTimedOut:
			return res, fmt.Errorf("%w after %s: %w", ErrTimeout, e.opts.Timeout, err)
		case errors.Is(ctx.Err(), context.DeadlineExceeded): // the caller's own deadline
			return res, fmt.Errorf("%w: the caller's deadline passed: %w", ErrTimeout, err)
		case ctx.Err() != nil: // the caller gave up (a client that hung up): no timeout
			return res, fmt.Errorf("%w: %w", ErrCanceled, err)
		}
		return res, fmt.Errorf("%w: %w", ErrEval, err)
	}
	if len(rs) > 0 && len(rs[0].Expressions) > 0 {
		res.Defined, res.Value = true, copyJSON(rs[0].Expressions[0].Value)
	}
	return res, nil
}

// copyJSON is a deep copy of a JSON value's objects and arrays (its
// other values are never changed in place).
func copyJSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = copyJSON(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = copyJSON(e)
		}
		return out
	}
	return v
}

// query returns the prepared query for path, preparing it on first use.
// Only paths of the rule tree (a rule, or a package holding rules) are
// kept, keyed by their canonical spelling: a caller cannot fill the cache
// with paths of nothing, nor with the endless paths inside a rule's value
// (data.p.deny.x1, data.p.deny.x2, ...), which would leave no room for
// the decision points and other callers' rules.
func (r *revision) query(ctx context.Context, path string) (*rego.PreparedEvalQuery, error) {
	r.preparedMu.RLock()
	q, ok := r.prepared[path]
	r.preparedMu.RUnlock()
	if ok {
		return q, nil
	}
	ref, err := PathRef(path)
	if err != nil {
		return nil, err
	}
	key := CanonicalPath(refSegments(ref))
	if key != path {
		r.preparedMu.RLock()
		q, ok := r.prepared[key]
		r.preparedMu.RUnlock()
		if ok {
			return q, nil
		}
	}
	pq, err := rego.New(rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))),
		rego.Compiler(r.compiler), rego.Store(r.store)).PrepareForEval(ctx)
	if err != nil {
		// The compiler's errors (a path it refuses: an index into an
		// array that no array has, a key a rule's value cannot hold)
		// are kept, for callers to name their code.
		return nil, fmt.Errorf("%w: %w", ErrEval, err)
	}
	r.preparedMu.Lock()
	defer r.preparedMu.Unlock()
	if q, ok := r.prepared[key]; ok {
		return q, nil
	}
	if len(r.prepared) < maxPrepared && namesRules(r.compiler, ref) {
		r.prepared[key] = &pq
	}
	return &pq, nil
}

// namesRules reports whether ref is a path of the compiler's rule tree:
// a rule's, or a package's (or a prefix of one) that holds rules. A path
// below a rule (into its value) is not one.
func namesRules(c *ast.Compiler, ref ast.Ref) bool {
	node := c.RuleTree
	for _, t := range ref {
		if node = node.Child(t.Value); node == nil {
			return false
		}
	}
	return true
}

// Limits of a data path.
const (
	maxPathLen      = 512
	maxPathSegments = 32
)

// PathSegments splits a data path as the Data API takes it: segments
// separated by "/", each percent-decoded ("%2F" is a slash within a key,
// so that a key such as a SPIFFE ID can be addressed); empty segments are
// skipped, as OPA skips them. Segments must be valid UTF-8.
func PathSegments(path string) ([]string, error) {
	if len(path) > maxPathLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrBadPath, maxPathLen)
	}
	var segs []string
	for _, raw := range strings.Split(path, "/") {
		if raw == "" {
			continue
		}
		s, err := url.PathUnescape(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrBadPath, raw, err)
		}
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("%w: a segment is not valid UTF-8", ErrBadPath)
		}
		segs = append(segs, s)
	}
	if len(segs) > maxPathSegments {
		return nil, fmt.Errorf("%w: more than %d segments", ErrBadPath, maxPathSegments)
	}
	return segs, nil
}

// CanonicalPath is the one spelling of a path: its segments, each
// percent-encoded, joined by "/".
func CanonicalPath(segs []string) string {
	esc := make([]string, len(segs))
	for i, s := range segs {
		esc[i] = url.PathEscape(s)
	}
	return strings.Join(esc, "/")
}

// PathRef turns a data path ("mandate/authz/allow") into the reference
// data.mandate.authz.allow (see PathSegments).
func PathRef(path string) (ast.Ref, error) {
	segs, err := PathSegments(path)
	if err != nil {
		return nil, err
	}
	ref := ast.Ref{ast.DefaultRootDocument}
	for _, s := range segs {
		// As OPA's Data API: a segment that reads as an integer is a
		// number, an index into an array ("arr/1" is data.arr[1]). It is
		// read as OPA reads it (util.Atoi64): a sign, at most 19 digits,
		// and a fraction of zeros allowed ("1.0" and "1." are 1).
		if i, ok := util.Atoi64(s); ok {
			ref = append(ref, ast.NumberTerm(json.Number(strconv.FormatInt(i, 10))))
		} else {
			ref = append(ref, ast.StringTerm(s))
		}
	}
	return ref, nil
}

func refSegments(ref ast.Ref) []string {
	segs := make([]string, 0, len(ref)-1)
	for _, t := range ref[1:] {
		switch v := t.Value.(type) {
		case ast.String:
			segs = append(segs, string(v))
		case ast.Number:
			segs = append(segs, string(v))
		}
	}
	return segs
}

// NewDecisionID returns a new decision id: a UUIDv7 ([store.NewID]) in
// its usual text form, so ids sort by the millisecond they were made in.
func NewDecisionID() string {
	b := store.NewID()
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// ParseInput decodes a JSON value into the form evaluation takes.
func ParseInput(b []byte) (ast.Value, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return ast.InterfaceToValue(v)
}
