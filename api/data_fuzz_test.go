package api

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"testing"

	"mandate.dev/mandate/policy"
)

// FuzzDataInput feeds arbitrary bodies to the Data API's input decoder:
// it never panics, and what it accepts the policy engine can take.
func FuzzDataInput(f *testing.F) {
	for _, s := range []string{
		``, ` `, `{}`, `{"input": null}`, `{"input": {"a": [1, 2.5, "x", true, null]}}`, `{"input": 1e400}`,
		`{"input": "\ud800"}`, "{\"input\": \"\xff\"}", `{"input": [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]}`, `{"input": {}, "other": 1}`,
		`{"input": {"a": 1}} trailing`, `[`, `{"input": {"k": "v", "k": "w"}}`, `"just a string"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		in, err := inputOfBody(body)
		if err != nil || in == nil {
			return
		}
		if _, err := policy.ParseInput(in); err != nil {
			t.Fatalf("accepted input %q that the engine cannot parse: %v", in, err)
		}
	})
}

// FuzzDataYAMLInput feeds arbitrary YAML bodies (and, compressed, gzip
// ones) to the Data API's decoders: never a panic, and what they accept
// the input decoder reads as JSON.
func FuzzDataYAMLInput(f *testing.F) {
	for _, s := range []string{
		``, `input: {a: 1}`, "input:\n  1: a\n  true: b\n", "input: [\n", "input: &a [*a]", "a: &a [x]\nb: [*a, *a, *a]\ninput: *a\n",
		"input: .nan", "input: 2001-12-14t21:59:43.10-05:00", "input: !!binary aGk=", "--- 1\n--- 2\n", "input: [[[[[[[[]]]]]]]]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		js, err := yamlToJSON(body, 1<<20)
		if err != nil {
			return
		}
		if len(js) > 0 && !json.Valid(js) {
			t.Fatalf("YAML %q became invalid JSON %q", body, js)
		}
		var zipped bytes.Buffer
		zw := gzip.NewWriter(&zipped)
		_, _ = zw.Write(body)
		_ = zw.Close()
		if out, err := gunzip(zipped.Bytes(), 1<<20); len(body) <= 1<<20 && (err != nil || !bytes.Equal(out, body)) {
			t.Fatalf("gunzip of gzip(%q) = %q, %v", body, out, err)
		}
	})
}
