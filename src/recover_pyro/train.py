"""``python -m recover_pyro.train``: the ``recover-train`` command (:mod:`recover_pyro.cli.train`)."""

from recover_pyro.cli.train import main

if __name__ == "__main__":
    main()
