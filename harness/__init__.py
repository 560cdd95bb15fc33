"""Real processes the tests and the benchmarks drive: free ports, redis-server,
stompgate nodes, a minimal STOMP client.

Not part of the stompgate package (pyproject's package discovery takes only
``stompgate*``); ``tests/`` and ``bench/`` import it from the repository root.
"""
