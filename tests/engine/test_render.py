"""Plan views: terraform-like text, the PR-comment markdown with its size cap, versioned JSON, progress."""

from __future__ import annotations

import io
import json
import re

from hxpc.engine.objects import DesiredObject, LiveObject, ObjectKey
from hxpc.engine.plan import Plan, make_plan
from hxpc.engine.progress import Event, PlainProgress, RichProgress, make_progress
from hxpc.engine.render import MARKDOWN_LIMIT, render_json, render_markdown, render_text

SECRET = "s3cr3t-value-never-shown"
WAVES = (("db",), ("api",))


def key(name: str, target: str = "compose", kind: str = "container") -> ObjectKey:
    return ObjectKey(target, "hxp-dev", kind, name)


def sample_plan() -> Plan:
    """One of each: create, update, replace, delete, noop; a secret both in live and desired state."""
    secret = frozenset({("env", "DB_PASSWORD")})
    desired = {
        key("db-1"): DesiredObject(key("db-1"), {"image": "postgres:16", "env": {"DB_PASSWORD": "secret:db"}}, "db",
                                   secret),
        key("api-1"): DesiredObject(key("api-1"), {"image": "gw:2.3.2", "env": {"DB_PASSWORD": "secret:db"}}, "api",
                                    secret, ("image",)),
        key("api-2"): DesiredObject(key("api-2"), {"image": "gw:2.3.2", "env": {"LOG": "debug"}}, "api"),
        key("cache-1"): DesiredObject(key("cache-1"), {"image": "redis:7"}, "cache"),
        key("net", kind="network"): DesiredObject(key("net", kind="network"), {"driver": "bridge"}),
    }
    live = {
        key("api-1"): LiveObject(key("api-1"), {"image": "gw:2.3.1", "env": {"DB_PASSWORD": SECRET}}, True, "api",
                                 secret_paths=secret),
        key("api-2"): LiveObject(key("api-2"), {"image": "gw:2.3.2", "env": {"LOG": "info"}}, True, "api"),
        key("cache-1"): LiveObject(key("cache-1"), {"image": "redis:7"}, True, "cache"),
        key("net", kind="network"): LiveObject(key("net", kind="network"), {"driver": "bridge"}),
        key("old-1"): LiveObject(key("old-1"), {"image": "old:1", "env": {"DB_PASSWORD": SECRET}}, True, "old",
                                 secret_paths=secret),
    }
    return make_plan(desired, live, WAVES, project="hxp", env="dev", spec_hash="0123456789abcdef")


def test_text_reads_like_terraform_plan() -> None:
    text = render_text(sample_plan())
    assert text.startswith("hxpc plan for hxp/dev (spec 0123456789abcdef; targets: compose)\n")
    assert "  + compose:hxp-dev/container/db-1  (create: new in spec)\n" in text
    assert '      + image = "postgres:16"\n' in text
    assert "-/+ compose:hxp-dev/container/api-1  (replace: image 2.3.1 -> 2.3.2, env.DB_PASSWORD changed" in text
    assert "  ~ compose:hxp-dev/container/api-2  (update in place: env.LOG info -> debug)\n" in text
    assert '      ~ env.LOG: "info" -> "debug"\n' in text
    assert "  - compose:hxp-dev/container/old-1  (destroy: not in spec: prune)\n" in text
    assert "(deletes, reverse dependency order)" in text
    assert "2 object(s) unchanged." in text
    assert text.endswith("Plan: 1 to add, 1 to change, 1 to replace, 1 to destroy.\n")
    # waves in order: db before api before the delete
    assert text.index("db-1") < text.index("api-1") < text.index("old-1")
    assert "cache-1" not in text and "cache-1" in render_text(sample_plan(), show_unchanged=True)


def test_no_changes() -> None:
    p = sample_plan()
    calm = Plan(p.project, p.env, p.spec_hash, p.targets, tuple(a for a in p.actions if a.kind == "noop"))
    assert render_text(calm).endswith("No changes. The live state matches the spec.\n")
    assert "**No changes." in render_markdown(calm)


def test_secrets_never_appear_in_any_view() -> None:
    p = sample_plan()
    for view in (render_text(p), render_markdown(p), render_json(p), render_text(p, show_unchanged=True)):
        assert SECRET not in view
        assert "secret:db" not in view
    assert "(sensitive)" in render_text(p)
    assert "(sensitive)" in render_markdown(p)


def test_markdown_has_a_table_per_target_and_folded_details() -> None:
    md = render_markdown(sample_plan())
    assert md.startswith("## hxpc plan: `hxp` / `dev`\n")
    assert "**Plan: 1 to add, 1 to change, 1 to replace, 1 to destroy.**" in md
    assert "### compose" in md
    assert "| service | add | change | replace | destroy | restart | unchanged |" in md
    assert "| `api` | 0 | 1 | 1 | 0 | 0 | 0 |" in md
    assert "| `cache` | 0 | 0 | 0 | 0 | 0 | 1 |" in md
    assert "| *(shared)* | 0 | 0 | 0 | 0 | 0 | 1 |" in md
    assert "<details><summary>compose: 4 change(s)</summary>" in md
    assert "```diff\n" in md and md.count("```") == 2 and "</details>" in md
    assert "\n+ compose:hxp-dev/container/db-1" in md and "\n- compose:hxp-dev/container/old-1" in md
    assert '\n!     image: "gw:2.3.1" -> "gw:2.3.2"\n' in md


def big_plan(n: int) -> Plan:
    desired = {}
    for t in ("compose", "systemd"):
        for i in range(n):
            k = key(f"svc-{i:05d}-1", target=t)
            desired[k] = DesiredObject(k, {"image": f"registry.example.com/team/svc-{i}:1.0", "args": ["--x"] * 5,
                                           "note": "``` a fence inside a value"}, f"svc-{i:05d}")
    return make_plan(desired, {}, [[f"svc-{i:05d}" for i in range(n)]], project="hxp", env="dev", spec_hash="f" * 16)


def test_markdown_never_exceeds_60_kb_and_says_it_was_cut() -> None:
    for n in (200, 3000):
        md = render_markdown(big_plan(n))
        assert len(md.encode()) <= MARKDOWN_LIMIT == 60 * 1024
        assert "Truncated:" in md and "Run `hxpc plan` for the full plan." in md
        fences = re.findall(r"^`{3,}", md, flags=re.M)
        assert len(fences) % 2 == 0            # every code block that was opened is closed
        assert md.count("<details>") == md.count("</details>")
    assert "````diff" in render_markdown(big_plan(3))  # longer fence than any run of backticks in the content
    small = render_markdown(big_plan(3))
    assert "Truncated" not in small


def test_json_is_versioned_and_complete() -> None:
    data = json.loads(render_json(sample_plan()))
    assert data["format_version"] == 1
    assert (data["project"], data["env"], data["spec_hash"], data["targets"]) == ("hxp", "dev", "0123456789abcdef",
                                                                                  ["compose"])
    assert data["summary"] == {"create": 1, "update": 1, "replace": 1, "delete": 1, "restart": 0, "keep": 0,
                               "noop": 2}
    first = data["actions"][0]
    assert set(first) == {"kind", "key", "address", "wave", "workload", "reason", "changes", "fingerprint",
                          "desired_hash"}
    api = next(a for a in data["actions"] if a["address"] == "compose:hxp-dev/container/api-1")
    assert api["changes"][0] == {"op": "change", "path": ["env", "DB_PASSWORD"], "old": "(sensitive)",
                                 "new": "(sensitive)"}
    assert api["fingerprint"] and len(api["fingerprint"]) == 16


def test_plain_progress_writes_one_line_per_event() -> None:
    out = io.StringIO()
    progress = make_progress(out, tty=False)
    assert isinstance(progress, PlainProgress)
    progress(Event("action", 1.25, 0, key("api-1"), "update", "image 2.3.1 -> 2.3.2"))
    progress(Event("retry", 2.5, 0, key("api-1"), "update", "connection reset; retrying in 0.5s"))
    assert out.getvalue().splitlines() == [
        "[    1.2s] wave 0 ~ compose:hxp-dev/container/api-1 update started: image 2.3.1 -> 2.3.2",
        "[    2.5s] wave 0 ~ compose:hxp-dev/container/api-1 update retrying: connection reset; retrying in 0.5s",
    ]


def test_rich_progress_shows_waves_actions_and_gates() -> None:
    out = io.StringIO()
    progress = make_progress(out, tty=True)
    assert isinstance(progress, RichProgress)
    progress(Event("wave", 0.0, 0, message="2 action(s)"))
    progress(Event("action", 0.1, 0, key("api-1"), "update", "[bold]not markup[/]"))
    progress(Event("gate", 0.5, 0, key("api-1"), "update", "waiting to be healthy (budget 60s)"))
    progress(Event("finish", 1.0, message="Apply complete after 1.0s."))
    text = out.getvalue()
    assert "compose:hxp-dev/container/api-1" in text
    assert "Apply complete after 1.0s." in text
