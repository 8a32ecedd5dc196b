"""Opt-in features, one folder each: its code, its run-config group, its tests in
tests/features/<name>/ and its doc. The core (task/, client_app/, server_app/) never imports
them except where a run-config key turns one on (server_app/app.py, client_app/app.py);
delete a folder and its config group and the default run still works
(tests/unit/test_architecture.py does it)."""

import task  # noqa: F401  (sets tf-keras up before any feature imports TensorFlow)
