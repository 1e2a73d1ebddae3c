// Package policies holds the Rego policies Mandate ships, embedded in the
// binary: the default policy of every decision point, with their Rego
// tests and default data. `mandate serve --policy-dir DIR` replaces them
// with a directory laid out the same way.
package policies

import "embed"

// FS is the embedded policy directory: *.rego modules (tests in
// *_test.rego) and data.json.
//
//go:embed *.rego data.json
var FS embed.FS
