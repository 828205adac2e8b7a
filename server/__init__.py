"""Takeflow's Litestar server and command line."""
