//go:build !unix

package authority

// freeBytes is not known on this system: backups are not checked for
// room.
func freeBytes(string) (uint64, bool) { return 0, false }
