package authority_test

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"mandate.dev/mandate/authority"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*authority.Config)
		wantErr string // substring naming the key; "" for valid
	}{
		{"defaults", func(*authority.Config) {}, ""},
		{"bad trust domain", func(c *authority.Config) { c.TrustDomain = "Bad Domain" }, "trust_domain"},
		{"trust domain as its SPIFFE ID", func(c *authority.Config) { c.TrustDomain = "spiffe://org-a.example" }, ""},
		{"trust domain with a path", func(c *authority.Config) { c.TrustDomain = "spiffe://org-a.example/x" }, `trust_domain "spiffe://org-a.example/x": a trust domain has no path`},
		{"federated trust domain with a path", func(c *authority.Config) {
			c.Federation.TrustDomains = []authority.FederatedTrustDomain{{TrustDomain: "spiffe://org-b.example/x", BundleEndpointURL: "https://b/v1/bundle"}}
		}, "a trust domain has no path"},
		{"bad listen", func(c *authority.Config) { c.Listen = "nowhere" }, "listen"},
		{"listen port out of range", func(c *authority.Config) { c.Listen = "127.0.0.1:99999" }, "listen"},
		{"listen port not a number", func(c *authority.Config) { c.Listen = "127.0.0.1:https" }, "listen"},
		{"web listen port out of range", func(c *authority.Config) {
			c.Federation.WebListen, c.Federation.WebCertFile, c.Federation.WebKeyFile = "127.0.0.1:70000", "c.pem", "k.pem"
		}, "federation.web_listen"},
		{"negative bundle refresh hint", func(c *authority.Config) { c.Federation.BundleRefreshHint = authority.Duration(-5 * time.Minute) }, "federation.bundle_refresh_hint"},
		{"sub-second bundle refresh hint", func(c *authority.Config) { c.Federation.BundleRefreshHint = authority.Duration(500 * time.Millisecond) }, "federation.bundle_refresh_hint"},
		{"bundle refresh hint of a fraction of a second", func(c *authority.Config) {
			c.Federation.BundleRefreshHint = authority.Duration(1500 * time.Millisecond)
		}, "federation.bundle_refresh_hint"},
		{"bundle refresh hint past the publication window", func(c *authority.Config) { c.Federation.BundleRefreshHint = authority.Duration(100000 * time.Hour) }, "federation.bundle_refresh_hint"},
		{"bad log level", func(c *authority.Config) { c.LogLevel = "loud" }, "log_level"},
		// A mask that would erase nothing is refused: what it was meant
		// to erase would be in the log for good.
		{"decision log mask misspelt", func(c *authority.Config) { c.Policy.DecisionLogMask = []string{"/inputs/password"} }, "policy.decision_log_mask"},
		{"decision log mask without its slash", func(c *authority.Config) { c.Policy.DecisionLogMask = []string{"/inputpassword"} }, "policy.decision_log_mask"},
		{"decision log mask with a bad escape", func(c *authority.Config) { c.Policy.DecisionLogMask = []string{"/input/a~2b"} }, "policy.decision_log_mask"},
		{"decision log masks", func(c *authority.Config) {
			c.Policy.DecisionLogMask = []string{"/input/password", "/input/a~1b", "/result", "/input"}
		}, ""},
		{"caller paths of no decision caller", func(c *authority.Config) {
			c.Policy.CallerPaths = map[string][]string{"spiffe://mandate.localhost/platform/gw": {"mandate/authz"}}
		}, "policy.caller_paths"},
		{"caller paths with a bad path", func(c *authority.Config) {
			c.Policy.DecisionCallers = []string{"spiffe://mandate.localhost/platform/gw"}
			c.Policy.CallerPaths = map[string][]string{"spiffe://mandate.localhost/platform/gw": {"mandate/%zz"}}
		}, "policy.caller_paths"},
		{"caller paths", func(c *authority.Config) {
			c.Policy.DecisionCallers = []string{"spiffe://mandate.localhost/platform/gw"}
			c.Policy.CallerPaths = map[string][]string{"spiffe://mandate.localhost/platform/gw": {"mandate/authz"}}
		}, ""},
		{"authzen path that is no path", func(c *authority.Config) { c.Policy.AuthZENPath = "/" }, "policy.authzen_path"},
		{"server name that is no name", func(c *authority.Config) { c.HTTP.ServerNames = []string{"bad name.example"} }, "http.server_names"},
		{"server names", func(c *authority.Config) {
			c.HTTP.ServerNames = []string{"mandate.example", "xn--bcher-kva.example", "10.0.0.1", "::1"}
		}, ""},
		// What the CA cannot put in a certificate is refused at start,
		// not left to fail every TLS handshake.
		{"server name wildcard", func(c *authority.Config) { c.HTTP.ServerNames = []string{"*.mandate.example"} }, "http.server_names"},
		{"server name with a trailing dot", func(c *authority.Config) { c.HTTP.ServerNames = []string{"mandate.example."} }, "http.server_names"},
		{"server name not ASCII", func(c *authority.Config) { c.HTTP.ServerNames = []string{"bücher.example"} }, "http.server_names"},
		{"policy dir missing", func(c *authority.Config) { c.Policy.Dir = "/nonexistent/policies" }, "policy.dir"},
		{"policy dir a file", func(c *authority.Config) { c.Policy.Dir = "config_test.go" }, "policy.dir"},
		{"federation without the bundle its endpoint needs, at a first start", func(c *authority.Config) {
			c.DataDir = "/nonexistent/mandate-data"
			c.Federation.TrustDomains = []authority.FederatedTrustDomain{{TrustDomain: "org-b.example", BundleEndpointURL: "https://b/v1/bundle"}}
		}, "bundle_file is required"},
		{"federation over https_web needs no bundle", func(c *authority.Config) {
			c.DataDir = "/nonexistent/mandate-data"
			c.Federation.TrustDomains = []authority.FederatedTrustDomain{{TrustDomain: "org-b.example", BundleEndpointURL: "https://b/v1/bundle", Profile: "https_web"}}
		}, ""},
		{"bad admin", func(c *authority.Config) { c.Admins = []string{"not-an-id"} }, "admins"},
		// An admin or auditor that is also a node or agent ID: a node
		// hosting that agent would obtain the role's credential.
		{"admin that is an agent ID", func(c *authority.Config) { c.Admins = []string{"spiffe://mandate.localhost/agent/ops"} }, "admins"},
		{"admin that is a node ID", func(c *authority.Config) { c.Admins = []string{"spiffe://mandate.localhost/node/ops"} }, "admins"},
		{"auditor that is an agent ID", func(c *authority.Config) { c.Audit.Auditors = []string{"spiffe://mandate.localhost/agent/alice"} }, "audit.auditors"},
		{"admin that is an agent ID, the trust domain written as a SPIFFE ID", func(c *authority.Config) {
			c.TrustDomain = "spiffe://mandate.localhost"
			c.Admins = []string{"spiffe://mandate.localhost/agent/ops"}
		}, "admins"},
		{"admin and auditor outside the workload paths", func(c *authority.Config) {
			c.Admins = []string{"spiffe://mandate.localhost/team/ops", "spiffe://mandate.localhost/agents/ops"}
			c.Audit.Auditors = []string{"spiffe://mandate.localhost/auditor/alice", "spiffe://org-b.example/agent/alice"}
		}, ""},
		{"bad key type", func(c *authority.Config) { c.CA.KeyType = "rsa-512" }, "ca.key_type"},
		{"tiny ca ttl", func(c *authority.Config) { c.CA.CATTL = authority.Duration(time.Second) }, "ca.ca_ttl"},
		{"ca ttl of a century", func(c *authority.Config) { c.CA.CATTL = authority.Duration(876600 * time.Hour) }, "ca.ca_ttl"},
		{"svid ttl past an agent's own bound", func(c *authority.Config) {
			c.CA.CATTL, c.CA.X509SVIDTTL = authority.Duration(2400*time.Hour), authority.Duration(31*24*time.Hour)
		}, "ca.x509_svid_ttl"},
		{"long lifetimes within the bounds", func(c *authority.Config) {
			c.CA.CATTL, c.CA.JWTKeyTTL, c.CA.X509SVIDTTL = authority.Duration(4*365*24*time.Hour), authority.Duration(1000*time.Hour), authority.Duration(30*24*time.Hour)
		}, ""},
		{"svid outlives half the ca", func(c *authority.Config) { c.CA.X509SVIDTTL = authority.Duration(20 * time.Hour) }, "ca.x509_svid_ttl"},
		{"jwt svid outlives half the key", func(c *authority.Config) { c.CA.JWTSVIDTTL = authority.Duration(13 * time.Hour) }, "ca.jwt_svid_ttl"},
		{"upstream cert without key", func(c *authority.Config) { c.CA.UpstreamCertFile = "ca.pem" }, "upstream"},
		{"a PKCS#11 module without its PIN", func(c *authority.Config) {
			c.CA.PKCS11 = authority.PKCS11Config{Module: "/usr/lib/softhsm/libsofthsm2.so", TokenLabel: "mandate"}
		}, "ca.pkcs11"},
		{"a PKCS#11 token without its module", func(c *authority.Config) {
			c.CA.PKCS11 = authority.PKCS11Config{TokenLabel: "mandate", PINFile: "/etc/mandate/pin"}
		}, "ca.pkcs11"},
		{"a PKCS#11 module by its name", func(c *authority.Config) {
			c.CA.PKCS11 = authority.PKCS11Config{Module: "libsofthsm2.so", TokenLabel: "mandate", PINFile: "/etc/mandate/pin"}
		}, "absolute"},
		{"web listen without cert", func(c *authority.Config) { c.Federation.WebListen = "127.0.0.1:8444" }, "web_listen"},
		{"federation twice", func(c *authority.Config) {
			f := authority.FederatedTrustDomain{TrustDomain: "org-b.example", BundleEndpointURL: "https://b/v1/bundle"}
			c.Federation.TrustDomains = []authority.FederatedTrustDomain{f, f}
		}, "listed twice"},
		{"federation twice, spelt two ways", func(c *authority.Config) {
			c.Federation.TrustDomains = []authority.FederatedTrustDomain{
				{TrustDomain: "org-b.example", BundleEndpointURL: "https://b/v1/bundle"},
				{TrustDomain: "spiffe://org-b.example", BundleEndpointURL: "https://c/v1/bundle"},
			}
		}, `"org-b.example" listed twice`},
		{"federation without url", func(c *authority.Config) {
			c.Federation.TrustDomains = []authority.FederatedTrustDomain{{TrustDomain: "org-b.example"}}
		}, "bundle_endpoint_url"},
		// Checked as adding the relationship will check it, before anything
		// is created.
		{"federation with a misspelt profile", func(c *authority.Config) {
			c.Federation.TrustDomains = []authority.FederatedTrustDomain{{TrustDomain: "org-b.example", BundleEndpointURL: "https://b/v1/bundle", Profile: "https_spifee"}}
		}, `federation.trust_domains: "org-b.example"`},
		{"federation over http", func(c *authority.Config) {
			c.Federation.TrustDomains = []authority.FederatedTrustDomain{{TrustDomain: "org-b.example", BundleEndpointURL: "http://b/v1/bundle"}}
		}, `federation.trust_domains: "org-b.example"`},
		{"federation with itself", func(c *authority.Config) {
			c.Federation.TrustDomains = []authority.FederatedTrustDomain{{TrustDomain: authority.DefaultTrustDomain, BundleEndpointURL: "https://b/v1/bundle"}}
		}, "own trust domain"},
		// Read only when the trust domain is not stored yet: it may be
		// gone after the first start.
		{"federation bundle file missing at a first start", func(c *authority.Config) {
			c.DataDir = "/nonexistent/mandate-data"
			c.Federation.TrustDomains = []authority.FederatedTrustDomain{{TrustDomain: "org-b.example", BundleEndpointURL: "https://b/v1/bundle", BundleFile: "/nonexistent/b.json"}}
		}, "federation.trust_domains: \"org-b.example\": bundle_file"},
		{"federation bundle file malformed at a first start", func(c *authority.Config) {
			c.DataDir = "/nonexistent/mandate-data"
			c.Federation.TrustDomains = []authority.FederatedTrustDomain{{TrustDomain: "org-b.example", BundleEndpointURL: "https://b/v1/bundle", BundleFile: "config_test.go"}}
		}, "federation.trust_domains: \"org-b.example\""},
		{"federation bundle file without keys at a first start", func(c *authority.Config) {
			c.DataDir = "/nonexistent/mandate-data"
			c.Federation.TrustDomains = []authority.FederatedTrustDomain{{TrustDomain: "org-b.example", BundleEndpointURL: "https://b/v1/bundle", Profile: "https_web", BundleFile: "testdata/bundle-without-keys.json"}}
		}, "federation.trust_domains: \"org-b.example\": bundle_file"},
		{"federation bundle file gone after the first start", func(c *authority.Config) {
			c.DataDir = "testdata/started"
			c.Federation.TrustDomains = []authority.FederatedTrustDomain{{TrustDomain: "org-b.example", BundleEndpointURL: "https://b/v1/bundle", BundleFile: "/nonexistent/b.json"}}
		}, ""},
		{"web roots file missing", func(c *authority.Config) { c.Federation.WebRootsFile = "/nonexistent/roots.pem" }, "federation.web_roots_file"},
		{"audit origin with a space", func(c *authority.Config) { c.Audit.Origin = "bad origin+x" }, "audit.origin"},
		{"audit origin with a control character", func(c *authority.Config) { c.Audit.Origin = "mandate.localhost/\x01audit" }, "audit.origin"},
		{"audit origin", func(c *authority.Config) { c.Audit.Origin = "mandate.example/log" }, ""},
		{"a PCR written two ways", func(c *authority.Config) {
			c.Attestation.TPM.PCRProfiles = map[string]authority.PCRProfileConfig{"p": {SHA256: map[string]string{"7": strings.Repeat("aa", 32), "07": strings.Repeat("bb", 32)}}}
		}, "attestation.tpm.pcr_profiles.p"},
		{"tiny body limit", func(c *authority.Config) { c.HTTP.MaxBodyBytes = 10 }, "http.max_body_bytes"},
		{"public URL not https", func(c *authority.Config) { c.HTTP.PublicURL = "http://mandate.example" }, "http.public_url"},
		{"public URL with a path", func(c *authority.Config) { c.HTTP.PublicURL = "https://mandate.example/api" }, "http.public_url"},
		// The OAuth metadata's issuer is the public URL: RFC 8414 §2 allows
		// it no query and no fragment, not even empty ones.
		{"public URL with an empty query", func(c *authority.Config) { c.HTTP.PublicURL = "https://mandate.example/?" }, "http.public_url"},
		{"public URL with an empty fragment", func(c *authority.Config) { c.HTTP.PublicURL = "https://mandate.example#" }, "http.public_url"},
		{"public URL with a port and a slash", func(c *authority.Config) { c.HTTP.PublicURL = "https://mandate.example:8443/" }, ""},
		// The issuer names a host clients can reach, at a port they can dial.
		{"public URL with no host, only a port", func(c *authority.Config) { c.HTTP.PublicURL = "https://:8443" }, "http.public_url"},
		{"public URL with a port out of range", func(c *authority.Config) { c.HTTP.PublicURL = "https://mandate.example:99999" }, "http.public_url"},
		{"public URL with port 0", func(c *authority.Config) { c.HTTP.PublicURL = "https://mandate.example:0" }, "http.public_url"},
		{"public URL with an empty port", func(c *authority.Config) { c.HTTP.PublicURL = "https://mandate.example:" }, "http.public_url"},
		{"public URL with an IPv6 host", func(c *authority.Config) { c.HTTP.PublicURL = "https://[2001:db8::1]:8443" }, ""},
		{"negative read timeout", func(c *authority.Config) { c.HTTP.ReadTimeout = authority.Duration(-time.Second) }, "http.read_timeout"},
		{"no idle timeout", func(c *authority.Config) { c.HTTP.IdleTimeout = authority.Duration(time.Millisecond) }, "http.idle_timeout"},
		{"p384", func(c *authority.Config) { c.CA.KeyType = "ec-p384" }, ""},
		{"negative group commit wait", func(c *authority.Config) { d := authority.Duration(-time.Millisecond); c.Audit.GroupCommitWait = &d }, "audit.group_commit_wait"},
		{"long group commit wait", func(c *authority.Config) { d := authority.Duration(time.Second); c.Audit.GroupCommitWait = &d }, "audit.group_commit_wait"},
		{"no group commit wait", func(c *authority.Config) { d := authority.Duration(0); c.Audit.GroupCommitWait = &d }, ""},
		{"negative rate limit", func(c *authority.Config) { n := -1; c.HTTP.RateLimit.RequestsPerSecond = &n }, "http.rate_limit.requests_per_second"},
		{"no rate limit", func(c *authority.Config) { n := 0; c.HTTP.RateLimit.RequestsPerSecond, c.HTTP.RateLimit.Burst = &n, 0 }, ""},
		{"a burst without a rate limit", func(c *authority.Config) { n := 0; c.HTTP.RateLimit.RequestsPerSecond = &n }, "http.rate_limit.burst"},
		{"negative burst", func(c *authority.Config) { c.HTTP.RateLimit.Burst = -1 }, "http.rate_limit.burst"},
		{"rate of a caller that is no SPIFFE ID", func(c *authority.Config) { c.HTTP.RateLimit.Callers = map[string]int{"gateway": 10} }, "http.rate_limit.callers"},
		{"negative rate of a caller", func(c *authority.Config) {
			c.HTTP.RateLimit.Callers = map[string]int{"spiffe://mandate.localhost/platform/gw": -1}
		}, "http.rate_limit.callers"},
		{"a witnessed log's key that is no key", func(c *authority.Config) { c.Audit.Witness.Logs = []string{"org-b.example/audit"} }, "audit.witness.logs"},
		{"two keys of one witnessed log", func(c *authority.Config) {
			c.Audit.Witness.Logs = []string{testVKey(t, "org-b.example/audit"), testVKey(t, "org-b.example/audit")}
		}, "audit.witness.logs"},
		{"a witness name with a space", func(c *authority.Config) {
			c.Audit.Witness.Logs, c.Audit.Witness.Name = []string{testVKey(t, "org-b.example/audit")}, "my witness"
		}, "audit.witness.name"},
		{"witnessed logs", func(c *authority.Config) {
			c.Audit.Witness.Logs = []string{testVKey(t, "org-b.example/audit"), testVKey(t, "org-c.example/audit")}
		}, ""},
		{"a witness not over https", func(c *authority.Config) {
			c.Audit.Witnesses = []authority.WitnessEndpoint{{URL: "http://w.example/v1/witness", VKey: testCosignerKey(t, "w.example/w")}}
		}, "audit.witnesses: url"},
		{"a witness URL ending in an empty query", func(c *authority.Config) {
			c.Audit.Witnesses = []authority.WitnessEndpoint{{URL: "https://w.example/v1/witness?", VKey: testCosignerKey(t, "w.example/w")}}
		}, "audit.witnesses: url"},
		{"a witness URL ending in an empty fragment", func(c *authority.Config) {
			c.Audit.Witnesses = []authority.WitnessEndpoint{{URL: "https://w.example/v1/witness#", VKey: testCosignerKey(t, "w.example/w")}}
		}, "audit.witnesses: url"},
		{"a witness key that is no key", func(c *authority.Config) {
			c.Audit.Witnesses = []authority.WitnessEndpoint{{URL: "https://w.example/v1/witness", VKey: "w.example/w"}}
		}, "audit.witnesses: vkey"},
		{"a witness listed twice", func(c *authority.Config) {
			k := testCosignerKey(t, "w.example/w")
			c.Audit.Witnesses = []authority.WitnessEndpoint{{URL: "https://w.example/v1/witness", VKey: k}, {URL: "https://w2.example/v1/witness", VKey: k}}
		}, "listed twice"},
		{"a witness of a bad trust domain", func(c *authority.Config) {
			c.Audit.Witnesses = []authority.WitnessEndpoint{{URL: "https://w.example/v1/witness", VKey: testCosignerKey(t, "w.example/w"), TrustDomain: "Org B"}}
		}, "audit.witnesses: trust_domain"},
		{"witnesses", func(c *authority.Config) {
			c.Audit.Witnesses = []authority.WitnessEndpoint{{URL: "https://w.example:8443/v1/witness", VKey: testCosignerKey(t, "w.example/w"), TrustDomain: "org-b.example"},
				{URL: "https://witness.example.net", VKey: testCosignerKey(t, "witness.example.net")}}
		}, ""},
		{"rates of callers", func(c *authority.Config) {
			c.HTTP.RateLimit.Callers = map[string]int{"spiffe://mandate.localhost/platform/gw": 0, "spiffe://org-b.example/gw": 5000}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c authority.Config
			c.SetDefaults()
			tt.mutate(&c)
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want an error naming %q", err, tt.wantErr)
			}
		})
	}
}

// Errors are named at a cost bounded by the document, and at most 20 of
// them are listed.
func TestLoadConfigFileManyErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString("ca:\n")
	for i := range 20000 {
		fmt.Fprintf(&b, "  k%d: 1\n", i)
	}
	b.WriteString("admins: " + strings.Repeat("{a: ", 5000) + "1" + strings.Repeat("}", 5000) + "\n")
	path := filepath.Join(t.TempDir(), "mandate.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := authority.LoadConfigFile(path)
	if err == nil || !strings.Contains(err.Error(), `line 2: ca.k0: unknown key "k0"`) || !strings.Contains(err.Error(), "more)") ||
		strings.Count(err.Error(), "\n") > 25 {
		t.Fatalf("LoadConfigFile with 20,000 unknown keys = %.300v..., want the first ones named and the rest counted", err)
	}
}

func TestLoadConfigFile(t *testing.T) {
	tests := []struct {
		name, yaml, wantErr string
	}{
		// A file of no settings is refused, not taken for the defaults
		// (the development trust domain): a template that rendered to
		// nothing, a file cut short.
		{"empty file", "", "holds no settings"},
		{"comments only", "# trust_domain: org-a.example\n\n", "holds no settings"},
		{"null", "~\n", "holds no settings"},
		{"a separator only", "---\n", "holds no settings"},
		{"an empty mapping", "{}\n", ""},
		{"keys", "trust_domain: org-a.example\nca:\n  x509_svid_ttl: 30m\n", ""},
		{"unknown key", "trust_domian: org-a.example\n", "trust_domian"},
		{"bad duration", "ca:\n  ca_ttl: forever\n", "not a duration"},
		// Errors name the key at fault, not only its line.
		{"a duration, named", "ca:\n  key_type: ec-p256\n  ca_ttl: 24\n", "line 3: ca.ca_ttl: "},
		{"a duration in a flow mapping, its section named", "ca: {ca_ttl: 24}\n", "line 1: ca: "},
		{"a mapping for a string, named", "trust_domain: {a: 1}\n", "line 1: trust_domain: cannot unmarshal"},
		{"a list item, its list named", "admins: [{b: 1}]\n", "line 1: admins: cannot unmarshal"},
		{"a key named like yaml's message", "\"field z\": 1\n", `line 1: field z: unknown key "field z"; the keys here: trust_domain,`},
		// An alias: yaml cites the anchor's line; no key is named then.
		{"an alias", "ca: {key_type: &k [1]}\nhttp: {public_url: *k}\n", "line 1: cannot unmarshal"},
		{"a type, named", "http:\n  max_body_bytes: 64KiB\n", "line 2: http.max_body_bytes: "},
		{"a list item, named", "admins:\n  - spiffe://a.example/x\n  - [x]\n", "line 3: admins[1]: "},
		{"a misspelt key, the one meant suggested", "audit:\n  auditor: [x]\n", `line 2: audit.auditor: unknown key "auditor" (did you mean "auditors"?); the keys here: auditors,`},
		{"an unknown key in a list, named", "federation:\n  trust_domains:\n    - trust_domain: b.example\n      oops: 1\n", "line 4: federation.trust_domains[0].oops: unknown key"},
		{"not yaml", "{{{", "config"},
		{"two documents", "listen: 127.0.0.1:0\n---\nlisten: 0.0.0.0:8443\nbogus_key: 1\n", "more than one YAML document"},
		{"a document and a separator", "listen: 127.0.0.1:0\n---\n", "more than one YAML document"},
		{"a leading separator", "---\nlisten: 127.0.0.1:0\n", ""},
		// A key given no value is not the default in disguise (a template
		// whose variable was unset): only a key left out is.
		{"an empty trust domain", "trust_domain: \"\"\n", `line 1: trust_domain: given an empty value`},
		{"a null trust domain", "trust_domain:\n", `line 1: trust_domain: given an empty value`},
		{"a null trust domain, spelt out", "trust_domain: ~\n", `line 1: trust_domain: given an empty value`},
		{"an empty listen", "listen: ''\n", "listen: given an empty value"},
		{"an empty data dir", "data_dir: \"\"\n", "data_dir: given an empty value"},
		{"an empty log level", "log_level: \"\"\n", "log_level: given an empty value"},
		{"an empty key type", "ca:\n  key_type: \"\"\n", "line 2: ca.key_type: given an empty value"},
		{"an empty AuthZEN path", "policy:\n  authzen_path: \"\"\n", "policy.authzen_path: given an empty value"},
		{"a zero body limit", "http:\n  max_body_bytes: 0\n", "line 2: http.max_body_bytes: given 0"},
		{"an empty profile", "federation:\n  trust_domains:\n    - trust_domain: b.example\n      profile: \"\"\n", "line 4: federation.trust_domains[0].profile: given an empty value"},
		{"a caller's rate given no value", "http:\n  rate_limit:\n    callers:\n      spiffe://org-a.example/platform/gw:\n", "line 4: http.rate_limit.callers.spiffe://org-a.example/platform/gw: given an empty value"},
		{"a caller's rate given null", "http:\n  rate_limit:\n    callers: {spiffe://org-a.example/platform/gw: ~}\n", "http.rate_limit.callers.spiffe://org-a.example/platform/gw: given an empty value"},
		{"a caller's rate of 0, no limit", "http:\n  rate_limit:\n    callers:\n      spiffe://org-a.example/platform/gw: 0\n", ""},
		{"an empty trust domain through an alias", "admins: [&e \"\"]\ntrust_domain: *e\n", "trust_domain: given an empty value"},
		// Keys whose empty value is their default (none, off), as -h shows them.
		{"empty optional keys", "ca:\n  upstream_cert_file: \"\"\n  upstream_key_file: \"\"\naudit:\n  origin: \"\"\npolicy:\n  dir: \"\"\nhttp:\n  public_url: \"\"\nfederation:\n  web_listen: \"\"\n", ""},
		{"a null section", "ca:\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mandate.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := authority.LoadConfigFile(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("LoadConfigFile() = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfigFile() = %v", err)
			}
			if tt.name == "keys" && (c.TrustDomain != "org-a.example" || c.CA.X509SVIDTTL.D() != 30*time.Minute) {
				t.Errorf("LoadConfigFile() = %+v, want trust domain and ttl set", c)
			}
		})
	}
	// audit.group_commit_wait: 0s turns the wait off; left out, it is the default.
	for yaml, want := range map[string]time.Duration{"audit:\n  group_commit_wait: 0s\n": 0, "audit:\n  auditors: []\n": authority.DefaultGroupCommitWait.D(),
		"audit:\n  group_commit_wait: 5ms\n": 5 * time.Millisecond} {
		path := filepath.Join(t.TempDir(), "mandate.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := authority.LoadConfigFile(path)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDefaults()
		if c.Audit.GroupCommitWait == nil || c.Audit.GroupCommitWait.D() != want {
			t.Errorf("%q: group_commit_wait %v, want %v", yaml, c.Audit.GroupCommitWait, want)
		}
	}
	if _, err := authority.LoadConfigFile(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("LoadConfigFile(missing) = nil, want an error")
	}
}

// Every key whose default is not empty (as SetDefaults fills it) is
// refused given null, and, when a number, given 0: the rule is checked
// against the defaults themselves, so that a key given a default later
// cannot silently take it from an unset template variable.
func TestEveryDefaultedKeyRefusesEmpty(t *testing.T) {
	var defaults authority.Config
	defaults.SetDefaults()
	checked := 0
	var walk func(v reflect.Value, path []string)
	walk = func(v reflect.Value, path []string) {
		for i := range v.NumField() {
			f := v.Type().Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			fv, p := v.Field(i), append(slices.Clip(path), name)
			if fv.Kind() == reflect.Struct {
				walk(fv, p)
				continue
			}
			if fv.IsZero() {
				continue // its default is empty: null says the same
			}
			doc := ""
			for depth, k := range p {
				doc += strings.Repeat("  ", depth) + k + ":"
				if depth < len(p)-1 {
					doc += "\n"
				}
			}
			key := strings.Join(p, ".")
			// A duration given 0s takes its default, as --help says.
			given := []string{" ~", "", ` ""`}
			if ft := f.Type; ft == reflect.TypeFor[int]() || ft == reflect.TypeFor[int64]() {
				given = append(given, " 0")
			}
			for _, g := range given {
				file := filepath.Join(t.TempDir(), "mandate.yaml")
				if err := os.WriteFile(file, []byte(doc+g+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				_, err := authority.LoadConfigFile(file)
				// "" may be refused by the decoder (not a duration, not a
				// number): named as well.
				if err == nil || !strings.Contains(err.Error(), key+": ") {
					t.Errorf("%s given %q: LoadConfigFile() = %v, want it refused, naming %s", key, strings.TrimSpace(g), err, key)
				}
			}
			if f.Type == reflect.TypeFor[authority.Duration]() {
				// 0s: the default, as --help says.
				file := filepath.Join(t.TempDir(), "mandate.yaml")
				if err := os.WriteFile(file, []byte(doc+" 0s\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				c, err := authority.LoadConfigFile(file)
				if err != nil {
					t.Fatalf("%s given 0s: %v", key, err)
				}
				c.SetDefaults()
				got := reflect.ValueOf(*c)
				for _, name := range p {
					got = fieldByYAML(got, name)
				}
				if !got.Equal(fv) {
					t.Errorf("%s given 0s = %v, want its default %v", key, got, fv)
				}
			}
			checked++
		}
	}
	walk(reflect.ValueOf(defaults), nil)
	if checked < 10 {
		t.Fatalf("checked %d keys with a default; the walk missed the config's keys", checked)
	}
}

// fieldByYAML is the field of struct v whose yaml key is name.
func fieldByYAML(v reflect.Value, name string) reflect.Value {
	for i := range v.NumField() {
		if n, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ","); n == name {
			return v.Field(i)
		}
	}
	panic("no yaml key " + name)
}

// A caller's rate: its own when http.rate_limit.callers lists it (burst
// twice it), else requests_per_second and burst, each defaulted.
func TestRateLimitRate(t *testing.T) {
	gw := spiffeid.RequireFromString("spiffe://org-a.example/platform/gw")
	other := spiffeid.RequireFromString("spiffe://org-a.example/agent/a")
	fifty := 50
	for _, tc := range []struct {
		name      string
		cfg       authority.RateLimitConfig
		id        spiffeid.ID
		rate      float64
		wantBurst int
	}{
		{"defaults", authority.RateLimitConfig{}, other, authority.DefaultRequestsPerSecond, 2 * authority.DefaultRequestsPerSecond},
		{"no SPIFFE ID", authority.RateLimitConfig{RequestsPerSecond: &fifty}, spiffeid.ID{}, 50, 100},
		{"a burst of its own", authority.RateLimitConfig{RequestsPerSecond: &fifty, Burst: 7}, other, 50, 7},
		{"a caller listed", authority.RateLimitConfig{RequestsPerSecond: &fifty, Burst: 7, Callers: map[string]int{gw.String(): 1000}}, gw, 1000, 2000},
		{"a caller listed with 0", authority.RateLimitConfig{Callers: map[string]int{gw.String(): 0}}, gw, 0, 0},
		{"another caller", authority.RateLimitConfig{RequestsPerSecond: &fifty, Callers: map[string]int{gw.String(): 0}}, other, 50, 100},
	} {
		if rate, burst := tc.cfg.Rate(tc.id); rate != tc.rate || burst != tc.wantBurst {
			t.Errorf("%s: Rate(%v) = %v, %d; want %v, %d", tc.name, tc.id, rate, burst, tc.rate, tc.wantBurst)
		}
	}
}

// testVKey is a new note verifier key named name.
func testVKey(t *testing.T, name string) string {
	t.Helper()
	_, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	return vkey
}

// testCosignerKey is a new cosignature/v1 verifier key named name.
func testCosignerKey(t *testing.T, name string) string {
	t.Helper()
	k, err := fnote.VKeyToCosignatureV1(testVKey(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return k
}
