"""Differential privacy that needs no Flower: the ledger (epsilon of every mechanism, the budget,
secret randomness) and sample-level DP-SGD on the device."""
