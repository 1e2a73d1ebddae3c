package authority

import (
	"encoding/binary"
	"errors"
	"fmt"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/store"
)

// bucketSVIDSerials indexes the X509-SVIDs this authority issued by
// serial number (hex): the log index of their svid.issued entry, so that a
// hop names the entry recording the SVID its delegator signed it with.
const bucketSVIDSerials = "svids_by_serial" // serial (hex) → log index (8 bytes, big endian)

// indexEntry is the audit log's index hook: inside the transaction that
// makes an entry durable, it writes what status, revocation, chains and
// hops read of it.
func (a *Authority) indexEntry(tx store.Tx, index uint64, e audit.Entry, leafHash []byte) error {
	switch e.Type {
	case "delegation.issued":
		return a.indexDelegation(tx, index, e, leafHash)
	case "delegation.revoked":
		return indexRevocation(tx, e)
	case "svid.issued":
		return indexSVID(tx, index, e)
	}
	return nil
}

// indexSVID records where an X509-SVID's issuance is in the log.
func indexSVID(tx store.Tx, index uint64, e audit.Entry) error {
	var d struct {
		Kind   string `json:"kind"`
		Serial string `json:"serial"`
	}
	if e.ReadDetails(&d) != nil || d.Kind != "x509" || d.Serial == "" {
		return nil
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], index)
	return tx.Put(bucketSVIDSerials, []byte(d.Serial), v[:])
}

// svidEntryIndex is the log index of the svid.issued entry of the
// X509-SVID with this serial.
func svidEntryIndex(tx store.Tx, serial string) (uint64, error) {
	v, err := tx.Get(bucketSVIDSerials, []byte(serial))
	if errors.Is(err, store.ErrNotFound) {
		return 0, fmt.Errorf("%w: no X509-SVID with serial %s was issued here", ErrNotFound, serial)
	}
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("authority: svid index of %s: %d bytes", serial, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
