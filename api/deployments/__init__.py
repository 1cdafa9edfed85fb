"""Deployments domain: release builds to environments, approvals, rollback, promotion, sites."""
