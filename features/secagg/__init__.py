"""Secure aggregation (SecAgg+): the server sees only the sum of the updates.
Run config `secagg.*`; doc docs/secure-aggregation.md; tests tests/features/secagg/."""
