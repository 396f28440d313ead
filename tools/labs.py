#!/usr/bin/env python3
"""Run the teaching labs in docs/labs/ and check that emu prints what they say it prints.

    python tools/labs.py                          # every lab, every block this host can run
    python tools/labs.py docs/labs/02-vm-exits.md # one lab
    python tools/labs.py --accel tcg ...          # only the tcg blocks (and the blocks for any accel)
    python tools/labs.py --hide-kvm ...           # the same labs in a mount namespace without /dev/kvm
    python tools/labs.py --list ...               # the blocks, without running them
    python tools/labs.py -v ...                   # print every block's output too

A lab is Markdown. Among its fenced code blocks, three kinds are read (docs/labs/README.md has
the grammar with examples; everything else in the file is for the student):

  ```sh lab [accel=tcg|kvm] [status=N[,N...]] [timeout=S] [needs=R[,R...]] [retry=N] [host=pvm|hw] [id=NAME]
  a command block: bash runs it from the repository root, with `python` meaning this Python
  ```
  ```text stdin
  bytes for the command's stdin (optional; right after its command block)
  ```
  ```text observe [host=pvm|hw]
  one regular expression per line, each searched for in the command's stdout and stderr;
  !REGEX             the expression must not match
  REGEX  where EXPR  some match of it must make EXPR hold, over its groups $1, $2 ... (as
                     numbers) and named groups $name of this and earlier blocks
  !REGEX  where EXPR no match of it may make EXPR hold
  ```

`sh lab setup` and `sh lab cleanup` blocks take the same attributes: a cleanup block runs at the
end of its lab whatever happened before (a setup block is an ordinary command block, named so
for the reader). A block is skipped, with the reason, when its accelerator or a need is missing:
accel=kvm needs a usable /dev/kvm; needs= knows root, tap (/dev/net/tun and iproute2's ip),
perf (perf, allowed to count KVM's tracepoints), strace, gdb, hugetlb (a 2 MiB hugetlb pool the
block may grow, as root), qemu (qemu-system-x86_64). An observe block with host=pvm is checked
only where the host's KVM is kvm_pvm (the nested KVM of this project's machines, which emulates
ring 0), host=hw only where it is a VT-x/AMD-V KVM; a kvm command block with host= runs only
there.

Exit status: 0 when every block that ran passed, 1 otherwise, 2 for a malformed lab.
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABS = ROOT / "docs" / "labs"
DEFAULT_TIMEOUT = 60.0
KNOWN_NEEDS = ("root", "tap", "perf", "strace", "hugetlb", "qemu", "gdb")
OUTPUT_TAIL = 60  # lines of a failing block's output shown in its report


class LabError(Exception):
    """A lab file that does not follow the grammar."""


# --- the grammar ---------------------------------------------------------------------------


@dataclass
class Check:
    """One line of an observe block."""

    line: int
    text: str
    pattern: re.Pattern
    negate: bool = False
    where: ast.Expression | None = None
    where_text: str = ""


@dataclass
class Observe:
    line: int
    checks: list[Check]
    host: str | None = None  # "pvm", "hw" or None (any host)


@dataclass
class Block:
    lab: str
    line: int
    kind: str  # "run", "setup" or "cleanup"
    script: str
    accel: str | None = None
    status: tuple[int, ...] = (0,)
    timeout: float = DEFAULT_TIMEOUT
    needs: tuple[str, ...] = ()
    retry: int = 0
    host: str | None = None  # "pvm" or "hw": run only on that kind of KVM host
    name: str = ""
    stdin: bytes = b""
    observes: list[Observe] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.lab}:{self.line}" + (f" ({self.name})" if self.name else "")


@dataclass
class Lab:
    path: Path
    title: str
    blocks: list[Block]

    @property
    def name(self) -> str:
        return self.path.stem


_FENCE = re.compile(r"^(`{3,})(.*)$")
_WHERE = re.compile(r"\s{2,}where\s+(.+)$")
_VARIABLE = re.compile(r"\$(\w+)")


def parse_lab(path: Path) -> Lab:
    """The lab's title (its first '# ' heading) and its command blocks with their observe blocks."""
    lines = path.read_text(encoding="utf-8").splitlines()
    title = next((line[2:].strip() for line in lines if line.startswith("# ")), path.stem)
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info = match.group(1), match.group(2).split()
        start = i + 1
        end = start
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        if end == len(lines):
            raise LabError(f"{path.name}:{i + 1}: code block never closed")
        body = lines[start:end]
        where = f"{path.name}:{i + 1}"
        if info[:2] == ["sh", "lab"]:
            blocks.append(_command_block(path.name, i + 1, info[2:], body))
        elif info[:2] == ["text", "stdin"]:
            if not blocks or blocks[-1].observes or blocks[-1].stdin:
                raise LabError(f"{where}: a stdin block must follow its command block directly")
            blocks[-1].stdin = "\n".join(body).encode() + b"\n"
        elif info[:2] == ["text", "observe"]:
            if not blocks:
                raise LabError(f"{where}: an observe block before any command block")
            blocks[-1].observes.append(_observe_block(where, i + 1, info[2:], body))
        i = end + 1
    return Lab(path, title, blocks)


def _attributes(where: str, words: list[str], allowed: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or key not in allowed or key in out:
            raise LabError(f"{where}: bad attribute {word!r} (known: {', '.join(a + '=' for a in allowed)})")
        out[key] = value
    return out


def _command_block(lab: str, line: int, words: list[str], body: list[str]) -> Block:
    where = f"{lab}:{line}"
    kind = "run"
    if words and words[0] in ("setup", "cleanup"):
        kind, words = words[0], words[1:]
    attrs = _attributes(where, words, ("accel", "status", "timeout", "needs", "retry", "host", "id"))
    block = Block(lab, line, kind, "\n".join(body) + "\n", name=attrs.get("id", ""))
    if "accel" in attrs:
        if attrs["accel"] not in ("tcg", "kvm"):
            raise LabError(f"{where}: accel=tcg or accel=kvm")
        block.accel = attrs["accel"]
    try:
        if "status" in attrs:
            block.status = tuple(int(s) for s in attrs["status"].split(","))
        if "timeout" in attrs:
            block.timeout = float(attrs["timeout"])
        if "retry" in attrs:
            block.retry = int(attrs["retry"])
    except ValueError:
        raise LabError(f"{where}: status, timeout and retry take numbers") from None
    if "needs" in attrs:
        block.needs = tuple(attrs["needs"].split(","))
        unknown = [n for n in block.needs if n not in KNOWN_NEEDS]
        if unknown:
            raise LabError(f"{where}: unknown needs {', '.join(unknown)} (known: {', '.join(KNOWN_NEEDS)})")
    if "host" in attrs:
        if attrs["host"] not in ("pvm", "hw") or block.accel != "kvm":
            raise LabError(f"{where}: host=pvm or host=hw, on an accel=kvm block")
        block.host = attrs["host"]
    if not body:
        raise LabError(f"{where}: an empty command block")
    return block


def _observe_block(where: str, line: int, words: list[str], body: list[str]) -> Observe:
    attrs = _attributes(where, words, ("host",))
    host = attrs.get("host")
    if host not in (None, "pvm", "hw"):
        raise LabError(f"{where}: host=pvm or host=hw")
    checks = []
    for offset, raw in enumerate(body, start=1):
        text = raw.rstrip()
        if not text:
            continue
        negate = text.startswith("!")
        pattern_text, where_text = (text[1:] if negate else text), ""
        match = _WHERE.search(pattern_text)
        if match:
            pattern_text, where_text = pattern_text[: match.start()], match.group(1)
        try:
            pattern = re.compile(pattern_text, re.MULTILINE)
        except re.error as err:
            raise LabError(f"{where}, line {line + offset}: bad regular expression {pattern_text!r}: {err}") from None
        expression = _compile_where(f"{where}, line {line + offset}", where_text) if where_text else None
        checks.append(Check(line + offset, text, pattern, negate, expression, where_text))
    if not checks:
        raise LabError(f"{where}: an empty observe block")
    return Observe(line, checks, host)


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
              ast.Eq: operator.eq, ast.NotEq: operator.ne}  # fmt: skip


def _compile_where(where: str, text: str) -> ast.Expression:
    """`$1 > 0`, `$guest < 0.5 * $wall`, `... and ...`: numbers, $variables, + - * /, comparisons."""
    source = _VARIABLE.sub(lambda m: f"_v_{m.group(1)}", text)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError:
        raise LabError(f"{where}: bad `where` expression {text!r}") from None
    for node in ast.walk(tree):
        ok = isinstance(node, (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.Compare, ast.BinOp, ast.UnaryOp,
                               ast.USub, ast.Load)) or type(node) in _OPERATORS  # fmt: skip
        ok = ok or isinstance(node, ast.Constant) and isinstance(node.value, (int, float))
        ok = ok or isinstance(node, ast.Name) and node.id.startswith("_v_")
        if not ok:
            raise LabError(f"{where}: `where` takes numbers, $variables, + - * /, comparisons, and, or: {text!r}")
    return tree


def _evaluate(node: ast.AST, values: dict[str, float]) -> float | bool:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, values)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        name = node.id[3:]
        if name not in values:
            raise KeyError(f"${name} is not set (no group of that name matched so far)")
        return values[name]
    if isinstance(node, ast.UnaryOp):
        return -_evaluate(node.operand, values)
    if isinstance(node, ast.BinOp):
        return _OPERATORS[type(node.op)](_evaluate(node.left, values), _evaluate(node.right, values))
    if isinstance(node, ast.BoolOp):
        results = (_evaluate(v, values) for v in node.values)
        return all(results) if isinstance(node.op, ast.And) else any(results)
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, values)
        for op, right_node in zip(node.ops, node.comparators):
            right = _evaluate(right_node, values)
            if not _OPERATORS[type(op)](left, right):
                return False
            left = right
        return True
    raise TypeError(type(node).__name__)


def _number(text: str) -> float:
    text = text.replace(",", "")
    return int(text, 0) if re.fullmatch(r"0x[0-9a-fA-F]+|\d+", text) else float(text)


# --- the host --------------------------------------------------------------------------------


def kvm_usable() -> tuple[bool, str]:
    from emu.kvm_accel.api import kvm_usable as usable  # the same test as emu's own tests

    return usable()


def kvm_host_kind() -> str:
    """'pvm' on this project's nested kvm_pvm hosts, 'hw' on a VT-x/AMD-V KVM."""
    return "pvm" if Path("/sys/module/kvm_pvm").exists() else "hw"


_NEED_CACHE: dict[str, str | None] = {}


def missing(need: str) -> str | None:
    """Why `need` is not met here, or None."""
    if need not in _NEED_CACHE:
        _NEED_CACHE[need] = _check_need(need)
    return _NEED_CACHE[need]


def _check_need(need: str) -> str | None:
    root = os.geteuid() == 0
    if need == "root":
        return None if root else "needs root"
    if need == "tap":
        if not root:
            return "needs root (CAP_NET_ADMIN) for tap devices"
        if not Path("/dev/net/tun").exists():
            return "needs /dev/net/tun"
        return None if shutil.which("ip") else "needs iproute2's ip"
    if need == "strace":
        return None if shutil.which("strace") else "needs strace"
    if need == "gdb":
        return None if shutil.which("gdb") else "needs gdb (Debian's gdb package)"
    if need == "qemu":
        return None if shutil.which("qemu-system-x86_64") else "needs qemu-system-x86_64"
    if need == "hugetlb":
        if not root:
            return "needs root to reserve hugetlb pages (vm.nr_hugepages)"
        meminfo = Path("/proc/meminfo").read_text()
        return None if "Hugepagesize:       2048 kB" in meminfo else "needs a default 2 MiB hugetlb page size"
    if need == "perf":
        if shutil.which("perf") is None:
            return "needs perf (linux-perf)"
        probe = subprocess.run(["perf", "stat", "-e", "kvm:kvm_userspace_exit", "true"], capture_output=True,
                               timeout=30, check=False)  # fmt: skip
        if probe.returncode != 0:
            return "perf cannot count KVM's tracepoints here (needs root, or kernel.perf_event_paranoid=-1)"
        return None
    raise ValueError(need)


def python_shim() -> Path:
    """A directory whose `python` runs this interpreter, to put first on PATH."""
    directory = Path(tempfile.mkdtemp(prefix="emu-labs-"))
    shim = directory / "python"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    shim.chmod(0o755)
    return directory


# --- running ---------------------------------------------------------------------------------


@dataclass
class Result:
    block: Block
    outcome: str  # "passed", "failed", "skipped"
    reason: str = ""
    output: str = ""
    status: int | None = None
    seconds: float = 0.0
    attempts: int = 0
    values: dict[str, float] = field(default_factory=dict)  # the named groups its checks matched

    def report(self) -> str:
        head = f"{self.block.label} [{self.block.accel or 'any'}] {self.outcome}"
        if self.outcome == "skipped":
            return f"{head}: {self.reason}"
        if self.outcome == "passed":
            return f"{head} in {self.seconds:.1f} s"
        tail = "\n".join(self.output.splitlines()[-OUTPUT_TAIL:])
        return (f"{head}: {self.reason}\n--- command ---\n{self.block.script.rstrip()}\n"
                f"--- exit status {self.status}; output (last {OUTPUT_TAIL} lines) ---\n{tail}\n---")  # fmt: skip

    def as_dict(self) -> dict:
        return {"lab": self.block.lab, "line": self.block.line, "accel": self.block.accel, "kind": self.block.kind,
                "outcome": self.outcome, "reason": self.reason, "seconds": round(self.seconds, 2)}  # fmt: skip


@dataclass
class Runner:
    accels: tuple[str, ...] = ("tcg", "kvm")
    verbose: bool = False
    shim: Path | None = None
    kvm: tuple[bool, str] = field(default_factory=kvm_usable)
    host: str = field(default_factory=kvm_host_kind)

    def env(self) -> dict[str, str]:
        if self.shim is None:
            self.shim = python_shim()
        env = dict(os.environ)
        env["PATH"] = f"{self.shim}{os.pathsep}{env.get('PATH', '')}"
        env.pop("PYTHONPATH", None)  # the repository's emu comes first from its root anyway
        return env

    def skip_reason(self, block: Block) -> str | None:
        if block.accel is not None and block.accel not in self.accels:
            return f"--accel {','.join(self.accels)} given"
        if block.accel == "kvm" and not self.kvm[0]:
            return self.kvm[1]
        if block.host is not None and block.host != self.host:
            return {"pvm": "for kvm_pvm hosts only (this host's KVM uses VT-x/AMD-V)",
                    "hw": "for VT-x/AMD-V KVM hosts only (this host's KVM is kvm_pvm)"}[block.host]
        for need in block.needs:
            why = missing(need)
            if why:
                return why
        return None

    def run_lab(self, lab: Lab) -> list[Result]:
        values: dict[str, float] = {}
        results = []
        runnable = [b for b in lab.blocks if b.kind != "cleanup"]
        try:
            for block in runnable:
                results.append(self.run_block(block, values))
        finally:
            for block in lab.blocks:
                if block.kind == "cleanup":
                    results.append(self.run_block(block, values))
        return results

    def run_block(self, block: Block, values: dict[str, float]) -> Result:
        why = self.skip_reason(block)
        if why:
            return Result(block, "skipped", why)
        result = None
        for attempt in range(1 + block.retry):
            result = self._run_once(block, dict(values))
            result.attempts = attempt + 1
            if result.outcome == "passed":
                values.update(result.values)
                break
        assert result is not None
        if self.verbose:
            print(f"=== {block.label}\n{result.output}", file=sys.stderr)
        return result

    def _run_once(self, block: Block, values: dict[str, float]) -> Result:
        start = time.monotonic()
        process = subprocess.Popen(["bash", "-c", block.script], cwd=ROOT, env=self.env(), stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            raw, _ = process.communicate(block.stdin, timeout=block.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raw, _ = process.communicate()
            return Result(block, "failed", f"timed out after {block.timeout:g} s", raw.decode(errors="replace"),
                          seconds=time.monotonic() - start)  # fmt: skip
        output = raw.decode(errors="replace")
        result = Result(block, "passed", "", output, process.returncode, time.monotonic() - start)
        if process.returncode not in block.status:
            result.outcome = "failed"
            result.reason = f"exit status {process.returncode}, expected {' or '.join(map(str, block.status))}"
            return result
        for observe in block.observes:
            if observe.host is not None and (block.accel != "kvm" or observe.host != self.host):
                continue
            for check in observe.checks:
                problem = self._check(check, output, values)
                if problem:
                    result.outcome = "failed"
                    result.reason = f"{block.lab}:{check.line}: {problem}"
                    return result
        result.values = values
        return result

    @staticmethod
    def _check(check: Check, output: str, values: dict[str, float]) -> str | None:
        """None if the check holds. A line holds when some match of its expression satisfies its
        `where` (any match, without one); a negated line when none does."""
        first = None
        for match in check.pattern.finditer(output):
            named = {}
            for key, text in match.groupdict().items():
                if text is not None:
                    try:
                        named[key] = _number(text)
                    except ValueError:
                        pass  # a named group that is not a number: usable in the regex only
            if check.where is None:
                holds, shown = True, ""
            else:
                try:
                    groups = {str(i): _number(g) for i, g in enumerate(match.groups(), start=1) if g is not None}
                except ValueError as err:
                    return f"`{check.text}`: a group is not a number ({err})"
                try:
                    holds = bool(_evaluate(check.where, {**values, **named, **groups}))
                except KeyError as err:
                    return f"`{check.text}`: {err.args[0]}"
                shown = " (" + ", ".join(f"${k}={v:g}" for k, v in {**groups, **named}.items()) + ")"
            if holds:
                if check.negate:
                    return f"`{check.text[1:]}` matched {match.group(0)!r}{shown}, which it must not"
                values.update(named)
                return None
            if first is None:
                first = f"{match.group(0)!r}{shown}"
        if check.negate:
            return None
        if first is None:
            return f"`{check.text}` matched nothing"
        return f"`{check.text}`: matched {first}, but `{check.where_text}` does not hold (nor for any other match)"


def lab_files(paths: list[str]) -> list[Path]:
    if paths:
        return [Path(p).resolve() for p in paths]
    return sorted(p for p in LABS.glob("[0-9][0-9]-*.md"))


# --- /dev/kvm hidden -------------------------------------------------------------------------

# A new mount namespace (unshare --mount: private propagation) whose /dev is a fresh tmpfs with
# only the nodes a lab needs, copied (cp -a makes the same device nodes) or bind-mounted from the
# real /dev: /dev/kvm is simply not there, for this process tree only.
HIDE_KVM = r"""
set -e
old=$(mktemp -d /tmp/emu-labs-dev.XXXXXX)
mount --bind /dev "$old"
mount -t tmpfs -o mode=755,size=1m tmpfs /dev
for node in null zero full random urandom tty ptmx; do cp -a "$old/$node" /dev/; done
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
mkdir /dev/pts /dev/shm /dev/net
mount --bind "$old/pts" /dev/pts
mount --bind "$old/shm" /dev/shm
if [ -e "$old/net/tun" ]; then cp -a "$old/net/tun" /dev/net/; fi
umount "$old"
rmdir "$old"
set +e
exec "$@"
"""


def hide_kvm_missing() -> str | None:
    """Why /dev/kvm cannot be hidden here, or None."""
    if os.geteuid() != 0:
        return "hiding /dev/kvm needs root (a mount namespace and a tmpfs on /dev)"
    if shutil.which("unshare") is None:
        return "hiding /dev/kvm needs unshare (util-linux)"
    return None


def hidden_kvm_command(argv: list[str]) -> list[str]:
    """`argv` run in a mount namespace where /dev/kvm does not exist."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", HIDE_KVM, "hide-kvm", *argv]


KVM_MISSING_LINE = "emu: --accel kvm: /dev/kvm is not available (No such file or directory); use --accel tcg\n"


def check_kvm_is_hidden(runner: Runner, ask_emu: bool = True) -> str | None:
    """Inside the namespace: /dev/kvm must be absent, and (`ask_emu`) `emu --accel kvm` must say
    so in its one line, with exit status 2."""
    if os.path.exists("/dev/kvm"):
        return "/dev/kvm still exists"
    if not ask_emu:
        return None
    result = subprocess.run(["python", "-m", "emu", "--accel", "kvm", "firmware/build/hello64.elf"], cwd=ROOT,
                            env=runner.env(), capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    expected = KVM_MISSING_LINE
    if result.returncode != 2 or result.stderr != expected or result.stdout:
        return (f"python -m emu --accel kvm gave status {result.returncode}, stdout {result.stdout!r}, "
                f"stderr {result.stderr!r}; expected status 2 and {expected!r}")  # fmt: skip
    return None


# --- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/labs.py", description="Run docs/labs/ and check what they observe.")
    p.add_argument("labs", nargs="*", metavar="LAB.md", help="lab files (default: docs/labs/NN-*.md)")
    p.add_argument("--accel", choices=("tcg", "kvm"), action="append", help="run only these blocks' accelerators")
    p.add_argument("--hide-kvm", action="store_true", help="run in a mount namespace without /dev/kvm")
    p.add_argument("--list", action="store_true", help="list the blocks, run nothing")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="print each block's output")
    p.add_argument("--inside-hidden-kvm", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-emu-check", action="store_true",
                   help="with --hide-kvm: check only that /dev/kvm is absent, not emu's message about it")
    args = p.parse_args(argv)
    if args.hide_kvm:
        why = hide_kvm_missing()
        if why:
            print(f"labs: {why}", file=sys.stderr)
            return 2
        rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--hide-kvm"]
        return subprocess.run(hidden_kvm_command([sys.executable, __file__, "--inside-hidden-kvm", *rest]),
                              check=False).returncode  # fmt: skip
    try:
        labs = [parse_lab(path) for path in lab_files(args.labs)]
    except (LabError, OSError) as err:
        print(f"labs: {err}", file=sys.stderr)
        return 2
    if args.list:
        for lab in labs:
            print(f"{lab.path.name}: {lab.title}")
            for block in lab.blocks:
                extra = f" needs={','.join(block.needs)}" if block.needs else ""
                print(f"  line {block.line}: {block.kind} accel={block.accel or 'any'}{extra}, "
                      f"{sum(len(o.checks) for o in block.observes)} checks")  # fmt: skip
        return 0
    runner = Runner(accels=tuple(args.accel) if args.accel else ("tcg", "kvm"), verbose=args.verbose)
    failed = 0
    everything = []
    hidden_problem = None
    if args.inside_hidden_kvm:
        hidden_problem = check_kvm_is_hidden(runner, ask_emu=not args.no_emu_check)
        print(f"/dev/kvm hidden: {hidden_problem or 'yes, and emu --accel kvm says so in one line'}")
        failed += hidden_problem is not None
    for lab in labs:
        print(f"{lab.path.name}: {lab.title}")
        for result in runner.run_lab(lab):
            everything.append(result)
            print("  " + result.report().replace("\n", "\n  "))
            failed += result.outcome == "failed"
    counts = {k: sum(r.outcome == k for r in everything) for k in ("passed", "failed", "skipped")}
    print(f"labs: {counts['passed']} blocks passed, {counts['failed']} failed, {counts['skipped']} skipped")
    if args.json:
        results = [r.as_dict() for r in everything]
        Path(args.json).write_text(json.dumps({"hidden_kvm_problem": hidden_problem, "results": results}, indent=1))
    if runner.shim is not None:
        shutil.rmtree(runner.shim, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
