"""Test and demo scaffolding — NOT product: never installed (``pip install assay[agent]`` leaves it
out) and imported only by tests/ and scripts/, from the repository root.

``swtpm``: software TPM "nodes" provisioned with EK certificates from a project-local CA;
``bootsim``: extends a real event log into a swtpm so its PCRs match the log (and tampered boots);
``service``: the verifier on a free port (``run_server``) and software load agents
(``FakeAgentForLoad``: a software AK enrolled straight into the store, for load generation only,
never for correctness). Nothing here is part of the trust pipeline and nothing in assay/, agent/,
verifier/ or golden/ may import it (tests/test_import_rules.py).
"""
