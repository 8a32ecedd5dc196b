"""The DP mechanisms beyond central DP with fixed clipping: adaptive clipping, DP-FTRL's tree
noise, local DP, DP-SGD on the device, and planning a run's noise for a target epsilon. Each is
composed where its dp.mode is chosen (server_app/app.py, client_app/app.py, task/device.py); their
accounting stays in the one ledger (task/privacy/ledger.py). Run config `dp.*`; doc docs/privacy.md;
tests tests/features/dp/."""
