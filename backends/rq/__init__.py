"""The RQ backend: one RQ job per node, the job function, workers, the status map.

May import the contract, the model, the runtime and the store; never ``gateway``.
"""
