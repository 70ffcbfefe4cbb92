"""Plain-torch model side: the SynergyModel protocol and PredictiveSamples, the shared model bookkeeping,
the RECOVER predictor, the noise convention, the training loop and the non-Bayesian baselines."""
