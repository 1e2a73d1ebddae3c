package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// TestBenchDecideWithoutOPA: when opa is not installed and cannot be
// (no module proxy), bench decide says so and how to go on (--opa),
// before it starts any server.
func TestBenchDecideWithoutOPA(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir()) // where findOPA installs opa
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

// The opa bench decide installs is kept in the user's cache directory,
// one per version, and used from there: an opa in GOBIN (the user's, of
// any version) is neither used nor replaced.
func TestBenchDecideFindsItsOwnOPA(t *testing.T) {
	cache, gobin := t.TempDir(), t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	t.Setenv("GOBIN", gobin)
	t.Setenv("GOPROXY", "off")
	want := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/open-policy-agent/opa" {
				want = d.Version
			}
		}
	}
	script := func(path, version string) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("#!/bin/sh\necho 'Version: "+version+"'\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script(filepath.Join(gobin, "opa"), "0.1.0")
	own := filepath.Join(cache, "mandate", "opa@"+want, "opa")
	script(own, strings.TrimPrefix(want, "v"))
	var errOut bytes.Buffer
	got, err := findOPA(t.Context(), "", &errOut)
	if err != nil || got != own {
		t.Fatalf("findOPA = %q, %v; want %s (stderr %q)", got, err, own, errOut.String())
	}
	if b, _ := os.ReadFile(filepath.Join(gobin, "opa")); !strings.Contains(string(b), "0.1.0") {
		t.Error("the opa in GOBIN was replaced")
	}
}
