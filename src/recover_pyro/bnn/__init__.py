"""The Pyro wing: priors, guides, Bayesian layers, local reparameterisation, SVI, the vectorised posterior
predictive and :class:`~recover_pyro.bnn.model.BNNSynergyModel`, the one model here built from them."""
