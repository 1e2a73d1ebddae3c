package authority

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/ca/federation"
	"mandate.dev/mandate/ca/hsm"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/policy"
	"mandate.dev/mandate/store"
	"mandate.dev/mandate/store/bolt"
	"mandate.dev/mandate/witness"
)

// Authority is one running trust-domain authority: its store, CA and
// federation manager, and the flows over them. It is safe for concurrent
// use. bundles is replaced whenever the CA or a federated bundle changes.
type Authority struct {
	cfg    Config
	td     spiffeid.TrustDomain
	log    *slog.Logger
	now    func() time.Time
	store  store.Store
	ca     *ca.CA
	fed    *federation.Manager
	audit  *audit.Log
	admins map[string]bool

	auditVKey       string
	witness         *witness.Witness // nil: witnesses no log
	witnessing      *witnessing      // nil: audit.witnesses is empty
	auditors        map[string]bool
	decisionCallers map[string]bool

	hosting hostingCache
	tpm     *attest.TPMVerifier

	policy       *policy.Engine
	policyGen    atomic.Uint64 // bumped by every registry change
	policySynced atomic.Uint64 // the generation data.mandate reflects
	policySyncMu sync.Mutex    // serializes rebuilds of data.mandate
	policyDirty  policyDirty   // what changed since: all, or some entries

	// reloads counts the policy reloads by outcome (PolicyReloads).
	reloads struct{ changed, unchanged, refused atomic.Uint64 }
	// evictions counts the node records removed since the start, by an
	// admin and by the prune of lapsed nodes.
	evictions struct{ admin, prune atomic.Uint64 }

	bundleMu sync.Mutex                                    // serializes rebuilds of bundles; guards pending
	pending  map[spiffeid.TrustDomain]*spiffebundle.Bundle // fetched bundles the manager has not published yet
	bundles  atomic.Pointer[bundleSet]

	fedMu sync.Mutex // serializes federation changes (store record + manager)
	// fedStoreMu serializes the storing of a fetched peer bundle with a
	// relationship's record being replaced (see addFederation): never
	// held while waiting on the federation manager.
	fedStoreMu sync.Mutex
	// fedPutBack is the trust domain whose relationship addFederation
	// puts back in the manager, its record not stored: a bundle fetched
	// for it is not stored meanwhile (guarded by fedStoreMu).
	fedPutBack spiffeid.TrustDomain
	// unloaded holds, by trust domain name, why a stored federation
	// record was not loaded at start (shown as its last_error until the
	// relationship is added again or deleted).
	unloaded sync.Map
	// changeMu serializes admin changes (agents, bans, federations), each
	// held until its commit: what one read before it (the ban that
	// stands, the registration deleted) still holds at it, and the
	// bundle manager changes in the log's order.
	changeMu sync.Mutex
	credMu   sync.Mutex // serializes writes of the admin credential files
	backupMu sync.Mutex // one backup at a time (MakeBackup)
	backups  backupGate // the backup under way, abandoned and waited for by Run's end
	// restoredFrom is the backup this data directory was made of, when
	// this is the first start on it (restoreMarkName): authority.started
	// names it, and the mark is removed once that entry is durable.
	restoredFrom *restoreMark

	caKeys *ca.DiskKeyManager // the CA's keys in <data dir>/keys; nil when they are in a token
	hsm    *hsm.KeyManager    // ca.pkcs11's token, the CA's keys in it; nil: none

	refusedMu sync.Mutex      // guards refused
	refused   map[string]bool // join tokens whose refusal is recorded
	refusals  refusalLimiter  // TPM refusals recorded per EK
	upstream  *ca.Upstream    // ca.upstream_cert_file and its key, read at start (nil: none)

	remote remoteStatuses // other authorities' answers on their hops

	running atomic.Bool // Run has started: the audit log takes entries
}

// Options are the dependencies an Authority takes besides its Config.
type Options struct {
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// New opens (or creates) the authority's state under cfg.DataDir. cfg must
// have defaults set and be valid.
func New(ctx context.Context, cfg Config, opts Options) (_ *Authority, err error) {
	a := &Authority{cfg: cfg, log: opts.Logger, now: opts.Now, pending: map[spiffeid.TrustDomain]*spiffebundle.Bundle{}}
	a.remote.slots.all = make(chan struct{}, maxRemoteFetches)
	a.remote.life, a.remote.end = context.WithCancel(context.Background())
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.td = spiffeid.RequireTrustDomainFromString(cfg.TrustDomain)
	a.admins = map[string]bool{AdminID(a.td).String(): true}
	for _, id := range cfg.Admins {
		a.admins[id] = true
	}
	a.decisionCallers = map[string]bool{}
	for _, id := range cfg.Policy.DecisionCallers {
		a.decisionCallers[id] = true
	}
	a.auditors = map[string]bool{}
	for _, id := range cfg.Audit.Auditors {
		a.auditors[id] = true
	}
	// What the configuration names outside the data directory (the
	// policies, an upstream CA) is read first: a mistake there stops the
	// authority before it creates or changes anything.
	if err := a.openPolicy(ctx); err != nil {
		return nil, err
	}
	if cfg.CA.UpstreamCertFile != "" {
		var err error
		if a.upstream, err = loadUpstream(cfg.CA.UpstreamCertFile, cfg.CA.UpstreamKeyFile); err != nil {
			return nil, fmt.Errorf("authority: %w", err)
		}
		dnsNames, ips := a.serverNames()
		if err := a.upstream.Check(a.td, a.now(), dnsNames, ips); err != nil {
			return nil, fmt.Errorf("authority: ca.upstream_cert_file %s with ca.upstream_key_file %s: %w", cfg.CA.UpstreamCertFile, cfg.CA.UpstreamKeyFile, err)
		}
		// The chain's last certificate is the bundle's trust anchor. One
		// naming another trust domain makes the bundle that trust
		// domain's to this authority's own clients and its federated
		// peers, which refuse it: nothing issued here would be used.
		if other, ok := federation.OtherTrustDomain(a.td, a.upstream.Chain[len(a.upstream.Chain)-1]); ok {
			return nil, fmt.Errorf("authority: ca.upstream_cert_file %s: its last certificate, published in the bundle as the trust anchor, names %.80q, not this trust domain (%s): clients and federated peers refuse a bundle whose authority names another trust domain; use an upstream root that names no SPIFFE ID, or one of this trust domain",
				cfg.CA.UpstreamCertFile, other, a.td.IDString())
		}
	}
	if cfg.CA.PKCS11.Module != "" {
		if a.hsm, err = openHSM(cfg.CA.PKCS11); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				_ = a.hsm.Close()
			}
		}()
	}
	if err := checkNotABackup(cfg.DataDir); err != nil {
		return nil, err
	}
	// The data directory holds keys: only this user's (a directory
	// others may write to would let them replace one).
	if err := credfile.PrivateDir(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("authority: data dir: %w", err)
	}
	if err := checkDataDir(ctx, cfg.DataDir, nil); err != nil {
		return nil, err
	}
	// The store is only this user's to change, as the directory.
	dbPath := filepath.Join(cfg.DataDir, "mandate.db")
	if fi, err := os.Stat(dbPath); err == nil {
		if err := credfile.CheckOwnWritable(dbPath, fi); err != nil {
			return nil, fmt.Errorf("authority: %w", err)
		}
	}
	// Every page is read once at start: a damaged file stops the
	// authority here, not a request later. That takes seconds for a
	// large store (more after a reboot, the file read from disk): the
	// log says so before, and when it is done.
	var dbSize int64
	if fi, err := os.Stat(dbPath); err == nil {
		dbSize = fi.Size()
		a.log.Info("checking the store: every page is read once", "path", dbPath, "bytes", dbSize)
	}
	checkStart := time.Now()
	st, err := bolt.Open(dbPath, bolt.Options{Check: true})
	if errors.Is(err, bolt.ErrLocked) {
		return nil, fmt.Errorf("authority: %w: another process (an authority already running there?) is using the data directory %s: stop it, or start this one with another data directory (--data-dir, data_dir)", err, cfg.DataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("authority: %w", err)
	}
	if dbSize > 0 {
		a.log.Info("store checked", "bytes", dbSize, "took", time.Since(checkStart).Round(time.Millisecond))
	}
	// The store's entry in the data directory, and the data directory's
	// in its parent, are durable before anything is acknowledged from
	// them. (The parent may not be readable by this user: then only
	// said.)
	if err := credfile.SyncDir(cfg.DataDir); err != nil {
		st.Close()
		return nil, fmt.Errorf("authority: data dir: %w", err)
	}
	if err := credfile.SyncDir(filepath.Dir(filepath.Clean(cfg.DataDir))); err != nil {
		a.log.Warn("could not make the data directory's own entry durable", "err", err)
	}
	a.store = st
	// Temporary files a crash left where the authority writes its own
	// files (the store's lock is held: no write of this data directory
	// is under way), some of them parts of keys, and a store whose
	// creation was cut short.
	auditKey, _ := AuditPaths(cfg.DataDir)
	for _, dir := range []string{cfg.DataDir, filepath.Dir(AdminPaths(cfg.DataDir).Cert), filepath.Dir(auditKey)} {
		if err := credfile.RemoveTemps(dir); err != nil {
			st.Close()
			return nil, fmt.Errorf("authority: %w", err)
		}
	}
	if err := checkDataDir(ctx, cfg.DataDir, st); err != nil {
		st.Close()
		return nil, err
	}
	// A backup a crash cut short is named if its record was committed,
	// else removed.
	a.settleBackupsAtStart(ctx)
	if err := a.init(ctx); err != nil {
		st.Close()
		return nil, err
	}
	return a, nil
}

func (a *Authority) init(ctx context.Context) error {
	if err := a.openTPM(); err != nil {
		return err
	}
	if err := a.openCA(ctx); err != nil {
		return err
	}
	if err := a.openAudit(ctx); err != nil {
		return err
	}
	if err := a.openWitness(); err != nil {
		return err
	}
	if len(a.cfg.Audit.Witnesses) > 0 {
		var err error
		if a.witnessing, err = newWitnessing(a.cfg.Audit.Witnesses, a); err != nil {
			return err
		}
	}
	a.checkRestored(ctx)
	if err := a.indexDelegations(ctx); err != nil {
		return err
	}
	if err := a.indexSVIDs(ctx); err != nil {
		return err
	}
	if err := a.openFederation(ctx); err != nil {
		return err
	}
	a.refreshBundles()
	return nil
}

// AdminID is the bootstrap admin's SPIFFE ID.
func AdminID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "mandate", "admin")
}

// ServerID is the authority's own SPIFFE ID, carried by its TLS certificate.
func ServerID(td spiffeid.TrustDomain) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "mandate", "server")
}

// TrustDomain is the authority's trust domain.
func (a *Authority) TrustDomain() spiffeid.TrustDomain { return a.td }

// Config is the configuration the authority runs with.
func (a *Authority) Config() Config { return a.cfg }

// Logger is the authority's logger.
func (a *Authority) Logger() *slog.Logger { return a.log }

// AuditStats are the audit log's counters since the authority started.
func (a *Authority) AuditStats() audit.Stats { return a.audit.Stats() }

// StoreStopped returns why the data file is no longer read or written (a
// damaged page, or a commit whose sync failed: store.ErrNotDurable),
// until the authority is restarted; nil while it is in use.
func (a *Authority) StoreStopped() error {
	if s, ok := a.store.(interface{ Stopped() error }); ok {
		return s.Stopped()
	}
	return nil
}

// SigningExpiry is when the active X.509 CA and the active JWT key
// expire: rotation replaces each well before (at five sixths of its
// life, its successor published from half); one past it means no SVID
// of its kind can be issued.
func (a *Authority) SigningExpiry() (x509CA, jwtKey time.Time) {
	return a.ca.X509CANotAfter(), a.ca.JWTKeyNotAfter()
}

// Now is the authority's clock.
func (a *Authority) Now() time.Time { return a.now() }

// FederationRefreshes is the refresh state of every federation
// relationship in use, sorted by trust domain.
func (a *Authority) FederationRefreshes() []federation.Status {
	out := []federation.Status{}
	for _, r := range a.fed.Relationships() {
		if st, ok := a.fed.Status(r.TrustDomain); ok {
			out = append(out, st)
		}
	}
	return out
}

// Run keeps the CA rotating, federated bundles fresh, the admin credential
// current and stale join tokens pruned, until ctx is done.
func (a *Authority) Run(ctx context.Context) error {
	// Work shared by status requests ends with the authority.
	defer a.remote.end()
	g, ctx := errgroup.WithContext(ctx)
	a.running.Store(true) // from now on the CA's changes are logged with it
	// The audit log stops after maintain: what it records at shutdown
	// (TPM refusal counts pending) still gets in.
	auditCtx, stopAudit := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAudit()
	g.Go(func() error { return a.audit.Run(auditCtx) })
	g.Go(func() error { return a.recordStart(ctx) })
	g.Go(func() error { return a.ca.Run(ctx) })
	g.Go(func() error { return a.fed.Run(ctx) })
	g.Go(func() error {
		defer stopAudit()
		err := a.maintain(ctx)
		// A backup under way (its request outlasted the server's
		// shutdown grace) is abandoned, and removed, before the audit log
		// stops: never a backup on disk without its record. One that has
		// taken its name is recorded first.
		a.backups.stop()
		// Best effort, a few seconds at most: counts left are logged.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		a.flushTPMRefusals(fctx, true)
		return err
	})
	g.Go(func() error { return a.watchBundles(ctx) })
	g.Go(func() error { a.warmPolicyData(ctx); return nil })
	if a.witnessing != nil {
		g.Go(func() error { return a.runWitnessing(ctx) })
	}
	return g.Wait()
}

// warmPolicyData builds the policy's documents (data.mandate) once the
// authority runs, rather than at the first decision, which would wait
// for it: seconds with a hundred thousand registrations. A failure is
// logged; the first decision tries again.
func (a *Authority) warmPolicyData(ctx context.Context) {
	start := time.Now()
	if err := a.syncPolicyData(ctx); err != nil {
		if ctx.Err() == nil {
			a.log.WarnContext(ctx, "policy data not built at start; the first decision builds it", "err", err)
		}
		return
	}
	a.log.DebugContext(ctx, "policy data built", "took", time.Since(start).Round(time.Millisecond))
}

// watchBundles rebuilds the bundle snapshot after every CA change, and
// every few seconds to pick up federated bundles the manager has made
// visible since its OnUpdate hook ran.
func (a *Authority) watchBundles(ctx context.Context) error {
	changed, cancel := a.ca.Subscribe()
	defer cancel()
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-t.C:
		}
		a.refreshBundles()
	}
}

func (a *Authority) maintain(ctx context.Context) error {
	var pruned time.Time
	pruneFrom := &pruneSince{wall: a.now(), mono: time.Now()}
	for {
		wait := time.Minute // after a failure too: retried, not hammered
		if err := a.WriteAdminCredential(ctx, false); err != nil && ctx.Err() == nil {
			a.log.Error("refresh admin credential", "err", err)
		} else {
			wait = a.adminRefreshWait()
		}
		// Pruning once a minute, however often the credential is looked at.
		if now := time.Now(); now.Sub(pruned) >= time.Minute {
			a.pruneJoinTokens(ctx)
			a.pruneTPMSessions(ctx)
			a.prunePeerRevocations(ctx)
			a.pruneLapsedNodes(ctx, pruneFrom)
			a.flushTPMRefusals(ctx, false)
			pruned = now
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Close ends status work still shared by callers and releases the store.
// Call it after Run has returned.
func (a *Authority) Close() error {
	a.remote.end()
	err := a.store.Close()
	if a.hsm != nil {
		if herr := a.hsm.Close(); herr != nil && err == nil {
			err = fmt.Errorf("authority: close the token of ca.pkcs11: %w", herr)
		}
	}
	return err
}

// caJournal keeps the CA's state document in the store. Once the
// authority runs, each state is stored in the commit that logs it
// (ca.rotated, with the authorities it holds); before, while the CA
// loads, it is only stored (authority.started names those authorities).
type caJournal struct{ a *Authority }

var caStateKey = []byte("state")

func (j caJournal) Load(ctx context.Context) ([]byte, error) {
	var b []byte
	err := j.a.store.View(ctx, func(tx store.Tx) error {
		var err error
		b, err = tx.Get("ca", caStateKey)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
	return b, err
}

func (j caJournal) Save(ctx context.Context, state []byte) error {
	put := func(tx store.Tx) error { return tx.Put("ca", caStateKey, state) }
	if !j.a.running.Load() {
		return j.a.store.Update(ctx, put)
	}
	infos, err := ca.StateAuthorities(j.a.td, state)
	if err != nil {
		return err
	}
	ev := event{typ: "ca.rotated", subject: j.a.td.IDString(), details: map[string]any{"authorities": infos}}
	if r, ok := ctx.Value(rotationRequestKey{}).(rotationRequest); ok {
		ev.actor = r.by
		ev.details["requested"] = r.details
	}
	_, err = j.a.recordWith(ctx, ev, put)
	return err
}

func decodeRecord(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("authority: decode record: %w", err)
	}
	return nil
}
