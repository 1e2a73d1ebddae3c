package mandate.issuance_test

import rego.v1

import data.mandate.issuance

token_node := {"spiffe_id": "spiffe://org-a.example/node/join/1", "level": "token", "banned": false, "drifted": false}

tpm_node := {"spiffe_id": "spiffe://org-a.example/node/tpm/ab", "level": "hardware", "banned": false, "drifted": false, "tpm": {"profile": "edge-v1"}}

agent := {"spiffe_id": "spiffe://org-a.example/agent/a", "require_hardware_attestation": false}

test_allows_a_registered_agent_on_a_healthy_node if {
	d := issuance.decision with input as {"kind": "x509", "agent": agent, "node": token_node}
	d.allow
	d.reasons == []
}

test_denies_a_banned_node if {
	d := issuance.decision with input as {"agent": agent, "node": object.union(token_node, {"banned": true})}
	not d.allow
	d.reasons == ["node spiffe://org-a.example/node/join/1 is banned"]
}

test_denies_a_drifted_node if {
	d := issuance.decision with input as {"agent": agent, "node": object.union(tpm_node, {"drifted": true})}
	not d.allow
	count(d.reasons) == 1
}

test_hardware_requirement if {
	hw := object.union(agent, {"require_hardware_attestation": true})
	not issuance.allow with input as {"agent": hw, "node": token_node}
	issuance.allow with input as {"agent": hw, "node": tpm_node}
}

test_tpm_profiles_need_a_profile if {
	not issuance.allow with input as {"agent": agent, "node": object.remove(tpm_node, ["tpm"])}
		with data.mandate.config.issuance.tpm_profiles as ["edge-v1"]
}

test_tpm_profiles_when_configured if {
	not issuance.allow with input as {"agent": agent, "node": tpm_node}
		with data.mandate.config.issuance.tpm_profiles as ["edge-v2"]
	issuance.allow with input as {"agent": agent, "node": tpm_node}
		with data.mandate.config.issuance.tpm_profiles as ["edge-v1", "edge-v2"]
}

test_missing_facts_deny if {
	# Fail closed: what is not known is not allowed.
	d := issuance.decision with input as {}
	not d.allow
	d.reasons == ["no hosting node in the request", "no registered agent in the request"]
	not issuance.allow with input as {"agent": agent}
}

test_agent_and_node_need_spiffe_ids if {
	# A SPIFFE ID that is null, empty or of another type names no one.
	every bad in [null, "", "agent-a", 1, true, [], {}] {
		d := issuance.decision with input as {"agent": object.union(agent, {"spiffe_id": bad}), "node": token_node}
		d.reasons == ["no registered agent in the request"]
		d2 := issuance.decision with input as {"agent": agent, "node": object.union(token_node, {"spiffe_id": bad})}
		not d2.allow
		"no hosting node in the request" in d2.reasons
	}
}
