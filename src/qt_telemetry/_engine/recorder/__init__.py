"""The trading process's side of the engine: what runs where the order happens."""
