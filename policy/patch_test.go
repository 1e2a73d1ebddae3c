package policy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"

	"mandate.dev/mandate/policy"
)

// mandateJSON is data.mandate as an evaluation sees it, in JSON.
func mandateJSON(t *testing.T, e *policy.Engine) string {
	t.Helper()
	res, err := e.Eval(context.Background(), "mandate", nil, policy.EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(res.Value)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// many is an object of n entries, "<prefix>0" to "<prefix>n-1", each
// value its number.
func many(prefix string, n int) map[string]any {
	m := map[string]any{}
	for i := range n {
		m[fmt.Sprintf("%s%d", prefix, i)] = i
	}
	return m
}

// A patch changes the entries it names and keeps the others, as an
// evaluation sees them and as the documents are kept across a reload.
func TestPatchDocuments(t *testing.T) {
	type scopes struct {
		Scopes []string `json:"scopes"`
	}
	// Many entries changed: among few, the patched document is written
	// whole; among many, entry by entry.
	tenGone := []string{"x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9"}
	manyPatched := func(present int) string {
		m := many("x", present)
		for i := range 100 {
			m[fmt.Sprintf("x%d", i)] = -i
		}
		for _, id := range tenGone {
			delete(m, id)
		}
		b, _ := json.Marshal(map[string]any{"agents": m})
		return string(b)
	}
	negated := map[string]any{}
	for i := range 100 {
		negated[fmt.Sprintf("x%d", i)] = -i
	}
	for _, tc := range []struct {
		name     string
		dataJSON string         // the policy directory's data.json, if any
		set      map[string]any // SetDocuments before the patch, if any
		patches  map[string]policy.Patch
		want     string
	}{{
		name:    "set, replace and delete entries",
		set:     map[string]any{"agents": map[string]any{"a": 1, "b": 2}},
		patches: map[string]policy.Patch{"agents": {Set: map[string]any{"b": 3, "c": 4}, Delete: []string{"a"}}},
		want:    `{"agents":{"b":3,"c":4}}`,
	}, {
		name:    "deleting an entry that is not there",
		set:     map[string]any{"agents": map[string]any{"a": 1}},
		patches: map[string]policy.Patch{"agents": {Delete: []string{"zz"}}},
		want:    `{"agents":{"a":1}}`,
	}, {
		name:    "an entry both set and deleted is deleted",
		set:     map[string]any{"agents": map[string]any{"a": 1}},
		patches: map[string]policy.Patch{"agents": {Set: map[string]any{"a": 2, "b": 2}, Delete: []string{"a"}}},
		want:    `{"agents":{"b":2}}`,
	}, {
		name:    "a document not set yet starts empty",
		patches: map[string]policy.Patch{"agents": {Set: map[string]any{"a": 1}, Delete: []string{"b"}}},
		want:    `{"agents":{"a":1}}`,
	}, {
		name:    "a document that is no object starts empty",
		set:     map[string]any{"agents": "x", "trust_domain": "org-a.example"},
		patches: map[string]policy.Patch{"agents": {Set: map[string]any{"a": 1}}},
		want:    `{"agents":{"a":1},"trust_domain":"org-a.example"}`,
	}, {
		name:     "a document of the data files only is replaced",
		dataJSON: `{"mandate": {"agents": {"f": true}, "other": 1}}`,
		patches:  map[string]policy.Patch{"agents": {Set: map[string]any{"a": 1}}},
		want:     `{"agents":{"a":1},"other":1}`,
	}, {
		name: "two documents, and null entries",
		set:  map[string]any{"agents": map[string]any{"a": 1}, "nodes": map[string]any{"n": 1}},
		patches: map[string]policy.Patch{"agents": {Set: map[string]any{"b": nil}},
			"nodes": {Set: map[string]any{"m": 2}, Delete: []string{"n"}}},
		want: `{"agents":{"a":1,"b":null},"nodes":{"m":2}}`,
	}, {
		name: "values are taken as their JSON encoding",
		set:  map[string]any{"agents": map[string]any{}},
		patches: map[string]policy.Patch{"agents": {Set: map[string]any{
			"a": scopes{Scopes: []string{"calendar:read"}}, "b": []int{1, 2}}}},
		want: `{"agents":{"a":{"scopes":["calendar:read"]},"b":[1,2]}}`,
	}, {
		name:    "many entries among few",
		set:     map[string]any{"agents": many("x", 50)},
		patches: map[string]policy.Patch{"agents": {Set: negated, Delete: tenGone}},
		want:    manyPatched(50),
	}, {
		name:    "many entries among many",
		set:     map[string]any{"agents": many("x", 5000)},
		patches: map[string]policy.Patch{"agents": {Set: negated, Delete: tenGone}},
		want:    manyPatched(5000),
	}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writePolicy(t, dir, "p.rego", "package p\nimport rego.v1\nx := 1\n")
			if tc.dataJSON != "" {
				writePolicy(t, dir, "data.json", tc.dataJSON)
			}
			e := newEngine(t, policy.Options{Dir: dir})
			ctx := context.Background()
			if tc.set != nil {
				if err := e.SetDocuments(ctx, tc.set); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.PatchDocuments(ctx, tc.patches); err != nil {
				t.Fatal(err)
			}
			if got := mandateJSON(t, e); got != tc.want {
				t.Errorf("data.mandate after the patch: %s, want %s", got, tc.want)
			}
			writePolicy(t, dir, "q.rego", "package q\nimport rego.v1\ny := 2\n")
			if _, _, err := e.Reload(ctx, nil); err != nil {
				t.Fatal(err)
			}
			if got := mandateJSON(t, e); got != tc.want {
				t.Errorf("data.mandate after a reload: %s, want %s", got, tc.want)
			}
		})
	}
}

// A patch that fails (here: a value with no JSON encoding) changes no
// document, neither for evaluations nor for the revisions reloads make;
// the next patch applies to the documents as they were.
func TestAFailingPatchChangesNothing(t *testing.T) {
	dir := t.TempDir()
	writePolicy(t, dir, "p.rego", "package p\nimport rego.v1\nx := 1\n")
	e := newEngine(t, policy.Options{Dir: dir})
	ctx := context.Background()
	if err := e.SetDocuments(ctx, map[string]any{"agents": map[string]any{"a": 1}, "nodes": map[string]any{"n": 1}}); err != nil {
		t.Fatal(err)
	}
	const want = `{"agents":{"a":1},"nodes":{"n":1}}`
	bad := many("b", 20)
	bad["bad"] = make(chan int)
	for _, patches := range []map[string]policy.Patch{
		{"agents": {Set: bad, Delete: []string{"a"}}, "nodes": {Set: map[string]any{"m": 1}, Delete: []string{"n"}}},
		{"nodes": {Set: map[string]any{"m": 1}, Delete: []string{"n"}}, "other": {Set: bad}},
		{"agents": {Set: many("c", 100), Delete: []string{"a"}}, "nodes": {Set: bad}},
	} {
		if err := e.PatchDocuments(ctx, patches); err == nil {
			t.Fatal("a patch with a value of no JSON encoding: no error")
		}
		if got := mandateJSON(t, e); got != want {
			t.Fatalf("data.mandate after a failed patch: %s, want %s", got, want)
		}
	}
	writePolicy(t, dir, "q.rego", "package q\nimport rego.v1\ny := 2\n")
	if _, _, err := e.Reload(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := mandateJSON(t, e); got != want {
		t.Fatalf("data.mandate after failed patches and a reload: %s, want %s", got, want)
	}
	if err := e.PatchDocuments(ctx, map[string]policy.Patch{"agents": {Set: map[string]any{"b": 2}}}); err != nil {
		t.Fatal(err)
	}
	if got, want := mandateJSON(t, e), `{"agents":{"a":1,"b":2},"nodes":{"n":1}}`; got != want {
		t.Errorf("data.mandate after the next patch: %s, want %s", got, want)
	}
}

// A patch of one entry costs that entry, not the document: with 100,000
// entries present, it allocates far less than a copy of the document
// would (5 MB).
func TestAPatchOfOneEntryDoesNotCopyTheDocument(t *testing.T) {
	e := newEngine(t, policy.Options{})
	ctx := context.Background()
	if err := e.SetDocuments(ctx, map[string]any{"agents": many("spiffe://org-a.example/agent/", 100_000)}); err != nil {
		t.Fatal(err)
	}
	const patches, limit = 20, 64 << 10
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range patches {
		id := fmt.Sprintf("spiffe://org-a.example/agent/%d", i)
		if err := e.PatchDocuments(ctx, map[string]policy.Patch{"agents": {Set: map[string]any{id: map[string]any{"scopes": []string{"calendar:read"}}}}}); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if perPatch := (after.TotalAlloc - before.TotalAlloc) / patches; perPatch > limit {
		t.Errorf("a patch of one entry among 100,000 allocates %d bytes, want at most %d", perPatch, limit)
	}
	res, err := e.Eval(ctx, "mandate/agents/spiffe:%2F%2Forg-a.example%2Fagent%2F7", nil, policy.EvalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(res.Value); string(b) != `{"scopes":["calendar:read"]}` {
		t.Errorf("the patched entry: %s", b)
	}
}
