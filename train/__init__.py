"""gptmill train: GPT models trained on the shards that prepare wrote."""
