"""Feature extractors: prosody, linguistic and interaction counters."""
