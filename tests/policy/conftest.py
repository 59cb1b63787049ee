from policy_helpers import clock, make_engine, store, store_path  # noqa: F401  (fixtures)
