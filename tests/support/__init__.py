"""Test helpers shared by the suite: free ports, a private mosquitto broker.

Importable as ``tests.support`` (the repository root must be on ``sys.path``).
"""
