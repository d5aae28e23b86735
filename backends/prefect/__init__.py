"""The Prefect 3 backend: one flow run per figway run, one task run per node attempt.

May import the contract, the model, the runtime and the store; never ``gateway``.
"""
