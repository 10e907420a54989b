"""A decode step's few-row products on the CPU (cpu_linears.py): the same numbers as ``F.linear`` (to rounding),
a row's bits independent of the rows beside it, only the text model's plain layers changed, and undone on request."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from llava_app.engine.local import cpu_linears  # noqa: E402

if not torch.backends.mkl.is_available():  # pragma: no cover - the project's CPUs have it
    pytest.skip("the path applies only where torch has MKL", allow_module_level=True)


def few_rows(out_features: int, in_features: int, bias: bool = False, seed: int = 0):
    torch.manual_seed(seed)
    layer = torch.nn.Linear(in_features, out_features, bias=bias)
    stock = torch.nn.Linear(in_features, out_features, bias=bias)
    stock.load_state_dict(layer.state_dict())
    layer.__class__ = cpu_linears._few_rows_linear()
    return layer, stock


@pytest.mark.parametrize("shape", [(96, 64), (8192, 64)], ids=["square-ish", "tall"])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 9, 12, 40])
def test_products_match_f_linear_for_any_number_of_rows(shape, rows):
    layer, stock = few_rows(*shape)
    for x in (torch.randn(rows, shape[1]), torch.randn(rows, 1, shape[1]), torch.randn(1, rows, shape[1])):
        with torch.inference_mode():
            got, want = layer(x), stock(x)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        if rows > cpu_linears.FEW_ROWS or (rows == 1 and shape == (96, 64)):
            assert torch.equal(got, want), "outside the few-row path the layer is F.linear itself"


@pytest.mark.parametrize("shape", [(96, 64), (8192, 64), (512, 256)])
def test_a_rows_bits_do_not_depend_on_the_rows_beside_it(shape):
    """What batching relies on: a sequence's numbers are the same alone (padded) or among others, in any row."""
    layer, _ = few_rows(*shape, seed=1)
    row = torch.randn(shape[1])
    with torch.inference_mode():
        reference = layer(torch.stack([row, *torch.randn(3, shape[1])]))[0]
        for rows in range(2, cpu_linears.FEW_ROWS + 1):
            for place in range(rows):
                x = torch.randn(rows, shape[1])
                x[place] = row
                assert torch.equal(layer(x)[place], reference), (rows, place)
        if shape[0] >= cpu_linears.TALL * shape[1]:  # a single row of a tall layer is padded to the same columns
            assert torch.equal(layer(row[None])[0], reference)


def test_non_output_layers_return_contiguous_tensors():
    layer, _ = few_rows(96, 64)
    assert layer(torch.randn(4, 1, 64)).is_contiguous()


def test_layers_with_a_bias_are_not_routed():
    tiny = torch.nn.Module()
    tiny.lm_head = torch.nn.Linear(8, 4096, bias=True)
    tiny.get_output_embeddings = lambda: tiny.lm_head
    tiny.get_decoder = lambda: torch.nn.Sequential(torch.nn.Linear(8, 8, bias=True))
    assert cpu_linears.language_linears(tiny) == []


def test_install_changes_the_text_models_plain_layers_only_and_restore_undoes_it(tiny_model_path):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(tiny_model_path("tiny-faithful-interleave"))).eval()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    n = cpu_linears.install(model)
    routed = [m for m in model.modules() if type(m) is cpu_linears._few_rows_linear()]
    assert n == len(routed) > 1
    assert model.get_output_embeddings() in routed
    decoder = set(map(id, model.get_decoder().modules())) | {id(model.get_output_embeddings())}
    assert all(id(m) in decoder and m.bias is None for m in routed), "only the text model's layers without a bias"
    vision = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and id(m) not in decoder]
    assert vision and all(type(m) is torch.nn.Linear for m in vision)
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    assert cpu_linears.install(model) == n  # twice: the same layers
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])
    with torch.inference_mode():
        routed_states = model.get_decoder()(ids).last_hidden_state
        cpu_linears.restore(model)
        assert not [m for m in model.modules() if type(m) is cpu_linears._few_rows_linear()]
        # 12 tokens: more than FEW_ROWS, so the same products either way
        assert torch.equal(model.get_decoder()(ids).last_hidden_state, routed_states)


def test_nothing_changes_in_another_dtype(tiny_model_path):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(tiny_model_path("tiny-random")), dtype=torch.bfloat16)
    assert not cpu_linears.applies(model)
    assert cpu_linears.install(model) == 0
    assert not [m for m in model.modules() if type(m) is cpu_linears._few_rows_linear()]


def test_the_engine_loads_models_with_the_path(local_backend):
    backend = local_backend("tiny-faithful-interleave", stream_delay=0.002)  # test_batching's engine
    assert type(backend.model.get_output_embeddings()) is cpu_linears._few_rows_linear()
