"""What the test folders share, written once: processes and ports, the figway stack,
Prefect services, RQ workers, an in-process gateway, API helpers, plans, a TCP proxy.
"""
