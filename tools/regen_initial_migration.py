"""Regenerate the initial Alembic revision (0001) from node/store/models.py.

Only valid while no release has shipped: once a schema is in users' hands, every change is
a new revision. Run: .venv/bin/python tools/regen_initial_migration.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command

from node.store.db import MIGRATIONS_DIR, alembic_config, make_engine

target = MIGRATIONS_DIR / "versions" / "0001_initial_schema.py"
target.unlink(missing_ok=True)
# Later revisions (0002: the report views) build on 0001; set them aside while 0001 is
# generated, or Alembic would refuse a history whose base is missing.
later = [p for p in (MIGRATIONS_DIR / "versions").glob("*.py") if p != target]
with tempfile.TemporaryDirectory() as tmp:
    aside = Path(tmp) / "aside"
    aside.mkdir()
    for path in later:
        path.rename(aside / path.name)
    try:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'autogen.db'}")
        command.revision(
            alembic_config(engine), message="initial schema", autogenerate=True, rev_id="0001"
        )
    finally:
        for path in later:
            (aside / path.name).rename(path)
text = target.read_text()
text = "\n".join(line for line in text.splitlines() if not line.startswith("Create Date:")) + "\n"
target.write_text(text)
ruff = Path(sys.executable).with_name("ruff")
subprocess.run([str(ruff), "check", "--fix", "-q", str(target)], check=False)
subprocess.run([str(ruff), "format", "-q", str(target)], check=False)
print(f"wrote {target}")
