"""Real adapters for Takeflow's side effects: takes on fsspec, git + LFS, SQLite state."""
