"""Methods only language models have (LUNE); the shared objectives live one level up."""
