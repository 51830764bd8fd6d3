"""The README's two quick-start commands, as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from conftest import DATA_DIR, REPO, read_json


def quickstart(marker: str) -> str:
    readme = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```bash\n(.+?)\n```", readme, re.S)
    assert match, f"README lost its {marker} block"
    command = match.group(1).strip()
    assert "\n" not in command, "a quick-start step is one command"
    return command


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert quickstart("quickstart-test") in ci_lines


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_readme_run_command_in_a_fresh_copy(tmp_path):
    """Runs the first command in a copy of the repository: a new venv, the install, the main job.

    To keep CI short the main job gets a smaller override appended (1 epoch, batch sizes 512 and
    2048); everything else, the venv and `accelerate launch harness/run.py` included, is as written.
    """
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    copy = tmp_path / "repo"
    for name in files:
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    command = quickstart("quickstart-run")
    assert command.endswith("accelerate launch harness/run.py")
    smaller = " --set train.epochs=1 --set 'sweep.train.batch_size=[512,2048]' --quiet"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["HARNESS_DATA_DIR"] = str(DATA_DIR)  # offline: no download
    try:
        proc = subprocess.run(["bash", "-c", command + smaller], cwd=copy, env=env, capture_output=True,
                              text=True, timeout=1500)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        results = sorted((copy / "results" / "default").glob("*/result.json"))
        assert [p.parent.name.split("-")[0] for p in results] == ["bs2048", "bs512"]
        assert all(read_json(p)["status"] == "done" for p in results)
        report = (copy / "results" / "default" / "report.html").read_text()
        assert "Sweet spot" in report or "No sweet spot" in report
    finally:
        shutil.rmtree(copy / ".venv", ignore_errors=True)  # ~6 GB


def test_every_findings_folder_the_docs_cite_is_tracked():
    """results/README.md's table and the docs name findings folders; each must reach a clone with
    its README.md (results/* is ignored but for the folders .gitignore lets through)."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    listed = re.findall(r"^\| `([a-z0-9_-]+)/`", (REPO / "results" / "README.md").read_text(), re.M)
    cited = {m for doc in [REPO / "README.md", *(REPO / "docs").glob("*.md")]
             for m in re.findall(r"results/([a-z0-9_-]+)/", doc.read_text())}
    tracked = set(subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True,
                                 check=True).stdout.split())
    missing = [f for f in {*listed, *cited} if f"results/{f}/README.md" not in tracked]
    assert len(listed) >= 10 and not missing, missing


def test_every_relative_link_in_the_docs_resolves():
    """A link in README.md, docs/ or a findings README that points into the repo names a file or
    folder that is there (docs move; a dead link is a user stuck)."""
    pages = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "results").glob("*/README.md")]
    links = [(page, target) for page in pages
             for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
             if not re.match(r"[a-z]+:", target)]
    dead = [f"{page.relative_to(REPO)}: {target}" for page, target in links if not (page.parent / target).exists()]
    assert len(links) >= 10 and not dead, dead


# phrases that tell a change's history instead of what is: each has a present-tense wording
HISTORY = ("made before", "records written before", "had before", "an earlier version", "the older one", "no longer",
           "previously", "used to be", "formerly", "until now", "was renamed", "were renamed", "as before",
           "old records", "older records", "the old ")


def history_in(text: str) -> list[str]:
    lowered = " ".join(text.lower().split())
    return [phrase for phrase in HISTORY if phrase in lowered]


def test_the_docs_say_what_is_not_how_it_came_to_be():
    """README, docs/ and the metrics' docs (the reference table) in the present tense; findings
    under results/ carry their own dates and are left out."""
    assert history_in("Records written  before\nthe count") == ["records written before"]  # the rule sees one
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    found = {str(p.relative_to(REPO)): history_in(p.read_text()) for p in pages}
    assert {page: words for page, words in found.items() if words} == {}
