package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// referenceCanonical is canonicalDetails written the obvious way, with
// encoding/json: decode into any (UseNumber) and write the value back with
// sorted keys. canonicalDetails must agree with it.
func referenceCanonical(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the value")
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, errors.New("not an object")
	}
	return appendReference(nil, v), nil
}

func appendReference(b []byte, v any) []byte {
	switch v := v.(type) {
	case map[string]any:
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range v {
				if !yield(k) {
					return
				}
			}
		})
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendReference(b, v[k])
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendReference(b, x)
		}
		return append(b, ']')
	case string:
		return appendString(b, v)
	case json.Number:
		return append(b, v...)
	case bool:
		return append(b, map[bool]string{true: "true", false: "false"}[v]...)
	default:
		return append(b, "null"...)
	}
}

var canonicalSeeds = []string{
	`{}`, ` {} `, "\t{\r\n}\n", `{"a":1}`, `{"b":1,"a":2}`, `{"a":1,"a":2}`, `{"a":{"a":1,"a":[]},"a":3,"b":{}}`,
	`{"n":[0,-0,1.5,-1e10,1E+2,2e-3,12345678901234567890]}`, `{"n":01}`, `{"n":1.}`, `{"n":-}`, `{"n":.5}`, `{"n":1e}`,
	`{"s":"\"\\\/\b\f\n\r\t\u0000\u001f\u00e9\u2028"}`, `{"s":"\ud83d\ude00"}`, `{"s":"\ud83d"}`, `{"s":"\ud83dx"}`,
	`{"s":"\ude00\ud83d\ude00"}`, `{"s":"\ud83d\u0041"}`, `{"s":"\ud83d\u"}`, `{"s":"\x"}`, `{"s":"\'"}`,
	"{\"s\":\"\x01\"}", `{"s":"é😀"}`, `{"é":1,"e":2,"😀":3,"ｚ":4}`,
	`{"t":[true,false,null]}`, `{"t":tru}`, `{"t":nul}`, `{"a":1,}`, `{,}`, `{"a" 1}`, `{"a":[1,]}`, `{"a":[,1]}`,
	`{"a":1}{}`, `{"a":1} x`, `[]`, `"s"`, `1`, `null`, ``, `{`, `{"a":`, `{"a":"`, `{"a":[`,
	`{"a":` + strings.Repeat("[", 98) + strings.Repeat("]", 98) + `}`,
	`{"a":` + strings.Repeat("[", 99) + strings.Repeat("]", 99) + `}`,
	`{"a":` + strings.Repeat(`{"a":`, 99) + `1` + strings.Repeat("}", 99) + `}`,
	`{"a":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
}

// depth returns the nesting depth of canonical JSON (no brackets in
// strings are counted).
func depth(canonical []byte) int {
	d, deepest, inString := 0, 0, false
	for i := 0; i < len(canonical); i++ {
		switch c := canonical[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			d++
			deepest = max(deepest, d)
		case c == '}' || c == ']':
			d--
		}
	}
	return deepest
}

func TestCanonicalDetailsMatchesReference(t *testing.T) {
	for _, s := range canonicalSeeds {
		checkCanonical(t, []byte(s))
	}
}

// FuzzCanonicalDetails checks canonicalDetails against encoding/json.
func FuzzCanonicalDetails(f *testing.F) {
	for _, s := range canonicalSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkCanonical)
}

func checkCanonical(t *testing.T, raw []byte) {
	got, err := canonicalDetails(raw)
	want, refErr := referenceCanonical(raw)
	if !validUTF8(string(raw)) {
		want, refErr = nil, errors.New("invalid UTF-8") // encoding/json would replace it
	}
	if refErr == nil && depth(want) > maxDepth {
		want, refErr = nil, errors.New("too deep")
	}
	switch {
	case (err == nil) != (refErr == nil):
		t.Fatalf("canonicalDetails(%q) = %q, %v; encoding/json: %q, %v", raw, got, err, want, refErr)
	case err != nil && !errors.Is(err, ErrInvalidEntry):
		t.Fatalf("canonicalDetails(%q) = %v, want an error matching %v", raw, err, ErrInvalidEntry)
	case !bytes.Equal(got, want):
		t.Fatalf("canonicalDetails(%q) = %q, want %q", raw, got, want)
	}
	if err == nil {
		again, err := canonicalDetails(got)
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("canonicalDetails(%q) = %q, %v, want it unchanged", got, again, err)
		}
	}
}
