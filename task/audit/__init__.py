"""What a trained model gives away: canary exposure and membership inference (scripts/tools/privacy_audit.py)."""
