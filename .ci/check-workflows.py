"""CI: every GitHub Actions workflow is valid against the workflow schema (check-jsonschema's
vendored SchemaStore copy, no network), and every `run:` script passes shellcheck, with each
`${{ … }}` expression stood in for by a plain word."""
import pathlib
import re
import subprocess
import sys

import yaml

root = pathlib.Path(__file__).resolve().parent.parent / ".github" / "workflows"
files = sorted(root.glob("*.yml"))
subprocess.run(
    ["check-jsonschema", "--builtin-schema", "vendor.github-workflows", *map(str, files)],
    check=True,
)
problems = 0
for f in files:
    for name, job in yaml.safe_load(f.read_text())["jobs"].items():
        for n, step in enumerate(job.get("steps", [])):
            if "run" not in step:
                continue
            script = re.sub(r"\$\{\{[^}]*\}\}", "EXPR", step["run"])
            r = subprocess.run(
                ["shellcheck", "--shell=bash", "-"], input=script, text=True, capture_output=True
            )
            if r.returncode:
                problems += 1
                print(f"{f.name}: job {name}, step {n + 1}:\n{r.stdout}")
if problems:
    sys.exit(1)
print(f"workflows: {len(files)} valid, their scripts pass shellcheck")
