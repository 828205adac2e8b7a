"""Dagster side of Takeflow: compiler, runner, instance setup and the code location."""
