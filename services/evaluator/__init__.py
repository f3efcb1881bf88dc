"""Recognition checks: independent recognisers and cloud-API adapters."""
