"""Replace (or append) one "## TITLE" section of docs/benchmarks.md.

    python3 bench/docsection.py "Movement (bench/move.sh)" < section-body.md

The body is read from stdin; the section heading, a line with the date and
the machine (CPUs, memory, kernel) are put in front of it. Used by the
benchmark scripts that own one section each (bench/run.sh owns the top).
"""
import datetime
import os
import re
import subprocess
import sys

DOC = "docs/benchmarks.md"


def main() -> None:
    title = sys.argv[1]
    body = sys.stdin.read().strip()
    text = open(DOC).read() if os.path.exists(DOC) else "# Benchmarks\n"
    kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 30)
    machine = f"{datetime.date.today()}, {os.cpu_count()} CPUs, {mem} GiB, kernel {kernel};"
    section = f"## {title}\n\n{machine}\n{body}\n"
    pat = re.compile(r"## " + re.escape(title) + r".*?(?=\n## |\Z)", re.S)
    if pat.search(text):
        text = pat.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section
    open(DOC, "w").write(text)


if __name__ == "__main__":
    main()
