"""Store backends for tests: emulator processes and helpers (see dynamo.py)."""
