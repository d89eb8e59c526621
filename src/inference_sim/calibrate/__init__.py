"""Fitting the calibrated latency model to measured serving runs (``blis calibrate``)."""
