"""The task panels on the right: defects (stage 1), generate (stage 2), train (stage 3)."""
