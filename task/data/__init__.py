"""Where a device's text comes from and how it becomes training windows: files, simulated
personas, corpus partitioning, the shared vocabulary."""
