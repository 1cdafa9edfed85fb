"""Pipeline runs: the rules and queries of runs, stages, logs, artifacts and build slots."""
