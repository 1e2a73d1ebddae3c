//go:build !unix

package credfile

// lockDir locks nothing where flock is not: writers of one credential
// must then not run at once.
func lockDir(string) (func(), error) { return func() {}, nil }
