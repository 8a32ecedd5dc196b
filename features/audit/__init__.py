"""The privacy audit: canary exposure and membership inference on a trained model
(scripts/tools/privacy_audit.py). Run config `audit.canaries`; doc docs/privacy.md ("Privacy audit");
tests tests/features/audit/."""
