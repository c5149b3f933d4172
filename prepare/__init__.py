"""gptmill prepare: corpora in, token shards and a manifest out. Never imports torch."""
