"""Transport-free rules and queries, one package per domain; api/ and activities/ call it."""
