"""Status vocabularies, one StrEnum per vocabulary, shared by the database constraints,
workflow payloads and API schemas."""
