"""Evaluation: how good the detections and the written insights are, measured against labels and scorers."""
