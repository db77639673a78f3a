"""Pure planning: actions and reasons, waves, redaction, determinism, saved-plan checks."""

from __future__ import annotations

import random

import pytest

from hxpc.compiler.model import ResolvedStack
from hxpc.compiler.pipeline import resolve_env
from hxpc.engine.diff import diff_states
from hxpc.engine.objects import SENSITIVE, Change, DesiredObject, Gate, LiveObject, ObjectKey, fingerprint
from hxpc.engine.plan import NameClash, Plan, check_fresh, check_matches, load_plan, make_plan
from hxpc.engine.render import render_json
from hxpc.errors import StalePlan, UsageError
from hxpc.sources import FileSources

SCOPE = "hxp-prod"
SECRET = "hunter2-very-secret"


def key(name: str, kind: str = "container") -> ObjectKey:
    return ObjectKey("compose", SCOPE, kind, name)


@pytest.fixture(scope="module")
def stack() -> ResolvedStack:
    return resolve_env(FileSources("specs/hxp.yaml"), "prod").stack


def desired_of(stack: ResolvedStack) -> dict[ObjectKey, DesiredObject]:
    """Objects shaped like a container backend's: one per replica, secrets by reference only."""
    out = {key("default", "network"): DesiredObject(key("default", "network"), {"driver": "bridge"})}
    for w in stack.workloads.values():
        env = dict(w.env) | {var: f"secret:{ref}" for var, ref in w.secrets.items()}
        for i in range(w.replicas):
            k = key(f"{w.name}-{i + 1}")
            out[k] = DesiredObject(k, {"image": w.image, "args": list(w.args), "env": env}, w.name,
                                   frozenset(("env", var) for var in w.secrets), ("image",),
                                   Gate(w.startup_budget_s, 1.0))
    return out


def live_from(desired: dict[ObjectKey, DesiredObject]) -> dict[ObjectKey, LiveObject]:
    return {k: LiveObject(k, d.state, True, d.workload, secret_paths=d.secret_paths, running=True)
            for k, d in desired.items()}


def plan(desired: dict[ObjectKey, DesiredObject], live: dict[ObjectKey, LiveObject],
         waves: tuple[tuple[str, ...], ...]) -> Plan:
    return make_plan(desired, live, waves, project="hxp", env="prod", spec_hash="abc123", spec_file="specs/hxp.yaml")


def test_waves_create_in_dependency_order_and_delete_in_reverse(stack: ResolvedStack) -> None:
    desired = desired_of(stack)
    live = {
        key("old-db-1"): LiveObject(key("old-db-1"), {"image": "pg"}, True, "old-db"),
        key("old-api-1"): LiveObject(key("old-api-1"), {"image": "api"}, True, "old-api", depends_on=("old-db",)),
        key("api-gateway-9"): LiveObject(key("api-gateway-9"), {"image": "gw"}, True, "api-gateway"),
        key("old", "network"): LiveObject(key("old", "network"), {"driver": "bridge"}, True, None),
    }
    p = plan(desired, live, stack.waves)
    wave = {a.key.name: a.wave for a in p.actions}
    kinds = {a.key.name: a.kind for a in p.actions}
    assert wave["default"] == 0                                 # shared objects first
    assert {wave[n] for n in ("postgres-1", "redis-1", "llama-70b-1", "llama-8b-2")} == {1}
    assert wave["api-gateway-1"] == wave["api-gateway-3"] == 2  # after everything it depends on
    assert kinds["old-api-1"] == kinds["old-db-1"] == kinds["api-gateway-9"] == "delete"
    last_apply = max(a.wave for a in p.actions if a.kind != "delete")
    assert min(a.wave for a in p.actions if a.kind == "delete") > last_apply
    assert wave["old-api-1"] < wave["old-db-1"]                  # dependents go first
    assert wave["api-gateway-9"] < wave["old-db-1"]
    assert wave["old"] == max(wave.values())                    # shared objects last
    assert [a.wave for a in p.actions] == sorted(a.wave for a in p.actions)


def test_every_action_has_a_reason(stack: ResolvedStack) -> None:
    desired = desired_of(stack)
    live = live_from(desired)
    pg, redis, qdrant = key("postgres-1"), key("redis-1"), key("qdrant-1")
    live[pg] = LiveObject(pg, {**desired[pg].state, "image": "postgres:16.2"}, secret_paths=desired[pg].secret_paths)
    desired[pg] = DesiredObject(pg, {**desired[pg].state, "image": "postgres:16.3"}, "postgres",
                                desired[pg].secret_paths)  # no replace_on: changed in place
    live[redis] = LiveObject(redis, {**desired[redis].state, "image": "redis:7.0"})
    live[qdrant] = LiveObject(qdrant, desired[qdrant].state, running=False, status="exited (1)")
    del live[key("llama-8b-2")]
    live[key("gone-1")] = LiveObject(key("gone-1"), {"image": "x"}, True, "gone")
    actions = {a.key.name: a for a in plan(desired, live, stack.waves).actions}
    assert (actions["postgres-1"].kind, actions["postgres-1"].reason) == ("update", "image 16.2 -> 16.3")
    assert actions["redis-1"].kind == "replace"
    assert actions["redis-1"].reason == "image 7.0 -> 7.4"
    assert (actions["qdrant-1"].kind, actions["qdrant-1"].reason) == ("restart", "not running (exited (1))")
    assert (actions["llama-8b-2"].kind, actions["llama-8b-2"].reason) == ("create", "new in spec")
    assert (actions["gone-1"].kind, actions["gone-1"].reason) == ("delete", "not in spec: prune")
    assert (actions["llama-70b-1"].kind, actions["llama-70b-1"].reason) == ("noop", "unchanged")
    assert all(a.reason for a in actions.values())
    assert actions["llama-8b-2"].fingerprint is None
    assert actions["postgres-1"].fingerprint == fingerprint(live[pg])


def test_field_changes_and_lists_as_a_whole() -> None:
    old = {"image": "a:1", "env": {"A": "1", "B": "2"}, "args": ["--x", "1"], "ports": {"http": 80}}
    new = {"image": "a:1", "env": {"A": "1", "C": "3"}, "args": ["--y", "--x", "1"], "ports": {"http": 80}}
    assert diff_states(old, new) == (
        Change("change", ("args",), ["--x", "1"], ["--y", "--x", "1"]),
        Change("remove", ("env", "B"), "2", None),
        Change("add", ("env", "C"), None, "3"),
    )
    assert diff_states(old, dict(old)) == ()


def test_secrets_are_redacted_in_changes_and_reasons(stack: ResolvedStack) -> None:
    desired = desired_of(stack)
    live = live_from(desired)
    gw = key("api-gateway-1")
    leaked = {**desired[gw].state, "env": {**desired[gw].state["env"], "DB_PASSWORD": SECRET}}
    live[gw] = LiveObject(gw, leaked, True, "api-gateway", secret_paths=frozenset({("env", "DB_PASSWORD")}))
    del live[key("postgres-1")]
    p = plan(desired, live, stack.waves)
    by_name = {a.key.name: a for a in p.actions}
    change = by_name["api-gateway-1"].changes
    assert change == (Change("change", ("env", "DB_PASSWORD"), SENSITIVE, SENSITIVE),)
    assert by_name["api-gateway-1"].reason == "env.DB_PASSWORD changed (sensitive)"
    created_env = next(c.new for c in by_name["postgres-1"].changes if c.path == ("env",))
    assert created_env["POSTGRES_PASSWORD"] == SENSITIVE
    assert SECRET not in render_json(p)
    assert "secret:db-password" not in render_json(p)


def test_fingerprint_hides_secret_values_and_ignores_run_state() -> None:
    k = key("a-1")
    secret = frozenset({("env", "TOKEN")})
    one = LiveObject(k, {"env": {"TOKEN": "one"}}, secret_paths=secret, running=True)
    two = LiveObject(k, {"env": {"TOKEN": "two"}}, secret_paths=secret, running=False)
    assert fingerprint(one) == fingerprint(two)
    assert fingerprint(one) != fingerprint(LiveObject(k, {"env": {"TOKEN": "one"}}, secret_paths=secret, version="id2"))


def test_a_name_clash_is_an_error_before_anything_is_touched(stack: ResolvedStack) -> None:
    desired = desired_of(stack)
    live = live_from(desired)
    live[key("redis-1")] = LiveObject(key("redis-1"), {"image": "someone-elses"}, owned=False)
    live[key("unrelated")] = LiveObject(key("unrelated"), {"image": "x"}, owned=False)
    with pytest.raises(NameClash) as caught:
        plan(desired, live, stack.waves)
    assert "compose:hxp-prod/container/redis-1" in str(caught.value)
    assert "unrelated" not in str(caught.value)
    assert caught.value.exit_code == 1
    del live[key("redis-1")]
    p = plan(desired, live, stack.waves)
    assert "unrelated" not in {a.key.name for a in p.actions}  # not ours, not in the way: left alone


def test_same_inputs_give_byte_identical_json(stack: ResolvedStack) -> None:
    desired = desired_of(stack)
    live = live_from(desired)
    live[key("redis-1")] = LiveObject(key("redis-1"), {"image": "redis:6", "env": {"Z": "1", "A": "2"}})
    del live[key("qdrant-1")]
    first = render_json(plan(desired, live, stack.waves))
    items_d, items_l = list(desired.items()), list(live.items())
    random.Random(7).shuffle(items_d)
    random.Random(8).shuffle(items_l)
    second = render_json(plan(dict(items_d), dict(items_l), stack.waves))
    assert first == second
    assert '"format_version": 1' in first
    assert "created_at" not in first
    assert load_plan(first) == plan(desired, live, stack.waves)


def test_saved_plan_for_another_env_or_spec_is_refused(stack: ResolvedStack) -> None:
    p = plan(desired_of(stack), {}, stack.waves)
    check_matches(p, env="prod", spec_hash="abc123")
    with pytest.raises(StalePlan, match="environment `prod`, not `staging`"):
        check_matches(p, env="staging", spec_hash="abc123")
    with pytest.raises(StalePlan, match="made from spec abc123, but the spec is now def456") as caught:
        check_matches(p, env="prod", spec_hash="def456")
    assert caught.value.exit_code == 4


def test_stale_saved_plan_names_each_object_and_what_changed(stack: ResolvedStack) -> None:
    desired = desired_of(stack)
    live = live_from(desired)
    pg, redis, q, gw = key("postgres-1"), key("redis-1"), key("qdrant-1"), key("api-gateway-1")
    live[pg] = LiveObject(pg, {**desired[pg].state, "image": "postgres:15"}, True, "postgres")
    del live[redis]
    live[gw] = LiveObject(gw, {**desired[gw].state, "args": ["--old"]}, True, "api-gateway")
    p = load_plan(render_json(plan(desired, live, stack.waves)))
    check_fresh(p, live, desired)  # nothing moved: fine
    now = dict(live)
    now[pg] = LiveObject(pg, {**desired[pg].state, "image": "postgres:14"}, True, "postgres")  # edited outside
    now[redis] = LiveObject(redis, desired[redis].state, True, "redis")                      # created outside
    now[gw] = LiveObject(gw, desired[gw].state, True, "api-gateway")                          # fixed outside
    now[q] = LiveObject(q, {**desired[q].state, "image": "qdrant:0"}, True, "qdrant")         # not touched by p
    with pytest.raises(StalePlan) as caught:
        check_fresh(p, now, desired)
    text = str(caught.value)
    assert "compose:hxp-prod/container/postgres-1: changed since the plan was made: image was postgres:15, now" \
           " postgres:14" in text
    assert "compose:hxp-prod/container/redis-1: now exists" in text
    assert "compose:hxp-prod/container/api-gateway-1: changed since the plan was made: args now matches" in text
    assert "qdrant" not in text
    del now[pg]
    with pytest.raises(StalePlan, match="postgres-1: no longer exists"):
        check_fresh(p, now, desired)


def test_unreadable_saved_plans_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="format_version 2"):
        load_plan('{"format_version": 2}')
    with pytest.raises(UsageError, match="not JSON"):
        load_plan("{")
    with pytest.raises(UsageError, match="malformed"):
        load_plan('{"format_version": 1, "project": "p"}')
