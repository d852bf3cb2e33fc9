"""Shared infrastructure every stage uses: configuration and the settings plan, atomic files,
ledgers and the per-shard stage runner, ids, shards, media probing, device choice."""
