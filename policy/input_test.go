package policy

import (
	"fmt"
	"testing"
	"time"
)

// TestInputValue checks that the input built without JSON is the value
// JSON gives: null for nil maps and slices, strings as UTF-8 text,
// integers exact, anything else through JSON.
func TestInputValue(t *testing.T) {
	type host struct {
		Level string `json:"level"`
		Seen  time.Time
	}
	for _, tc := range []struct {
		name string
		in   any
	}{
		{"nil", nil},
		{"scalars", map[string]any{"s": "a", "b": true, "i": 3, "i64": int64(1) << 53, "neg": -7}},
		{"nested", map[string]any{"delegator": map[string]any{"scopes": []string{"a", "b"}, "host": map[string]any{"banned": false}}}},
		{"nil map and slices", map[string]any{"m": map[string]any(nil), "s": []string(nil), "a": []any(nil)}},
		{"empty", map[string]any{"m": map[string]any{}, "s": []string{}, "a": []any{}}},
		{"slices of maps", map[string]any{"chain": []map[string]any{{"spiffe_id": "spiffe://a/b", "revoked": true}}}},
		{"any elements", []any{"x", 1, nil, []string{"y"}}},
		{"invalid UTF-8", map[string]any{"s": "a\xffb", "l": []string{"ok", "\xfe"}, "k\xff": 1}},
		{"struct and time", map[string]any{"h": host{Level: "tpm", Seen: time.Unix(1700000000, 5).UTC()}}},
		{"float", map[string]any{"f": 1.5, "big": 1e21}},
		{"uint", map[string]any{"u": uint32(7)}},
		{"deep", deep(100)},
		{"a hop's facts", map[string]any{"delegator": map[string]any{"spiffe_id": "spiffe://a/b", "revoked": false, "banned": true,
			"host": map[string]any{"level": "tpm", "lapsed": false}}, "depth": 1, "exp": int64(1_800_000_000), "chain": []any{},
			"parent": nil, "kind": "x509"}},
		{"many keys", many(40)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := viaJSON(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := inputValue(tc.in, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got.Compare(want) != 0 {
				t.Errorf("inputValue = %v, JSON gives %v", got, want)
			}
		})
	}
}

func many(n int) map[string]any {
	m := map[string]any{}
	for i := range n {
		m[fmt.Sprint("k", i)] = i
	}
	return m
}

func deep(n int) any {
	var v any = "leaf"
	for range n {
		v = map[string]any{"a": []any{v}}
	}
	return v
}

// TestInputValueCycle checks that a cyclic input is an error, not a
// crash.
func TestInputValueCycle(t *testing.T) {
	m := map[string]any{}
	m["self"] = m
	if _, err := inputValue(m, 0); err == nil {
		t.Fatal("a cyclic input was accepted")
	}
}
