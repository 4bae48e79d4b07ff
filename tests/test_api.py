import torch

import unlearn
from unlearn.errors import UnlearnError

from .conftest import weights


def test_readme_example(digits_small, trained_tiny):
    train, test = digits_small
    model = trained_tiny
    request = unlearn.SampleRequest(fraction=0.1, seed=0)
    new_model, record = unlearn.unlearn(
        "neggrad_plus",
        model,
        (train.x, train.y),
        request,
        seed=0,
        config={"optimizer": "adam", "lr": 1e-3, "epochs": 1},
    )
    assert record.method == "neggrad_plus" and record.steps > 0
    assert not torch.equal(weights(new_model), weights(model))


def test_api_accepts_a_torch_dataset_and_retrains(digits_small, trained_tiny):
    train, _ = digits_small
    ds = torch.utils.data.TensorDataset(train.x, train.y)
    new_model, record = unlearn.unlearn(
        "retrain",
        trained_tiny,
        ds,
        unlearn.ClassRequest(classes=[1]),
        recipe={"epochs": 2, "batch_size": 32, "lr": 0.01, "optimizer": "adam"},
    )
    assert record.steps == 2 * -(-int((train.y != 1).sum()) // 32)


def test_api_errors(digits_small, trained_tiny):
    train, _ = digits_small
    import pytest

    with pytest.raises(UnlearnError, match="out of range"):
        unlearn.unlearn("finetune", trained_tiny, train, unlearn.SampleRequest(indices=[10**6]))
    with pytest.raises(UnlearnError, match="unknown method"):
        unlearn.unlearn("forgetify", trained_tiny, train, unlearn.SampleRequest(fraction=0.1))
    with pytest.raises(UnlearnError, match="ForgetRequest"):
        unlearn.unlearn("finetune", trained_tiny, train, [1, 2, 3])
    with pytest.raises(UnlearnError, match="unknown training option"):
        unlearn.unlearn(
            "retrain",
            trained_tiny,
            train,
            unlearn.SampleRequest(fraction=0.1),
            recipe={"epochz": 3},
        )


def test_readme_python_block_runs(tmp_path, monkeypatch):
    """The README's API example, executed as written."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "unlearned.safetensors").is_file()
    assert namespace["record"].method == "neggrad_plus"


def test_readme_language_model_block_runs():
    """The README's second example (a group request on a language model), with a tiny
    random Llama standing in for ``lm``."""
    import re
    from pathlib import Path

    from unlearn.models.hf import tiny_llama, tiny_tokenizer

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[1]
    texts = re.findall(r'"([^"]+)"', block)
    tok = tiny_tokenizer(texts)
    namespace: dict = {"unlearn": __import__("unlearn"), "tokenizer": tok, "lm": tiny_llama(tok)}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    rec = namespace["record"]
    assert rec.method == "npo" and rec.touched.startswith("LoRA r=8")
