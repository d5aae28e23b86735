"""Periodic work every gateway does in the background: the rounds and their threads
(``periodic``), and removing old node outputs (``artifact_janitor``).
"""
