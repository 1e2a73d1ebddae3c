// Run by scripts/opa-sdk-client.sh (see there): a platform asks Mandate's
// policy decision API with the OPA TypeScript SDK (@styra/opa), written
// for OPA's REST API and knowing nothing of Mandate, over mTLS with its
// X509-SVID.
//
//   node opa-sdk-client.mjs URL DIR
//
// DIR holds the platform's X509-SVID (svid.pem, svid.key, bundle.pem).
// It prints each step, and exits non-zero at the first that does not go
// as docs/api.md (§5c) says.
import { readFileSync } from 'node:fs'
import { OPAClient } from '@styra/opa'
import { ServerError } from '@styra/opa/sdk/models/errors'
import { HTTPClient } from '@styra/opa/lib/http'
import { Agent, fetch as undiciFetch } from 'undici'

const [server, dir] = process.argv.slice(2)

function fail(msg) {
  console.error(`OPA SDK interop: ${msg}`)
  process.exit(1)
}
function say(msg) {
  console.log(`OPA SDK interop: ${msg}`)
}
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b)

const dispatcher = new Agent({
  connect: { ca: readFileSync(`${dir}/bundle.pem`), cert: readFileSync(`${dir}/svid.pem`), key: readFileSync(`${dir}/svid.key`) },
})
// The SDK's requests, sent through undici with the platform's X509-SVID;
// the answers handed back as the global fetch's Responses, which the SDK
// checks its answers are.
const httpClient = new HTTPClient({
  fetcher: async (req) => {
    const body = req.body === null ? undefined : Buffer.from(await req.arrayBuffer())
    const res = await undiciFetch(req.url, { method: req.method, headers: Object.fromEntries(req.headers), body, dispatcher })
    return new Response(await res.arrayBuffer(), { status: res.status, statusText: res.statusText, headers: Object.fromEntries(res.headers) })
  },
})
const opa = new OPAClient(server, { sdk: { httpClient } })

// POST /v1/data/{path} with input: the delegation policy's decision.
const decision = await opa.evaluate('mandate/delegation/decision', { scopes: ['calendar:read'], depth: 1 })
if (decision?.allow !== false || !decision.reasons?.includes('no delegator in the request')) {
  fail(`the delegation decision for an input without a delegator: ${JSON.stringify(decision)}`)
}
say(`evaluate mandate/delegation/decision: allow false, ${decision.reasons.length} reasons`)

// GET /v1/data/{path}: a data document.
const depth = await opa.evaluate('mandate/config/delegation/max_depth')
if (depth !== 3) fail(`data.mandate.config.delegation.max_depth = ${JSON.stringify(depth)}, want 3`)
say('evaluate mandate/config/delegation/max_depth (GET, no input): 3')

// A rule of the platform's own module.
const greeting = await opa.evaluate('sdkcheck/greeting', { name: 'Zoë' })
if (greeting !== 'hello, Zoë') fail(`sdkcheck/greeting = ${JSON.stringify(greeting)}`)
say(`evaluate sdkcheck/greeting: ${greeting}`)

// OPA Enterprise's batch API is not Mandate's: the SDK falls back to one
// evaluation per input when the server answers 404, as OPA's does.
const batch = await opa.evaluateBatch('sdkcheck/greeting', { a: { name: 'a' }, b: { name: 'b' } }, { fallback: true })
if (!same(batch, { a: 'hello, a', b: 'hello, b' })) fail(`evaluateBatch with fallback: ${JSON.stringify(batch)}`)
say('evaluateBatch falls back to one evaluation per input')

// An evaluation error is OPA's 500 internal_error, which the SDK reads
// as its ServerError.
try {
  const v = await opa.evaluate('sdkcheck/conflict', {})
  fail(`a conflicting rule evaluated to ${JSON.stringify(v)}`)
} catch (err) {
  if (!(err instanceof ServerError) || err.code !== 'internal_error') {
    fail(`a conflicting rule: ${err} (want the SDK's ServerError internal_error, its error of a 500)`)
  }
  say(`a conflicting rule: ServerError ${err.code}: ${err.message}`)
}
