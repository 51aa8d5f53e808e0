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
with tempfile.TemporaryDirectory() as tmp:
    engine = make_engine(f"sqlite:///{Path(tmp) / 'autogen.db'}")
    command.revision(
        alembic_config(engine), message="initial schema", autogenerate=True, rev_id="0001"
    )
text = target.read_text()
text = "\n".join(line for line in text.splitlines() if not line.startswith("Create Date:")) + "\n"
target.write_text(text)
ruff = Path(sys.executable).with_name("ruff")
subprocess.run([str(ruff), "check", "--fix", "-q", str(target)], check=False)
subprocess.run([str(ruff), "format", "-q", str(target)], check=False)
print(f"wrote {target}")
