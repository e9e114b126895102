"""Sieve core: the catalog and every analysis on it, as plain Python (no Streamlit)."""
