// Package credfile reads and writes SVID credentials as files: a PEM
// certificate chain (leaf first), a PKCS#8 PEM private key written with
// mode 0600, and a PEM bundle of trust roots.
//
// Guarantees: every write is atomic (temporary file, fsync, rename, fsync of
// the directory where the file system syncs directories), so a crash
// leaves either the old or the new file, never a torn one, and the temporary files a crash leaves are removed by the next
// write; a credential Load would refuse (a key that is not the
// certificate's, no certificate, no bundle) is never written; Load during
// a renewal by another process returns the old pair or the new one; a
// private key file is never readable by other users, and one that is
// (svid.key, or the svid.key.prev a renewal keeps) is not used; errors
// never contain key material.
package credfile
