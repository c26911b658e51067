"""YAML documents at and past the safe loader's limits, for the pack and API tests."""

from __future__ import annotations

from ringfence import safe_yaml
from ringfence.engine.pack import MAX_PACK_BYTES


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """Each level's list holds ``width`` aliases of the previous one: width**levels strings."""
    lines = ['version: "lol"', "description: x", "lol0: &l0 lol"]
    lines += [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def many_rules(count: int) -> str:
    """A pack of ``count`` rules, each with a compound condition."""
    rule = (
        "  - id: r{i}\n    on: [login.failed]\n    when: data.ip == 'x' and data.device_id != 'y' or abs(1) > 2\n"
        "    severity: low\n    audience: ops\n    title: t {{customer_id}}\n    labels: {{a: b}}\n"
    )
    return 'version: "many"\nrules:\n' + "".join(rule.format(i=i) for i in range(count))


# The largest documents the loader accepts, one at each of its limits.
ACCEPTED_WORST_CASES = {
    "a list at the node limit": "version: x\nlists:\n  l: ["
    + ",".join(f"value{i:06}" for i in range(safe_yaml.MAX_NODES - 10))
    + "]\n",
    "thousands of rules": many_rules(2_000),
    "one long scalar": "version: x\ndescription: '" + "a" * (MAX_PACK_BYTES - 40) + "'\n",
    "nesting at the depth limit": "version: x\nlists:\n  l: [x]\ndescription: x\nx: "
    + "[" * (safe_yaml.MAX_DEPTH - 2)
    + "]" * (safe_yaml.MAX_DEPTH - 2),
}
