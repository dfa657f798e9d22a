"""The one measurement library every kind uses: task metrics, statistics, output fidelity, latency, the data a
measurement runs on and the comparison block of two models."""
