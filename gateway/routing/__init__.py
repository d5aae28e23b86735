"""Which backend each run goes to: the rules file (``rules``, ``loading``, ``source``),
the compiled table and decisions (``router``, ``bucketing``), guards, shadows, and
what a change would move (``diff``). Never imports the web layer.
"""
