"""The teaching labs (docs/labs/) run as written, and emu prints what they tell the student to observe.

Each lab is run by tools/labs.py, which reads its command and observe blocks (the grammar is in
docs/labs/README.md): one test per lab for its tcg blocks, one for its kvm blocks. The tcg blocks
run in a mount namespace whose /dev has no kvm node (as root, with unshare), which is the proof
the issue asks for: every lab runs on a host without /dev/kvm. Where that cannot be done (not
root, no unshare) they run as they are, and test_the_namespace_that_hides_the_device says why it
skipped.

The checker is tested too, on small labs written here: a check that must fail does, whatever
way it is written; and every lab's first tcg command, run on another guest, fails its checks.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from guestenv import KVM_OK, KVM_WHY

ROOT = Path(__file__).resolve().parents[1]
LABS_PY = ROOT / "tools" / "labs.py"
_spec = importlib.util.spec_from_file_location("emu_labs", LABS_PY)
labs = importlib.util.module_from_spec(_spec)
sys.modules["emu_labs"] = labs  # dataclasses resolve their module's annotations through sys.modules
_spec.loader.exec_module(labs)

LAB_FILES = sorted((ROOT / "docs" / "labs").glob("[0-9][0-9]-*.md"))
HIDE_MISSING = labs.hide_kvm_missing()


def _failures(results: list) -> str:
    return "\n".join(r.report() for r in results if r.outcome == "failed")


def _budget(lab) -> float:
    """Seconds a whole run of `lab` may take: every block's timeout and retries, and a margin."""
    return sum(b.timeout * (1 + b.retry) for b in lab.blocks) + 60


@pytest.mark.parametrize("path", LAB_FILES, ids=[p.stem for p in LAB_FILES])
def test_lab_on_tcg(path: Path, tmp_path: Path) -> None:
    lab = labs.parse_lab(path)
    assert any(b.accel == "tcg" for b in lab.blocks), "every lab shows tcg"
    if HIDE_MISSING is not None:  # run as they are; test_the_namespace_that_hides_the_device says why
        results = labs.Runner(accels=("tcg",)).run_lab(lab)
        assert not _failures(results), _failures(results)
        assert any(r.outcome == "passed" and r.block.accel == "tcg" for r in results)
        return
    out = tmp_path / "results.json"
    command = [sys.executable, str(LABS_PY), "--inside-hidden-kvm", "--no-emu-check", "--accel", "tcg", "--json",
               str(out), str(path)]  # fmt: skip
    run = subprocess.run(labs.hidden_kvm_command(command), capture_output=True, text=True, timeout=_budget(lab),
                         check=False)  # fmt: skip
    assert out.exists(), run.stdout + run.stderr
    data = json.loads(out.read_text())
    assert data["hidden_kvm_problem"] is None, data["hidden_kvm_problem"]
    failed = [r for r in data["results"] if r["outcome"] == "failed"]
    assert run.returncode == 0 and not failed, run.stdout + run.stderr
    ran = [r for r in data["results"] if r["outcome"] == "passed" and r["accel"] == "tcg"]
    skipped = [r for r in data["results"] if r["outcome"] == "skipped" and r["accel"] == "tcg"]
    assert ran, "no tcg block ran: " + run.stdout
    print(f"\n{path.name}: {len(ran)} tcg blocks passed without /dev/kvm, {len(skipped)} skipped "
          f"({'; '.join(sorted({r['reason'] for r in skipped})) or 'none'})")  # fmt: skip


@pytest.mark.kvm
@pytest.mark.skipif(not KVM_OK, reason=KVM_WHY)
@pytest.mark.parametrize("path", LAB_FILES, ids=[p.stem for p in LAB_FILES])
def test_lab_on_kvm(path: Path) -> None:
    lab = labs.parse_lab(path)
    assert any(b.accel == "kvm" for b in lab.blocks), "every lab shows kvm"
    results = labs.Runner(accels=("kvm",)).run_lab(lab)
    assert not _failures(results), _failures(results)
    ran = [r for r in results if r.outcome == "passed" and r.block.accel == "kvm"]
    skipped = [r for r in results if r.outcome == "skipped" and r.block.accel == "kvm"]
    if not ran:
        pytest.skip("every kvm block skipped: " + "; ".join(sorted({r.reason for r in skipped})))
    print(f"\n{path.name}: {len(ran)} kvm blocks passed, {len(skipped)} skipped "
          f"({'; '.join(sorted({r.reason for r in skipped})) or 'none'})")  # fmt: skip


def _hidden(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(labs.hidden_kvm_command(command), cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip


@pytest.mark.skipif(HIDE_MISSING is not None, reason=str(HIDE_MISSING))
def test_the_namespace_that_hides_the_device() -> None:
    """The namespace the tcg tests use has no /dev/kvm, emu says so in its one line and exits 2,
    the device files a run needs are there, and tcg runs a guest."""
    absent = _hidden(["sh", "-c", "test ! -e /dev/kvm && test -c /dev/null && test -c /dev/urandom && echo ok"])
    assert absent.stdout == "ok\n", absent.stdout + absent.stderr
    emu = _hidden([sys.executable, "-m", "emu", "--accel", "kvm", "firmware/build/hello64.elf"])
    assert (emu.returncode, emu.stdout, emu.stderr) == (2, "", labs.KVM_MISSING_LINE)
    tcg = _hidden([sys.executable, "-m", "emu", "--accel", "tcg", "firmware/build/hello64.elf"])
    assert tcg.returncode == 1 and "hello: done" in tcg.stdout, tcg.stdout + tcg.stderr
    if KVM_OK:
        assert Path("/dev/kvm").exists()  # only the namespace lost it


# --- every lab's text ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", LAB_FILES, ids=[p.stem for p in LAB_FILES])
def test_lab_is_complete(path: Path) -> None:
    """A lab has its questions with folded answers, every block has checks, and the index lists it."""
    text = path.read_text()
    lab = labs.parse_lab(path)
    assert text.startswith("# Lab ") and "\n## Questions\n" in text
    questions = text.split("\n## Questions\n", 1)[1]
    assert questions.count("<details><summary>Answer</summary>") >= 3
    assert questions.count("<details>") == questions.count("</details>")
    for block in lab.blocks:
        if block.kind == "run":
            assert block.observes, f"{block.label}: a command without an observe block"
    assert f"]({path.name})" in (path.parent / "README.md").read_text()


def test_the_readme_links_the_labs() -> None:
    assert "docs/labs/README.md" in (ROOT / "README.md").read_text()


# --- the checker -----------------------------------------------------------------------------------


def _lab(tmp_path: Path, text: str) -> labs.Lab:
    path = tmp_path / "99-test.md"
    path.write_text(text)
    return labs.parse_lab(path)


def _run(tmp_path: Path, text: str, **runner) -> list:
    return labs.Runner(**runner).run_lab(_lab(tmp_path, text))


def block(command: str, observe: str, attributes: str = "") -> str:
    return f"```sh lab {attributes}\n{command}\n```\n\n```text observe\n{observe}\n```\n"


@pytest.mark.parametrize(("command", "observe", "attributes", "why"), [
    ("echo io 5", r"^io\s+6\b", "", "matched nothing"),
    ("echo io 5", r"!^io\s+\d+", "", "which it must not"),
    ("echo 'io 5'", r"^io (\d+)  where $1 > 5", "", "does not hold"),
    ("echo 'wall 2.5 s'", r"^wall ([\d.]+) s  where $1 < 0.5 * 4", "", "does not hold"),
    ("echo io 5; exit 3", r"^io", "status=1", "exit status 3, expected 1"),
    ("sleep 5", r"x", "timeout=0.5", "timed out after 0.5 s"),
    ("echo io 5", r"^io (\d+)  where $nothing > 1", "", "$nothing is not set"),
    ("printf 'fd 4\\nfd 7\\n'", r"^fd (\d+)$  where $1 > 7", "", "nor for any other match"),
    ("printf 'fd 4\\nfd 7\\n'", r"!^fd (\d+)$  where $1 == 7", "", "matched 'fd 7' ($1=7), which it must not"),
])  # fmt: skip
def test_a_check_that_must_fail_does(tmp_path: Path, command: str, observe: str, attributes: str, why: str) -> None:
    (result,) = _run(tmp_path, block(command, observe, attributes))
    assert result.outcome == "failed" and why in result.reason, result.report()
    assert command in result.report()  # the report shows the command and its output


def test_checks_that_hold_pass(tmp_path: Path) -> None:
    text = (block("printf 'mmio 225\\nio 7\\n'", "^mmio\\s+(?P<mmio_off>\\d+)$\n!^hlt\\s+\\d+\n^io 0*7$")
            + block("echo 'mmio 125'; echo 'x=0x10'; printf 'fd 4\\nfd 7\\n'; exit 1",
                    "^mmio (\\d+)  where $mmio_off - $1 == 100\n"
                    "x=(0x[0-9a-f]+)  where $1 == 16 and $1 >= 16 or $1 < 0\n"
                    "^fd (\\d+)$  where $1 == 7\n!^fd (\\d+)$  where $1 == 5", "status=1,3"))  # fmt: skip
    results = _run(tmp_path, text)
    assert [r.outcome for r in results] == ["passed", "passed"], _failures(results)


def test_stdin_reaches_the_command(tmp_path: Path) -> None:
    text = "```sh lab\ncat\n```\n```text stdin\ninfo registers\nquit\n```\n```text observe\n^info registers\\nquit$\n```\n"
    (result,) = _run(tmp_path, text)
    assert result.outcome == "passed", result.report()


def test_python_is_the_running_interpreter(tmp_path: Path) -> None:
    (result,) = _run(tmp_path, block("python -c 'import sys; print(sys.executable)'", re.escape(sys.executable)))
    assert result.outcome == "passed", result.report()


def test_skips_say_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(labs._NEED_CACHE, "strace", "needs strace")
    text = block("true", "x", "accel=kvm") + block("true", "x", "needs=strace") + block("echo x", "x", "accel=tcg")
    results = labs.Runner(kvm=(False, "no usable /dev/kvm (test)")).run_lab(_lab(tmp_path, text))
    assert [(r.outcome, r.reason) for r in results] == [
        ("skipped", "no usable /dev/kvm (test)"), ("skipped", "needs strace"), ("passed", "")]  # fmt: skip
    results = labs.Runner(accels=("kvm",), kvm=(True, "")).run_lab(_lab(tmp_path, block("echo x", "x", "accel=tcg")))
    assert results[0].outcome == "skipped"


def test_host_specific_blocks(tmp_path: Path) -> None:
    text = block("echo ran", "^ran$", "accel=kvm host=hw")
    (result,) = labs.Runner(kvm=(True, ""), host="pvm").run_lab(_lab(tmp_path, text))
    assert result.outcome == "skipped" and "VT-x/AMD-V" in result.reason
    (result,) = labs.Runner(kvm=(True, ""), host="hw").run_lab(_lab(tmp_path, text))
    assert result.outcome == "passed"


def test_host_specific_observes(tmp_path: Path) -> None:
    text = ("```sh lab accel=kvm\necho pvm\n```\n```text observe host=pvm\n^pvm$\n```\n"
            "```text observe host=hw\n^hw$\n```\n")  # fmt: skip
    for host, outcome in (("pvm", "passed"), ("hw", "failed")):
        (result,) = labs.Runner(kvm=(True, ""), host=host).run_lab(_lab(tmp_path, text))
        assert result.outcome == outcome, result.report()


def test_cleanup_runs_after_a_failure(tmp_path: Path) -> None:
    marker = tmp_path / "cleaned"
    text = block("echo a", "^b$") + f"```sh lab cleanup\ntouch {marker}\n```\n"
    results = _run(tmp_path, text)
    assert [r.outcome for r in results] == ["failed", "passed"] and marker.exists()


def test_retry_runs_again(tmp_path: Path) -> None:
    counter = tmp_path / "n"
    text = block(f"echo x >> {counter}; wc -l < {counter}", "^3$", "retry=3")
    (result,) = _run(tmp_path, text)
    assert result.outcome == "passed" and result.attempts == 3


@pytest.mark.parametrize(("text", "message"), [
    ("```sh lab accel=arm\ntrue\n```\n", "accel=tcg or accel=kvm"),
    ("```sh lab colour=red\ntrue\n```\n", "bad attribute 'colour=red'"),
    ("```sh lab needs=gpu\ntrue\n```\n", "unknown needs gpu"),
    ("```sh lab accel=tcg host=hw\ntrue\n```\n", "on an accel=kvm block"),
    ("```sh lab\ntrue\n```\n```text observe\n(unclosed\n```\n", "bad regular expression"),
    ("```sh lab\ntrue\n```\n```text observe\nx (\\d)  where __import__('os')\n```\n", "`where` takes numbers"),
    ("```text observe\nx\n```\n", "an observe block before any command block"),
    ("```sh lab\ntrue\n```\n```text observe\nx\n```\n```text stdin\ny\n```\n", "a stdin block must follow"),
    ("```sh lab\ntrue\n", "never closed"),
], ids=["accel", "attribute", "needs", "host", "regex", "where-names", "observe-first", "stdin-late", "unclosed"])  # fmt: skip
def test_a_malformed_lab_is_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(labs.LabError, match=re.escape(message)):
        _lab(tmp_path, text)


def _first_tcg_guest_block(lab):
    for b in lab.blocks:
        if b.kind == "run" and b.accel == "tcg" and b.observes and not b.needs and re.search(
            r"firmware/build/(?!hello64)\w+\.elf", b.script
        ):
            return b
    return None


@pytest.mark.parametrize("path", LAB_FILES, ids=[p.stem for p in LAB_FILES])
def test_observes_fail_on_another_guest(path: Path) -> None:
    """The lab's first tcg command, with its guest replaced by hello64: its checks must fail (a
    lab whose checks pass on any output would check nothing)."""
    block = _first_tcg_guest_block(labs.parse_lab(path))
    assert block is not None, "no tcg command that runs a firmware guest"
    block.script = re.sub(r"firmware/build/\w+\.elf", "firmware/build/hello64.elf", block.script)
    block.status = (0, 1, 2, 3)  # the checks must fail, not the exit status
    result = labs.Runner(accels=("tcg",)).run_block(block, {})
    assert result.outcome == "failed" and "matched" in result.reason, result.report()
