package policies_test

import (
	"bytes"
	"io/fs"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/format"

	"mandate.dev/mandate/policies"
)

// The shipped policies are what operators start their own from: each is
// laid out as `opa fmt` writes it, so that a copy, formatted by the
// operator's editor, differs from it only where the operator changed it.
func TestPoliciesAreOPAFormatted(t *testing.T) {
	files, err := fs.Glob(policies.FS, "*.rego")
	if err != nil || len(files) == 0 {
		t.Fatalf("no .rego files embedded (%v)", err)
	}
	for _, name := range files {
		src, err := fs.ReadFile(policies.FS, name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := format.Source(name, src)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(got, src) {
			is, want := firstDiff(string(src), string(got))
			t.Errorf("%s is not as opa fmt writes it; the first line that differs:\n  is:  %s\n  fmt: %s", name, is, want)
		}
	}
}

// firstDiff returns the first line at which a and b differ, from each.
func firstDiff(a, b string) (string, string) {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return al[i], bl[i]
		}
	}
	return "(end)", "(end)"
}
