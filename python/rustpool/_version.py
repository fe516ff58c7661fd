__version__ = "0.1.0"  # kept equal to Cargo.toml by tests/test_package.py
