"""Make a `pip install --target` directory independent of where and when it was built.

Used by build/shiv.sh between `pip install --target STAGING` and `shiv --site-packages STAGING`.
pip leaves three things in such a directory that depend on the build machine's paths:
  - bin/: console scripts whose shebang is the build venv's interpreter (the zipapp does not
    use them: shiv calls the entry point named in entry_points.txt);
  - */*.dist-info/direct_url.json: the file:// URL of the wheel or checkout installed from;
  - */*.dist-info/RECORD: rows (with hashes) for those two.
This script deletes the first two and drops their rows from every RECORD. Nothing else pip
writes varies (file contents come from the wheels; shiv sorts the entries and fixes every
timestamp; file modes come from the wheels and the umask, which build/shiv.sh sets).

    python build/normalize_site.py STAGING
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import sys
from pathlib import Path


def normalize(site: Path) -> None:
    shutil.rmtree(site / "bin", ignore_errors=True)
    for direct_url in site.glob("*.dist-info/direct_url.json"):
        direct_url.unlink()
    for record in sorted(site.glob("*.dist-info/RECORD")):
        rows = list(csv.reader(io.StringIO(record.read_text(encoding="utf-8"))))
        kept = [row for row in rows if row and _inside(site, row[0]) and (site / row[0]).exists()]
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(kept)
        record.write_text(out.getvalue(), encoding="utf-8")


def _inside(site: Path, relative: str) -> bool:
    resolved = os.path.normpath(site / relative)
    return resolved == str(site) or resolved.startswith(str(site) + os.sep)


if __name__ == "__main__":
    normalize(Path(sys.argv[1]).resolve())
