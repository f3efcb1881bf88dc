"""Scaffolding the three gRPC services share: settings, server factory, health, metrics, errors."""
