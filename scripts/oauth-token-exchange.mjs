// Run by scripts/oauth-token-exchange.sh (see there): an RFC 8693 token
// exchange at a Mandate authority by openid-client, an OAuth client
// library of another language, as docs/api.md (§5d) says any such library
// does it: RFC 8414 discovery, tls_client_auth over mTLS, the delegator's
// statement signed by jose as a JWS of its own JSON, and the tokens
// verified by jose with the plain JWKS the metadata names.
//
//   node oauth-token-exchange.mjs URL DIR_A DIR_B DIR_C OUT PURPOSE
//
// DIR_A, DIR_B and DIR_C hold the X509-SVIDs of agents a, b and c
// (svid.pem, svid.key, bundle.pem); a may pass on calendar:read and
// mail:send; a delegates to b for PURPOSE. It prints each step, writes
// the token c is given to OUT, and exits non-zero at the first step that
// does not go as docs/api.md says.
import { readFileSync, writeFileSync } from 'node:fs'
import { X509Certificate, createPrivateKey } from 'node:crypto'
import * as client from 'openid-client'
import * as jose from 'jose'
import { Agent, fetch as undiciFetch } from 'undici'

const [server, dirA, dirB, dirC, out, purpose] = process.argv.slice(2)
const exchangeGrant = 'urn:ietf:params:oauth:grant-type:token-exchange'
const jwtType = 'urn:ietf:params:oauth:token-type:jwt'

function fail(msg) {
  console.error(`oauth token exchange interop: ${msg}`)
  process.exit(1)
}
function say(msg) {
  console.log(`oauth token exchange interop: ${msg}`)
}

// An agent: its SPIFFE ID, key, certificate chain (x5c) and an HTTP
// client that presents its X509-SVID and trusts the authority's bundle.
function agent(dir) {
  const pem = readFileSync(`${dir}/svid.pem`, 'utf8')
  const certs = pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g)
  const leaf = new X509Certificate(certs[0])
  const id = leaf.subjectAltName.replace(/^URI:/, '')
  const key = createPrivateKey(readFileSync(`${dir}/svid.key`))
  const dispatcher = new Agent({
    connect: { ca: readFileSync(`${dir}/bundle.pem`), cert: pem, key: readFileSync(`${dir}/svid.key`) },
  })
  const x5c = certs.map((c) => new X509Certificate(c).raw.toString('base64'))
  return { id, key, x5c, fetch: (url, opts) => undiciFetch(url, { ...opts, dispatcher }) }
}

// The delegator's statement, signed as a JWS by jose: JSON as
// JavaScript writes it, its members in an order of this program's (not
// the Go client's), and a purpose whose characters JSON writers escape
// differently.
async function statement(who, fields) {
  const payload = new TextEncoder().encode(JSON.stringify(fields))
  return new jose.CompactSign(payload)
    .setProtectedHeader({ typ: 'mandate-hop+jws', x5c: who.x5c, alg: 'ES256' })
    .sign(who.key)
}

// discover finds the token endpoint in the RFC 8414 metadata, as who.
async function discover(who) {
  return client.discovery(new URL(server), who.id, undefined, client.TlsClientAuth(), {
    algorithm: 'oauth2',
    [client.customFetch]: who.fetch,
  })
}

const a = agent(dirA)
const b = agent(dirB)
const c = agent(dirC)

const configA = await discover(a)
const md = configA.serverMetadata()
if (md.issuer !== server) fail(`metadata issuer ${md.issuer}, want ${server}`)
if (!md.token_endpoint_auth_methods_supported?.includes('tls_client_auth')) fail('metadata: no tls_client_auth')
if (!md.grant_types_supported?.includes(exchangeGrant)) fail('metadata: no token exchange grant')
say(`discovered ${md.token_endpoint} in ${server}/.well-known/oauth-authorization-server`)

// A root hop: a lets b act for alice with calendar:read.
const rootStatement = await statement(a, {
  purpose,
  scopes: ['calendar:read'],
  principal: 'alice',
  delegatee: b.id,
  delegator: a.id,
})
const root = await client.genericGrantRequest(configA, exchangeGrant, {
  subject_token: 'alice',
  subject_token_type: 'urn:mandate:params:oauth:token-type:principal',
  audience: b.id,
  scope: 'calendar:read',
  purpose,
  delegator_signature: rootStatement,
})
if (root.issued_token_type !== jwtType) fail(`issued_token_type ${root.issued_token_type}`)
if (root.token_type.toLowerCase() !== 'bearer') fail(`token_type ${root.token_type}`)
if (!(root.expiresIn() > 0)) fail(`expires_in ${root.expires_in}`)
if (root.scope !== 'calendar:read') fail(`scope ${root.scope}`)
say(`a (${a.id}) delegated calendar:read to b for alice: a ${root.access_token.length}-byte token, expires in ${root.expiresIn()} s`)

// The tokens verify with the JWKS the metadata names, by a JWT library
// that knows nothing of Mandate.
const jwks = jose.createRemoteJWKSet(new URL(md.jwks_uri), { [jose.customFetch]: a.fetch })
async function verified(token, audience) {
  const { payload, protectedHeader } = await jose.jwtVerify(token, jwks, { audience, algorithms: ['ES256', 'ES384', 'RS256', 'PS256'] })
  if (!protectedHeader.kid) fail('a token without kid')
  return payload
}
const rootClaims = await verified(root.access_token, b.id)
if (rootClaims.sub !== 'alice' || rootClaims.act?.sub !== b.id || rootClaims.act?.act?.sub !== a.id || rootClaims.scope !== 'calendar:read') {
  fail(`root hop claims: ${JSON.stringify(rootClaims)}`)
}
say(`jose verified the root hop with ${md.jwks_uri}: sub alice, act ${b.id} for ${a.id}`)

// A sub-delegation: b, holding the root hop, passes it on to c,
// exchanging the token it holds (subject_token_type jwt).
const configB = await discover(b)
const subStatement = await statement(b, {
  parent_iss: rootClaims.iss,
  parent: rootClaims.jti,
  delegator: b.id,
  delegatee: c.id,
  principal: rootClaims.sub,
  scopes: ['calendar:read'],
})
const sub = await client.genericGrantRequest(configB, exchangeGrant, {
  subject_token: root.access_token,
  subject_token_type: jwtType,
  audience: c.id,
  scope: 'calendar:read',
  delegator_signature: subStatement,
})
const subClaims = await verified(sub.access_token, c.id)
if (subClaims.act?.sub !== c.id || subClaims.act?.act?.sub !== b.id || subClaims.act?.act?.act?.sub !== a.id) {
  fail(`sub-delegation act chain: ${JSON.stringify(subClaims.act)}`)
}
say(`b passed it on to c: act ${c.id} for ${b.id} for ${a.id}`)

// OAuth errors are the library's errors, with the RFC 6749 code.
async function refusedWith(code, what, config, params) {
  try {
    await client.genericGrantRequest(config, exchangeGrant, params)
  } catch (err) {
    if (err instanceof client.ResponseBodyError && err.error === code) {
      say(`${what}: refused with ${code} (${err.error_description})`)
      return
    }
    fail(`${what}: ${err}`)
  }
  fail(`${what}: a token was issued`)
}
await refusedWith('invalid_scope', 'a scope a was never granted', configA, {
  subject_token: 'alice',
  subject_token_type: 'urn:mandate:params:oauth:token-type:principal',
  audience: b.id,
  scope: 'payments:write',
  delegator_signature: await statement(a, { delegator: a.id, delegatee: b.id, principal: 'alice', scopes: ['payments:write'] }),
})
await refusedWith('invalid_request', 'a statement over other scopes than asked', configA, {
  subject_token: 'alice',
  subject_token_type: 'urn:mandate:params:oauth:token-type:principal',
  audience: b.id,
  scope: 'mail:send',
  delegator_signature: rootStatement,
})
// c holds no hop from a: the root token in c's hands is not c's to pass on.
const configC = await discover(c)
await refusedWith('invalid_request', "a token exchanged by another than its holder", configC, {
  subject_token: root.access_token,
  subject_token_type: jwtType,
  audience: b.id,
  scope: 'calendar:read',
  delegator_signature: await statement(c, {
    delegator: c.id, delegatee: b.id, principal: 'alice', scopes: ['calendar:read'], parent: rootClaims.jti, parent_iss: rootClaims.iss,
  }),
})
writeFileSync(out, sub.access_token + '\n')
