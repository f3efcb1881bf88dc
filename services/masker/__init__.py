"""Adversarial mask generation: the Face-Off attacks on a surrogate embedding model."""
