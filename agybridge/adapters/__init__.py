"""Adapters that run real agent SDKs on the agybridge runtime (optional extras)."""
