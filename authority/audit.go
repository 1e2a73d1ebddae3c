package authority

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	jsonv1 "github.com/go-json-experiment/json/v1"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/registry"
	"mandate.dev/mandate/store"
	"mandate.dev/mandate/witness"
)

// AuditPaths are the audit log's key files under the data directory: the
// signing key (0600, never printed) and the verifier key (note format,
// public: auditors use it to check checkpoints).
func AuditPaths(dataDir string) (key, vkey string) {
	dir := filepath.Join(dataDir, "audit")
	return filepath.Join(dir, "log.key"), filepath.Join(dir, "log.vkey")
}

// checkDataDir refuses a data directory whose store was lost, emptied or
// replaced: audit/log.key exists (it is linked in place only once the
// store holds the log) but the store holds no log. Starting anew there
// would make a second log signed with the same key (a fork any auditor
// holding a checkpoint proves) and a new CA (new trust anchors for every
// agent and peer). It runs before anything is created.
// With st nil, it only checks that the store's file exists.
func checkDataDir(ctx context.Context, dataDir string, st store.Store) error {
	keyPath, _ := AuditPaths(dataDir)
	dbPath := filepath.Join(dataDir, "mandate.db")
	if _, err := os.Stat(keyPath); err != nil {
		if st == nil {
			return checkCAKeysStored(dataDir, dbPath)
		}
		return nil // a new data directory (or one whose key is missing: openAudit says so)
	}
	what := "is missing"
	if st == nil {
		// An empty file is refused here too, before it is opened:
		// opening it would write a new store into it.
		if fi, err := os.Stat(dbPath); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
			what = "is empty"
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil
		}
	} else {
		hasLog, err := audit.Stored(ctx, st)
		if err != nil || hasLog {
			return err
		}
		what = "holds no audit log"
	}
	return fmt.Errorf("authority: %s %s, but %s exists: the store was lost, emptied or replaced. "+
		"Restore it from a backup; starting anew would fork the audit log and replace the CA (to start a new authority, use a new data directory). "+
		"Only if this authority never answered a request (a first start by a version before 2026-11-26 cut short before it stored its log) remove %s instead",
		dbPath, what, keyPath, keyPath)
}

// checkCAKeysStored refuses a data directory whose store (dbPath) is
// missing or empty while its keys directory holds CA keys: the store is
// created whole before any CA key is written, so only a lost store (or
// a partial restore, without mandate.db and audit/, or with an empty
// mandate.db a copy cut short left) leaves keys without it. Starting
// anew there would replace the CA and the audit log silently.
func checkCAKeysStored(dataDir, dbPath string) error {
	what := "is missing"
	if fi, err := os.Stat(dbPath); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
		what = "is empty"
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	ents, err := os.ReadDir(caKeyDir(dataDir))
	if err != nil {
		return nil // no keys directory: a new data directory
	}
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), ".pem") {
			return fmt.Errorf("authority: %s %s, but %s holds CA keys (%s): the store was lost, or only part of a backup was restored. "+
				"Restore the whole data directory from a backup (mandate.db, keys/ and audit/ together); starting anew would replace the CA and the audit log "+
				"(to start a new authority, use a new data directory)", dbPath, what, caKeyDir(dataDir), e.Name())
		}
	}
	return nil
}

// openAudit opens the audit log kept in the authority's store, creating its
// signing key on first start and writing the verifier key next to it.
func (a *Authority) openAudit(ctx context.Context) error {
	origin := a.cfg.Audit.Origin
	if origin == "" {
		origin = audit.DefaultOrigin(a.td)
	}
	keyPath, vkeyPath := AuditPaths(a.cfg.DataDir)
	// Its directory holds the signing key: only this user's, at every
	// start (others able to write to it could replace the key).
	if err := credfile.PrivateDir(filepath.Dir(keyPath)); err != nil {
		return fmt.Errorf("authority: audit key: %w", err)
	}
	hasLog, err := audit.Stored(ctx, a.store)
	if err != nil {
		return fmt.Errorf("authority: %w", err)
	}
	// A new log's key is made as log.key.new and linked in place only
	// once the store holds the log: log.key without a stored log then
	// always means a lost store (checkDataDir), never a first start cut
	// short.
	pending := keyPath + ".new"
	usePending := false
	if _, err := os.Stat(keyPath); errors.Is(err, fs.ErrNotExist) {
		if !hasLog {
			if err := os.Remove(pending); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("authority: audit key: %w", err)
			}
		} else if _, err := os.Stat(pending); err != nil {
			return fmt.Errorf("authority: the audit signing key %s is missing, and the stored log's checkpoints are signed with it: restore it from a backup (a new key would not verify the log)", keyPath)
		}
		usePending = true // a new log, or one whose key was not linked yet
	}
	keyFile := keyPath
	if usePending {
		keyFile = pending
	}
	signer, vkey, err := audit.LoadOrCreateSigner(keyFile, origin)
	if err != nil {
		return fmt.Errorf("authority: audit key: %w", err)
	}
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		return fmt.Errorf("authority: audit verifier key: %w", err)
	}
	a.audit, err = audit.Open(ctx, audit.Config{Store: a.store, Origin: origin, Signer: signer, Verifier: verifier,
		Index: a.indexEntry, Logger: a.log.With("component", "audit"), GroupWait: a.cfg.Audit.groupCommitWait()})
	if errors.Is(err, audit.ErrCorrupt) {
		// Most often not a damaged file but a restore that mixed two
		// states: a data file and a log key of different data
		// directories or backups.
		return fmt.Errorf("authority: %w: %s and %s are not as one authority wrote them, a data file or log key of another data directory or backup (restore mandate.db and audit/ together, with keys/, from one backup), or a damaged file (restore it from a backup)",
			err, filepath.Join(a.cfg.DataDir, "mandate.db"), keyFile)
	}
	if err != nil {
		return fmt.Errorf("authority: %w", err)
	}
	if usePending { // the store holds the log, and it verifies with this key
		if err := os.Rename(pending, keyPath); err != nil {
			return fmt.Errorf("authority: audit key: %w", err)
		}
		if err := credfile.SyncDir(filepath.Dir(keyPath)); err != nil {
			return fmt.Errorf("authority: audit key: %w", err)
		}
	}
	// Published only once the stored log has verified with this key, and
	// only this user's to change: auditors on the host verify with it
	// (audit verify's default --vkey), so a copy others may write to (or
	// another user's) is written anew, as the key says.
	if err := publishVKey(vkeyPath, vkey); err != nil {
		return fmt.Errorf("authority: the audit verifier key %s is written at start when it is missing, not the signing key's, a link, or writable by others, and could not be: %w", vkeyPath, err)
	}
	a.auditVKey = vkey
	return nil
}

// WitnessPaths are the witness's key files under the data directory:
// its Ed25519 note signer key (0600) and its cosignature/v1 verifier
// key, which log clients verify its cosignatures with.
func WitnessPaths(dataDir string) (key, vkey string) {
	dir := filepath.Join(dataDir, "audit")
	return filepath.Join(dir, "witness.key"), filepath.Join(dir, "witness.vkey")
}

// openWitness makes the authority the witness of audit.witness.logs,
// creating its key on first use and publishing its verifier key.
func (a *Authority) openWitness() error {
	w := a.cfg.Audit.Witness
	if len(w.Logs) == 0 {
		return nil
	}
	name := w.Name
	if name == "" {
		name = a.td.Name() + "/witness"
	}
	keyPath, vkeyPath := WitnessPaths(a.cfg.DataDir)
	_, skey, _, err := audit.LoadOrCreateKey(keyPath, name)
	if err != nil {
		return fmt.Errorf("authority: witness key: %w", err)
	}
	if a.witness, err = witness.New(a.store, skey, w.Logs); err != nil {
		return fmt.Errorf("authority: %w", err)
	}
	if err := publishVKey(vkeyPath, a.witness.VerifierKey()); err != nil {
		return fmt.Errorf("authority: the witness verifier key %s could not be written: %w", vkeyPath, err)
	}
	return nil
}

// publishVKey writes vkey, a public verifier key, to path (0644) unless
// path holds it already, is this user's own file and not a link.
func publishVKey(path, vkey string) error {
	if old, err := os.ReadFile(path); err == nil && string(old) == vkey+"\n" && ownWritable(path) {
		return nil
	}
	return credfile.WriteFileAtomic(path, []byte(vkey+"\n"), 0o644)
}

// Witness is the authority's transparency log witness, or nil when
// audit.witness.logs is empty.
func (a *Authority) Witness() *witness.Witness { return a.witness }

// AuditVerifierKey is the audit log's verifier key (note format).
func (a *Authority) AuditVerifierKey() string { return a.auditVKey }

// recordTimeout bounds how long a flow waits for its event to be durable.
const recordTimeout = 30 * time.Second

// recordContext is the context an event is recorded in: not ended with
// the flow's ctx (the change it reports may already be made), ended by
// recordTimeout (a variable for tests).
var recordContext = func(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
}

// event is one audit entry in the making.
type event struct {
	typ, actor, subject string
	parties             []audit.Party
	details             map[string]any
	// decisionID and policyRevision name the policy decision involved;
	// delegationID the delegation.
	decisionID, policyRevision, delegationID string
}

// logNotRecorded logs that an entry (of a refusal, or of a decision whose
// action then failed) could not be recorded: an error, with err, except
// when the data file could not be written (store.ErrUnwritable), which
// the audit log says itself, once for a run of failed commits: then at
// debug level, so that a full disk is not logged again for every request.
func (a *Authority) logNotRecorded(ctx context.Context, msg string, err error, args ...any) {
	level := slog.LevelError
	if errors.Is(err, store.ErrUnwritable) {
		level = slog.LevelDebug
	}
	a.log.Log(ctx, level, msg, append(args, "err", err)...)
}

// record appends an event to the audit log and waits until it is durable.
// A flow that cannot record its event fails: nothing is handed out that the
// log does not show.
func (a *Authority) record(ctx context.Context, ev event) (audit.Receipt, error) {
	return a.recordWith(ctx, ev, nil)
}

// recordWith records ev with the change it reports (apply, run in the
// transaction that makes ev's entry durable: see audit.Log.AppendWith):
// the change and its entry are durable together, or neither. An error
// of apply's is returned as it is (a conflict, a record not found).
func (a *Authority) recordWith(ctx context.Context, ev event, apply func(tx store.Tx) error) (audit.Receipt, error) {
	e, err := a.entryOf(ev)
	if err != nil {
		return audit.Receipt{}, err
	}
	// The change this event reports may already be committed (record), or
	// is committed with it (recordWith): recording is not abandoned
	// because the client went away.
	rctx, cancel := recordContext(ctx)
	defer cancel()
	var applied func(tx store.Tx) error
	var applyErr error
	if apply != nil {
		applied = func(tx store.Tx) error { applyErr = apply(tx); return applyErr }
	}
	rc, err := a.audit.AppendWith(rctx, e, applied)
	if err != nil {
		if applyErr != nil && errors.Is(err, applyErr) {
			return rc, applyErr
		}
		return rc, fmt.Errorf("authority: audit %s: %w", ev.typ, err)
	}
	return rc, nil
}

// omittedInput is what an entry says in place of a decision's input it
// leaves out.
const omittedInput = "larger than the audit entry allows"

// recordOmittingInput is recordWith for an event whose details hold
// decision, the details of the policy decision that allowed it (a map
// within ev.details): an entry the log refuses as too large (long scopes
// or audiences, escaped, written several times) is recorded again with
// the decision's input left out, marked input_omitted (its decision id
// and policy revision still name it), rather than failing after what it
// records was made.
func (a *Authority) recordOmittingInput(ctx context.Context, ev event, decision map[string]any, apply func(store.Tx) error) (audit.Receipt, error) {
	rc, err := a.recordWith(ctx, ev, apply)
	if _, had := decision["input"]; !had || !errors.Is(err, audit.ErrInvalidEntry) {
		return rc, err
	}
	delete(decision, "input")
	decision["input_omitted"] = omittedInput
	return a.recordWith(ctx, ev, apply)
}

// entryOf is the audit entry that records ev now.
func (a *Authority) entryOf(ev event) (audit.Entry, error) {
	e := audit.Entry{Time: a.now().UTC(), Type: ev.typ, Actor: ev.actor, Subject: ev.subject, Accountable: ev.parties,
		DecisionID: ev.decisionID, PolicyRevision: ev.policyRevision, DelegationID: ev.delegationID}
	if e.Actor == "" {
		e.Actor = audit.ActorSystem
	}
	if len(ev.details) > 0 {
		d, err := jsonv1.Marshal(ev.details)
		if err != nil {
			return e, fmt.Errorf("authority: audit details: %w", err)
		}
		e.Details = d
	}
	return e, nil
}

// recordable refuses, with invalid, a change whose event the audit log
// would refuse (an entry larger than audit.MaxEntrySize, or not text),
// before the change is made: made, it would never be logged.
func (a *Authority) recordable(ev event, invalid error) error {
	e, err := a.entryOf(ev)
	if err == nil {
		_, err = audit.Encode(e)
	}
	if err != nil {
		return fmt.Errorf("%w: the change's audit entry would be refused (%v)", invalid, err)
	}
	return nil
}

// partyOf is the accountable party of an agent registration.
func partyOf(ag *registry.Agent) []audit.Party {
	id, err := spiffeid.FromString(ag.SPIFFEID)
	if err != nil {
		return nil
	}
	acc := ag.Accountability
	return []audit.Party{{SPIFFEID: id, Operator: acc.Operator, ModelProvider: acc.ModelProvider, Model: acc.Model, ResponsibleParty: acc.ResponsibleParty}}
}

func actorOf(c *Caller) string {
	if c == nil || c.ID.IsZero() {
		return audit.ActorSystem
	}
	return c.ID.String()
}

// recordStart records that the authority started, with a digest of its
// effective configuration, its policy revision, the CA's authorities
// (those it made or rotated while starting, before ca.rotated entries
// could be recorded, among them) and the federated trust domains with the
// anchors it trusts for each (those from the config file among them),
// and, on the first start on a data directory made of a backup, that
// backup (restored_from), once the log runs.
func (a *Authority) recordStart(ctx context.Context) error {
	cfg, _ := json.Marshal(a.cfg)
	sum := sha256.Sum256(cfg)
	ev := event{typ: "authority.started", subject: a.td.IDString(), policyRevision: a.policy.Revision(), details: map[string]any{
		"config_sha256": hex.EncodeToString(sum[:]), "trust_domain": a.td.Name(), "authorities": a.ca.Status(),
		"federations": a.federationAnchors(),
	}}
	if a.recordable(ev, ErrInvalidRequest) != nil {
		// Too many to list: their digest and count.
		feds, _ := json.Marshal(ev.details["federations"])
		fsum := sha256.Sum256(feds)
		ev.details["federations"] = map[string]any{"count": len(a.fed.Relationships()), "sha256": hex.EncodeToString(fsum[:])}
	}
	if m := a.restoredFrom; m != nil {
		ev.details["restored_from"] = map[string]any{"backup": m.Backup, "created_at": m.CreatedAt, "audit_tree_size": m.AuditTreeSize}
	}
	_, err := a.record(ctx, ev)
	if err != nil && ctx.Err() == nil {
		a.log.Error("audit the start", "err", err)
	}
	if err == nil && a.restoredFrom != nil {
		// Recorded: the next start is not the first on this backup.
		a.removeRestoreMark(ctx)
	}
	return nil
}

// ExpectAudit tells the audit log that the request ctx carries is about to
// record what it does (see audit.Log.Expect); end must be called when it
// is over.
func (a *Authority) ExpectAudit(ctx context.Context) (context.Context, func()) {
	return a.audit.Expect(ctx)
}

// ownWritable reports whether the file at path is writable by this user
// alone (credfile.CheckOwnWritable).
func ownWritable(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode().IsRegular() && credfile.CheckOwnWritable(path, fi) == nil
}
