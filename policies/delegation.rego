# Delegation: may the delegator let the delegatee act for the principal
# with these scopes, at this depth of the chain?
#
# Mandate asks data.mandate.delegation.decision for every delegation hop,
# with input:
#   delegator:  {spiffe_id, trust_domain, scopes (what it may pass on: its
#               registration's, or the parent's), host: {spiffe_id, level,
#               banned, drifted, lapsed (its latest SVID expired: it has
#               neither renewed nor attested again since)}, revoked, banned}
#   delegatee:  {spiffe_id, trust_domain, host: {level, ...} (when known:
#               an agent of this trust domain), revoked}
#   principal:  on whose behalf (a string)
#   scopes:     the scopes asked for
#   depth:      1 for a root hop, parent's depth + 1 below
#   exp:        requested expiry (seconds since the epoch)
#   parent:     the parent hop, or absent for a root: {id, iss, scopes,
#               exp, revoked}
#   chain:      every party and hop above: [{spiffe_id, revoked}] ([] for
#               a root)
#   purpose:    what for
# and data:
#   data.mandate.trust_domain, data.mandate.federated_trust_domains
#   data.mandate.config.delegation.max_depth (a number), .sensitive_scopes
#   (a list, [] for none): either one missing or malformed denies
# The decision is {"allow": bool, "reasons": [strings]}, a reason for
# every rule that denies; anything else, an error or no answer is a deny.
package mandate.delegation

import rego.v1

default allow := false

allow if count(deny) == 0

default config := {}

config := data.mandate.config.delegation

# What the delegator may pass on: the parent hop's scopes below a root,
# its own granted scopes at the root.
default granted := null

granted := input.parent.scopes if input.parent

granted := input.delegator.scopes if not input.parent

# Note: a builtin called on an undefined value is undefined, and so is
# its negation: fields are read with object.get and a default, so that a
# missing one is caught, not skipped.

# The delegatee's trust domain: as given (a string), or, when none is
# given, read from its SPIFFE ID. One given of another type (false,
# null, a number) is unknown: the two rules never both apply (which
# would be a conflict, an evaluation error).
delegatee_td := input.delegatee.trust_domain if is_string(input.delegatee.trust_domain)

delegatee_td := td if {
	is_object(input.delegatee)
	not "trust_domain" in object.keys(input.delegatee)
	spiffe_id(input.delegatee.spiffe_id)
	td := split(trim_prefix(input.delegatee.spiffe_id, "spiffe://"), "/")[0]
}

# A party is named by its SPIFFE ID: a string of the spiffe scheme.
spiffe_id(id) if {
	is_string(id)
	startswith(id, "spiffe://")
}

# Every rule below denies unless the facts it needs are there and well
# formed: what is not known is not allowed.

deny contains "no delegator in the request" if not spiffe_id(object.get(input, ["delegator", "spiffe_id"], null))

deny contains "no delegatee in the request" if not spiffe_id(object.get(input, ["delegatee", "spiffe_id"], null))

deny contains "the delegatee's trust domain is unknown" if not delegatee_td

default federated_tds := []

federated_tds := data.mandate.federated_trust_domains

default this_td := "this trust domain"

this_td := data.mandate.trust_domain

deny contains msg if {
	td := delegatee_td
	td != this_td
	not td in federated_tds
	msg := sprintf("delegatee trust domain %v is not federated with %v", [td, this_td])
}

deny contains "scopes must be a non-empty list" if not is_array(object.get(input, "scopes", null))

deny contains "scopes must be a non-empty list" if input.scopes == []

deny contains "the delegator's granted scopes are unknown" if not is_array(granted)

# The scopes asked and granted as sets: a scope is looked up in a set
# at once, where in a list it would be compared with every element in
# turn (a cost growing with the product of the two lists' lengths), and
# a scope asked twice is judged once.
asked := {s | some s in input.scopes}

granted_set := {s | some s in granted}

deny contains msg if {
	is_array(granted)
	some s in (asked - granted_set)
	msg := sprintf("scope %v is not granted to the delegator", [s])
}

deny contains "chain depth must be a number of at least 1" if not is_number(object.get(input, "depth", null))

deny contains "chain depth must be a number of at least 1" if input.depth < 1

deny contains "a hop below the root needs its parent" if {
	input.depth > 1
	not input.parent
}

# A parent given (whatever its value) is a hop above: an object, and
# this hop is below the root.
parent_given if _ = input.parent

deny contains "the parent hop is not an object" if {
	parent_given
	not is_object(input.parent)
}

deny contains msg if {
	is_object(input.parent)
	input.depth < 2
	msg := sprintf("a hop below a parent has a depth of at least 2, not %v", [input.depth])
}

deny contains "the maximum chain depth is not configured" if not is_number(object.get(config, "max_depth", null))

deny contains msg if {
	input.depth > config.max_depth
	msg := sprintf("chain depth %v exceeds the maximum of %v", [input.depth, config.max_depth])
}

deny contains "the expiry must be a number" if not is_number(object.get(input, "exp", null))

deny contains "the parent's expiry must be a number" if {
	is_object(input.parent)
	not is_number(object.get(input.parent, "exp", null))
}

deny contains msg if {
	input.exp > input.parent.exp
	msg := sprintf("expiry %v is beyond the parent's %v", [input.exp, input.parent.exp])
}

# The sensitive scopes are a list ([] for none): anything else (a lone
# scope written as a string, an object, null, or no entry) would make
# no scope sensitive, so it denies instead.
sensitive_scopes := object.get(config, "sensitive_scopes", null)

deny contains "the sensitive scopes are not configured as a list" if not is_array(sensitive_scopes)

sensitive := asked & {s | some s in sensitive_scopes}

deny contains msg if {
	count(sensitive) > 0
	level := object.get(input, ["delegator", "host", "level"], "unknown")
	level != "hardware"
	msg := sprintf("sensitive scopes %v need a hardware-attested host (the delegator's is %v)", [sort(sensitive), level])
}

deny contains msg if {
	count(sensitive) > 0
	input.delegatee.host
	level := object.get(input, ["delegatee", "host", "level"], "unknown")
	level != "hardware"
	msg := sprintf("sensitive scopes %v need a hardware-attested host (the delegatee's is %v)", [sort(sensitive), level])
}

# Each one on its own: one missing does not hide the other.
parties contains input.delegator

parties contains input.delegatee

# The chain above: a list of parties and hops (objects), which is not
# empty below the root. A chain missing or malformed would leave the
# revocations above unjudged.
chain := object.get(input, "chain", null)

deny contains "the chain above must be a list of parties" if not is_array(chain)

deny contains "the chain above must be a list of parties" if {
	is_array(chain)
	some p in chain
	not is_object(p)
}

deny contains "a hop below the root needs the chain above it" if {
	parent_given
	chain == []
}

parties contains p if {
	is_array(chain)
	some p in chain
}

name(p) := object.get(p, "spiffe_id", object.get(p, "delegatee", "a party of the chain"))

deny contains msg if {
	some p in parties
	p.revoked
	msg := sprintf("%v is revoked", [name(p)])
}

deny contains msg if {
	some p in parties
	p.banned
	msg := sprintf("%v is banned", [name(p)])
}

deny contains "the parent delegation is revoked" if input.parent.revoked

deny contains msg if {
	some who in ["delegator", "delegatee"]
	input[who].host.drifted
	msg := sprintf("the %s's host failed re-attestation", [who])
}

deny contains msg if {
	some who in ["delegator", "delegatee"]
	input[who].host.banned
	msg := sprintf("the %s's host is banned", [who])
}

deny contains msg if {
	some who in ["delegator", "delegatee"]
	input[who].host.lapsed
	msg := sprintf("the %s's host is attested no longer", [who])
}

decision := {"allow": allow, "reasons": sort(deny)}
