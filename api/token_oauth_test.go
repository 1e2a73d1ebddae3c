package api_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"mandate.dev/mandate/authority"
	"mandate.dev/mandate/delegation"
)

// TestTokenExchangeWithAnOAuthClient: an unmodified OAuth 2.0 client
// library (golang.org/x/oauth2) finds the token endpoint in the RFC 8414
// metadata and exchanges tokens there (RFC 8693), authenticating with the
// delegator's X509-SVID (RFC 8705 tls_client_auth, client_id in the
// form); OAuth errors come back as the library's RetrieveError.
func TestTokenExchangeWithAnOAuthClient(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read", "mail:send")
	b := e.agentWithScopes("b")

	var md struct {
		Issuer        string   `json:"issuer"`
		TokenEndpoint string   `json:"token_endpoint"`
		AuthMethods   []string `json:"token_endpoint_auth_methods_supported"`
		GrantTypes    []string `json:"grant_types_supported"`
	}
	if err := e.client(nil, nil).Do(ctxT(t), http.MethodGet, "/.well-known/oauth-authorization-server", nil, &md); err != nil {
		t.Fatal(err)
	}
	if md.Issuer != e.url || len(md.AuthMethods) != 1 || md.AuthMethods[0] != "tls_client_auth" ||
		len(md.GrantTypes) != 1 || md.GrantTypes[0] != "urn:ietf:params:oauth:grant-type:token-exchange" {
		t.Fatalf("metadata: %+v", md)
	}
	// Behind a name (http.public_url), the metadata names it, whatever Host the client sent.
	pub := start(t, "org-z.example", func(c *authority.Config) { c.HTTP.PublicURL = "https://mandate.org-z.example:8443/" })
	var pmd map[string]any
	if err := pub.client(nil, nil).Do(ctxT(t), http.MethodGet, "/.well-known/oauth-authorization-server", nil, &pmd); err != nil ||
		pmd["issuer"] != "https://mandate.org-z.example:8443" || pmd["token_endpoint"] != "https://mandate.org-z.example:8443/v1/token" {
		t.Fatalf("metadata with http.public_url: %v %v", pmd, err)
	}
	// The library's HTTP client presents a's X509-SVID.
	mtls := &http.Client{Transport: &http.Transport{TLSClientConfig: e.client(a.chain, a.key).TLSConfig()}}
	t.Cleanup(mtls.CloseIdleConnections)
	ctx := context.WithValue(ctxT(t), oauth2.HTTPClient, mtls)
	exchange := func(clientID string, scopes ...string) (*oauth2.Token, error) {
		sig, err := delegation.SignStatement(delegation.Statement{Delegator: a.id.String(), Delegatee: b.id.String(), Principal: "alice", Scopes: scopes}, a.key, a.chain)
		if err != nil {
			t.Fatal(err)
		}
		cfg := clientcredentials.Config{ClientID: clientID, TokenURL: md.TokenEndpoint, Scopes: scopes, AuthStyle: oauth2.AuthStyleInParams,
			EndpointParams: url.Values{
				"grant_type":    {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token": {"alice"}, "subject_token_type": {"urn:mandate:params:oauth:token-type:principal"},
				"audience": {b.id.String()}, "delegator_signature": {sig},
			}}
		return cfg.Token(ctx)
	}

	tok, err := exchange(a.id.String(), "calendar:read")
	if err != nil {
		t.Fatalf("token exchange through golang.org/x/oauth2: %v", err)
	}
	if tok.Extra("issued_token_type") != "urn:ietf:params:oauth:token-type:jwt" || tok.Expiry.Before(time.Now()) || tok.Expiry.After(time.Now().Add(11*time.Minute)) {
		t.Fatalf("token: type %v, expiry %v", tok.Extra("issued_token_type"), tok.Expiry)
	}
	chain, err := delegation.Verify(tok.AccessToken, e.a, delegation.VerifyOptions{Presenter: b.id, Audience: b.id.String()})
	if err != nil || chain[0].Subject != "alice" || chain[0].Scope != "calendar:read" {
		t.Fatalf("the exchanged token: %v %v", chain, err)
	}

	for _, tc := range []struct {
		name     string
		clientID string
		scopes   []string
		code     string
	}{
		{"a scope never granted", a.id.String(), []string{"payments:write"}, "invalid_scope"},
		{"a client_id that is not the certificate's", b.id.String(), []string{"calendar:read"}, "invalid_client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := exchange(tc.clientID, tc.scopes...)
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) || re.ErrorCode != tc.code {
				t.Fatalf("error = %v, want the OAuth error %s", err, tc.code)
			}
		})
	}
}

// TestTokenExchangeExpiresInIsPositive: a hop with less than a second
// left when it is answered (its delegator signed a not_after one second
// away) is answered with expires_in of at least 1. An expires_in of 0
// reads as "no expiry" to OAuth client libraries: golang.org/x/oauth2
// would hold such a token valid for ever.
func TestTokenExchangeExpiresInIsPositive(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	mtls := &http.Client{Transport: &http.Transport{TLSClientConfig: e.client(a.chain, a.key).TLSConfig()}}
	t.Cleanup(mtls.CloseIdleConnections)
	ctx := context.WithValue(ctxT(t), oauth2.HTTPClient, mtls)
	exchange := func(notAfter int64) (*oauth2.Token, error) {
		sig, err := delegation.SignStatement(delegation.Statement{Delegator: a.id.String(), Delegatee: b.id.String(), Principal: "alice",
			Scopes: []string{"calendar:read"}, NotAfter: notAfter}, a.key, a.chain)
		if err != nil {
			t.Fatal(err)
		}
		cfg := clientcredentials.Config{ClientID: a.id.String(), TokenURL: e.url + "/v1/token", Scopes: []string{"calendar:read"}, AuthStyle: oauth2.AuthStyleInParams,
			EndpointParams: url.Values{
				"grant_type":    {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token": {"alice"}, "subject_token_type": {"urn:mandate:params:oauth:token-type:principal"},
				"audience": {b.id.String()}, "delegator_signature": {sig},
			}}
		return cfg.Token(ctx)
	}
	// The authority's clock stands at the last instant of a second that
	// this host's clock has already left: the hop, signed to end with
	// that second, is issued, and the second has ended by the time it is
	// answered. A clock that stands, not one that runs: the not_after is
	// never refused for a second begun before the authority read it,
	// however slow the request.
	end := time.Now().Unix()
	e.frozen.Store(time.Unix(end, 0).Add(-time.Nanosecond).UnixNano())
	tok, err := exchange(end)
	e.frozen.Store(0)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Expiry.IsZero() {
		t.Fatalf("a token with less than a second left: expires_in %v, which golang.org/x/oauth2 reads as no expiry", tok.Extra("expires_in"))
	}
	if n, _ := tok.Extra("expires_in").(float64); n < 1 {
		t.Fatalf("expires_in %v, want at least 1", tok.Extra("expires_in"))
	}
	// A hop of the default lifetime says it as the token does: its exp
	// less the second of the answer (iat, but for a second that ends
	// while it is answered).
	tok, err = exchange(0)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := delegation.Verify(tok.AccessToken, e.a, delegation.VerifyOptions{Presenter: b.id})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := tok.Extra("expires_in").(float64); int64(n) < 1 || int64(n) > chain[0].Expiry-chain[0].IssuedAt {
		t.Fatalf("expires_in %v for a token of exp - iat = %d", tok.Extra("expires_in"), chain[0].Expiry-chain[0].IssuedAt)
	}
}

// TestTokenAnswersFollowTheAPIConventions: the token endpoint's answers,
// tokens and OAuth errors alike, are written as every JSON answer of the
// API is (application/json, X-Content-Type-Options: nosniff, one JSON
// object and a newline), and are not cached (RFC 6749 §5.1).
func TestTokenAnswersFollowTheAPIConventions(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	root := rootForm(t, a, b)
	for _, tc := range []struct {
		name   string
		client *http.Client
		form   url.Values
		status int
		field  string // a member the answer must have
	}{
		{"a token", e.rawClient(a.chain, a.key), root, 200, "access_token"},
		{"an error before the client is known", e.rawClient(a.chain, a.key), url.Values{"grant_type": {"password"}}, 400, "error"},
		{"an error of an authenticated client", e.rawClient(a.chain, a.key), with(root, url.Values{"scope": {"payments:write"}}), 400, "error"},
		{"a client without a certificate", e.rawClient(nil, nil), root, 400, "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := tc.client.PostForm(e.url+"/v1/token", tc.form)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("%d %s, want %d", resp.StatusCode, body, tc.status)
			}
			for h, want := range map[string]string{"Content-Type": "application/json", "X-Content-Type-Options": "nosniff",
				"Cache-Control": "no-store", "Pragma": "no-cache"} {
				if got := resp.Header.Get(h); got != want {
					t.Errorf("%s: %q, want %q", h, got, want)
				}
			}
			var out map[string]any
			if !bytes.HasSuffix(body, []byte("}\n")) || json.Unmarshal(body, &out) != nil || out[tc.field] == nil {
				t.Errorf("body %q: want one JSON object with %q, and a newline", body, tc.field)
			}
		})
	}
}

// TestMetadataOfARequestWithoutHost: HTTP/1.0 lets a request name no
// host; the metadata then names the address the client reached (or the
// name it asked for in the TLS handshake), never the issuer "https:".
func TestMetadataOfARequestWithoutHost(t *testing.T) {
	e := start(t, "org-a.example")
	addr := strings.TrimPrefix(e.url, "https://")
	for _, tc := range []struct {
		name       string
		serverName string
		want       string
	}{
		{"the address", "", e.url},
		{"the TLS server name", "localhost", "https://localhost:" + addr[strings.LastIndexByte(addr, ':')+1:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.client(nil, nil).TLSConfig()
			cfg.ServerName = tc.serverName
			conn, err := tls.Dial("tcp", addr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, "GET /.well-known/oauth-authorization-server HTTP/1.0\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var md map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&md); err != nil || resp.StatusCode != 200 {
				t.Fatalf("%d %v", resp.StatusCode, err)
			}
			if md["issuer"] != tc.want || md["token_endpoint"] != tc.want+"/v1/token" {
				t.Fatalf("issuer %v, token_endpoint %v; want %s", md["issuer"], md["token_endpoint"], tc.want)
			}
		})
	}
}

// TestTokenExchangeWithAClientCertificateNoLongerValid: a client
// certificate that ran out after the handshake is refused before any
// handler, and at the token endpoint that refusal is still an RFC 6749
// error (invalid_client: 401 naming the scheme when the client sent an
// Authorization header, else 400), counted as every other refusal.
func TestTokenExchangeWithAClientCertificateNoLongerValid(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token": {"alice"}, "subject_token_type": {"urn:mandate:params:oauth:token-type:principal"},
		"audience": {b.id.String()}, "scope": {"calendar:read"}}
	for _, tc := range []struct {
		name          string
		authorization string
		status        int
		challenge     string // the WWW-Authenticate scheme; "": none
	}{
		{"client_id in the form", "", 400, ""},
		{"client_id in a Basic header", "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(a.id.String())+":")), 401, "Basic "},
		{"another scheme", "Bearer abc", 401, "Bearer "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.metricsOf("mandate_delegations_total")
			req := httptest.NewRequest(http.MethodPost, "/v1/token", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tc.authorization != "" {
				req.Header.Set("Authorization", tc.authorization)
			}
			req.TLS = &tls.ConnectionState{PeerCertificates: a.chain}
			e.skew.Add(int64(30 * 24 * time.Hour))
			rec := httptest.NewRecorder()
			e.srv.Handler().ServeHTTP(rec, req)
			e.skew.Add(-int64(30 * 24 * time.Hour))
			var oe struct {
				Error            string `json:"error"`
				ErrorDescription string `json:"error_description"`
			}
			if rec.Code != tc.status || rec.Header().Get("Content-Type") != "application/json" || json.Unmarshal(rec.Body.Bytes(), &oe) != nil ||
				oe.Error != "invalid_client" || !strings.Contains(oe.ErrorDescription, "not valid now") {
				t.Fatalf("%d %s %s, want %d and the RFC 6749 error invalid_client", rec.Code, rec.Header().Get("Content-Type"), rec.Body, tc.status)
			}
			if got := rec.Header().Get("WWW-Authenticate"); tc.challenge == "" && got != "" || !strings.HasPrefix(got, tc.challenge) {
				t.Errorf("WWW-Authenticate %q, want one naming %q", got, tc.challenge)
			}
			if rec.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", rec.Header().Get("Cache-Control"))
			}
			after := e.metricsOf("mandate_delegations_total")
			if k := `mandate_delegations_total{outcome="refused"}`; after[k]-before[k] != 1 {
				t.Errorf("%s went up by %v, want 1", k, after[k]-before[k])
			}
		})
	}
}

// rootForm is the token exchange form of a root hop from a to b, for
// alice, of calendar:read, with a's signature over it.
func rootForm(t *testing.T, a, b identity) url.Values {
	t.Helper()
	sig, err := delegation.SignStatement(delegation.Statement{Delegator: a.id.String(), Delegatee: b.id.String(), Principal: "alice",
		Scopes: []string{"calendar:read"}}, a.key, a.chain)
	if err != nil {
		t.Fatal(err)
	}
	return url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token": {"alice"}, "subject_token_type": {"urn:mandate:params:oauth:token-type:principal"},
		"audience": {b.id.String()}, "scope": {"calendar:read"}, "delegator_signature": {sig}}
}

// TestTokenExchangeByAClientThatIsNotAnAgent: a client that is not an
// agent of this trust domain (a node, say) is refused as a client
// (invalid_client), whatever its form holds: not with the error of the
// first parameter found wanting, as if it could have delegated with
// another form.
func TestTokenExchangeByAClientThatIsNotAnAgent(t *testing.T) {
	e := start(t, "org-a.example")
	a := e.agentWithScopes("a", "calendar:read")
	b := e.agentWithScopes("b")
	node := e.joinNode()
	root := rootForm(t, a, b)
	for _, tc := range []struct {
		name string
		form url.Values
	}{
		{"a whole form", root},
		{"no audience", with(root, url.Values{"audience": nil})},
		{"a resource", with(root, url.Values{"resource": {"https://api.example"}})},
		{"a token type not issued", with(root, url.Values{"requested_token_type": {"urn:ietf:params:oauth:token-type:saml2"}})},
		{"a subject token type not taken", with(root, url.Values{"subject_token_type": {"urn:ietf:params:oauth:token-type:id_token"}})},
		{"no subject_token", with(root, url.Values{"subject_token": nil})},
		{"no scope", with(root, url.Values{"scope": nil})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, ans := e.exchange(&node, tc.form); status != http.StatusBadRequest || ans["error"] != "invalid_client" {
				t.Fatalf("a node's exchange: %d %v, want 400 invalid_client", status, ans)
			}
		})
	}
}
