package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestBenchDecideWithoutOPA: when opa is not installed and cannot be
// (no module proxy), bench decide says so and how to go on (--opa),
// before it starts any server.
func TestBenchDecideWithoutOPA(t *testing.T) {
	t.Setenv("GOBIN", t.TempDir())
	t.Setenv("GOMODCACHE", t.TempDir())
	t.Setenv("GOPROXY", "off")
	t.Setenv("GOFLAGS", "-modcacherw")
	var errOut bytes.Buffer
	_, err := findOPA(t.Context(), "", &errOut)
	if err == nil {
		t.Fatalf("findOPA with no opa and no module proxy = nil error; stderr:\n%s", errOut.String())
	}
	for _, want := range []string{"could not install opa", "--opa"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("findOPA error %q lacks %q", err, want)
		}
	}
	if !strings.Contains(errOut.String(), "GOPROXY=off") {
		t.Errorf("stderr %q: want go install's own words", errOut.String())
	}
}
