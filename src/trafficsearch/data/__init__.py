"""Data: records, the competition label format, synthetic data, transforms and prompts."""
