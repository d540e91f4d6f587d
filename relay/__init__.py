"""comity-relay: the store-and-forward server. It holds only ciphertext and signed public records."""
