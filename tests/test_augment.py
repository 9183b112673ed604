"""E_LLM: the similarity judge on known noise, the seq2seq path on a tiny T5, caching, selection."""
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from mmsc_dgl.augment.select import augment, make_judge
from mmsc_dgl.cli import main
from mmsc_dgl.config import SyntheticConfig
from mmsc_dgl.data.dataset import load_dataset
from mmsc_dgl.data.prepare import prepare
from mmsc_dgl.errors import DataError


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    out = tmp_path_factory.mktemp("aug") / "ds"
    prepare(synthetic=SyntheticConfig(num_items=3000, noise_rate=0.2, seed=5), out=out)
    return out


def _noise_labels(dataset, relation):
    full = dataset.edges[relation]
    codes = full.codes(dataset.num_items)
    train = dataset.splits.train[relation]
    pos = np.searchsorted(codes, train.codes(dataset.num_items))
    return full.data["is_noise"][pos]


def test_similarity_judge_separates_planted_from_noise(noisy):
    dataset = load_dataset(noisy)
    judge = make_judge("similarity", dataset, features="hashed")
    for relation in ("substitute", "complement"):
        train = dataset.splits.train[relation]
        scores = judge.score(train.src, train.dst, relation)
        noise = _noise_labels(dataset, relation)
        auroc = roc_auc_score(~noise, scores)
        assert auroc > 0.8, (relation, auroc)
        assert np.all((scores >= 0) & (scores <= 1))


def test_calibration_reads_only_training_edges(noisy, monkeypatch):
    dataset = load_dataset(noisy)

    class Forbidden(dict):
        def __getitem__(self, key):
            raise AssertionError("calibration read held-out edges")

    monkeypatch.setattr(dataset.splits, "val", Forbidden())
    monkeypatch.setattr(dataset.splits, "test", Forbidden())
    monkeypatch.setattr(dataset.splits, "cold", Forbidden())
    judge = make_judge("similarity", dataset, features="hashed")
    train = dataset.splits.train["complement"]
    assert judge.score(train.src[:5], train.dst[:5], "complement").shape == (5,)


def test_selection_cache_and_resume(noisy, tmp_path):
    first = augment(noisy, "similarity", features="hashed", top_n=100, chunk_size=5000, progress=False,
                    stop_after_chunks=1, out=tmp_path / "e.parquet")
    assert not first.complete and first.computed_pairs == 5000
    done = augment(noisy, "similarity", features="hashed", top_n=100, chunk_size=5000, progress=False,
                   out=tmp_path / "e.parquet")
    dataset = load_dataset(noisy)
    total = sum(len(e) for e in dataset.splits.train.values())
    assert done.complete and done.computed_pairs == total - 5000   # the first chunk was not judged again
    table = pq.read_table(tmp_path / "e.parquet")
    assert done.kept == {"substitute": 100, "complement": 100} and table.num_rows == 200
    # A new threshold reuses the cached scores: nothing is judged again.
    again = augment(noisy, "similarity", features="hashed", threshold=0.9, chunk_size=5000, progress=False,
                    out=tmp_path / "t.parquet")
    assert again.computed_pairs == 0
    kept = pq.read_table(tmp_path / "t.parquet")
    assert kept.column("score").to_numpy().min() >= 0.9
    # The kept edges are cleaner than the training edges they came from.
    codes = dataset.edges["substitute"].codes(dataset.num_items)
    sub = kept.filter(kept.column("relation").to_numpy(zero_copy_only=False) == "substitute")
    pos = np.searchsorted(codes, sub.column("src").to_numpy() * dataset.num_items + sub.column("dst").to_numpy())
    assert dataset.edges["substitute"].data["is_noise"][pos].mean() < _noise_labels(dataset, "substitute").mean()


def test_training_on_e_llm_via_cli(noisy, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["augment", str(noisy), "--features", "hashed", "--top-n", "2000",
                             "--out", str(tmp_path / "e.parquet")])
    assert r.exit_code == 0, r.output
    assert "kept" in r.output and "pairs/s" in r.output
    cfg = tmp_path / "t.yaml"
    cfg.write_text("metapaths: s,c\nmax_neighbors: 4\nepochs: 1\nval_queries: 100\n"
                   "model:\n  hidden: 16\n  heads: 2\n  semantic_hidden: 8\n  ssl_nodes: 16\n")
    r = runner.invoke(main, ["train", str(noisy), "--out", str(tmp_path / "run"), "--config", str(cfg),
                             "--train-edges", str(tmp_path / "e.parquet"), "--device", "cpu"])
    assert r.exit_code == 0, r.output


def _tiny_t5(directory):
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    words = ["<pad>", "</s>", "<unk>", "yes", "no", "Product", "A", "B", "Question", "Answer", "or", "a",
             "shopper", "buy", "product", "instead", "of", "as", "substitute", "for", "it", "Could", "Would",
             "who", "buys", "also", "want", "to", "use", "together", "with", "complement", "smartphone", "case"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                                unk_token="<unk>")
    fast.save_pretrained(directory)
    config = transformers.T5Config(vocab_size=len(vocab), d_model=16, d_ff=32, num_layers=1, num_decoder_layers=1,
                                   num_heads=2, d_kv=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    transformers.T5ForConditionalGeneration(config).save_pretrained(directory)
    return directory


def test_seq2seq_judge_on_a_tiny_t5(noisy, tmp_path):
    model_dir = _tiny_t5(tmp_path / "t5")
    dataset = load_dataset(noisy)
    judge = make_judge("seq2seq", dataset, model=str(model_dir), batch_size=4)
    train = dataset.splits.train["complement"]
    prompts = judge.prompts(train.src[:2], train.dst[:2], "complement")
    assert "Product A:" in prompts[0] and "complement" in prompts[0]
    first = judge.score(train.src[:10], train.dst[:10], "complement")
    second = judge.score(train.src[:10], train.dst[:10], "complement")
    assert first.shape == (10,) and np.all((first >= 0) & (first <= 1))
    assert np.array_equal(first, second)
    assert not np.allclose(first, first[0])  # the prompt changes the answer


def test_seq2seq_without_a_model_says_what_to_download(noisy, tmp_path):
    dataset = load_dataset(noisy)
    with pytest.raises(DataError, match="flan-t5"):
        make_judge("seq2seq", dataset, model=None)
    with pytest.raises(DataError, match="no seq2seq model here"):
        make_judge("seq2seq", dataset, model=str(tmp_path))
    with pytest.raises(DataError, match="unknown judge"):
        make_judge("oracle", dataset)
