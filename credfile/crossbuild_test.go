package credfile_test

import (
	"go/ast"
	"go/build"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"path/filepath"
	"testing"
)

// The package builds on every Unix Go supports, those whose syscall
// package has no flock (AIX, Solaris) among them, and on Windows: the
// credential lock is chosen by the system, never left undefined.
func TestBuildsOnEachSystem(t *testing.T) {
	for _, sys := range []struct{ goos, goarch string }{
		{"aix", "ppc64"}, {"solaris", "amd64"}, {"illumos", "amd64"},
		{"linux", "amd64"}, {"darwin", "arm64"}, {"windows", "amd64"},
	} {
		t.Run(sys.goos, func(t *testing.T) {
			ctx := build.Default
			ctx.GOOS, ctx.GOARCH, ctx.CgoEnabled = sys.goos, sys.goarch, false
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
