"""The README's Go program compiles: the first ``package main`` block of clients/go/README.md,
built in a fresh module that reaches clients/go through the documented ``replace`` route."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from .conftest import StartApp
from .support.tools import REPO, run, tool

MODULE = "github.com/llm-manager/llm-manager/clients/go"


async def test_the_go_readme_program_compiles_through_the_replace_route() -> None:
    readme = (REPO / "clients" / "go" / "README.md").read_text()
    program = next(block for block in re.findall(r"```go\n(.*?)```", readme, re.S) if block.startswith("package main"))
    go = tool("go")
    with tempfile.TemporaryDirectory(prefix="readme-go-") as scratch:
        directory = Path(scratch)
        (directory / "main.go").write_text(program)
        (directory / "go.mod").write_text(f"module readmecheck\n\ngo 1.25\n\nrequire {MODULE} v0.0.0\n\nreplace {MODULE} => {REPO / 'clients' / 'go'}\n")
        shutil.copy(REPO / "clients" / "go" / "go.sum", directory / "go.sum")
        code, output = await run(go, "mod", "tidy", cwd=directory)
        assert code == 0, output
        code, output = await run(go, "build", "-o", str(directory / "program"), ".", cwd=directory)
        assert code == 0, output
        assert (directory / "program").exists()


async def test_the_readme_python_example_runs_against_a_started_server(start_app: StartApp) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Python") :]
    program = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    app = await start_app(LLM_LOCAL_MAX_TOKENS="48")  # the embedded SmolLM2, answers kept short
    assert "127.0.0.1:50051" in program
    with tempfile.TemporaryDirectory(prefix="readme-py-") as scratch:
        script = Path(scratch) / "example.py"
        script.write_text(program.replace("127.0.0.1:50051", app.address))
        code, output = await run(str(REPO / ".venv" / "bin" / "python"), str(script), timeout_s=240)
    assert code == 0, output
    assert "INVALID_REQUEST" in output, output  # its last step shows an error's details


async def test_the_readme_embeddings_python_example_runs(start_app: StartApp) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Embeddings") :]
    program = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    app = await start_app()  # the embedded SmolLM2: its pooled states
    assert "127.0.0.1:50051" in program
    with tempfile.TemporaryDirectory(prefix="readme-embed-") as scratch:
        script = Path(scratch) / "example.py"
        script.write_text(program.replace("127.0.0.1:50051", app.address))
        code, output = await run(str(REPO / ".venv" / "bin" / "python"), str(script), timeout_s=240)
    assert code == 0, output
    assert output.startswith("smollm2-135m-instruct 576 "), output
    assert "similar:" in output and "unrelated:" in output, output
