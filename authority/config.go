package authority

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	fnote "github.com/transparency-dev/formats/note"
	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/attest"
	"mandate.dev/mandate/audit"
	"mandate.dev/mandate/ca"
	"mandate.dev/mandate/ca/federation"
	"mandate.dev/mandate/credfile"
	"mandate.dev/mandate/policy"
	"mandate.dev/mandate/registry"
)

// DefaultTrustDomain is the trust domain of an authority started with no
// configuration. It is meant for development only.
const DefaultTrustDomain = "mandate.localhost"

// Config is the whole configuration of an authority: the YAML file given
// with --config, overridden by flags. Its comments are the manual; every
// zero value means "the default", and every default works on 127.0.0.1.
type Config struct {
	// TrustDomain is this authority's SPIFFE trust domain
	// (default mandate.localhost).
	TrustDomain string `yaml:"trust_domain"`
	// Listen is the HTTPS listener address (default 127.0.0.1:8443).
	Listen string `yaml:"listen"`
	// DataDir holds the store, keys and the admin credential
	// (default ./mandate-data).
	DataDir string `yaml:"data_dir"`
	// LogLevel is debug, info, warn or error (default info).
	LogLevel string `yaml:"log_level"`
	// Admins are SPIFFE IDs with the admin role, besides the bootstrap
	// admin spiffe://<trust domain>/mandate/admin.
	Admins []string `yaml:"admins"`
	// CA configures keys, lifetimes and an optional upstream CA.
	CA CAConfig `yaml:"ca"`
	// Federation configures federated trust domains and the bundle endpoint.
	Federation FederationConfig `yaml:"federation"`
	// HTTP bounds what one client may ask of the server.
	HTTP HTTPConfig `yaml:"http"`
	// Audit configures the audit log.
	Audit AuditConfig `yaml:"audit"`
	// Attestation configures node attestation methods besides join tokens.
	Attestation AttestationConfig `yaml:"attestation"`
	// Policy configures policy evaluation and the decision API.
	Policy PolicyConfig `yaml:"policy"`
}

// PolicyConfig configures policy evaluation and the decision API.
type PolicyConfig struct {
	// Dir replaces the embedded policies with a directory (--policy-dir).
	Dir string `yaml:"dir"`
	// DecisionCallers may call the decision API (/v1/data, AuthZEN),
	// besides admins: SPIFFE IDs of this or a federated trust domain.
	DecisionCallers []string `yaml:"decision_callers"`
	// CallerPaths restricts a decision caller to data path prefixes
	// (SPIFFE ID → ["mandate/authz", ...]); a caller not listed may ask
	// any path.
	CallerPaths map[string][]string `yaml:"caller_paths"`
	// EvalTimeout bounds one evaluation (default 1s).
	EvalTimeout Duration `yaml:"eval_timeout"`
	// DecisionLogMask lists JSON pointers (/input/..., /result/...) erased
	// from the audit record of API decisions, like OPA's decision-log masks.
	DecisionLogMask []string `yaml:"decision_log_mask"`
	// AuthZENPath is the document AuthZEN evaluations ask (default
	// mandate/authzen/decision).
	AuthZENPath string `yaml:"authzen_path"`
}

// AttestationConfig configures node attestation.
type AttestationConfig struct {
	// TPM configures TPM 2.0 attestation. It is off until an EK can be
	// trusted (ek_ca_roots or ek_allowlist) and a profile is allowed.
	TPM TPMConfig `yaml:"tpm"`
	// PruneLapsedNodesAfter, when set, evicts each node (not banned)
	// whose latest SVID expired this long ago: a join-token node can
	// never renew then (it is kept until its token, which it may join
	// again with, has expired), a TPM node attests anew (default 0:
	// never).
	PruneLapsedNodesAfter Duration `yaml:"prune_lapsed_nodes_after"`
}

// TPMConfig configures TPM 2.0 attestation.
type TPMConfig struct {
	// EKCARoots are PEM files of TPM manufacturer CA certificates (roots
	// and intermediates) that EK certificates must chain to.
	EKCARoots []string `yaml:"ek_ca_roots"`
	// EKAllowlist admits EKs without a certificate: hex SHA-256 of each
	// EK's TPMT_PUBLIC bytes (`mandate node ek` prints it).
	EKAllowlist []string `yaml:"ek_allowlist"`
	// EKCertKeyTypes limits the EKs trusted by certificate to these key
	// types, rsa and/or ecc (default both): a TPM usually holds a
	// certified EK of each, two node IDs, and a ban holds for the TPM
	// only if one type is admitted.
	EKCertKeyTypes []string `yaml:"ek_cert_key_types"`
	// PCRProfiles are named golden PCR values; PCRs not listed are not
	// checked (`mandate node pcrs` prints a device's current values).
	PCRProfiles map[string]PCRProfileConfig `yaml:"pcr_profiles"`
	// AllowedProfiles names the profiles a node may match to be admitted,
	// tried in this order.
	AllowedProfiles []string `yaml:"allowed_profiles"`
	// ChallengeTTL is how long a device has to answer a challenge
	// (default 1m).
	ChallengeTTL Duration `yaml:"challenge_ttl"`
}

// PCRProfileConfig is one PCR profile: PCR index → hex SHA-256 bank value.
type PCRProfileConfig struct {
	SHA256 map[string]string `yaml:"sha256"`
}

// AuditConfig configures the audit log.
type AuditConfig struct {
	// Auditors are SPIFFE IDs (of this or a federated trust domain) that
	// may read the audit log; admins may too.
	Auditors []string `yaml:"auditors"`
	// Origin is the first line of every checkpoint (default
	// "<trust domain>/audit"). It must never change over the log's life.
	Origin string `yaml:"origin"`
	// PublicReadPath serves the C2SP tlog-tiles read path (/checkpoint,
	// /tile/...) to anyone, for witnesses and generic tlog tools; by
	// default only auditors and admins may read it. Entry bundles
	// (/tile/entries/...) are part of it: the option publishes every
	// entry of the log, which the JSON endpoints keep for auditors.
	PublicReadPath bool `yaml:"public_read_path"`
	// GroupCommitWait is the longest a commit of the log waits for the
	// requests under way that are about to record what they did (every
	// API request but GET and HEAD, from a caller with an X509-SVID, once
	// its body has been read), so
	// that one commit, and its fsyncs, takes them all (default 2ms; 0s:
	// a commit never waits). A lone request waits for nothing.
	GroupCommitWait *Duration `yaml:"group_commit_wait"`
	// Witness makes this authority a C2SP tlog-witness of other logs.
	Witness WitnessConfig `yaml:"witness"`
	// Witnesses are the witnesses this log submits its checkpoints to,
	// as it grows (C2SP tlog-witness); the latest checkpoint one of them
	// cosigned is served at GET /v1/audit/checkpoint/witnessed.
	Witnesses []WitnessEndpoint `yaml:"witnesses"`
}

// WitnessEndpoint is a witness of this log.
type WitnessEndpoint struct {
	// URL is its submission prefix: add-checkpoint is under it (a
	// Mandate witness's: https://HOST:PORT/v1/witness).
	URL string `yaml:"url"`
	// VKey is its cosignature/v1 verifier key (a Mandate witness's
	// audit/witness.vkey, or GET /v1/witness/verifier-key).
	VKey string `yaml:"vkey"`
	// TrustDomain, when set, is the federated trust domain whose
	// authority is the witness: its server is authenticated by that
	// trust domain's bundle, as spiffe://<trust domain>/mandate/server.
	// Empty: by the Web PKI (the system's roots).
	TrustDomain string `yaml:"trust_domain"`
}

// WitnessConfig makes the authority a transparency log witness (C2SP
// tlog-witness, at POST /v1/witness/add-checkpoint): it cosigns the
// checkpoints of these logs once it has checked that each grew
// append-only from the last it cosigned, so that an auditor holding a
// checkpoint it cosigned knows the log showed no one another history.
type WitnessConfig struct {
	// Logs are the note verifier keys of the logs it witnesses (a
	// federated authority's: its audit/log.vkey, or GET
	// /v1/audit/verifier-key); each key's name is its log's origin.
	// Empty: it witnesses none.
	Logs []string `yaml:"logs"`
	// Name is its cosigning key's name (default "<trust domain>/witness").
	Name string `yaml:"name"`
}

// CAConfig configures the certificate authority.
type CAConfig struct {
	// KeyType of CA and JWT signing keys: ec-p256 (default) or ec-p384.
	KeyType string `yaml:"key_type"`
	// CATTL is the X.509 CA lifetime (default 24h); the next CA is prepared
	// at 1/2 and activated at 5/6 of it (one prepared late, by a start
	// after 1/2, later: see package ca).
	CATTL Duration `yaml:"ca_ttl"`
	// JWTKeyTTL is the JWT signing key lifetime (default 24h).
	JWTKeyTTL Duration `yaml:"jwt_key_ttl"`
	// X509SVIDTTL is the default X509-SVID lifetime (default 1h).
	X509SVIDTTL Duration `yaml:"x509_svid_ttl"`
	// JWTSVIDTTL is the default JWT-SVID lifetime (default 5m).
	JWTSVIDTTL Duration `yaml:"jwt_svid_ttl"`
	// UpstreamCertFile and UpstreamKeyFile name an existing CA (PEM
	// certificate chain, signing certificate first, and its PEM private
	// key). When set, Mandate's CA is an intermediate under it.
	UpstreamCertFile string `yaml:"upstream_cert_file"`
	UpstreamKeyFile  string `yaml:"upstream_key_file"`
	// PKCS11, when its module is set, keeps the CA's and the JWT keys in
	// a PKCS#11 token (an HSM) instead of <data dir>/keys.
	PKCS11 PKCS11Config `yaml:"pkcs11"`
}

// PKCS11Config names the PKCS#11 token the CA's keys are made and kept
// in, and how to log in to it.
type PKCS11Config struct {
	// Module is the absolute path of the PKCS#11 module (a shared
	// library): /usr/lib/softhsm/libsofthsm2.so for SoftHSM on Debian.
	Module string `yaml:"module"`
	// TokenLabel is the label of the token.
	TokenLabel string `yaml:"token_label"`
	// PINFile holds the token's user PIN (mode 0600, this user's; one
	// line).
	PINFile string `yaml:"pin_file"`
}

// FederationConfig configures federation with other trust domains.
type FederationConfig struct {
	// BundleRefreshHint is the spiffe_refresh_hint this authority puts in
	// its own bundle (default 5m).
	BundleRefreshHint Duration `yaml:"bundle_refresh_hint"`
	// WebRootsFile is a PEM file of roots for https_web peers (default:
	// the system roots).
	WebRootsFile string `yaml:"web_roots_file"`
	// WebListen, WebCertFile and WebKeyFile, when set, serve the bundle
	// endpoint a second time with a Web PKI certificate (the https_web
	// profile), at https://<WebListen>/.
	WebListen   string `yaml:"web_listen"`
	WebCertFile string `yaml:"web_cert_file"`
	WebKeyFile  string `yaml:"web_key_file"`
	// TrustDomains are federation relationships set by configuration. They
	// are added to (never remove) those made through the admin API.
	TrustDomains []FederatedTrustDomain `yaml:"trust_domains"`
}

// FederatedTrustDomain is one federation relationship.
type FederatedTrustDomain struct {
	TrustDomain       string `yaml:"trust_domain"`
	BundleEndpointURL string `yaml:"bundle_endpoint_url"`
	// Profile is https_spiffe (default) or https_web.
	Profile string `yaml:"profile"`
	// EndpointSPIFFEID is the SPIFFE ID of the peer's bundle endpoint
	// (https_spiffe; default spiffe://<trust domain>/mandate/server).
	EndpointSPIFFEID string `yaml:"endpoint_spiffe_id"`
	// BundleFile is the peer's SPIFFE bundle (JSON), needed once to
	// authenticate an https_spiffe endpoint.
	BundleFile string `yaml:"bundle_file"`
}

// HTTPConfig bounds requests.
type HTTPConfig struct {
	// MaxBodyBytes caps request bodies (default 64 KiB; the API's
	// delegation endpoints take at least 64 KiB whatever it says).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxConnections bounds the connections each listener holds open at
	// once (default 10000): at it, the longest idle connection is closed
	// for a new one, and a new one is refused when none is idle.
	MaxConnections int `yaml:"max_connections"`
	// ReadTimeout, WriteTimeout and IdleTimeout of the server (defaults
	// 10s, 15s, 120s).
	ReadTimeout  Duration `yaml:"read_timeout"`
	WriteTimeout Duration `yaml:"write_timeout"`
	IdleTimeout  Duration `yaml:"idle_timeout"`
	// PublicURL is the https URL clients reach the API at (behind a load
	// balancer or a name); the OAuth metadata names it as its issuer and
	// token endpoint. Empty: the scheme and Host the client used.
	PublicURL string `yaml:"public_url"`
	// ServerNames are more DNS names and IP addresses for the server's
	// certificate, so that plain HTTPS clients (curl --cacert) reach it
	// by them; public_url's host is added by itself. Its SPIFFE ID is
	// what Mandate's own clients check.
	ServerNames []string `yaml:"server_names"`
	// MetricsReaders, when not empty, are the SPIFFE IDs (besides admins)
	// that may read /metrics, over mTLS; empty: anyone may.
	MetricsReaders []string `yaml:"metrics_readers"`
	// RateLimit bounds how often each caller may ask for what the
	// authority records.
	RateLimit RateLimitConfig `yaml:"rate_limit"`
}

// RateLimitConfig bounds the requests each caller other than an admin
// may make to the endpoints that record what they do in the audit log
// (every POST, and the Data API's GET): a token bucket per caller's
// SPIFFE ID of this trust domain, per trust domain for the callers of
// another (unless listed in Callers), or per client address (an IPv6
// one's /64) for a caller without a client certificate. A request over it is answered 429
// rate-limited, with Retry-After, and recorded nowhere.
type RateLimitConfig struct {
	// RequestsPerSecond is each caller's sustained rate (default
	// DefaultRequestsPerSecond; 0: no limit).
	RequestsPerSecond *int `yaml:"requests_per_second"`
	// Burst is how many requests a caller may make at once after a
	// quiet time (default twice requests_per_second).
	Burst int `yaml:"burst"`
	// Callers gives these SPIFFE IDs a rate of their own (0: no limit),
	// with a burst of twice it: a platform that asks many decisions.
	Callers map[string]int `yaml:"callers"`
}

// DefaultRequestsPerSecond is http.rate_limit.requests_per_second when it
// is not set: far more than an agent, a node or a joining device needs,
// and a fraction of what the authority serves on two cores, so that no
// one caller takes it all.
const DefaultRequestsPerSecond = 200

// maxRequestsPerSecond bounds http.rate_limit's rates and burst.
const maxRequestsPerSecond = 1_000_000

// Rate is the sustained rate and the burst that caller id may make
// requests at; rate 0 is no limit. A caller without a SPIFFE ID (zero
// id) has the default.
func (r RateLimitConfig) Rate(id spiffeid.ID) (rate float64, burst int) {
	if !id.IsZero() {
		if n, ok := r.Callers[id.String()]; ok {
			return float64(n), 2 * n
		}
	}
	if r.RequestsPerSecond == nil {
		return DefaultRequestsPerSecond, r.burst(DefaultRequestsPerSecond)
	}
	return float64(*r.RequestsPerSecond), r.burst(*r.RequestsPerSecond)
}

func (r RateLimitConfig) burst(rate int) int {
	if r.Burst > 0 {
		return r.Burst
	}
	return 2 * rate
}

// Duration is a time.Duration written as a Go duration string ("90s").
type Duration time.Duration

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 90s or 24h", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// LoadConfigFile reads a YAML config file. Unknown keys are errors, and
// errors name the key at fault.
func LoadConfigFile(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	cfg := new(Config)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		var doc yaml.Node
		_ = yaml.Unmarshal(b, &doc) // to name the keys of the lines the errors cite
		return nil, fmt.Errorf("config %s: %s", path, namingKeys(&doc, err))
	}
	// One document: a second one (after ---) would be silently ignored.
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config %s: more than one YAML document (a line ---); the configuration is one", path)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err == nil {
		// A file of no settings (empty, comments only, or null) is no
		// configuration: a template that rendered to nothing, a file cut
		// short, would start an authority of the development trust
		// domain in ./mandate-data, as a key given no value would.
		if doc.Kind == 0 || doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 && doc.Content[0].Tag == "!!null" {
			return nil, fmt.Errorf("config %s holds no settings (it is empty, or comments only): started from it, the authority would be one of the development trust domain %s; give its settings (trust_domain: ...), or leave --config out to start with the defaults", path, DefaultTrustDomain)
		}
		for _, k := range noEmptyValue {
			if err := checkGiven(&doc, k.path, nil, 0, k.number); err != nil {
				return nil, fmt.Errorf("config %s: %w", path, err)
			}
		}
	}
	return cfg, nil
}

// noEmptyValue are the keys that an empty value (or null; or 0, for a
// number) would silently give their default, which is not empty: a
// template whose variable was unset (trust_domain: ${TD}) would start
// an authority of the development trust domain. Such a key is left out
// for its default, never given empty, as the flags. A duration given 0s
// takes its default, as --help says (audit.group_commit_wait: 0s is no
// wait). "[]" is every item of a list, "{}" every value of a map.
var noEmptyValue = []struct {
	path   []string
	number bool
}{
	{path: []string{"trust_domain"}},
	{path: []string{"listen"}},
	{path: []string{"data_dir"}},
	{path: []string{"log_level"}},
	{path: []string{"ca", "key_type"}},
	{path: []string{"ca", "ca_ttl"}},
	{path: []string{"ca", "jwt_key_ttl"}},
	{path: []string{"ca", "x509_svid_ttl"}},
	{path: []string{"ca", "jwt_svid_ttl"}},
	{path: []string{"attestation", "tpm", "challenge_ttl"}},
	{path: []string{"policy", "authzen_path"}},
	{path: []string{"policy", "eval_timeout"}},
	{path: []string{"audit", "group_commit_wait"}},
	{path: []string{"http", "max_body_bytes"}, number: true},
	{path: []string{"http", "max_connections"}, number: true},
	{path: []string{"http", "read_timeout"}},
	{path: []string{"http", "write_timeout"}},
	{path: []string{"http", "idle_timeout"}},
	{path: []string{"http", "rate_limit", "requests_per_second"}},
	{path: []string{"http", "rate_limit", "burst"}, number: true},
	// A caller listed with no rate would have none (0: no limit).
	{path: []string{"http", "rate_limit", "callers", "{}"}},
	{path: []string{"federation", "bundle_refresh_hint"}},
	{path: []string{"federation", "trust_domains", "[]", "profile"}},
}

// checkGiven reports key (under n, which is at path) given an empty
// value; line is the line of path's own key.
func checkGiven(n *yaml.Node, key, path []string, line int, number bool) error {
	for n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if len(key) == 0 {
		if n.Kind != yaml.ScalarNode {
			return nil // the decoder has said what is wrong with it
		}
		var zero int64
		empty := n.ShortTag() == "!!null" || n.ShortTag() == "!!str" && n.Value == ""
		if number && n.ShortTag() == "!!int" && n.Decode(&zero) == nil && zero == 0 {
			return fmt.Errorf("line %d: %s: given 0: give a value, or leave the key out for the default", line, keyText(path))
		}
		if empty {
			return fmt.Errorf("line %d: %s: given an empty value: give a value, or leave the key out for the default", line, keyText(path))
		}
		return nil
	}
	switch {
	case key[0] == "[]" && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			if err := checkGiven(c, key[1:], append(slices.Clip(path), fmt.Sprintf("[%d]", i)), c.Line, number); err != nil {
				return err
			}
		}
	case key[0] == "{}" && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if err := checkGiven(n.Content[i+1], key[1:], append(slices.Clip(path), k.Value), k.Line, number); err != nil {
				return err
			}
		}
	case n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; k.Value == key[0] {
				return checkGiven(n.Content[i+1], key[1:], append(slices.Clip(path), key[0]), k.Line, number)
			}
		}
	}
	return nil
}

// namingKeys is err's text with each "line N: " naming the key on line
// N of doc (as "line 3: ca.ca_ttl: ..."; with several keys on the line,
// as in ca: {a: 1, b: 2}, the key holding them all; with none, the list
// item there, as admins[1]), and yaml's "field x not found in type T"
// said as the keys that section has. A document with aliases is not
// named (an error there cites the anchor's line); at most
// maxNamedErrors lines are kept.
func namingKeys(doc *yaml.Node, err error) string {
	lines := strings.Split(err.Error(), "\n")
	more := 0
	if len(lines) > maxNamedErrors+1 { // the first is yaml's "unmarshal errors:"
		more = len(lines) - (maxNamedErrors + 1)
		lines = lines[:maxNamedErrors+1]
	}
	idx := indexKeys(doc)
	known := configKeys()
	for i, l := range lines {
		indent := l[:len(l)-len(strings.TrimLeft(l, " "))]
		rest, ok := strings.CutPrefix(strings.TrimSpace(l), "line ")
		n, msg, found := strings.Cut(rest, ": ")
		line, convErr := strconv.Atoi(n)
		if !ok || !found || convErr != nil {
			continue
		}
		msg = unknownKey(msg, known)
		if key := idx.at(line); key != "" {
			msg = key + ": " + msg
		}
		lines[i] = indent + "line " + n + ": " + msg
	}
	if more > 0 {
		lines = append(lines, fmt.Sprintf("  (and %d more)", more))
	}
	return strings.Join(lines, "\n")
}

// maxNamedErrors bounds the errors LoadConfigFile reports.
const maxNamedErrors = 20

// keyIndex names the keys of each line of a document.
type keyIndex struct {
	aliases bool
	keys    map[int][][]string // line → paths of the mapping keys on it
	items   map[int][]string   // line → path of the outermost list item starting on it
}

// maxNamedDepth bounds the paths indexKeys records: deeper keys are
// named by their ancestor at that depth.
const maxNamedDepth = 16

// indexKeys walks doc once.
func indexKeys(doc *yaml.Node) *keyIndex {
	idx := &keyIndex{keys: map[int][][]string{}, items: map[int][]string{}}
	var walk func(n *yaml.Node, path []string)
	walk = func(n *yaml.Node, path []string) {
		if len(path) > maxNamedDepth {
			return
		}
		switch n.Kind {
		case yaml.AliasNode:
			idx.aliases = true
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				sub := append(slices.Clip(path), k.Value)
				idx.keys[k.Line] = append(idx.keys[k.Line], sub)
				walk(n.Content[i+1], sub)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				sub := append(slices.Clip(path), fmt.Sprintf("[%d]", i))
				if _, ok := idx.items[c.Line]; !ok {
					idx.items[c.Line] = sub
				}
				walk(c, sub)
			}
		}
	}
	walk(doc, nil)
	return idx
}

// at names the key of line: the one key on it, or the key holding all of
// those on it; or the outermost list item starting on it; "" when none,
// or when the document has aliases.
func (idx *keyIndex) at(line int) string {
	if idx.aliases {
		return ""
	}
	if keys := idx.keys[line]; len(keys) > 0 {
		return keyText(commonKey(keys))
	}
	return keyText(idx.items[line])
}

// unknownKey says yaml's "field x not found in type authority.T" as the
// keys that section has, and the one meant when one is near.
func unknownKey(msg string, known map[string][]string) string {
	rest, ok := strings.CutPrefix(msg, "field ")
	if !ok {
		return msg
	}
	cut := strings.LastIndex(rest, " not found in type ")
	if cut < 0 {
		return msg
	}
	field, typ := rest[:cut], rest[cut+len(" not found in type "):]
	keys := known[typ]
	if len(keys) == 0 {
		return msg
	}
	out := "unknown key " + strconv.Quote(field)
	for _, k := range keys {
		if editDistance(k, field) <= 2 {
			out += fmt.Sprintf(" (did you mean %q?)", k)
			break
		}
	}
	return out + "; the keys here: " + strings.Join(keys, ", ")
}

// configKeys maps each struct type of Config (as reflect names it,
// authority.AuditConfig) to its YAML keys.
func configKeys() map[string][]string {
	out := map[string][]string{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || out[t.String()] != nil {
			return
		}
		out[t.String()] = []string{}
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			out[t.String()] = append(out[t.String()], name)
			walk(f.Type)
		}
	}
	walk(reflect.TypeFor[Config]())
	return out
}

// editDistance is the Levenshtein distance of a and b (keys: short).
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b))
	}
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// commonKey is the longest path every one of paths is, or is under.
func commonKey(paths [][]string) []string {
	if len(paths) == 0 {
		return nil
	}
	common := paths[0]
	for _, p := range paths[1:] {
		n := 0
		for n < len(common) && n < len(p) && common[n] == p[n] {
			n++
		}
		common = common[:n]
	}
	return common
}

// keyText writes a path as the config's keys read: ca.ca_ttl, admins[1].
func keyText(path []string) string {
	var b strings.Builder
	for i, seg := range path {
		if i > 0 && !strings.HasPrefix(seg, "[") {
			b.WriteByte('.')
		}
		b.WriteString(seg)
	}
	return b.String()
}

// groupCommitWait is GroupCommitWait, or its default when it is not set.
func (c AuditConfig) groupCommitWait() time.Duration {
	if c.GroupCommitWait == nil {
		return DefaultGroupCommitWait.D()
	}
	return c.GroupCommitWait.D()
}

// DefaultMaxConnections is http.max_connections when it is not set:
// some 700 MB of idle TLS connections at most (measured: 710 MB of
// resident memory with 10,000 open, each having answered a request).
const DefaultMaxConnections = 10000

// DefaultGroupCommitWait is audit.group_commit_wait when it is not set.
const DefaultGroupCommitWait = Duration(2 * time.Millisecond)

// SetDefaults fills zero values with defaults.
func (c *Config) SetDefaults() {
	setDefault(&c.TrustDomain, DefaultTrustDomain)
	setDefault(&c.Listen, "127.0.0.1:8443")
	setDefault(&c.DataDir, "mandate-data")
	setDefault(&c.LogLevel, "info")
	setDefault(&c.CA.KeyType, "ec-p256")
	setDefault(&c.CA.CATTL, Duration(24*time.Hour))
	setDefault(&c.CA.JWTKeyTTL, Duration(24*time.Hour))
	setDefault(&c.CA.X509SVIDTTL, Duration(time.Hour))
	setDefault(&c.CA.JWTSVIDTTL, Duration(5*time.Minute))
	setDefault(&c.Federation.BundleRefreshHint, Duration(5*time.Minute))
	setDefault(&c.Attestation.TPM.ChallengeTTL, Duration(attest.DefaultChallengeTTL))
	setDefault(&c.Policy.EvalTimeout, Duration(policy.DefaultTimeout))
	setDefault(&c.Policy.AuthZENPath, "mandate/authzen/decision")
	if c.Audit.GroupCommitWait == nil {
		d := DefaultGroupCommitWait
		c.Audit.GroupCommitWait = &d
	}
	setDefault(&c.HTTP.MaxBodyBytes, 64<<10)
	setDefault(&c.HTTP.MaxConnections, DefaultMaxConnections)
	setDefault(&c.HTTP.ReadTimeout, Duration(10*time.Second))
	setDefault(&c.HTTP.WriteTimeout, Duration(15*time.Second))
	setDefault(&c.HTTP.IdleTimeout, Duration(120*time.Second))
	if c.HTTP.RateLimit.RequestsPerSecond == nil {
		n := DefaultRequestsPerSecond
		c.HTTP.RateLimit.RequestsPerSecond = &n
	}
	if *c.HTTP.RateLimit.RequestsPerSecond > 0 {
		setDefault(&c.HTTP.RateLimit.Burst, 2**c.HTTP.RateLimit.RequestsPerSecond)
	}
	for i := range c.Federation.TrustDomains {
		setDefault(&c.Federation.TrustDomains[i].Profile, "https_spiffe")
	}
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// Validate reports the first problem in c, in words an operator can act on.
func (c *Config) Validate() error {
	own, err := trustDomainOf(c.TrustDomain)
	if err != nil {
		return fmt.Errorf("trust_domain %q: %v", c.TrustDomain, err)
	}
	if err := checkListen(c.Listen); err != nil {
		return fmt.Errorf("listen %q: %v", c.Listen, err)
	}
	if !map[string]bool{"debug": true, "info": true, "warn": true, "error": true}[strings.ToLower(c.LogLevel)] {
		return fmt.Errorf("log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	for _, l := range []struct {
		key string
		ids []string
	}{{"admins", c.Admins}, {"audit.auditors", c.Audit.Auditors}} {
		for _, a := range l.ids {
			id, err := spiffeid.FromString(a)
			if err != nil {
				return fmt.Errorf("%s: %q: %v", l.key, a, err)
			}
			// A node or agent ID would be two roles at once: the node
			// hosting such an agent would get it the role's credential.
			if id.TrustDomain() == own && (strings.HasPrefix(id.Path(), "/node/") || strings.HasPrefix(id.Path(), "/agent/")) {
				return fmt.Errorf("%s: %q is a node or agent ID of this trust domain (under /node/ or /agent/), which nodes obtain SVIDs for: choose an ID outside those paths", l.key, a)
			}
		}
	}
	if w := c.Audit.GroupCommitWait; w != nil && (*w < 0 || *w > Duration(100*time.Millisecond)) {
		return fmt.Errorf("audit.group_commit_wait %v: must be between 0s and 100ms", w.D())
	}
	if err := c.CA.validate(); err != nil {
		return err
	}
	// The hint is what peers wait before fetching again: shorter than the
	// third of an authority's life during which the next one is published.
	// It is published in whole seconds: a fraction would be cut.
	if h, window := c.Federation.BundleRefreshHint.D(), min(c.CA.CATTL.D(), c.CA.JWTKeyTTL.D())/3; h < time.Second || h%time.Second != 0 || window > 0 && h >= window {
		return fmt.Errorf("federation.bundle_refresh_hint %s: must be whole seconds, at least 1s, and shorter than a third of ca.ca_ttl and ca.jwt_key_ttl (%s)", h, window)
	}
	if err := c.Federation.validate(); err != nil {
		return err
	}
	if err := c.checkFederations(); err != nil {
		return err
	}
	if err := checkOrigin(c.Audit.Origin); err != nil {
		return err
	}
	if err := c.Audit.Witness.validate(); err != nil {
		return err
	}
	if err := validateWitnesses(c.Audit.Witnesses); err != nil {
		return err
	}
	if _, err := c.Attestation.TPM.Load(); err != nil {
		return err
	}
	if d := c.Attestation.PruneLapsedNodesAfter.D(); d != 0 && (d < time.Hour || d > maxAuthorityTTL) {
		return fmt.Errorf("attestation.prune_lapsed_nodes_after %s: 0s (never) or between 1h and %s", d, maxAuthorityTTL)
	}
	if err := c.Policy.validate(); err != nil {
		return err
	}
	return c.HTTP.validate()
}

// maxAuthorityTTL bounds ca.ca_ttl and ca.jwt_key_ttl: five years.
const maxAuthorityTTL = 5 * 365 * 24 * time.Hour

func (c *CAConfig) validate() error {
	if c.KeyType != "ec-p256" && c.KeyType != "ec-p384" {
		return fmt.Errorf("ca.key_type %q: want ec-p256 or ec-p384", c.KeyType)
	}
	// Lifetimes have an upper bound too: a typo'd unit (876600h) would
	// otherwise issue credentials that outlive their holders by a
	// century. SVIDs: as an agent registration's own TTLs.
	maxSVID := time.Duration(registry.MaxTTLSeconds) * time.Second
	for _, l := range []struct {
		name string
		d    Duration
		max  time.Duration
	}{{"ca.ca_ttl", c.CATTL, maxAuthorityTTL}, {"ca.jwt_key_ttl", c.JWTKeyTTL, maxAuthorityTTL}, {"ca.x509_svid_ttl", c.X509SVIDTTL, maxSVID}, {"ca.jwt_svid_ttl", c.JWTSVIDTTL, maxSVID}} {
		if d := l.d.D(); d < time.Minute || d > l.max {
			return fmt.Errorf("%s %s: must be between 1m and %s", l.name, d, l.max)
		}
	}
	if c.X509SVIDTTL.D() > c.CATTL.D()/2 {
		return fmt.Errorf("ca.x509_svid_ttl %s: must be at most half of ca.ca_ttl (%s)", c.X509SVIDTTL.D(), c.CATTL.D())
	}
	if c.JWTSVIDTTL.D() > c.JWTKeyTTL.D()/2 {
		return fmt.Errorf("ca.jwt_svid_ttl %s: must be at most half of ca.jwt_key_ttl (%s)", c.JWTSVIDTTL.D(), c.JWTKeyTTL.D())
	}
	if (c.UpstreamCertFile == "") != (c.UpstreamKeyFile == "") {
		return errors.New("ca: upstream_cert_file and upstream_key_file must be set together")
	}
	if p := c.PKCS11; p != (PKCS11Config{}) {
		switch {
		case p.Module == "" || p.TokenLabel == "" || p.PINFile == "":
			return errors.New("ca.pkcs11: module, token_label and pin_file must be set together")
		case !filepath.IsAbs(p.Module):
			return fmt.Errorf("ca.pkcs11.module %q: must be an absolute path (a module found through the library search path could be another)", p.Module)
		}
	}
	return nil
}

// checkListen checks a listen address: host:port, the port a number
// from 0 (any) to 65535.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || strconv.FormatUint(n, 10) != port {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

func (f *FederationConfig) validate() error {
	if (f.WebListen == "") != (f.WebCertFile == "") || (f.WebCertFile == "") != (f.WebKeyFile == "") {
		return errors.New("federation: web_listen, web_cert_file and web_key_file must be set together")
	}
	if f.WebListen != "" {
		if err := checkListen(f.WebListen); err != nil {
			return fmt.Errorf("federation.web_listen %q: %v", f.WebListen, err)
		}
	}
	seen := map[string]bool{}
	for _, t := range f.TrustDomains {
		td, err := trustDomainOf(t.TrustDomain)
		if err != nil {
			return fmt.Errorf("federation.trust_domains: %q: %v", t.TrustDomain, err)
		}
		if seen[td.Name()] { // "org-b.example" and "spiffe://org-b.example" are one
			return fmt.Errorf("federation.trust_domains: %q listed twice", td.Name())
		}
		seen[td.Name()] = true
		if t.BundleEndpointURL == "" {
			return fmt.Errorf("federation.trust_domains: %q: bundle_endpoint_url is required", t.TrustDomain)
		}
	}
	return nil
}

// checkFederations checks each federated trust domain as adding it
// will (its relationship, not this trust domain; its bundle file on a
// first start), and the web roots file: a mistake stops the server before it creates or
// changes anything, with the key named.
func (c *Config) checkFederations() error {
	own, _ := spiffeid.TrustDomainFromString(c.TrustDomain) // checked first
	// On a first start (no store yet) every bundle_file is read and
	// parsed too; later it is read only for a trust domain not stored
	// yet, and may be gone since.
	_, statErr := os.Stat(filepath.Join(c.DataDir, "mandate.db"))
	firstStart := errors.Is(statErr, fs.ErrNotExist)
	for _, t := range c.Federation.TrustDomains {
		f := &Federation{TrustDomain: t.TrustDomain, BundleEndpointURL: t.BundleEndpointURL, Profile: t.Profile, EndpointSPIFFEID: t.EndpointSPIFFEID}
		if firstStart {
			var err error
			if f, err = t.federation(); err != nil {
				return fmt.Errorf("federation.trust_domains: %w", err)
			}
		}
		rel, b, _, err := f.relationship()
		if err != nil {
			return fmt.Errorf("federation.trust_domains: %q: %w", t.TrustDomain, err)
		}
		if rel.TrustDomain == own {
			return fmt.Errorf("federation.trust_domains: %q: cannot federate with the own trust domain", t.TrustDomain)
		}
		if firstStart && rel.NeedsInitialBundle() && (b == nil || len(b.X509Authorities()) == 0) {
			return fmt.Errorf("federation.trust_domains: %q: bundle_file is required: profile https_spiffe with the endpoint %s in the peer's trust domain authenticates it with the peer's SPIFFE bundle, which this authority needs a first copy of ('mandate bundle show' at the peer prints it)",
				t.TrustDomain, rel.EndpointSPIFFEID)
		}
	}
	if c.Federation.WebRootsFile != "" {
		if _, err := loadPool(c.Federation.WebRootsFile); err != nil {
			return err
		}
	}
	return nil
}

// federation is the relationship t configures, its bundle file read.
func (t FederatedTrustDomain) federation() (*Federation, error) {
	f := &Federation{TrustDomain: t.TrustDomain, BundleEndpointURL: t.BundleEndpointURL, Profile: t.Profile, EndpointSPIFFEID: t.EndpointSPIFFEID}
	if t.BundleFile != "" {
		b, err := os.ReadFile(t.BundleFile)
		if err != nil {
			return nil, fmt.Errorf("%q: bundle_file: %w", t.TrustDomain, err)
		}
		td, err := spiffeid.TrustDomainFromString(t.TrustDomain)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", t.TrustDomain, err)
		}
		if _, _, err := federation.ParseBundle(td, b); err != nil {
			return nil, fmt.Errorf("%q: bundle_file %s: %w", t.TrustDomain, t.BundleFile, err)
		}
		f.Bundle = b
	}
	return f, nil
}

func (w *WitnessConfig) validate() error {
	origins := map[string]bool{}
	for _, k := range w.Logs {
		v, err := note.NewVerifier(k)
		if err != nil {
			return fmt.Errorf("audit.witness.logs: %q: not a note verifier key (<origin>+<hash>+<key>, as audit/log.vkey): %v", k, err)
		}
		if origins[v.Name()] {
			return fmt.Errorf("audit.witness.logs: two keys of the log %q: a log has one", v.Name())
		}
		origins[v.Name()] = true
	}
	if err := checkOrigin(w.Name); err != nil {
		return fmt.Errorf("audit.witness.name %q: not a key name (no spaces, no +; as example.com/witness)", w.Name)
	}
	return nil
}

// maxWitnesses bounds audit.witnesses: each is asked at every new
// checkpoint.
const maxWitnesses = 16

func validateWitnesses(ws []WitnessEndpoint) error {
	if len(ws) > maxWitnesses {
		return fmt.Errorf("audit.witnesses: at most %d", maxWitnesses)
	}
	names := map[string]bool{}
	for _, w := range ws {
		u, err := url.Parse(w.URL)
		if err != nil || u.Scheme != "https" || !publicHostPort(u) || u.User != nil || strings.ContainsAny(w.URL, "?#") {
			// Not even an empty query or fragment: add-checkpoint is
			// appended to the URL, and would be in it.
			return fmt.Errorf("audit.witnesses: url %q: must be https://HOST[:PORT][/PATH], the witness's submission prefix", w.URL)
		}
		v, err := fnote.NewVerifierForCosignatureV1(w.VKey)
		if err != nil {
			return fmt.Errorf("audit.witnesses: vkey %q: not a cosignature/v1 verifier key (<name>+<hash>+<key>, as a Mandate witness's audit/witness.vkey): %v", w.VKey, err)
		}
		if names[v.Name()] {
			return fmt.Errorf("audit.witnesses: the witness %q is listed twice", v.Name())
		}
		names[v.Name()] = true
		if w.TrustDomain != "" {
			if _, err := trustDomainOf(w.TrustDomain); err != nil {
				return fmt.Errorf("audit.witnesses: trust_domain %q: %v", w.TrustDomain, err)
			}
		}
	}
	return nil
}

// checkOrigin checks audit.origin: a name a note signer key may have
// (the log's checkpoints are signed under it). Empty: the default.
func checkOrigin(origin string) error {
	if origin == "" {
		return nil
	}
	err := audit.ValidateOrigin(origin)
	if err == nil {
		var skey string
		if skey, _, err = note.GenerateKey(rand.Reader, origin); err == nil {
			_, err = note.NewSigner(skey)
		}
	}
	if err != nil {
		return fmt.Errorf("audit.origin %q: not a log origin (no spaces, no +; as example.com/log): %v", origin, err)
	}
	return nil
}

func (h *HTTPConfig) validate() error {
	if h.PublicURL != "" {
		u, err := url.Parse(h.PublicURL)
		// No query or fragment, not even an empty one ("?", "#"): the
		// URL is the OAuth metadata's issuer as written (RFC 8414 §2).
		if err != nil || u.Scheme != "https" || !publicHostPort(u) || (u.Path != "" && u.Path != "/") || strings.ContainsAny(h.PublicURL, "?#") || u.User != nil {
			return fmt.Errorf("http.public_url %q: must be https://HOST[:PORT], the port from 1 to 65535", h.PublicURL)
		}
	}
	for _, id := range h.MetricsReaders {
		if _, err := spiffeid.FromString(id); err != nil {
			return fmt.Errorf("http.metrics_readers: %q: %v", id, err)
		}
	}
	if len(h.ServerNames) > maxServerNames {
		return fmt.Errorf("http.server_names: at most %d", maxServerNames)
	}
	for _, n := range h.ServerNames {
		if net.ParseIP(n) == nil && !ca.ValidDNSName(n) {
			return fmt.Errorf("http.server_names: %q is neither an IP address nor a DNS name a certificate can carry (ASCII letters, digits and hyphens; no wildcard, no trailing dot; an international name in its xn-- form)", n)
		}
	}
	if h.MaxBodyBytes < 1024 || h.MaxBodyBytes > 16<<20 {
		return fmt.Errorf("http.max_body_bytes %d: must be between 1024 and 16777216", h.MaxBodyBytes)
	}
	if h.MaxConnections < 1 || h.MaxConnections > 1_000_000 {
		return fmt.Errorf("http.max_connections %d: must be between 1 and 1000000", h.MaxConnections)
	}
	if err := h.RateLimit.validate(); err != nil {
		return err
	}
	for name, d := range map[string]Duration{"http.read_timeout": h.ReadTimeout, "http.write_timeout": h.WriteTimeout, "http.idle_timeout": h.IdleTimeout} {
		if d.D() < 100*time.Millisecond || d.D() > time.Hour {
			return fmt.Errorf("%s %s: must be between 100ms and 1h", name, d.D())
		}
	}
	return nil
}

func (r RateLimitConfig) validate() error {
	if n := r.RequestsPerSecond; n != nil && (*n < 0 || *n > maxRequestsPerSecond) {
		return fmt.Errorf("http.rate_limit.requests_per_second %d: must be between 0 (no limit) and %d", *n, maxRequestsPerSecond)
	}
	if r.Burst < 0 || r.Burst > 2*maxRequestsPerSecond {
		return fmt.Errorf("http.rate_limit.burst %d: must be between 1 and %d", r.Burst, 2*maxRequestsPerSecond)
	}
	if r.Burst > 0 && r.RequestsPerSecond != nil && *r.RequestsPerSecond == 0 {
		return fmt.Errorf("http.rate_limit.burst %d: requests_per_second is 0 (no limit): a burst bounds nothing", r.Burst)
	}
	for id, n := range r.Callers {
		if _, err := spiffeid.FromString(id); err != nil {
			return fmt.Errorf("http.rate_limit.callers: %q: %v", id, err)
		}
		if n < 0 || n > maxRequestsPerSecond {
			return fmt.Errorf("http.rate_limit.callers: %s: %d: must be between 0 (no limit) and %d", id, n, maxRequestsPerSecond)
		}
	}
	return nil
}

// publicHostPort reports whether u names a host, and a port a client can
// dial if any: "https://:8443" names none, and "https://h:99999",
// "https://h:0" or "https://h:" no port (url.Parse takes them all).
func publicHostPort(u *url.URL) bool {
	if u.Hostname() == "" {
		return false
	}
	port := u.Port()
	if port == "" && !strings.HasSuffix(u.Host, ":") {
		return true
	}
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n > 0 && strconv.FormatUint(n, 10) == port
}

// Load reads the EK roots and decodes the profiles into a verifier's
// configuration, with errors naming the config key at fault.
func (t *TPMConfig) Load() (attest.TPMConfig, error) {
	out := attest.TPMConfig{EKAllowlist: t.EKAllowlist, EKCertKeyTypes: t.EKCertKeyTypes, Allowed: t.AllowedProfiles, ChallengeTTL: t.ChallengeTTL.D()}
	if d := t.ChallengeTTL.D(); d != 0 && (d < time.Second || d > attest.MaxChallengeTTL) {
		return out, fmt.Errorf("attestation.tpm.challenge_ttl %s: must be between 1s and 1h", d)
	}
	for _, f := range t.EKCARoots {
		b, err := os.ReadFile(f)
		if err != nil {
			return out, fmt.Errorf("attestation.tpm.ek_ca_roots: %w", err)
		}
		certs, err := credfile.ParseCertsPEM(b)
		if err != nil || len(certs) == 0 {
			return out, fmt.Errorf("attestation.tpm.ek_ca_roots: %s: no PEM certificate (%v)", f, err)
		}
		out.EKRoots = append(out.EKRoots, certs...)
	}
	for _, name := range slices.Sorted(maps.Keys(t.PCRProfiles)) {
		p := attest.PCRProfile{Name: name, SHA256: map[int][]byte{}}
		for k, v := range t.PCRProfiles[name].SHA256 {
			i, err := strconv.Atoi(k)
			if err != nil {
				return out, fmt.Errorf("attestation.tpm.pcr_profiles.%s: PCR %q is not a number", name, k)
			}
			// One spelling per PCR: "7" and "07" would be one PCR with
			// two golden values, one of them chosen at random.
			if strconv.Itoa(i) != k {
				return out, fmt.Errorf("attestation.tpm.pcr_profiles.%s: PCR %q: write it as %d", name, k, i)
			}
			val, err := hex.DecodeString(strings.TrimPrefix(strings.ToLower(v), "0x"))
			if err != nil {
				return out, fmt.Errorf("attestation.tpm.pcr_profiles.%s: PCR %d: %q is not hex", name, i, v)
			}
			p.SHA256[i] = val
		}
		out.Profiles = append(out.Profiles, p)
	}
	if _, err := attest.NewTPMVerifier(out); err != nil {
		return out, fmt.Errorf("attestation.tpm: %w", err)
	}
	return out, nil
}

func (p *PolicyConfig) validate() error {
	if p.Dir != "" {
		if fi, err := os.Stat(p.Dir); err != nil {
			return fmt.Errorf("policy.dir: %w", err)
		} else if !fi.IsDir() {
			return fmt.Errorf("policy.dir %s: not a directory", p.Dir)
		}
	}
	for _, id := range p.DecisionCallers {
		if _, err := spiffeid.FromString(id); err != nil {
			return fmt.Errorf("policy.decision_callers: %q: %v", id, err)
		}
	}
	for id, prefixes := range p.CallerPaths {
		if _, err := spiffeid.FromString(id); err != nil {
			return fmt.Errorf("policy.caller_paths: %q: %v", id, err)
		}
		if !slices.Contains(p.DecisionCallers, id) {
			return fmt.Errorf("policy.caller_paths: %q is not in policy.decision_callers: its paths would grant or restrict nothing (an admin may ask any path)", id)
		}
		if len(prefixes) == 0 {
			return fmt.Errorf("policy.caller_paths: %q lists no path", id)
		}
		for _, pre := range prefixes {
			if _, err := policy.PathSegments(pre); err != nil {
				return fmt.Errorf("policy.caller_paths: %q: %v", id, err)
			}
		}
	}
	if segs, err := policy.PathSegments(p.AuthZENPath); err != nil || len(segs) == 0 {
		return fmt.Errorf("policy.authzen_path %q: a data path, such as mandate/authzen/decision", p.AuthZENPath)
	}
	if d := p.EvalTimeout.D(); d < time.Millisecond || d > time.Minute {
		return fmt.Errorf("policy.eval_timeout %s: must be between 1ms and 1m", d)
	}
	for _, m := range p.DecisionLogMask {
		// A mask that erases nothing is refused, never kept: what it was
		// meant to erase would be in the append-only log for good.
		under := m == "/input" || m == "/result" || strings.HasPrefix(m, "/input/") || strings.HasPrefix(m, "/result/")
		if !under || !validPointerEscapes(m) {
			return fmt.Errorf("policy.decision_log_mask: %q: a JSON pointer (RFC 6901) that is /input or /result or under them, such as /input/password", m)
		}
	}
	return nil
}

// validPointerEscapes reports whether every ~ of the JSON pointer p
// starts an escape, ~0 or ~1 (RFC 6901 §3).
func validPointerEscapes(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] == '~' && (i+1 == len(p) || p[i+1] != '0' && p[i+1] != '1') {
			return false
		}
	}
	return true
}

// maxServerNames bounds http.server_names.
const maxServerNames = 32

// ServerNames are the DNS names and IP addresses the server's certificate
// carries besides localhost and the loopback addresses: the listen host,
// public_url's host and http.server_names.
func (c *Config) ServerNames() (dns []string, ips []net.IP) {
	hosts := []string{}
	if host, _, err := net.SplitHostPort(c.Listen); err == nil {
		hosts = append(hosts, host)
	}
	if u, err := url.Parse(c.HTTP.PublicURL); err == nil && c.HTTP.PublicURL != "" {
		hosts = append(hosts, u.Hostname())
	}
	hosts = append(hosts, c.HTTP.ServerNames...)
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !ip.IsUnspecified() && !ip.IsLoopback() && !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			continue
		}
		// A host no certificate can carry (the listen or public_url host
		// may be anything a URL allows: my_host, bücher.example) is left
		// out, not allowed to make every certificate fail; a trailing dot
		// names the same host.
		h = strings.TrimSuffix(h, ".")
		if h != "" && h != "localhost" && ca.ValidDNSName(h) && !slices.Contains(dns, h) {
			dns = append(dns, h)
		}
	}
	return dns, ips
}
