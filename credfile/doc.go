// Package credfile reads and writes SVID credentials as files: a PEM
// certificate chain (leaf first), a PKCS#8 PEM private key written with
// mode 0600, and a PEM bundle of trust roots.
//
// Guarantees: every write is atomic (temporary file, fsync, rename, fsync of
// the directory), so a crash leaves either the old or the new file, never a
// torn one; a private key file is never readable by other users; errors
// never contain key material.
package credfile
