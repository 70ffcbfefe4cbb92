"""The application wing: the three commands (``recover-train``, ``recover-campaign``, ``recover-recommend``),
what builds their objects from Hydra configs, config checks and sweep summaries. The only part of the
package that imports Hydra."""
