"""Starting and killing runs (``dispatcher``), and settling runs whose workers went
quiet (``reconcile``): the gateway's side of every backend, through the contract only.
"""
