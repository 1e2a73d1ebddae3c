# Issuance: may this node receive an SVID for this agent?
#
# Mandate asks data.mandate.issuance.decision before minting any agent
# SVID, with input:
#   kind:   "x509" or "jwt"
#   caller: SPIFFE ID of the caller (the node, or the agent renewing)
#   agent:  the registration: spiffe_id, scopes, selectors, node_ids,
#           require_hardware_attestation, accountability
#   node:   the hosting node: spiffe_id, attestation_method, level
#           ("token" or "hardware"), selectors, banned, drifted, tpm
#           (ek_sha256, profile, quoted_at, ...) for TPM nodes
# The decision is {"allow": bool, "reasons": [strings]}; anything else,
# an error or no answer is a deny.
package mandate.issuance

import rego.v1

default allow := false

allow if count(deny) == 0

# The agent and the node are named by their SPIFFE IDs: strings of the
# spiffe scheme (null, "" or another type names no one).
spiffe_id(id) if {
	is_string(id)
	startswith(id, "spiffe://")
}

deny contains "no registered agent in the request" if not spiffe_id(object.get(input, ["agent", "spiffe_id"], null))

deny contains "no hosting node in the request" if not spiffe_id(object.get(input, ["node", "spiffe_id"], null))

deny contains msg if {
	input.node.banned
	msg := sprintf("node %v is banned", [input.node.spiffe_id])
}

deny contains msg if {
	input.node.drifted
	msg := sprintf("node %v failed re-attestation (drifted)", [input.node.spiffe_id])
}

deny contains msg if {
	input.agent.require_hardware_attestation
	level := object.get(input.node, "level", "unknown")
	level != "hardware"
	msg := sprintf("agent %v requires a hardware-attested node; %v is attested by %v", [input.agent.spiffe_id, input.node.spiffe_id, level])
}

# An operator may require TPM nodes to match given PCR profiles
# (data.mandate.config.issuance.tpm_profiles, optional).
deny contains msg if {
	input.node.level == "hardware"
	profiles := data.mandate.config.issuance.tpm_profiles
	profile := object.get(input.node, ["tpm", "profile"], "none")
	not profile in profiles
	msg := sprintf("node %v matched PCR profile %v, not one of %v", [input.node.spiffe_id, profile, profiles])
}

decision := {"allow": allow, "reasons": sort(deny)}
