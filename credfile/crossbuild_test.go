package credfile_test

import (
	"go/ast"
	"go/build"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The package builds where the credential lock takes each of its forms:
// a Unix whose syscall package has no flock (AIX, as Solaris), the Unix
// with flock that is named apart (illumos; Linux is this build, and macOS
// and the BSDs have flock as Linux does), and Windows. The lock is chosen
// by the system, never left undefined. (Each system costs seconds: the
// standard library is type-checked from source.)
func TestBuildsOnEachSystem(t *testing.T) {
	goroot := goRoot(t)
	for _, sys := range []struct{ goos, goarch string }{
		{"aix", "ppc64"}, {"illumos", "amd64"}, {"windows", "amd64"},
	} {
		t.Run(sys.goos, func(t *testing.T) {
			ctx := build.Default
			ctx.GOOS, ctx.GOARCH, ctx.CgoEnabled, ctx.GOROOT = sys.goos, sys.goarch, false, goroot
			pkg, err := ctx.ImportDir(".", 0)
			if err != nil {
				t.Fatal(err)
			}
			fset := token.NewFileSet()
			var files []*ast.File
			for _, name := range pkg.GoFiles {
				f, err := parser.ParseFile(fset, filepath.Join(pkg.Dir, name), nil, 0)
				if err != nil {
					t.Fatal(err)
				}
				files = append(files, f)
			}
			// The standard library as it is on that system, from source.
			defer func(prev build.Context) { build.Default = prev }(build.Default)
			build.Default = ctx
			conf := types.Config{Importer: importer.ForCompiler(fset, "source", nil)}
			if _, err := conf.Check(pkg.ImportPath, fset, files, nil); err != nil {
				t.Errorf("GOOS=%s GOARCH=%s: %v", sys.goos, sys.goarch, err)
			}
		})
	}
}

// goRoot is the Go tree whose standard library is type-checked: the one
// go/build knows, or, in a test built with -trimpath (which knows none),
// the go command's (go test puts its own first on PATH).
func goRoot(t *testing.T) string {
	t.Helper()
	if build.Default.GOROOT != "" {
		return build.Default.GOROOT
	}
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	return strings.TrimSpace(string(out))
}
