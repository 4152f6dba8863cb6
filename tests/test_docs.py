"""The documents name only what exists: README.md, CONTRIBUTING.md, benchmarks/README.md and the module docstrings
(the top-level *.py, plumbing/*.py, benchmarks/*.py). Each test lists every offender at once: document:line: token.

- paths: a markdown link's target that is no URL (from its document's folder, its #anchor cut off); a token that
  starts with one of the repository's own folders (FOLDERS: tests/, plumbing/, ...), from the root; a bare name
  ending in .py or .md, a file somewhere in the repository. Anything else is not a repository path but what the
  commands write or read at run time (runs/, data/, state.pt, metrics.json, seed-1/, shirt.jpg, ...): unchecked.
- tests: test_x.py and tests/test_x.py are files in tests/; a test_x in `backticks` (or in a docstring's prose) is
  a def test_x in tests/*.py or a test module's name. Code (test_loader in an example) names no test.
- headings: FILE.md#anchor and #anchor match a heading of that document by GitHub's rule: lowercased, punctuation
  but hyphens and spaces dropped, each space a hyphen (a repeated heading's gets -1, -2, ...); a section cited by
  its title, FILE.md, *Title* or FILE.md, "Title" (FILE from the root), begins one of FILE's headings.
- imports: `from X import Y`, X a module of the project, imports as written from the root and has Y; an X named
  like a project file elsewhere (images for plumbing/images.py) does not import as written: an offender.
- flags, read from each script's own --help and spelled in full: commands are code lines (fenced in markdown,
  indented in a docstring) and `backticked` spans. In a clause (cut at ( ) , ; : | # and line ends) a flag after a
  script's name (train.py, evaluate.py, [benchmarks/]seeds.py, [benchmarks/]speed.py) is that script's; "X's --flag"
  is X's; a command of another program (pip, python -m pytest, sbatch, ...) is not checked; any other flag is one
  of some script's, but for NAMED_ON_PURPOSE: loose mentions of a removed flag or of an abbreviation, on purpose.
"""
import ast
import collections
import functools
import glob
import importlib
import importlib.util
import os
import re

from conftest import ROOT, run_main

FOLDERS = ("tests", "plumbing", "benchmarks", "docs", ".ci")  # the repository's own top-level folders
FILES = [os.path.relpath(p, ROOT) for p in glob.glob(f"{ROOT}/*") + [
    q for f in FOLDERS for q in glob.glob(f"{ROOT}/{f}/**", recursive=True)] if os.path.isfile(p)]
SCRIPTS = {"train": "train", "evaluate": "evaluate", "seeds": "benchmarks.seeds", "speed": "benchmarks.speed"}
NAMED_ON_PURPOSE = {"benchmarks/README.md": {"--ema", "--cutout",  # removed flags, beside their measurements
                                             "--out", "--log", "--dry", "--res"}}  # how abbreviations are parsed
PROGRAMS = r"pip|pytest|git|sbatch|bash|cmp|lsof|xargs"  # other programs, for "pytest's --durations"
FLAG = re.compile(r"(?<![\w-])--[a-zA-Z][\w-]*")
SCRIPT = re.compile(r"(?<![\w/.-])(?:benchmarks/)?(train|evaluate|seeds|speed)\.py\b")
PATH = re.compile(r"(?<![\w./-])(?:%s)/[\w./*-]*" % "|".join(map(re.escape, FOLDERS)))
BARE = re.compile(r"(?<![\w./-])[\w-]+\.(?:py|md)\b")
TEST_FILE = re.compile(r"(?<![\w./-])(?:tests/)?(test_\w+)\.py\b")
TEST_NAME = re.compile(r"(?<![\w./-])test_\w+\b(?!\.py)")
Doc = collections.namedtuple("Doc", "name text line0 code")  # code: the indices of its code lines


def markdown(name):
    text, code, inside = open(os.path.join(ROOT, name), encoding="utf-8").read(), set(), False
    for i, line in enumerate(text.split("\n")):
        fence = line.lstrip().startswith("```")
        inside ^= fence
        if inside or fence:
            code.add(i)
    return Doc(name, text, 0, code)


def documents():
    docs = [markdown(name) for name in ("README.md", "CONTRIBUTING.md", "benchmarks/README.md")]
    for path in sorted(p for folder in ("", "plumbing/", "benchmarks/") for p in glob.glob(f"{ROOT}/{folder}*.py")):
        tree = ast.parse(open(path, encoding="utf-8").read())
        if text := ast.get_docstring(tree):  # which drops the blank lines a docstring may start with
            raw = tree.body[0].value.value
            line0 = tree.body[0].lineno - 1 + raw[:len(raw) - len(raw.lstrip())].count("\n")
            code = {i for i, line in enumerate(text.split("\n")) if line.startswith("    ")}
            docs.append(Doc(os.path.relpath(path, ROOT), text, line0, code))
    return docs


def where(doc, pos):
    return f"{doc.name}:{doc.line0 + doc.text.count(chr(10), 0, pos) + 1}"


def clauses(doc):
    """(offset, text, kind) of each clause of a document, kind "code" (a code line), "span" (`...`) or "prose"."""
    lines = doc.text.split("\n")
    code = "\n".join(line if i in doc.code else " " * len(line) for i, line in enumerate(lines))
    prose = "\n".join(" " * len(line) if i in doc.code else line for i, line in enumerate(lines))
    spans = [m for m in re.finditer(r"`([^`]+)`", prose) if "\n\n" not in m.group(1)]
    for m in spans:
        prose = prose[:m.start()] + " " * len(m.group()) + prose[m.end():]
    pieces = [(0, code.replace("\\\n", "  "), "code"), (0, prose, "prose")]
    for start, text, kind in pieces + [(m.start(1), m.group(1).replace("\n", " "), "span") for m in spans]:
        for m in re.finditer(r"[^(),;:|#\n]+", text):
            yield start + m.start(), m.group(), kind


def slug(heading):
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def slugs(doc):
    seen, anchors = collections.Counter(), set()
    prose = "\n".join("" if i in doc.code else line for i, line in enumerate(doc.text.split("\n")))
    for heading in map(slug, re.findall(r"^#{1,6} +(.+?) *$", prose, re.M)):
        anchors.add(heading + (f"-{seen[heading]}" if seen[heading] else ""))
        seen[heading] += 1
    return anchors


def links(doc):
    """(offset, path from the root or "" for the document itself, anchor or "") of each link that is no URL."""
    for m in re.finditer(r"\]\(([^)\s]+)\)", doc.text):
        if not re.match(r"[a-z]+:", m.group(1)):
            path, _, anchor = m.group(1).partition("#")
            yield m.start(1), path and os.path.normpath(os.path.join(os.path.dirname(doc.name), path)), anchor


def check(offenders):
    offenders = list(dict.fromkeys(offenders))
    assert not offenders, f"{len(offenders)} stale:\n" + "\n".join(offenders)


def test_paths_exist():
    docs, names = documents(), set(map(os.path.basename, FILES))
    check([f"{where(doc, pos)}: {path}" for doc in docs for pos, path, _ in links(doc)
           if path and not os.path.exists(os.path.join(ROOT, path))]
          + [f"{where(doc, m.start())}: {m.group().rstrip('.')}" for doc in docs for m in PATH.finditer(doc.text)
             if "*" not in m.group() and not TEST_FILE.search(m.group())  # test files: test_tests_exist
             and not os.path.exists(os.path.join(ROOT, m.group().rstrip(".")))]
          + [f"{where(doc, m.start())}: {m.group()}" for doc in docs for m in BARE.finditer(doc.text)
             if not m.group().startswith("test_") and m.group() not in names])


def test_tests_exist():
    modules = {os.path.basename(p)[:-3] for p in glob.glob(f"{ROOT}/tests/test_*.py")}
    defs = {node.name for p in glob.glob(f"{ROOT}/tests/*.py") for node in ast.walk(ast.parse(open(p).read()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")}
    check([f"{where(doc, m.start())}: {m.group()}" for doc in documents() for m in TEST_FILE.finditer(doc.text)
           if m.group(1) not in modules]
          + [f"{where(doc, at + m.start())}: {m.group()}" for doc in documents() for at, text, kind in clauses(doc)
             if kind == "span" or kind == "prose" and doc.name.endswith(".py")
             for m in TEST_NAME.finditer(text) if m.group() not in modules | defs])


def test_headings_exist():
    def doc_at(doc, path):  # None: no such markdown file, which test_paths_exist reports
        return doc if not path else markdown(path) if os.path.isfile(os.path.join(ROOT, path)) else None
    check([f"{where(doc, pos)}: {path}#{anchor}" for doc in documents() for pos, path, anchor in links(doc)
           if anchor and (target := doc_at(doc, path)) and anchor not in slugs(target)]
          + [f"{where(doc, m.start())}: {m.group()}" for doc in documents()
             for m in re.finditer(r"([\w./-]+\.md), [*\"]([^*\"\n]+)[*\"]", doc.text)
             if (target := doc_at(doc, m.group(1))) and not any(s.startswith(slug(m.group(2))) for s in slugs(target))])


def test_imports_resolve():
    offenders = []
    for doc in documents():
        for m in re.finditer(r"\bfrom +([\w.]+) +import +(\w+(?: *, *\w+)*)", doc.text):
            module, names, rel = m.group(1), re.split(r" *, *", m.group(2)), m.group(1).replace(".", "/")
            elsewhere = [f for f in FILES if f.endswith(f"/{rel.split('/')[-1]}.py")]
            if os.path.isfile(os.path.join(ROOT, rel + ".py")) or rel in FOLDERS:
                mod = importlib.import_module(module)
                offenders += [f"{where(doc, m.start())}: from {module} import {name}" for name in names
                              if not hasattr(mod, name) and not (hasattr(mod, "__path__")  # or a submodule
                                                                 and importlib.util.find_spec(f"{module}.{name}"))]
            elif elsewhere:
                offenders.append(f"{where(doc, m.start())}: from {module} (not a module from the root: "
                                 f"the file is {elsewhere[0]})")
    check(offenders)


@functools.cache
def script_flags():
    return {key: set(FLAG.findall(run_main(importlib.import_module(module).main, "--help").stdout))
            for key, module in SCRIPTS.items()}


def owner(clause, at, kind, line):
    """The script whose flag this is, None for another program's, "" for any script's."""
    if named := SCRIPT.findall(clause[:at]):
        return named[-1]
    if possessive := re.search(r"(\S+)'s[\s`]*$", line):  # train.py's --out-dir, pytest's --durations
        if (named := SCRIPT.findall(possessive.group(1))) or re.fullmatch(PROGRAMS, possessive.group(1)):
            return named[0] if named else None
    return None if kind != "prose" and re.match(r"\s*(?:\w+=\S*\s+)*[^\s-]", clause) else ""


def test_flags_are_the_scripts():
    flags, offenders = script_flags(), []
    for doc in documents():
        for start, clause, kind in clauses(doc):
            for m in FLAG.finditer(clause):
                pos = start + m.start()
                script = owner(clause, m.start(), kind, doc.text[doc.text.rfind("\n", 0, pos) + 1:pos])
                allowed = flags[script] if script else set().union(*flags.values(), NAMED_ON_PURPOSE.get(doc.name, ()))
                if script is not None and m.group() not in allowed:
                    offenders.append(f"{where(doc, pos)}: {m.group()} (not a flag of {script or 'any script'})")
    check(offenders)


def test_contributings_budget_holds():
    """CONTRIBUTING.md's rules of weight, true of the repository: each module and benchmark within 200 lines, the
    benchmarks within 350, README.md within 12,000 characters, no .py line over 120, model.py importing only torch
    and metrics.py only numpy. (The modules' total, 1,250, is over: CONTRIBUTING says by how much.)"""
    modules = [p for p in FILES if p.endswith(".py") and not p.startswith(("tests/", "benchmarks/"))]
    benchmarks = [p for p in FILES if p.startswith("benchmarks/") and p.endswith(".py")]
    lines = {p: open(os.path.join(ROOT, p), encoding="utf-8").read().splitlines() for p in FILES if p.endswith(".py")}
    offenders = [f"{p}: {len(lines[p])} lines" for p in modules + benchmarks if len(lines[p]) > 200]
    offenders += [f"{p}:{i}: {len(line)} characters" for p in lines for i, line in enumerate(lines[p], 1)
                  if len(line) > 120]
    offenders += [f"benchmarks: {sum(len(lines[p]) for p in benchmarks)} lines"] * (
        sum(len(lines[p]) for p in benchmarks) > 350)
    offenders += ["README.md: over 12,000 characters"] * (len(open(os.path.join(ROOT, "README.md")).read()) > 12_000)
    for name, allowed in (("model.py", {"os", "warnings", "zipfile", "torch"}), ("metrics.py", {"numpy"})):
        tree = ast.parse(open(os.path.join(ROOT, name)).read())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names} | {node.module.split(".")[0] for node in ast.walk(tree)
                                                if isinstance(node, ast.ImportFrom)}
        offenders += [f"{name} imports {module}" for module in imported - allowed]
    check(offenders)
