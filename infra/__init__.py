"""One wrapper per external SDK or OS mechanism (object store, git, containers, build
runners, Stripe, LLM, mail), with no domain rules."""
