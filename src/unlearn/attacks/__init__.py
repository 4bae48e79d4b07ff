"""What an auditor runs against an unlearned model: membership inference, relearning, search."""
