"""The DP mechanisms beyond central DP with fixed clipping: DP-SGD on the device, DP-FTRL's
tree noise, and planning a run's noise for a target epsilon. Run config `dp.*`; doc docs/privacy.md;
tests tests/features/dp/."""
