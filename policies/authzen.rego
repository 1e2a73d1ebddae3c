# AuthZEN: may this subject do this action on this resource?
#
# POST /access/v1/evaluation(s) (OpenID AuthZEN Authorization API 1.0)
# asks data.mandate.authzen.decision (policy.authzen_path) with the
# AuthZEN request as input: {subject: {type, id, properties}, action:
# {name, properties}, resource: {type, id, properties}, context}. The
# answer is a boolean, or {"decision": bool, "context": {...}}; anything
# else, an error or no answer is decision false.
#
# The default: an agent of this trust domain may do the actions that are
# scopes of its registration (data.mandate.agents), on any resource,
# unless its SPIFFE ID is revoked (POST /v1/admin/revocations: for ever).
package mandate.authzen

import rego.v1

default decision := {"decision": false, "context": {"reason": "no registered agent holds this action as a scope"}}

decision := {"decision": true} if {
	input.subject.type == "agent"
	agent := data.mandate.agents[input.subject.id]
	not agent.revoked
	input.action.name in agent.scopes
}

decision := {"decision": false, "context": {"reason": "the agent's SPIFFE ID is revoked"}} if {
	input.subject.type == "agent"
	data.mandate.agents[input.subject.id].revoked == true
}
