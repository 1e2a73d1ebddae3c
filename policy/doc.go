// Package policy evaluates Rego policies with OPA embedded
// (github.com/open-policy-agent/opa/v1/rego): Mandate's own decision
// points (issuance, delegation) and the OPA-compatible Data API.
//
// Guarantees:
//   - A revision (the policy modules and data documents, identified by
//     their SHA-256) becomes active only if it compiles, defines the
//     documents Options.Required names, and every Rego test in it
//     passes; otherwise the active revision stays.
//   - Queries are prepared once per revision and path (a rule's, or a
//     package's) and shared by every goroutine; input is passed as a
//     parsed value.
//   - Every evaluation runs under a timeout with an injected evaluation
//     time, reported with the result, so a recorded decision can be
//     replayed against its revision.
//   - Decide fails closed: an error, a timeout, an undefined or malformed
//     decision is a deny, with the reason.
package policy
