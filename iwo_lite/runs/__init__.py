"""Agent runs: the journal of each attempt, starting it, and the dispatcher over its attempts."""
