"""What ``/metrics`` exports: every ``figway_*`` family (``families``), each gateway's
own series (``process``) and the run figures counted once across replicas (``ledger``).
"""
