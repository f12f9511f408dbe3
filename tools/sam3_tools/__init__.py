"""Export and reference tooling for the SAM3 server (Python is never used at serve time)."""
