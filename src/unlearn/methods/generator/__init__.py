"""Methods only identity generators have (GUIDE, SUGAR)."""
