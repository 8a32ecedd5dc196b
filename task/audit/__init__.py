"""What a trained model gives away: canary exposure and membership inference (scripts/privacy_audit.py)."""
