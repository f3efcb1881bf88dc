"""Python client that apps call before upload."""
