package mandate.authzen_test

import rego.v1

import data.mandate.authzen

agents := {"spiffe://org-a.example/agent/a": {"scopes": ["calendar:read"]}}

test_agent_with_the_scope if {
	authzen.decision.decision with input as {"subject": {"type": "agent", "id": "spiffe://org-a.example/agent/a"}, "action": {"name": "calendar:read"}}
		with data.mandate.agents as agents
}

test_agent_without_the_scope if {
	d := authzen.decision with input as {"subject": {"type": "agent", "id": "spiffe://org-a.example/agent/a"}, "action": {"name": "calendar:write"}}
		with data.mandate.agents as agents
	not d.decision
	d.context.reason
}

test_unknown_subject if {
	not authzen.decision.decision with input as {"subject": {"type": "agent", "id": "spiffe://org-a.example/agent/z"}, "action": {"name": "calendar:read"}}
		with data.mandate.agents as agents
}

test_revoked_agent if {
	d := authzen.decision with input as {"subject": {"type": "agent", "id": "spiffe://org-a.example/agent/a"}, "action": {"name": "calendar:read"}}
		with data.mandate.agents as {"spiffe://org-a.example/agent/a": {"scopes": ["calendar:read"], "revoked": true}}
	not d.decision
	contains(d.context.reason, "revoked")
}
