"""Storage: tables, the store, the writer, spill files, the coverage ledger, runs."""
