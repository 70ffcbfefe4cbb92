"""``python -m recover_pyro.recommend``: the ``recover-recommend`` command (:mod:`recover_pyro.cli.recommend`)."""

from recover_pyro.cli.recommend import main

if __name__ == "__main__":
    main()
