"""The larq-dysign model zoo (filled in by the zoo issue)."""
