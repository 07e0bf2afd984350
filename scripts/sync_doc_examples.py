"""Copy the example package's files into the code blocks of docs/extending.md that show them.

Each block is marked ``<!-- file: PATH -->`` (PATH relative to docs/examples/infra-example);
``tests/e2e/test_extension.py`` fails when a block and its file differ. Run after editing the
example::

    python scripts/sync_doc_examples.py
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "extending.md"
EXAMPLE = ROOT / "docs" / "examples" / "infra-example"


def main() -> None:
    text = DOC.read_text()

    def fill(m: re.Match[str]) -> str:
        return f"<!-- file: {m.group(1)} -->\n```{m.group(2)}\n{(EXAMPLE / m.group(1)).read_text()}```"

    DOC.write_text(re.sub(r"<!-- file: (\S+) -->\n```(python|toml)\n.*?```", fill, text, flags=re.S))


if __name__ == "__main__":
    main()
