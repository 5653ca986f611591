"""CI: terraform/ parses (python-hcl2), every var.X used is declared, every declared variable
is used, every templatefile's variables are passed (and used), and the files keep `terraform fmt`'s layout
where we can check it without terraform (2-space indent, no tabs, no trailing spaces)."""
import pathlib
import re
import sys

import hcl2

root = pathlib.Path(__file__).resolve().parent.parent / "terraform"
declared, used, problems = set(), set(), []
for tf in sorted(root.glob("*.tf")):
    text = tf.read_text()
    with tf.open() as f:
        doc = hcl2.load(f)
    for block in doc.get("variable", []):
        declared.update(k.strip("\"") for k in block.keys())
    used.update(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)", text))
    for n, line in enumerate(text.splitlines(), 1):
        if "\t" in line or line != line.rstrip() or (len(line) - len(line.lstrip(" "))) % 2:
            problems.append(f"{tf.name}:{n}: not terraform fmt layout")
for v in sorted(used - declared):
    problems.append(f"var.{v} is used but not declared")
for v in sorted(declared - used):
    problems.append(f"variable {v} is declared but never used")
main = (root / "main.tf").read_text()
calls = re.findall(r'templatefile\("\$\{path\.module\}/([^"]+)", \{(.*?)\n\s*\}\)', main, re.S)
if not calls:
    problems.append("main.tf: no templatefile call found")
for name, body in calls:
    passed = set(re.findall(r"^\s+([a-z_]+)\s+=", body, re.M))
    text = (root / name).read_text()
    template = set(re.findall(r"\$\{([a-z_]+)\}", text)) | set(re.findall(r"%\{ if ([a-z_]+) ", text))
    for v in sorted(template - passed):
        problems.append(f"{name} uses ${{{v}}} that templatefile does not pass")
    for v in sorted(passed - template):
        problems.append(f"templatefile passes {v} that {name} does not use")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"terraform: {len(declared)} variables declared and used, {len(calls)} templates complete")
