"""``python -m recover_pyro.campaign``: the ``recover-campaign`` command (:mod:`recover_pyro.cli.campaign`)."""

from recover_pyro.cli.campaign import main

if __name__ == "__main__":
    main()
