"""Research and reporting over a run's journal: performance metrics, Monte Carlo."""
