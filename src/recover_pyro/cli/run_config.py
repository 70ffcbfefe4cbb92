"""What a command-line run records about its config: the result fingerprint of the resolved Hydra config and
the original run's ``.hydra/*.yaml`` on resume.

:func:`preserve_hydra_config` keeps the original run's ``.hydra/*.yaml``: Hydra rewrites them on every call,
so on resume the new call's files are moved to ``.hydra/resume-<k>/`` and the original ones restored.
"""

from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path
from typing import IO, Any

from omegaconf import DictConfig, OmegaConf

from recover_pyro.campaign.fingerprint import settings_fingerprint
from recover_pyro.records.files import atomic_write

log = logging.getLogger(__name__)

HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")


def config_fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """Dotted key -> resolved value of every result-determining setting of ``cfg`` (JSON-plain values; see
    :mod:`recover_pyro.campaign.fingerprint`)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    return settings_fingerprint({str(k): v for k, v in resolved.items()})


def preserve_hydra_config(out_dir: Path, resuming: bool) -> None:
    """Keep the original run's ``.hydra/*.yaml`` in ``out_dir``; see the module docstring.

    A fresh run records its files in ``.hydra/original/``. A resumed run moves the files Hydra has just
    written to ``.hydra/resume-<k>/`` and puts the original ones back.
    """
    hydra_dir = out_dir / ".hydra"
    if not hydra_dir.is_dir():
        return
    original = hydra_dir / "original"
    if resuming and not (original / "config.yaml").is_file():
        # A run started before copies were kept: Hydra has already replaced its files; say so rather than
        # record this call's settings as the original ones.
        log.warning(
            "%s: no copy of the original run's config (run started by an older version); "
            ".hydra/config.yaml now shows this resumed call's settings",
            hydra_dir,
        )
        return
    if not resuming:
        original.mkdir(exist_ok=True)
        for name in HYDRA_FILES:
            if (hydra_dir / name).is_file():
                shutil.copyfile(hydra_dir / name, original / name)
        return
    k = 1
    while (hydra_dir / f"resume-{k}").exists():
        k += 1
    record = hydra_dir / f"resume-{k}"
    record.mkdir()
    for name in HYDRA_FILES:
        if (hydra_dir / name).is_file():
            shutil.copyfile(hydra_dir / name, record / name)
        if (original / name).is_file():
            atomic_write(hydra_dir / name, functools.partial(_write_bytes, (original / name).read_bytes()))
    log.info("resume: kept the original run's .hydra/config.yaml; this call's config is in %s", record)


def _write_bytes(data: bytes, handle: IO[bytes]) -> None:
    handle.write(data)
