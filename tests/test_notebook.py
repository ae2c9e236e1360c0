"""docs/notebooks/quickstart.ipynb: committed without outputs, and every cell runs.

The notebook is executed top to bottom in a fresh ``python3`` kernel of the interpreter running
the tests (ipykernel's own kernel spec), in a temporary folder, with the digits prepared into a
temporary data dir. A cell that raises fails the test with the cell and its traceback.
"""
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / 'docs' / 'notebooks' / 'quickstart.ipynb'


def read():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    return notebook


def test_committed_notebook_has_no_outputs():
    notebook = read()
    code = [cell for cell in notebook.cells if cell.cell_type == 'code']
    assert len(code) >= 5
    for index, cell in enumerate(code):
        assert cell.outputs == [], f'code cell {index} has outputs: strip them'
        assert cell.execution_count is None, f'code cell {index} has an execution count'
        assert 'execution' not in cell.metadata, f'code cell {index} has execution timings'
    assert notebook.metadata.kernelspec.name == 'python3'


def test_notebook_runs_without_errors(tmp_path, monkeypatch):
    monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'data'))  # the kernel inherits it
    monkeypatch.setenv('MPLBACKEND', 'Agg')  # outside IPython's inline backend
    notebook = read()
    client = NotebookClient(notebook, timeout=600, kernel_name='python3',
                            resources={'metadata': {'path': str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    outputs = [output for cell in notebook.cells if cell.cell_type == 'code'
               for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == 'error']
    text = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
    # The steps did what they say: LAWN froze the head's norm, compaction kept the function.
    assert 'head norm fixed after the switch: True' in text
    assert 'largest logit gap' in text
    # The probe's figure came back as an image.
    assert any('image/png' in o.get('data', {}) for o in outputs
               if o.output_type == 'display_data')
