// Package authority composes Mandate's parts into the flows an authority
// performs: a node joins (attest → record → mint), a node or agent obtains
// an SVID (authenticate → check registration and hosting → mint), an admin
// changes registrations, federation relationships are kept.
//
// This is the one place where the parts meet; the HTTP layer (package api)
// only decodes requests and calls these flows.
//
// Guarantees:
//   - No credential without attestation: an agent SVID is minted only for
//     a registered agent, to an attested, unbanned node allowed to host it.
//     An agent renewing by itself is checked against the node recorded in
//     its current SVID (its Subject OU, see HostNode), which must still be
//     attested, unbanned and allowed.
//   - Every state change is durable before the flow returns success, and a
//     failed flow changes nothing (one store transaction per flow).
//   - A backup (MakeBackup) is a data directory the authority starts
//     from as it was: the store as of one transaction, with the CA keys
//     its CA state names and the audit log's keys, checked to open before
//     it is reported, and recorded in the audit log; one that would leave
//     the file system less room than the data file holds is refused.
//   - Errors that callers branch on are the sentinels of this package and
//     of attest, registry and ca.
package authority
