"""Private federated discovery of words the vocabulary lacks (TrieHH), and growing the model
and vocabulary to hold them."""
