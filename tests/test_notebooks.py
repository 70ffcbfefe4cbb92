"""Execute the notebooks in ``notebooks/`` end to end on small settings; any cell error fails the test.

The kernel is the interpreter running the tests (``sys.executable``, through a kernel spec written to a
temporary folder), so a fresh ``pip install -e ".[dev]"`` venv needs no registered kernel, and a ``python3``
kernel installed elsewhere on the machine cannot step in. ``RECOVER_PYRO_NOTEBOOK_FAST=1`` selects each
notebook's short settings. Jupyter / IPython state and the fingerprint cache go to temporary folders.
nbformat / nbclient are imported inside the tests, so collecting this file stays cheap.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL_NAME = "recover-pyro-test"
CELL_TIMEOUT_S = 600  # generous: the fast settings take well under a minute per notebook on 2 cores


@pytest.fixture(scope="module")
def kernel_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A kernel spec folder whose only kernel runs ``sys.executable -m ipykernel_launcher``."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL_NAME
    spec.mkdir()
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "recover_pyro tests",
                "language": "python",
            }
        )
    )
    return [str(root)]


@pytest.fixture
def notebook_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fast settings and throwaway state folders, for this process and (inherited) for the kernel."""
    monkeypatch.setenv("RECOVER_PYRO_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("RECOVER_PYRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))
    # A forced backend (e.g. MPLBACKEND=Agg in a CI shell) would stop the kernel's inline figures.
    monkeypatch.delenv("MPLBACKEND", raising=False)


def execute(name: str, kernel_dirs: list[str]) -> Any:
    """Run every cell of ``notebooks/<name>`` in a fresh kernel (cwd ``notebooks/``); return the executed
    notebook. Raises :class:`nbclient.exceptions.CellExecutionError` (cell source and traceback) on the first
    failing cell.
    """
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    manager = AsyncKernelManager(
        kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=kernel_dirs)
    )
    client = NotebookClient(nb, km=manager, timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    return nb


def images(nb: Any) -> int:
    """Number of PNG figures the executed notebook displayed."""
    return sum(
        "image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )


def stream_text(nb: Any) -> str:
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "stream"
    )


@pytest.mark.parametrize("name", ["priors.ipynb", "campaign.ipynb"])
def test_committed_without_outputs(name: str) -> None:
    nb = json.loads((NOTEBOOKS / name).read_text())
    dirty = [
        i
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code" and (cell["outputs"] or cell["execution_count"] is not None)
    ]
    assert not dirty, f"notebooks/{name}: clear the outputs of code cells {dirty} before committing"


@pytest.mark.slow
@pytest.mark.usefixtures("notebook_env")
def test_priors_notebook_runs(kernel_dirs: list[str]) -> None:
    nb = execute("priors.ipynb", kernel_dirs)
    assert images(nb) == 3  # prior densities, log-uniform shape, head posterior means
    text = stream_text(nb)
    assert "sample() -> NotImplementedError" in text  # the improper prior refuses to be sampled
    assert "Sparse variational dropout pruned" in text


@pytest.mark.slow
@pytest.mark.usefixtures("notebook_env")
def test_campaign_notebook_runs(data_root: Path, kernel_dirs: list[str]) -> None:
    if not (data_root / "almanac").is_dir():
        pytest.skip(f"ALMANAC data not found at {data_root / 'almanac'}; set RECOVER_PYRO_DATA")
    nb = execute("campaign.ipynb", kernel_dirs)
    assert images(nb) == 2  # discovery curve, calibration plot
    text = stream_text(nb)
    assert "BNN + UCB: after 120 of" in text and "random: after 120 of" in text  # 30 + 3 rounds of 30


@pytest.mark.usefixtures("notebook_env")
def test_campaign_notebook_says_when_data_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kernel_dirs: list[str]
) -> None:
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("RECOVER_PYRO_DATA", str(tmp_path / "no_data_here"))
    with pytest.raises(CellExecutionError) as err:
        execute("campaign.ipynb", kernel_dirs)
    message = str(err.value)
    assert "FileNotFoundError" in message and "needs the shared NCI-ALMANAC data" in message
    assert str(tmp_path / "no_data_here") in message
