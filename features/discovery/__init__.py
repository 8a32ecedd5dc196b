"""New-word discovery (TrieHH under DP) and growing the model and vocabulary to hold the words
found; the simulated new-word scenario. Run config `discovery.*`; doc docs/vocabulary-discovery.md;
tests tests/features/discovery/."""
