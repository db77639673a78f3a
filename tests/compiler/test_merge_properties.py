"""Properties of the merge over random trees: RFC 7386 semantics, null deletes, and honest provenance.

Random base, inline and file-overlay trees are written with yamlout, loaded with
load_document (so every value has a real position) and merged.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hxpc.compiler.load import Document, KeyPath, load_document
from hxpc.compiler.merge import Merged, merge
from hxpc.compiler.yamlout import dump

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# few names, so that the layers often touch the same keys
plain_keys = st.sampled_from(["a", "b", "c", "d", "name", "x-y"])
# ... and sometimes the sections that `defaults` is merged under
any_keys = st.one_of(plain_keys, st.sampled_from(["defaults", "services", "models", "resources", "restart"]))
# control characters are refused at load (HX111, tests/compiler/test_hostile.py): values never hold them
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5),
                    st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=4),
                    st.floats(allow_nan=False, allow_infinity=False, width=32))


def trees(keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                        st.dictionaries(keys, kids, max_size=4)), max_leaves=10)


def mappings(keys: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(keys.filter(lambda k: k != "environments"), trees(keys), max_size=4)


def load(data: Any, file: str) -> Document:
    return load_document(dump(data), file)


def base_doc(base: dict[str, Any], inline: Any) -> Document:
    return load({**base, "environments": {"e": inline}}, "s.yaml")


def rfc7386(target: Any, patch: Any) -> Any:
    """The RFC's pseudocode, verbatim."""
    if isinstance(patch, dict):
        if not isinstance(target, dict):
            target = {}
        result = dict(target)
        for name, value in patch.items():
            if value is None:
                result.pop(name, None)
            else:
                result[name] = rfc7386(result.get(name), value)
        return result
    return patch


def paths(value: Any, path: KeyPath = ()) -> list[KeyPath]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*path, i))
    return out


def check_provenance(merged: Merged, docs: list[Document]) -> None:
    texts = {d.file: d.text.splitlines() for d in docs}
    present = set(paths(merged.data))
    for path in present - {()}:
        assert merged.provenance.get(path), f"{path} is in the merged tree but no layer set it"
    for path, layers in merged.provenance.items():
        assert path in present, f"provenance for {path}, which is not in the merged tree"
        for layer in layers:
            for span in (layer.value, layer.key):
                if span is None:
                    continue
                assert span.file in texts, span
                lines = texts[span.file]
                assert 1 <= span.line <= len(lines), span
                assert 1 <= span.col <= len(lines[span.line - 1]) + 1, span


@SETTINGS
@given(mappings(plain_keys), mappings(plain_keys), mappings(plain_keys))
def test_merge_is_rfc7386_inline_then_file(base: dict[str, Any], inline: dict[str, Any],
                                           overlay: dict[str, Any]) -> None:
    merged = merge(base_doc(base, inline), "e", load(overlay, "s.e.yaml"))
    assert merged.data == rfc7386(rfc7386(base, inline), overlay)


@SETTINGS
@given(mappings(any_keys), st.sampled_from([None, {}]))
def test_an_empty_overlay_changes_nothing(base: dict[str, Any], inline: Any) -> None:
    document = base_doc(base, inline)
    alone = merge(document, None, None)
    for overlay in (None, load({}, "s.e.yaml")):
        merged = merge(document, "e", overlay)
        assert merged.data == alone.data
        assert merged.provenance == alone.provenance


@SETTINGS
@given(mappings(plain_keys), st.data())
def test_null_deletes(base: dict[str, Any], data: st.DataObject) -> None:
    mapping_paths = [p for p in paths(base) if p and all(isinstance(k, str) for k in p)]
    if not mapping_paths:
        return
    target = data.draw(st.sampled_from(mapping_paths))
    patch: Any = None
    for key in reversed(target):
        patch = {key: patch}
    document, overlay = load(base, "s.yaml"), load(patch, "s.e.yaml")
    merged = merge(document, "e", overlay)
    parent: Any = merged.data
    for key in target[:-1]:
        parent = parent[key]
    assert target[-1] not in parent
    assert not any(p[: len(target)] == target for p in merged.provenance)
    check_provenance(merged, [document, overlay])


@SETTINGS
@given(mappings(any_keys), mappings(any_keys), mappings(any_keys))
def test_provenance_is_real_and_complete(base: dict[str, Any], inline: dict[str, Any],
                                         overlay: dict[str, Any]) -> None:
    document, overlay_doc = base_doc(base, inline), load(overlay, "s.e.yaml")
    merged = merge(document, "e", overlay_doc)
    check_provenance(merged, [document, overlay_doc])
    check_provenance(merge(document, None, None), [document])


@SETTINGS
@given(mappings(plain_keys), mappings(plain_keys))
def test_the_last_layer_is_the_one_whose_value_won(base: dict[str, Any], overlay: dict[str, Any]) -> None:
    document, overlay_doc = load(base, "s.yaml"), load(overlay, "s.e.yaml")
    merged = merge(document, "e", overlay_doc)
    for path in paths(merged.data)[1:]:
        last = merged.provenance[path][-1]
        source = overlay_doc if last.source == "overlay" else document
        # the span of the winning layer holds exactly the merged value
        assert source.values[path] == last.value
        expected = overlay if last.source == "overlay" else base
        for key in path:
            expected = expected[key]
        if not isinstance(expected, dict):  # mappings merge; anything else comes whole from one layer
            assert merged_value(merged, path) == expected


def merged_value(merged: Merged, path: KeyPath) -> Any:
    value: Any = merged.data
    for key in path:
        value = value[key]
    return value
