"""selftrain"""
