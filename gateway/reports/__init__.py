"""Reports for the people moving workflows: RQ against Prefect (``comparison``) and what
still holds RQ (``readiness``). Read figway's records only; never the web layer.
"""
