package registry

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	json "github.com/go-json-experiment/json/v1"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"mandate.dev/mandate/store"
)

// Buckets used by the registry.
const (
	BucketAgents    = "agents"
	BucketAgentByID = "agents_by_spiffe_id"
	BucketNodes     = "nodes"
)

// Limits on registration contents, so that one record stays small.
const (
	MaxListLen    = 64
	MaxStringLen  = 256
	MaxTTLSeconds = 30 * 24 * 3600
)

// The SPIFFE ID standard's bounds: an ID of at most 2048 bytes
// (SPIFFE-ID §2.3), a trust domain name (a DNS name) of at most 255.
const (
	MaxSPIFFEIDLen    = 2048
	MaxTrustDomainLen = 255
)

// Sentinel errors callers branch on.
var (
	ErrNotFound      = errors.New("registry: not found")
	ErrAlreadyExists = errors.New("registry: already exists")
	ErrInvalid       = errors.New("registry: invalid registration")
)

// Accountability names who answers for an agent. The fields travel into
// every audit entry about the agent.
type Accountability struct {
	Operator         string `json:"operator"`
	ModelProvider    string `json:"model_provider"`
	Model            string `json:"model"`
	ResponsibleParty string `json:"responsible_party"`
}

// Agent is a registration: which SPIFFE ID an agent gets, where it may run
// and for how long its SVIDs live.
type Agent struct {
	ID             string         `json:"id"`
	SPIFFEID       string         `json:"spiffe_id"`
	NodeIDs        []string       `json:"node_ids"`
	Selectors      []string       `json:"selectors"`
	X509TTLSeconds int64          `json:"x509_ttl_seconds"`
	JWTTTLSeconds  int64          `json:"jwt_ttl_seconds"`
	Scopes         []string       `json:"scopes"`
	Accountability Accountability `json:"accountability"`
	// RequireHardwareAttestation admits only hosting nodes attested with
	// hardware (TPM), whatever node_ids or selectors say.
	RequireHardwareAttestation bool      `json:"require_hardware_attestation"`
	CreatedAt                  time.Time `json:"created_at"`
	UpdatedAt                  time.Time `json:"updated_at"`
}

// X509TTL is the registration's X509-SVID lifetime (0: the CA default).
func (a *Agent) X509TTL() time.Duration { return time.Duration(a.X509TTLSeconds) * time.Second }

// JWTTTL is the registration's JWT-SVID lifetime (0: the CA default).
func (a *Agent) JWTTTL() time.Duration { return time.Duration(a.JWTTTLSeconds) * time.Second }

// Validate checks the registration for trust domain td and normalises its
// lists (nil becomes empty, sorted, duplicates removed).
func (a *Agent) Validate(td spiffeid.TrustDomain) error {
	id, err := spiffeid.FromString(a.SPIFFEID)
	if err != nil {
		return fmt.Errorf("%w: spiffe_id: %v", ErrInvalid, err)
	}
	if err := CheckAgentID(td, id); err != nil {
		return err
	}
	if err := checkNodeIDs(td, a.NodeIDs); err != nil {
		return err
	}
	if err := checkTTLs(a.X509TTLSeconds, a.JWTTTLSeconds); err != nil {
		return err
	}
	for name, list := range map[string][]string{"selectors": a.Selectors, "scopes": a.Scopes} {
		if err := checkStrings(name, list); err != nil {
			return err
		}
	}
	for _, s := range a.Scopes {
		if !ValidScope(s) {
			return fmt.Errorf("%w: scopes: %q: a scope is UTF-8 text without spaces (a token lists its scopes space-separated), control or format characters", ErrInvalid, s)
		}
	}
	if err := checkAccountability(a.Accountability); err != nil {
		return err
	}
	a.NodeIDs, a.Selectors, a.Scopes = normalise(a.NodeIDs), normalise(a.Selectors), normalise(a.Scopes)
	return nil
}

// CheckAgentID reports whether id is an agent ID of trust domain td:
// spiffe://<td>/agent/<name>, name one or more path segments.
func CheckAgentID(td spiffeid.TrustDomain, id spiffeid.ID) error {
	if len(id.String()) > MaxSPIFFEIDLen {
		return fmt.Errorf("%w: spiffe_id is at most %d bytes", ErrInvalid, MaxSPIFFEIDLen)
	}
	if id.TrustDomain() != td {
		return fmt.Errorf("%w: spiffe_id %q is not in trust domain %q", ErrInvalid, id, td)
	}
	if !strings.HasPrefix(id.Path(), "/agent/") {
		return fmt.Errorf("%w: spiffe_id %q must be spiffe://%s/agent/<name>", ErrInvalid, id, td)
	}
	return nil
}

func checkNodeIDs(td spiffeid.TrustDomain, ids []string) error {
	if len(ids) > MaxListLen {
		return fmt.Errorf("%w: node_ids: more than %d entries", ErrInvalid, MaxListLen)
	}
	for _, s := range ids {
		if len(s) > MaxSPIFFEIDLen {
			return fmt.Errorf("%w: node_ids: an id is at most %d bytes", ErrInvalid, MaxSPIFFEIDLen)
		}
		id, err := spiffeid.FromString(s)
		if err != nil {
			return fmt.Errorf("%w: node_ids: %q: %v", ErrInvalid, s, err)
		}
		if id.TrustDomain() != td || !strings.HasPrefix(id.Path(), "/node/") {
			return fmt.Errorf("%w: node_ids: %q is not a node of trust domain %q", ErrInvalid, s, td)
		}
	}
	return nil
}

func checkTTLs(x509TTL, jwtTTL int64) error {
	for name, v := range map[string]int64{"x509_ttl_seconds": x509TTL, "jwt_ttl_seconds": jwtTTL} {
		if v < 0 || v > MaxTTLSeconds {
			return fmt.Errorf("%w: %s must be between 0 (default) and %d", ErrInvalid, name, MaxTTLSeconds)
		}
	}
	return nil
}

func checkStrings(name string, list []string) error {
	if len(list) > MaxListLen {
		return fmt.Errorf("%w: %s: more than %d entries", ErrInvalid, name, MaxListLen)
	}
	for _, s := range list {
		if s == "" || len(s) > MaxStringLen {
			return fmt.Errorf("%w: %s: entries must be 1 to %d bytes", ErrInvalid, name, MaxStringLen)
		}
		if !plainText(s) {
			return fmt.Errorf("%w: %s: entries are UTF-8 text without control or format characters", ErrInvalid, name)
		}
	}
	return nil
}

// ValidScope reports whether s can be a scope of a registration, or be
// asked for in a hop issued here: a scope (IsScope) of at most
// MaxStringLen bytes, without control or format characters ("admin" and
// "admin\u200b" would look alike wherever they are shown).
func ValidScope(s string) bool { return len(s) <= MaxStringLen && IsScope(s) && plainText(s) }

// plainText reports whether s is UTF-8 text without U+FFFD and without
// control or format characters: what a registration's scopes and
// selectors are, as an operator reads them back.
func plainText(s string) bool { return text(s, false) }

// nameText is plainText that also allows the zero-width non-joiner and
// joiner (U+200C, U+200D) that names in several scripts and emoji are
// written with, as a delegation's principal does: an accountability
// field names people and teams.
func nameText(s string) bool { return text(s, true) }

func text(s string, joiners bool) bool {
	return utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool {
		if joiners && (r == '\u200c' || r == '\u200d') {
			return false
		}
		return r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r)
	}) < 0
}

// IsScope reports whether s is a scope as tokens carry it, of any
// length: UTF-8 text (no U+FFFD) without any Unicode space, since an
// OAuth scope parameter, and a delegation token's scope claim, separate
// scopes with spaces.
func IsScope(s string) bool {
	return s != "" && utf8.ValidString(s) && !strings.ContainsRune(s, utf8.RuneError) && strings.IndexFunc(s, unicode.IsSpace) < 0
}

func checkAccountability(acc Accountability) error {
	for _, s := range []string{acc.Operator, acc.ModelProvider, acc.Model, acc.ResponsibleParty} {
		if len(s) > MaxStringLen {
			return fmt.Errorf("%w: accountability fields are at most %d bytes", ErrInvalid, MaxStringLen)
		}
		if !nameText(s) {
			return fmt.Errorf("%w: accountability fields are UTF-8 text without control or format characters (but U+200C and U+200D)", ErrInvalid)
		}
	}
	return nil
}

func normalise(list []string) []string {
	out := slices.Clone(list)
	if out == nil {
		out = []string{}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// NewID returns a new registration or record identifier: 32 hex digits
// of a [store.NewID], so identifiers sort by the millisecond they were
// made in.
func NewID() string {
	b := store.NewID()
	return hex.EncodeToString(b[:])
}

// CreateAgent stores a new, validated registration. It fails with
// ErrAlreadyExists when the SPIFFE ID is already registered.
func CreateAgent(tx store.Tx, a *Agent) error {
	if a.ID == "" {
		return fmt.Errorf("%w: registration id is empty", ErrInvalid)
	}
	if _, err := tx.Get(BucketAgents, []byte(a.ID)); err == nil {
		return fmt.Errorf("%w: a registration with id %q exists", ErrAlreadyExists, a.ID)
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err := claimSPIFFEID(tx, a); err != nil {
		return err
	}
	return putJSON(tx, BucketAgents, a.ID, a)
}

// claimSPIFFEID indexes a.SPIFFEID to a.ID, unless another registration
// holds it.
func claimSPIFFEID(tx store.Tx, a *Agent) error {
	if _, err := tx.Get(BucketAgentByID, []byte(a.SPIFFEID)); err == nil {
		return fmt.Errorf("%w: an agent with spiffe_id %q is registered (change it with mandate admin agent update <its id>)", ErrAlreadyExists, a.SPIFFEID)
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return tx.Put(BucketAgentByID, []byte(a.SPIFFEID), []byte(a.ID))
}

// UpdateAgent replaces registration a.ID, keeping its creation time.
func UpdateAgent(tx store.Tx, a *Agent) error {
	old, err := GetAgent(tx, a.ID)
	if err != nil {
		return err
	}
	if old.SPIFFEID != a.SPIFFEID {
		if err := tx.Delete(BucketAgentByID, []byte(old.SPIFFEID)); err != nil {
			return err
		}
		if err := claimSPIFFEID(tx, a); err != nil {
			return err
		}
	}
	a.CreatedAt = old.CreatedAt
	return putJSON(tx, BucketAgents, a.ID, a)
}

// DeleteAgent removes registration id.
func DeleteAgent(tx store.Tx, id string) (*Agent, error) {
	a, err := GetAgent(tx, id)
	if err != nil {
		return nil, err
	}
	if err := tx.Delete(BucketAgentByID, []byte(a.SPIFFEID)); err != nil {
		return nil, err
	}
	return a, tx.Delete(BucketAgents, []byte(id))
}

// GetAgent returns registration id.
func GetAgent(tx store.Tx, id string) (*Agent, error) {
	var a Agent
	if err := getJSON(tx, BucketAgents, id, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// AgentBySPIFFEID returns the registration of a SPIFFE ID.
func AgentBySPIFFEID(tx store.Tx, spiffeID string) (*Agent, error) {
	id, err := tx.Get(BucketAgentByID, []byte(spiffeID))
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: no agent registered as %q", ErrNotFound, spiffeID)
	}
	if err != nil {
		return nil, err
	}
	return GetAgent(tx, string(id))
}

// AgentRegistered reports whether an agent is registered as spiffeID,
// without reading its registration.
func AgentRegistered(tx store.Tx, spiffeID string) (bool, error) {
	switch _, err := tx.Get(BucketAgentByID, []byte(spiffeID)); {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// SHA256 is the hex SHA-256 of the registration's JSON encoding: it
// names this version of the registration (quoted, it is the entity tag
// of the admin API's answers).
func (a *Agent) SHA256() string {
	doc, _ := json.Marshal(a) // of a struct of strings, numbers and times: never fails
	sum := sha256.Sum256(doc)
	return hex.EncodeToString(sum[:])
}

// ListAgents returns every registration, ordered by SPIFFE ID.
func ListAgents(tx store.Tx) ([]*Agent, error) {
	out, _, err := ListAgentsAfter(tx, "", 0)
	return out, err
}

// EachAgent calls fn with every registration, in the order of their ids
// (not their SPIFFE IDs): one pass over the records, without the lookup
// of each through the SPIFFE ID index that ListAgents makes. It stops at
// fn's first error, and returns it.
func EachAgent(tx store.Tx, fn func(*Agent) error) error {
	return tx.Scan(BucketAgents, nil, nil, func(_, v []byte) error {
		var a Agent
		if err := decodeJSON(v, &a); err != nil {
			return err
		}
		return fn(&a)
	})
}

// ListAgentsAfter returns the registrations whose SPIFFE IDs sort after
// after ("": from the first), ordered by SPIFFE ID, at most limit of
// them (0: all), and whether more follow.
func ListAgentsAfter(tx store.Tx, after string, limit int) ([]*Agent, bool, error) {
	return store.PageAfter(tx, BucketAgentByID, after, limit, func(_, id []byte) (*Agent, error) { return GetAgent(tx, string(id)) })
}

func putJSON(tx store.Tx, bucket, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("registry: encode %s record: %w", bucket, err)
	}
	return tx.Put(bucket, []byte(key), b)
}

func getJSON(tx store.Tx, bucket, key string, v any) error {
	b, err := tx.Get(bucket, []byte(key))
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %s %q", ErrNotFound, strings.TrimSuffix(bucket, "s"), key)
	}
	if err != nil {
		return err
	}
	return decodeJSON(b, v)
}

func decodeJSON(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("registry: decode record: %w", err)
	}
	return nil
}
