"""Methods only vision-language models have (SIU)."""
