"""``impl="auto"``: only exact impls, the fastest measured, cached, and robust to a bad cache."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from pm_core import ConvPatchMerging, PatchMerging, patch_merge, swap_patch_merging
from pm_core import auto as auto_mod
from pm_core.auto import AutoCacheWarning
from pm_core.auto import cache_path as auto_cache_path
from pm_core.auto import cached_choices as auto_choices


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh cache file for the test, and a count of measurements in ``auto_mod.calls``."""
    path = tmp_path / "auto.json"
    monkeypatch.setenv("PM_CORE_AUTO_CACHE", str(path))
    auto_mod.forget()
    calls: list[tuple[int, ...]] = []
    inner = auto_mod.measure

    def counted(shape: tuple[int, int, int, int], **kw: object) -> dict[str, float]:
        calls.append(shape)
        return inner(shape, rounds=1, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(auto_mod, "measure", counted)
    monkeypatch.setattr(auto_mod, "calls", calls, raising=False)
    yield path
    auto_mod.forget()


def _args(norm: str = "pre") -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 4, 8, generator=g)
    w = torch.randn(16, 32, generator=g)
    n = 32 if norm == "pre" else 16
    return (
        (x, w)
        if norm == "none"
        else (x, w, torch.randn(n, generator=g), torch.randn(n, generator=g))
    )


def _entries(path: Path) -> dict[str, dict[str, object]]:
    machines = json.loads(path.read_text())["machines"]
    assert len(machines) == 1
    table: dict[str, dict[str, object]] = next(iter(machines.values()))
    return table


def test_cache_path_follows_the_environment(cache: Path) -> None:
    assert auto_cache_path() == cache


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_auto_measures_once_and_picks_the_fastest_exact_impl(cache: Path, norm: str) -> None:
    args = _args(norm)
    y = patch_merge(*args, norm=norm, impl="auto")  # type: ignore[arg-type]
    (entry,) = _entries(cache).values()
    medians = entry["medians"]
    assert isinstance(medians, dict)
    assert set(medians) == set(auto_mod.candidates(norm))  # type: ignore[arg-type]
    if norm == "pre":
        assert "conv_channel_norm" not in medians  # inexact for pre: never timed, never chosen
    assert entry["impl"] == min(medians, key=medians.__getitem__)
    assert torch.equal(y, patch_merge(*args, norm=norm, impl=str(entry["impl"])))  # type: ignore[arg-type]
    patch_merge(*args, norm=norm, impl="auto")  # type: ignore[arg-type]
    assert len(auto_mod.calls) == 1  # type: ignore[attr-defined]
    assert auto_choices()[next(iter(_entries(cache)))]["impl"] == entry["impl"]


def test_grad_mode_is_its_own_class(cache: Path) -> None:
    x, *p = _args()
    with torch.no_grad():
        patch_merge(x, *p, impl="auto")
    torch.autograd.backward(patch_merge(x.requires_grad_(), *p, impl="auto").sum())
    assert {k.split("|")[2] for k in _entries(cache)} == {"fwd", "fwd+bwd"}


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", json.dumps({"schema": 99, "machines": {}}), json.dumps({"schema": 1})],
    ids=["not json", "not a table", "other schema", "no machines"],
)
def test_an_unreadable_cache_is_remeasured_with_one_warning(cache: Path, content: str) -> None:
    cache.write_text(content)
    with pytest.warns(AutoCacheWarning, match="unreadable") as record:
        patch_merge(*_args(), impl="auto")
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call reads the re-measured choice
        patch_merge(*_args(), impl="auto")
    assert len(auto_mod.calls) == 1  # type: ignore[attr-defined]
    assert len(_entries(cache)) == 1  # rewritten, readable


@pytest.mark.parametrize(
    "bad",
    [{"impl": "conv_channel_norm"}, {"impl": "gone"}, {"impl": 3}, "conv"],
    ids=["inexact for pre", "not registered", "not a name", "not a table"],
)
def test_a_stale_entry_is_remeasured_never_used(cache: Path, bad: object) -> None:
    x, w, nw, nb = _args()
    key = auto_mod.class_key(x, "pre", grad=False)
    machine = auto_mod.machine_key(x.device)
    cache.write_text(json.dumps({"schema": 1, "machines": {machine: {key: bad}}}))
    with pytest.warns(AutoCacheWarning, match="stale"):
        y = patch_merge(x, w, nw, nb, impl="auto")
    chosen = _entries(cache)[key]["impl"]
    assert chosen in auto_mod.candidates("pre")
    assert torch.equal(y, patch_merge(x, w, nw, nb, impl=str(chosen)))


def test_an_unwritable_cache_warns_and_still_chooses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("PM_CORE_AUTO_CACHE", str(tmp_path / "file" / "auto.json"))
    auto_mod.forget()
    with pytest.warns(AutoCacheWarning, match="cannot write"):
        y = patch_merge(*_args(), impl="auto")
    assert y.shape == (2, 3, 2, 16)
    auto_mod.forget()


def test_meta_tensors_take_the_fallback_without_measuring(cache: Path) -> None:
    x, w, nw, nb = (t.to("meta") for t in _args())
    y = patch_merge(x, w, nw, nb, impl="auto")
    assert y.shape == (2, 3, 2, 16)
    assert auto_mod.calls == []  # type: ignore[attr-defined]
    assert not cache.exists()


@pytest.mark.parametrize("cached", ["reshape", None], ids=["cached", "not cached"])
def test_auto_compiles_to_one_graph_without_measuring(cache: Path, cached: str | None) -> None:
    """Tracing has no values to time on: auto takes the class's cached choice, else the
    fallback, and neither measures nor writes the cache (with ``fullgraph=True``: reading
    the cache must not break the graph)."""
    x, w, nw, nb = _args("post")
    if cached is not None:
        key = auto_mod.class_key(x, "post", grad=False)
        entry = {"impl": cached}
        cache.write_text(
            json.dumps({"schema": 1, "machines": {auto_mod.machine_key(x.device): {key: entry}}})
        )
    before = cache.read_text() if cached else None
    torch._dynamo.reset()
    merge = torch.compile(
        lambda x: patch_merge(x, w, nw, nb, norm="post", impl="auto"),
        backend="eager",
        fullgraph=True,
    )
    y = merge(x)
    torch._dynamo.reset()
    runs = cached or auto_mod.FALLBACK
    assert torch.equal(y, patch_merge(x, w, nw, nb, norm="post", impl=runs))
    assert auto_mod.calls == []  # type: ignore[attr-defined]
    assert (cache.read_text() if cached else None) == before
    assert cached or not cache.exists()


def test_modules_accept_auto(cache: Path) -> None:
    x = torch.randn(1, 4, 6, 8)
    for cls in (PatchMerging, ConvPatchMerging):
        m = cls(8, impl="auto")
        ref = cls(8, impl="slice")
        ref.load_state_dict(m.state_dict())
        torch.testing.assert_close(m(x), ref(x))
    with pytest.raises(ValueError, match="unknown impl 'fast'"):
        PatchMerging(8, impl="fast")


def test_swap_accepts_auto(cache: Path) -> None:
    tv = pytest.importorskip("torchvision.models.swin_transformer")
    TorchvisionMerging = tv.PatchMerging

    model = nn.Sequential(TorchvisionMerging(8)).eval()
    x = torch.randn(1, 4, 6, 8)
    before = model(x)
    assert swap_patch_merging(model, impl="auto") == 1
    assert isinstance(model[0], PatchMerging)
    assert model[0].impl == "auto"
    torch.testing.assert_close(model(x), before)


def test_machine_key_follows_the_hardware_not_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache key names the CPU's model and units and the torch version, not the host:
    a new container on the same hardware reuses the choices, another CPU does not."""
    cpu = torch.device("cpu")
    monkeypatch.setattr("platform.node", lambda: "container-a")
    a = auto_mod.machine_key(cpu)
    monkeypatch.setattr("platform.node", lambda: "container-b")
    assert auto_mod.machine_key(cpu) == a
    assert "container" not in a
    assert f"torch {torch.__version__}" in a
    assert auto_mod._cpu_model() in a
    # another CPU: the key is read once per process, so compute it afresh
    monkeypatch.setattr(auto_mod, "_cpu_capability", lambda name, unknown: name == "avx2")
    other = auto_mod._machine_key(cpu, torch.get_num_threads())
    assert other != a
    assert "|avx2|" in other


def test_machine_key_follows_the_thread_count() -> None:
    """Read once per device and thread count: a new torch.set_num_threads is a new key."""
    cpu = torch.device("cpu")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert f"|{threads + 1}threads" in auto_mod.machine_key(cpu)
    finally:
        torch.set_num_threads(threads)
    assert f"|{threads}threads" in auto_mod.machine_key(cpu)
