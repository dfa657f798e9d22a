"""The one selection library every kind uses: a Trial (one measured candidate), the accuracy goal, the Pareto
front with its tie rule, the choice among trials, and early stopping."""
