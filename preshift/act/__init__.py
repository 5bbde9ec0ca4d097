"""Act: the migration engine (phases, journal, executor) and its adapters."""
