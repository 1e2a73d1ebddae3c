package ca_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"mandate.dev/mandate/ca"
)

func TestMintJWTSVID(t *testing.T) {
	tests := []struct {
		name    string
		keyType ca.KeyType
		ttl     time.Duration
		aud     []string
		wantAlg jose.SignatureAlgorithm
		wantTTL time.Duration
	}{
		{"p256 default ttl", "", 0, []string{"spiffe://example.org/db"}, jose.ES256, ca.DefaultJWTSVIDTTL},
		{"p384 two audiences", ca.KeyTypeECP384, 2 * time.Minute, []string{"a", "b"}, jose.ES384, 2 * time.Minute},
		{"ttl capped at key expiry", "", 1000 * time.Hour, []string{"a"}, jose.ES256, ca.DefaultJWTKeyTTL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A clock that stands (at a whole second, as a JWT's exp
			// is): the SVID's expiry is exactly known, however long
			// the mint takes.
			clk := newFakeClock(time.Now().Truncate(time.Second))
			c, _ := newTestCA(t, func(cfg *ca.Config) { cfg.KeyType, cfg.Now = tt.keyType, clk.Now })
			now := clk.Now()
			svid, err := c.MintJWTSVID(context.Background(), ca.JWTParams{ID: testID, Audience: tt.aud, TTL: tt.ttl})
			if err != nil {
				t.Fatalf("MintJWTSVID: %v", err)
			}
			parsed, err := jwtsvid.ParseAndValidate(svid.Token, c.Bundle(), tt.aud[:1])
			if err != nil {
				t.Fatalf("jwtsvid.ParseAndValidate: %v", err)
			}
			if parsed.ID != testID || !slices.Equal(parsed.Audience, tt.aud) || !parsed.Expiry.Equal(svid.ExpiresAt) {
				t.Errorf("parsed = %s %v %s; minted = %s %v %s", parsed.ID, parsed.Audience, parsed.Expiry, svid.ID, svid.Audience, svid.ExpiresAt)
			}
			if !svid.ExpiresAt.Equal(now.Add(tt.wantTTL)) {
				t.Errorf("ExpiresAt = %s, want now+%s", svid.ExpiresAt, tt.wantTTL)
			}
			if _, ok := parsed.Claims["iat"]; !ok {
				t.Error("missing iat claim")
			}
			checkJWTHeader(t, svid.Token, svid.KeyID, tt.wantAlg)
			if _, err := jwtsvid.ParseAndValidate(svid.Token, c.Bundle(), []string{"someone-else"}); err == nil {
				t.Error("token validated for the wrong audience")
			}
		})
	}
}

func checkJWTHeader(t *testing.T, token, kid string, alg jose.SignatureAlgorithm) {
	t.Helper()
	checkJWTHeaderTyp(t, token, kid, alg, "JWT")
}

func checkJWTHeaderTyp(t *testing.T, token, kid string, alg jose.SignatureAlgorithm, wantTyp string) {
	t.Helper()
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{alg})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	h := tok.Headers[0]
	if h.KeyID == "" || h.KeyID != kid {
		t.Errorf("kid = %q, want %q", h.KeyID, kid)
	}
	if h.Algorithm != string(alg) {
		t.Errorf("alg = %s, want %s", h.Algorithm, alg)
	}
	if typ := h.ExtraHeaders[jose.HeaderType]; typ != wantTyp {
		t.Errorf("typ = %v, want %s", typ, wantTyp)
	}
}

func TestMintJWTSVIDRefusals(t *testing.T) {
	c, _ := newTestCA(t, nil)
	tests := []struct {
		name string
		p    ca.JWTParams
	}{
		{"no audience", ca.JWTParams{ID: testID}},
		{"empty audience entry", ca.JWTParams{ID: testID, Audience: []string{""}}},
		{"other trust domain", ca.JWTParams{ID: spiffeid.RequireFromString("spiffe://evil.org/web"), Audience: []string{"a"}}},
		{"zero id", ca.JWTParams{Audience: []string{"a"}}},
		{"negative ttl", ca.JWTParams{ID: testID, Audience: []string{"a"}, TTL: -time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.MintJWTSVID(context.Background(), tt.p); !errors.Is(err, ca.ErrInvalidParams) {
				t.Fatalf("err = %v, want ErrInvalidParams", err)
			}
		})
	}
}

func TestSignJWT(t *testing.T) {
	c, _ := newTestCA(t, nil)
	ctx := context.Background()
	now := time.Now()
	keyExpiry := c.Status()[1].NotAfter
	exp := now.Add(time.Hour)
	type delegation struct {
		Subject string `json:"sub"`
		Expiry  int64  `json:"exp"`
		Scope   string `json:"scope"`
	}
	tests := []struct {
		name      string
		claims    any
		expiresAt time.Time
		wantErr   bool
	}{
		{"valid", delegation{"spiffe://example.org/a", exp.Unix(), "read"}, exp, false},
		{"map claims", map[string]any{"exp": exp.Unix()}, exp, false},
		{"beyond key expiry", delegation{"x", keyExpiry.Add(time.Hour).Unix(), ""}, keyExpiry.Add(time.Hour), true},
		{"in the past", delegation{"x", now.Add(-time.Hour).Unix(), ""}, now.Add(-time.Hour), true},
		{"missing exp", map[string]any{"sub": "x"}, exp, true},
		{"exp after expiresAt", map[string]any{"exp": exp.Add(time.Hour).Unix()}, exp, true},
		{"not an object", []string{"x"}, exp, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, kid, err := c.SignJWT(ctx, "test+jwt", tt.claims, tt.expiresAt)
			if tt.wantErr {
				if !errors.Is(err, ca.ErrInvalidParams) {
					t.Fatalf("err = %v, want ErrInvalidParams", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("SignJWT: %v", err)
			}
			checkJWTHeaderTyp(t, token, kid, jose.ES256, "test+jwt")
			tok, _ := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
			key, ok := c.Bundle().FindJWTAuthority(kid)
			if !ok {
				t.Fatal("kid not in bundle")
			}
			var got map[string]any
			if err := tok.Claims(key, &got); err != nil {
				t.Fatalf("verify: %v", err)
			}
			if got["exp"] != float64(exp.Unix()) {
				t.Errorf("exp = %v", got["exp"])
			}
		})
	}
}

// A token's payload is its claims as encoding/json writes them, whatever
// tokens were signed before it (larger or smaller), and the token is the
// header, payload and signature, each base64url, once.
func TestSignJWTPayloadBytes(t *testing.T) {
	c, _ := newTestCA(t, nil)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	type claims struct {
		Subject string   `json:"sub"`
		Expiry  int64    `json:"exp"`
		Scope   string   `json:"scope"`
		Aud     []string `json:"aud,omitempty"`
		Token   string   `json:"token,omitempty"`
	}
	for i, cl := range []any{
		claims{Subject: "alice <&> \u2028", Expiry: exp.Unix(), Scope: "read", Token: strings.Repeat("eyJ0", 5000)},
		claims{Subject: "bob", Expiry: exp.Unix(), Scope: "a b", Aud: []string{"x"}},
		map[string]any{"exp": exp.Unix(), "z": 1, "a": "é"},
		claims{Subject: "c", Expiry: exp.Unix(), Token: strings.Repeat("x", 40000)},
		claims{Subject: "d", Expiry: exp.Unix()},
	} {
		want, err := json.Marshal(cl)
		if err != nil {
			t.Fatal(err)
		}
		for _, mint := range []bool{false, true} {
			var token string
			if mint {
				svid, err := c.MintJWTSVID(ctx, ca.JWTParams{ID: testID, Audience: []string{"aud"}})
				if err != nil {
					t.Fatal(err)
				}
				token = svid.Token
			} else if token, _, err = c.SignJWT(ctx, "test+jwt", cl, exp); err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(token, ".")
			if len(parts) != 3 {
				t.Fatalf("%d: token of %d parts", i, len(parts))
			}
			payload, err := base64.RawURLEncoding.Strict().DecodeString(parts[1])
			if err != nil {
				t.Fatalf("%d: payload: %v", i, err)
			}
			if sig, err := base64.RawURLEncoding.Strict().DecodeString(parts[2]); err != nil || len(sig) != 64 {
				t.Fatalf("%d: signature of %d bytes, %v", i, len(sig), err)
			}
			if mint {
				var got struct {
					Sub string   `json:"sub"`
					Aud []string `json:"aud"`
				}
				if err := json.Unmarshal(payload, &got); err != nil || got.Sub != testID.String() || !slices.Equal(got.Aud, []string{"aud"}) {
					t.Fatalf("%d: JWT-SVID claims %s: %v", i, payload, err)
				}
				continue
			}
			if !bytes.Equal(payload, want) {
				t.Fatalf("%d: payload\n%s\nwant\n%s", i, payload, want)
			}
		}
	}
}
