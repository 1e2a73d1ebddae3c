package client

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"mandate.dev/mandate/delegation"
)

// RFC 8693 token types of POST /v1/token.
const (
	// TokenTypeJWT is a delegation token (a parent hop's), or a JWT-SVID
	// as an actor token.
	TokenTypeJWT = delegation.TokenType
	// TokenTypeAccessToken is a parent delegation token named as an
	// access token.
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	// TokenTypePrincipal is Mandate's subject token type for a root hop:
	// the subject token is the principal's name, vouched for by the
	// delegator's signature.
	TokenTypePrincipal = "urn:mandate:params:oauth:token-type:principal"
)

// grantTokenExchange is RFC 8693's grant type.
const grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"

// TokenExchange is a delegation hop asked as an RFC 8693 token exchange
// (POST /v1/token) by the calling agent, its delegator: the client must
// be made with that agent's X509-SVID. It is the hop a
// DelegationRequest asks for, in OAuth's words.
type TokenExchange struct {
	// SubjectToken is the parent delegation token (SubjectTokenType
	// TokenTypeJWT or TokenTypeAccessToken) or, for a root hop, the
	// principal (TokenTypePrincipal).
	SubjectToken     string
	SubjectTokenType string
	// Audience is the delegatee's SPIFFE ID.
	Audience string
	Scopes   []string
	// ActorToken, optional, is a JWT-SVID of the caller for audience
	// spiffe://<trust domain>.
	ActorToken string
	// RequestedTokenType, optional: TokenTypeJWT or TokenTypeAccessToken.
	RequestedTokenType string
	// DelegatorSignature is the delegator's statement over the hop
	// (delegation.SignStatement), required.
	DelegatorSignature string
	// DelegateeX509SVID, optional, binds the token to the delegatee's
	// current X509-SVID chain (PEM).
	DelegateeX509SVID string
	Purpose           string
}

// TokenAnswer is the RFC 8693 answer of a token exchange.
type TokenAnswer struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope"`
}

// ExchangeToken asks for a delegation hop by RFC 8693 token exchange. A
// refusal in OAuth's words is a *Problem whose Code is the RFC 6749
// error ("invalid_scope" for a policy deny, "invalid_request",
// "invalid_target", ...); others are problems as elsewhere. The answer
// is OAuth's, with no delegation id, chain or receipt (Delegate gives
// them): delegation.Verify reads the token's chain, whose last hop's ID
// (its jti) is what DelegationStatus, AuditChain and RevokeDelegation
// take, and a sub-delegation's Statement names as its parent.
func (c *Client) ExchangeToken(ctx context.Context, x *TokenExchange) (*TokenAnswer, error) {
	form := url.Values{"grant_type": {grantTokenExchange}}
	for name, v := range map[string]string{"subject_token": x.SubjectToken, "subject_token_type": x.SubjectTokenType,
		"audience": x.Audience, "scope": strings.Join(x.Scopes, " "), "actor_token": x.ActorToken,
		"requested_token_type": x.RequestedTokenType, "delegator_signature": x.DelegatorSignature,
		"delegatee_x509_svid": x.DelegateeX509SVID, "purpose": x.Purpose} {
		if v != "" {
			form.Set(name, v)
		}
	}
	if x.ActorToken != "" {
		form.Set("actor_token_type", TokenTypeJWT)
	}
	const path = "/v1/token"
	a, err := c.send(ctx, http.MethodPost, path, http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, []byte(form.Encode()))
	if err != nil {
		return nil, err
	}
	out := new(TokenAnswer)
	if err := a.decode(http.MethodPost, path, out); err != nil {
		return nil, err
	}
	if out.AccessToken == "" {
		return nil, errors.New("client: POST /v1/token: the answer carries no token")
	}
	return out, nil
}
