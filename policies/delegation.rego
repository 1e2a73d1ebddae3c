# Delegation: may the delegator let the delegatee act for the principal
# with these scopes, at this depth of the chain?
#
# Mandate asks data.mandate.delegation.decision for every delegation hop,
# with input:
#   delegator:  {spiffe_id, trust_domain, scopes (what its registration
#               grants), host: {level}, revoked, banned}
#   delegatee:  {spiffe_id, trust_domain, host: {level} (when known: an
#               agent of this trust domain), revoked, banned}
#   principal:  on whose behalf (a string)
#   scopes:     the scopes asked for
#   depth:      1 for a root hop, parent's depth + 1 below
#   exp:        requested expiry (seconds since the epoch)
#   parent:     the parent hop, or absent for a root: {id, scopes, exp,
#               revoked}
#   chain:      every party of the hops above: [{spiffe_id, revoked, banned}]
# and data:
#   data.mandate.trust_domain, data.mandate.federated_trust_domains
#   data.mandate.config.delegation.max_depth, .sensitive_scopes
# The decision is {"allow": bool, "reasons": [strings]}, a reason for
# every rule that denies; anything else, an error or no answer is a deny.
package mandate.delegation

import rego.v1

default allow := false

allow if count(deny) == 0

config := data.mandate.config.delegation

# What the delegator may pass on: the parent hop's scopes below a root,
# its own granted scopes at the root.
granted := input.parent.scopes if input.parent

granted := input.delegator.scopes if not input.parent

deny contains "no delegator in the request" if not input.delegator.spiffe_id

deny contains "no delegatee in the request" if not input.delegatee.spiffe_id

deny contains msg if {
	td := input.delegatee.trust_domain
	td != data.mandate.trust_domain
	not td in data.mandate.federated_trust_domains
	msg := sprintf("delegatee trust domain %s is not federated with %s", [td, data.mandate.trust_domain])
}

deny contains msg if {
	some s in input.scopes
	not s in granted
	msg := sprintf("scope %q is not granted to the delegator", [s])
}

deny contains "no scopes asked" if count(input.scopes) == 0

deny contains msg if {
	input.depth > config.max_depth
	msg := sprintf("chain depth %d exceeds the maximum of %d", [input.depth, config.max_depth])
}

deny contains "chain depth must be at least 1" if not input.depth >= 1

deny contains msg if {
	input.exp > input.parent.exp
	msg := sprintf("expiry %d is beyond the parent's %d", [input.exp, input.parent.exp])
}

sensitive contains s if {
	some s in input.scopes
	s in config.sensitive_scopes
}

deny contains msg if {
	count(sensitive) > 0
	input.delegator.host.level != "hardware"
	msg := sprintf("sensitive scopes %v need a hardware-attested host; the delegator's is %v", [sort(sensitive), object.get(input.delegator, ["host", "level"], "unknown")])
}

deny contains msg if {
	count(sensitive) > 0
	not input.delegator.host.level
	msg := sprintf("sensitive scopes %v need a hardware-attested host; the delegator's is unknown", [sort(sensitive)])
}

deny contains msg if {
	count(sensitive) > 0
	input.delegatee.host
	input.delegatee.host.level != "hardware"
	msg := sprintf("sensitive scopes %v need a hardware-attested host; the delegatee's is %v", [sort(sensitive), input.delegatee.host.level])
}

parties contains p if some p in [input.delegator, input.delegatee]

parties contains p if some p in input.chain

deny contains msg if {
	some p in parties
	p.revoked
	msg := sprintf("%s is revoked", [p.spiffe_id])
}

deny contains msg if {
	some p in parties
	p.banned
	msg := sprintf("%s is banned", [p.spiffe_id])
}

deny contains "the parent delegation is revoked" if input.parent.revoked

decision := {"allow": allow, "reasons": sort(deny)}
