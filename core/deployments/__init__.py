"""Deployments: requesting, approving, rolling back and promoting releases; the read model the
deployment workflow writes; the release providers."""
