package authority

import (
	"context"
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

// bucketSVIDMeta holds keySVIDsIndexed once every svid.issued entry of
// the log is in bucketSVIDSerials (indexSVIDs).
const bucketSVIDMeta = "svids_meta"

var keySVIDsIndexed = []byte("serials_indexed")

// committingEntry, when set (tests), is called with each entry a commit
// of the audit log writes, inside its transaction: an error fails the
// commit.
var committingEntry func(e audit.Entry) error

// indexEntry is the audit log's index hook: inside the transaction that
// makes an entry durable, it writes what status, revocation, chains and
// hops read of it.
func (a *Authority) indexEntry(tx store.Tx, index uint64, e audit.Entry, leafHash []byte) error {
	if committingEntry != nil {
		if err := committingEntry(e); err != nil {
			return err
		}
	}
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

// indexSVIDs indexes by serial the X509-SVIDs that a data directory's log
// recorded before the index existed (once; then marked, so that later
// starts only read the mark). Without it, an agent whose SVID an older
// build issued could not delegate with it until it renewed: the hop must
// name the svid.issued entry of the SVID its delegator signed with. It
// reads the log's svid.issued entries through its type index, a page at
// a time, before the authority serves (so nothing is appended meanwhile;
// what is appended later is indexed in its own commit).
func (a *Authority) indexSVIDs(ctx context.Context) error {
	var done bool
	if err := a.store.View(ctx, func(tx store.Tx) error {
		_, err := tx.Get(bucketSVIDMeta, keySVIDsIndexed)
		if errors.Is(err, store.ErrNotFound) {
			done = false
			return nil
		}
		done = err == nil
		return err
	}); err != nil {
		return fmt.Errorf("authority: index X509-SVIDs by serial: %w", err)
	}
	if done {
		return nil
	}
	var n int
	q := audit.Query{Type: "svid.issued", Limit: audit.MaxSearchLimit}
	for {
		idx, next, err := a.audit.Search(ctx, q)
		if err != nil {
			return fmt.Errorf("authority: index X509-SVIDs by serial: %w", err)
		}
		entries := make([]audit.Entry, len(idx))
		for i, index := range idx {
			b, err := a.audit.Entry(ctx, index)
			if err != nil {
				return fmt.Errorf("authority: index X509-SVIDs by serial: %w", err)
			}
			if entries[i], err = audit.Decode(b); err != nil {
				return fmt.Errorf("authority: index X509-SVIDs by serial: entry %d: %w", index, err)
			}
		}
		if len(idx) > 0 {
			if err := a.store.Update(ctx, func(tx store.Tx) error {
				for i, index := range idx {
					if err := indexSVID(tx, index, entries[i]); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				return fmt.Errorf("authority: index X509-SVIDs by serial: %w", err)
			}
			n += len(idx)
		}
		if next == nil {
			break
		}
		q.After, q.HasAfter = *next, true
	}
	if err := a.store.Update(ctx, func(tx store.Tx) error {
		return tx.Put(bucketSVIDMeta, keySVIDsIndexed, []byte("1"))
	}); err != nil {
		return fmt.Errorf("authority: index X509-SVIDs by serial: %w", err)
	}
	if n > 0 {
		a.log.Info("indexed the X509-SVIDs the log records by serial", "entries", n)
	}
	return nil
}
