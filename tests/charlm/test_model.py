import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnkit.data.bptt import Window
from rnnkit.errors import RnnkitError
from rnnkit.models.charlm import CharLM, CharLMConfig, score_text

V = 7


def model(cell="lstm", **kw):
    torch.manual_seed(0)
    return CharLM(CharLMConfig(vocab_size=V, cell=cell, hidden_size=12, num_layers=2, **kw)).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("embedding_size", [0, 5])
def test_forward_shapes_and_loss(cell, embedding_size):
    m = model(cell, embedding_size=embedding_size)
    xs = torch.randint(0, V, (3, 4))
    logits, loss = m(Window(xs, xs))
    assert logits.shape == (3, 4, V)
    assert torch.isclose(loss, F.cross_entropy(logits.reshape(-1, V), xs.reshape(-1)))


def test_state_is_carried_across_windows_and_detached():
    m = model()
    xs = torch.randint(0, V, (2, 10))
    whole, _ = m(Window(xs, xs))
    m.reset_state()
    first, _ = m(Window(xs[:, :5], xs[:, :5]))
    second, _ = m(Window(xs[:, 5:], xs[:, 5:]))
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-5)
    assert all(not s.requires_grad for s in m.state)


def test_a_window_of_another_number_of_streams_starts_from_a_zero_state():
    """The state carried is that of B streams: a window of another B (a model trained on 2 streams, then run on 3)
    starts afresh, as after reset_state(), where the state of 2 streams given to 3 fails in the layer."""
    m = model()
    two, three = (torch.randint(0, V, (b, 6), generator=torch.Generator().manual_seed(b)) for b in (2, 3))
    m(Window(two, two))
    after, _ = m(Window(three, three))
    m.reset_state()
    fresh, _ = m(Window(three, three))
    torch.testing.assert_close(after, fresh, rtol=0, atol=0)


def test_the_embedding_is_trained_as_a_plain_torch_models():
    """x_t = E[c_t]: the loss's gradient reaches the embedding E as it does through torch.nn.Embedding, torch.nn's
    LSTM of the same weights and the same head (the one-hot model is checked against a plain loop in test_train)."""
    m = model(embedding_size=5).train()
    xs, ys = (torch.randint(0, V, (3, 6), generator=torch.Generator().manual_seed(s)) for s in (3, 4))
    _, loss = m(Window(xs, ys))
    loss.backward()
    E, rnn, head = torch.nn.Embedding(V, 5), m.rnn.to_torch(), torch.nn.Linear(12, V)
    E.load_state_dict(m.embedding.state_dict())
    head.load_state_dict(m.head.state_dict())
    hs, _ = rnn(E(xs))
    F.cross_entropy(head(hs).flatten(0, 1), ys.flatten()).backward()
    assert E.weight.grad.abs().sum() > 0
    torch.testing.assert_close(m.embedding.weight.grad, E.weight.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("torch_rnn", [False, True])
def test_training_goes_on_after_an_evaluation_under_inference_mode(torch_rnn):
    """model(batch) under torch.inference_mode() carried a state made there into the next training window, which
    failed ("Inference tensors cannot be saved for backward"); it trains on, carrying that state, as after an
    evaluation under torch.no_grad()."""
    m = model(torch_rnn=torch_rnn)
    xs = torch.randint(0, V, (2, 10))
    with torch.no_grad():
        m(Window(xs[:, :5], xs[:, :5]))
    want, _ = m.train()(Window(xs[:, 5:], xs[:, 5:]))
    m.state = None
    with torch.inference_mode():
        m.eval()(Window(xs[:, :5], xs[:, :5]))
    logits, loss = m.train()(Window(xs[:, 5:], xs[:, 5:]))
    loss.backward()
    torch.testing.assert_close(logits, want)


def test_compiled_fullgraph_trains_on_after_an_evaluation_under_inference_mode():
    """torch.compile(model, fullgraph=True) failed: detach's tensor.is_inference() can't be traced (without fullgraph
    a graph break); copying the state under compile as a plain clone, which AOTAutograd drops, failed the training
    window after an evaluation under torch.inference_mode() ("Inference tensors cannot be saved for backward")."""
    torch._dynamo.reset()
    m = model(backend="autograd")  # (the unrolled loop, which saved the state given for backward)
    xs = torch.randint(0, V, (2, 6))
    want, _ = m.train()(Window(xs[:, 3:], xs[:, 3:]))
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    m.state = None
    compiled(Window(xs[:, :3], xs[:, :3]))[1].backward()
    with torch.inference_mode():
        compiled(Window(xs[:, :3], xs[:, :3]))
    assert m.state[0].is_inference()
    logits, loss = compiled(Window(xs[:, 3:], xs[:, 3:]))
    loss.backward()
    assert not m.state[0].is_inference()
    m.state = None
    torch.testing.assert_close(compiled(Window(xs[:, 3:], xs[:, 3:]))[0], want)


def test_one_step_at_a_time_equals_the_whole_sequence():
    m = model()
    ids = [1, 4, 2, 6, 0]
    with torch.no_grad():
        logits, _ = m.run(torch.tensor([ids]))
    state, steps = None, []
    for c in ids:
        logp, state = m.step(c, state)
        steps.append(logp)
    assert torch.allclose(torch.cat(steps), F.log_softmax(logits[0], -1), atol=1e-5)


def test_a_sample_draws_each_character_from_the_whole_text_before_it():
    """Each character is drawn from p(c | context and every character drawn so far): the state is carried from one
    draw to the next. The reference reads the whole text so far in one pass at each draw, with the same generator;
    with the state after the context reused at every draw (only the last character fed) the draws differ."""
    m = model()
    got = m.sample([1, 2], 20, generator=torch.Generator().manual_seed(5))
    seq, g = [1, 2], torch.Generator().manual_seed(5)
    with torch.no_grad():
        for _ in range(20):
            logits, _ = m.run(torch.tensor([seq]))
            seq.append(int(torch.multinomial(logits[0, -1].double().softmax(-1), 1, generator=g)))
    assert got == seq[2:]


def test_log_probs_equal_the_independent_sum():
    m = model()
    context, ids = [3], [1, 4, 2, 6, 0, 5]
    with torch.no_grad():
        logits, _ = m.run(torch.tensor([context + ids[:-1]]))  # one pass, computed independently
    expected = F.log_softmax(logits[0], -1)[torch.arange(len(ids)), torch.tensor(ids)]
    assert math.isclose(sum(m.log_probs(ids, context)), float(expected.sum()), rel_tol=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_known_text_is_read_in_chunks_and_scores_as_one_step_at_a_time(monkeypatch, chunk):
    """log_probs, prime (and so score_text and sample --prime) fed the text one character an engine call: 0.4 ms a
    character, 7 minutes to score a 1 MB text. They read it in chunks of _CHUNK characters, the state carried, with
    the log-probabilities of one step at a time, across chunk boundaries too."""
    from rnnkit.models import charlm

    monkeypatch.setattr(charlm, "_CHUNK", chunk, raising=False)
    m = model()
    context, ids = [3, 5, 1, 2], [1, 4, 2, 6, 0, 5, 5, 3]
    state, steps = None, []
    for c in context + ids:
        logp, state = m.step(c, state)
        steps.append(logp)
    want = [float(steps[len(context) - 1 + t][0, c]) for t, c in enumerate(ids)]
    calls = []
    m.rnn.register_forward_hook(lambda *_: calls.append(1))
    assert m.log_probs(ids, context) == pytest.approx(want, abs=1e-6)
    assert len(calls) == math.ceil((len(context) + len(ids) - 1) / chunk)
    assert m.log_probs([], context) == []
    logp, state_after = m.prime(context + ids)
    torch.testing.assert_close(logp, steps[-1])
    torch.testing.assert_close(state_after, state)


def test_known_text_of_a_big_vocabulary_is_read_in_chunks_of_a_million_logits_at_most(monkeypatch):
    """A call of _feed held 4096 characters' logits whatever V: scoring a text with a vocabulary of 10,000 characters
    (CJK, emoji) peaked at 782 MB, at V = 100 46 MB. A vocabulary over 256 is read in fewer characters a call, so that
    each call's logits hold 2^20 at most; the log-probabilities and the state are those of one call."""
    from rnnkit.models import charlm

    m = CharLM(CharLMConfig(vocab_size=3000, hidden_size=4, num_layers=1, embedding_size=4))
    ids = torch.randint(0, 3000, (1200,), generator=torch.Generator().manual_seed(0)).tolist()
    sizes = []
    m.head.register_forward_hook(lambda module, args, out: sizes.append(out.numel()))
    logps, (logp, state) = m.log_probs(ids[1:], ids[:1]), m.prime(ids)
    assert sizes and max(sizes) <= 2**20, sizes
    monkeypatch.setattr(charlm, "_CHUNK_LOGITS", 2**30, raising=False)  # all of it in one call
    assert m.log_probs(ids[1:], ids[:1]) == pytest.approx(logps, abs=1e-6)
    whole = m.prime(ids)
    torch.testing.assert_close(whole[0], logp)
    torch.testing.assert_close(whole[1], state)


def test_low_temperature_sampling_equals_greedy():
    m = model()
    greedy = m.sample([2], 20, greedy=True)
    cold = m.sample([2], 20, temperature=1e-4, generator=torch.Generator().manual_seed(0))
    assert cold == greedy


def test_top_k_one_is_greedy_and_sampling_is_seeded():
    m = model()
    assert m.sample([2], 15, top_k=1, generator=torch.Generator().manual_seed(1)) == m.sample(
        [2], 15, greedy=True
    )
    a = m.sample([2], 30, generator=torch.Generator().manual_seed(3))
    b = m.sample([2], 30, generator=torch.Generator().manual_seed(3))
    assert a == b


def test_sampling_scoring_and_completing_run_in_eval_mode():
    """A model left in train mode (dropout 0.5) sampled with dropout: two runs with the same seeded generator
    differed, and log_probs and beam_complete moved from call to call. They run in eval mode, as char-rnn's
    sample.lua does, and leave the model in the mode it was in."""
    m = model(dropout=0.5, embedding_size=5)
    want = (m.sample([2], 30, generator=torch.Generator().manual_seed(3)), m.log_probs([1, 4, 2], [2]),
            m.beam_complete([2, 3], 4, beam=3))  # fmt: skip
    m.train()
    for _ in range(2):
        assert m.sample([2], 30, generator=torch.Generator().manual_seed(3)) == want[0]
        assert m.log_probs([1, 4, 2], [2]) == want[1]
        assert m.beam_complete([2, 3], 4, beam=3) == want[2]
    assert m.training and all(mod.training for mod in m.modules())


def test_threads_sampling_at_once_from_a_model_in_train_mode_sample_in_eval_mode():
    """Each call put a model left in train mode in eval mode and back as it returned: a thread that came in
    meanwhile found it in eval mode, left it so, and from the first call's return on sampled with dropout (as
    an inference server's threads sample at once: 13 of 40 such samples differed). Calls that overlap share
    the eval mode; the last to return puts train mode back (now each runs on an eval-mode view of its own)."""
    import threading

    m = model(dropout=0.5, embedding_size=5)
    want = m.sample([2], 30, generator=torch.Generator().manual_seed(3))
    m.train()
    a_in, b_in, a_done, got = threading.Event(), threading.Event(), threading.Event(), {}

    def hook(module, args):  # a waits inside until b is in too; b goes on once a has returned
        name = threading.current_thread().name
        if name == "a" and not a_in.is_set():
            a_in.set()
            b_in.wait(30)
        elif name == "b" and not b_in.is_set():
            b_in.set()
            a_done.wait(30)

    def sample(name):
        got[name] = m.sample([2], 30, generator=torch.Generator().manual_seed(3))
        if name == "a":
            a_done.set()

    handle = m.head.register_forward_pre_hook(hook)
    a = threading.Thread(target=sample, args=("a",), name="a")
    b = threading.Thread(target=sample, args=("b",), name="b")
    a.start()
    assert a_in.wait(30)
    b.start()
    a.join(60), b.join(60)
    handle.remove()
    assert got == {"a": want, "b": want}
    assert m.training and all(mod.training for mod in m.modules())


def test_sampling_in_one_thread_leaves_the_mode_of_a_thread_that_trains_the_model():
    """sample() put the model itself in eval mode while it ran: a thread training the same model meanwhile found
    model.training False and trained a window without dropout (its loss with a fixed seed 2.0512 where dropout
    gives 2.0448), and a model.train() from that thread (as a loop's each epoch) switched dropout on under the
    sampling thread, whose seeded sample then differed. Sampling runs on an eval-mode view of the model, its
    parameters shared: each thread keeps its own mode."""
    import threading

    m = model(dropout=0.5, embedding_size=5)
    want = m.eval().sample([2], 30, generator=torch.Generator().manual_seed(3))
    m.train()
    xs = torch.randint(0, V, (2, 6), generator=torch.Generator().manual_seed(0))

    def train_loss():  # one window in train mode, dropout drawn from a fixed seed
        m.reset_state()
        torch.manual_seed(1)
        return float(m(Window(xs, xs))[1].detach())

    alone = train_loss()
    inside, release, got = threading.Event(), threading.Event(), {}

    def hook(module, args):  # the sampling thread waits at its first character until the other has trained
        if threading.current_thread().name == "sampler" and not inside.is_set():
            inside.set()
            release.wait(30)

    def sample():
        got["sample"] = m.sample([2], 30, generator=torch.Generator().manual_seed(3))

    handle = m.head.register_forward_pre_hook(hook)
    sampler = threading.Thread(target=sample, name="sampler")
    sampler.start()
    try:
        assert inside.wait(30)
        seen = [mod.training for mod in m.modules()]
        during = train_loss()
        m.train()
    finally:
        release.set()
        sampler.join(60)
        handle.remove()
    assert all(seen) and during == alone
    assert got["sample"] == want
    assert all(mod.training for mod in m.modules())


def test_hooks_removed_or_added_while_a_model_in_train_mode_samples_are_so():
    """The eval-mode view held a copy of each module's hooks taken as sampling began (7433d52): in train mode a
    one-shot hook (it removes its handle) ran at each of 7 steps, and a hook one added was never called, where eval
    mode (and d47a6b2's view, which shared the dicts) ran them 1 and 6 times."""
    m = model(dropout=0.5, embedding_size=5)

    def sample():  # the calls of a one-shot hook, of a hook added by another
        once, added = [], []

        def one_shot(module, args, out):
            once.append(module)
            handle.remove()

        def adder(module, args, out):
            if not added:
                added.append(module.register_forward_hook(lambda *a: added.append(1)))

        handle, other = m.head.register_forward_hook(one_shot), m.head.register_forward_hook(adder)
        try:
            m.sample([2], 6, generator=torch.Generator().manual_seed(3))
        finally:
            other.remove()
            added[0].remove()
        return once, len(added) - 1

    for mode in (m.eval, m.train):
        mode()
        assert sample() == ([m.head], 6), mode.__name__


def test_hooks_of_a_model_sampled_in_train_mode_get_its_own_modules():
    """Sampling a model in train mode runs on an eval-mode view of it (d47a6b2), and its forward hooks were called
    with the view's copies of its modules: a hook that kept the output on its module (setattr) lost it, and one that
    looked its module up by identity missed, where in eval mode both worked. Hooks get the model's own modules."""
    m = model(dropout=0.5, embedding_size=5)
    names = {mod: name for name, mod in m.named_modules()}
    seen, pre = [], []

    def keep(module, args, out):
        module.last_out = out
        seen.append(names.get(module))

    def before(module, args, kwargs):
        pre.append(names.get(module))

    handles = [m.head.register_forward_hook(keep), m.head.register_forward_pre_hook(before, with_kwargs=True)]
    try:
        for mode in (m.eval, m.train):
            mode()
            m.__dict__.pop("last_out", None)
            m.head.__dict__.pop("last_out", None)
            seen.clear()
            pre.clear()
            m.sample([2], 4, generator=torch.Generator().manual_seed(3))
            assert isinstance(m.head.__dict__.get("last_out"), torch.Tensor), mode.__name__
            assert seen and set(seen) == {"head"} and set(pre) == {"head"}, mode.__name__
        assert all(mod.training for mod in m.modules())
    finally:
        for h in handles:
            h.remove()


def test_global_hooks_of_a_model_sampled_in_train_mode_get_its_own_modules():
    """torch's global forward hooks (register_module_forward_hook, register_module_forward_pre_hook) were called with
    the eval-mode view's copies of the modules where a model in train mode sampled: a hook that named its module from
    model.named_modules() got None for 'rnn', 'drop' and 'head', where in eval mode it named each. They get the
    model's own modules, and what they return counts as in eval mode (the same seeded sample)."""
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    m = model(dropout=0.5, embedding_size=5)
    names = {mod: name for name, mod in m.named_modules()}
    seen, pre = [], []

    def after(module, args, kwargs, out):  # with kwargs; scales the head's logits
        seen.append(names.get(module))
        return out * 2 if module is m.head else None

    def before(module, args):
        pre.append(names.get(module))

    handles = [
        register_module_forward_hook(after, with_kwargs=True),
        register_module_forward_pre_hook(before),
    ]
    try:
        got = {}
        for mode in (m.eval, m.train):
            mode()
            seen.clear()
            pre.clear()
            got[mode.__name__] = m.sample([2], 8, generator=torch.Generator().manual_seed(3))
            assert set(seen) == set(pre) == {"embedding", "rnn", "drop", "head"}, mode.__name__
        assert got["train"] == got["eval"] and all(mod.training for mod in m.modules())
    finally:
        for h in handles:
            h.remove()
        # (torch 2.13's handle leaves its with_kwargs flag behind: every later torch.compile(module) in the process
        # then warns of global hooks, an error under -W error)
        torch.nn.modules.module._global_forward_hooks_with_kwargs.pop(handles[0].id, None)
    assert not torch.nn.modules.module._has_any_global_hook()


def test_hooks_registered_by_another_thread_while_a_model_in_train_mode_samples():
    """The eval-mode view read a module's forward hooks, and torch's global ones, by looping over the live dict: a
    hook registered by another thread meanwhile (two threads sampling, a third registering a global hook) broke the
    sample with 'OrderedDict mutated during iteration', where eval mode (torch's (*d.items(),), one step) does not.
    The thread switch is made here by a trace function that registers a hook at each step of that loop."""
    import sys

    from torch.nn.modules.module import register_module_forward_hook

    from rnnkit.models.charlm import _HooksOf

    m, items = model(dropout=0.5).train(), _HooksOf.items.__code__
    handles = [register_module_forward_hook(lambda mod, i, o: None) for _ in range(3)]

    # a hook at each step of items() (its list comprehension's frame, or inlined)
    def trace(frame, event, arg):
        if items in (frame.f_code, frame.f_back and frame.f_back.f_code):
            frame.f_trace_opcodes = True
            if event == "opcode" and len(handles) < 50:
                handles.append(register_module_forward_hook(lambda mod, i, o: None))
        return trace

    old = sys.gettrace()
    sys.settrace(trace)
    try:
        assert len(m.sample([2], 3)) == 3
    finally:
        sys.settrace(old)
        for h in handles:
            h.remove()
    assert len(handles) == 50


def test_global_hooks_of_a_model_sampled_in_train_mode_under_a_call_impl_with_a_closure(monkeypatch):
    """A torch whose nn.Module._call_impl has a closure (one wrapped by a decorator, as another torch may write it)
    can't have it rebuilt on a namespace of its own: _view_call rebuilt it, and sampling a model in train mode with a
    global forward hook registered raised 'TypeError: arg 5 (closure) must be tuple'. It takes the plain call
    there (the hooks get the view, as before a0ef7cb)."""
    from torch.nn.modules.module import register_module_forward_hook

    def wrapped(impl):
        def _call_impl(self, *args, **kwargs):
            return impl(self, *args, **kwargs)

        return _call_impl

    monkeypatch.setattr(torch.nn.Module, "_call_impl", wrapped(torch.nn.Module._call_impl))
    m, seen = model(dropout=0.5).train(), []
    handle = register_module_forward_hook(lambda mod, i, o: seen.append(mod))
    try:
        assert len(m.sample([2], 3)) == 3
    finally:
        handle.remove()
    assert seen and m.training


def test_beam_search():
    m = model()
    greedy = m.sample([2, 3], 6, greedy=True)
    one, score1 = m.beam_complete([2, 3], 6, beam=1)
    assert one == greedy
    assert math.isclose(score1, sum(m.log_probs(one, [2, 3])), rel_tol=1e-5)
    best, score5 = m.beam_complete([2, 3], 6, beam=5)
    assert score5 >= score1 - 1e-6
    assert math.isclose(score5, sum(m.log_probs(best, [2, 3])), rel_tol=1e-5)


def test_beam_log_prob_is_exact_over_a_long_completion():
    """beam_complete summed the log-probabilities in float32: over 300 characters its log p (complete --json's)
    was 1e-3 nats off score(PREFIX + completion) - score(PREFIX), which sums them exactly. It sums in float64."""
    m = model()
    for beam in (1, 3):
        ids, log_prob = m.beam_complete([2, 3], 300, beam)
        assert log_prob == pytest.approx(
            math.fsum(m.log_probs(ids, [2, 3])), abs=1e-5
        )  # (the K beams: one batch)


def test_torch_rnn_model_matches_rnnkit_with_the_same_weights():
    from rnnkit.layers import Recurrent

    ref = model(torch_rnn=True)
    ours = model()
    ours.rnn = Recurrent.from_torch(ref.rnn)
    ours.head.load_state_dict(ref.head.state_dict())
    xs = torch.randint(0, V, (2, 6))
    assert torch.allclose(ours(Window(xs, xs))[0], ref(Window(xs, xs))[0], atol=1e-5)


def test_torch_rnn_lstm_forget_bias():
    m = model(torch_rnn=True, forget_bias=1.0)
    assert torch.all(m.rnn.bias_ih_l0[12:24] == 1.0) and torch.all(m.rnn.bias_hh_l0[12:24] == 0.0)


@pytest.mark.parametrize("embedding_size", [0, 5])
def test_ids_outside_the_vocabulary_are_one_line_naming_the_id_the_size_and_the_fix(embedding_size):
    """model(Window(xs, ys)) and model.run(xs) with an index past the vocabulary (or negative) failed deep in torch:
    the embedding's IndexError 'index out of range in self', one-hot's RuntimeError 'Class values must be smaller
    than num_classes' ('non-negative'), cross_entropy's IndexError 'Target 9 is out of bounds'. Each is one
    ValueError naming the index, the vocabulary's size and the fix, as sample, step, prime, log_probs and
    beam_complete say theirs; the model's state and the caller's tensors are left as they were."""
    lm, ok = model("gru", embedding_size=embedding_size), torch.tensor([[1, 2, 3]])
    size, fix = (
        rf"vocabulary of {V} characters \(indices 0 to {V - 1}\)",
        r"; give the indices of the model's own",
    )
    for call, what, index in [
        (lambda: lm(Window(torch.tensor([[1, V, 2]]), ok)), r"CharLM\(batch\)'s xs", V),
        (lambda: lm(Window(torch.tensor([[1, -1, 2]], dtype=torch.int32), ok)), r"CharLM\(batch\)'s xs", -1),
        (lambda: lm(Window(ok, torch.tensor([[1, 9, 2]]))), r"CharLM\(batch\)'s ys", 9),
        (
            lambda: lm(Window(torch.tensor([[200]], dtype=torch.uint8), ok[:, :1])),
            r"CharLM\(batch\)'s xs",
            200,
        ),
        (lambda: lm.run(torch.tensor([[V + 3]])), "run's xs", V + 3),
    ]:
        with pytest.raises(
            ValueError, match=rf"^{what}: character index {index} lies outside the {size}{fix}"
        ):
            call()
        assert lm.state is None
    for call, what in [
        (lambda: lm.sample([1, V], 2), "sample"),
        (lambda: list(lm.iter_sample([-2], 2)), "sample"),
        (lambda: lm.step(torch.tensor([V])), "step"),
        (lambda: lm.log_probs([1], [V]), "log_probs context"),
        (lambda: lm.beam_complete([V], 2, beam=2), "beam_complete"),
    ]:
        with pytest.raises(
            ValueError, match=rf"^{what}: indices \[-?\d+\] lie outside the vocabulary \[0, {V}\){fix}"
        ):
            call()
    logits, loss = lm(Window(ok, ok))  # ids in range: as before
    assert logits.shape == (1, 3, V) and torch.isfinite(loss)


def test_one_character_api_checks_its_ids_and_options():
    """Text instead of indices, indices outside [0, V), a float index (step(1.7) was step(1)), and non-integer
    or negative lengths, top_k and beams are one line each; numpy and tensor indices are taken as lists."""
    from rnnkit.errors import RnnkitError
    from rnnkit.models.charlm import score_text

    lm = model("rnn_tanh")
    bad = [
        (lambda: lm.sample("ab", 3), r"sample takes character indices \(ints\), got 'ab'; encode text"),
        (lambda: lm.sample([V], 3), rf"indices \[{V}\] lie outside the vocabulary \[0, {V}\)"),
        (lambda: lm.sample([-1], 3), r"indices \[-1\] lie outside"),
        (lambda: lm.log_probs([V], [0]), "log_probs: indices"),
        (lambda: lm.log_probs([1], [1.0]), "log_probs context takes character indices"),
        (lambda: lm.step(1.7), "step takes a character index"),
        (lambda: lm.step(V), "step: indices"),
        (lambda: lm.sample([1], 3, top_k=-1), "top_k must be an integer >= 0, got -1"),
        (lambda: lm.sample([1], -3), "length must be an integer >= 0"),
        (lambda: lm.sample([1], 3, temperature="0.5"), "temperature must be a number > 0, got '0.5'"),
        (lambda: lm.sample([1], 3, temperature=True), "temperature must be a number > 0, got True"),
        (
            lambda: lm.sample([1], 3, temperature=0.0),
            "temperature must be > 0, got 0.0; for the most probable",
        ),
        (
            lambda: lm.sample(torch.tensor(3), 3),
            r"a torch.int64 tensor of shape \(\)",
        ),  # was len() of a 0-d tensor
        (lambda: lm.prime([]), "prime needs at least one character of context"),  # was (None, None)
        (lambda: score_text(lm, list("abcdef\n"), 5), "score_text scores a str, got int 5"),
        (lambda: lm.beam_complete([1], 3, beam=2.5), "beam must be an integer >= 1, got 2.5"),
        (lambda: lm.beam_complete([1], 2**63), f"length {2**63} is too large"),  # (was tqdm's OverflowError)
        (lambda: CharLM(CharLMConfig(vocab_size=V, cell="lstmm")), "unknown cell 'lstmm'; choose one of"),
        (lambda: score_text(lm, list("abc\n"), "ab"), f"chars must be the model's vocabulary, {V} distinct"),
        (lambda: score_text(lm, list("aabcde\n"), "ab"), r"got 7 \(6 distinct\)"),
    ]
    for call, message in bad:
        with pytest.raises(RnnkitError, match=message):
            call()
    seeded = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    want = lm.sample([1, 2], 4, generator=seeded())
    assert lm.sample(np.array([1, 2]), 4, generator=seeded()) == want
    assert lm.sample(torch.tensor([1, 2]), 4, generator=seeded()) == want
    # numpy scalars for counts and the temperature, as numpy arrays for the indices ("got np.float32(0.5)" was
    # refused as not > 0)
    assert lm.sample([1, 2], np.int64(4), np.float32(1.0), generator=seeded()) == want
    assert lm.beam_complete([1], np.int64(3), np.int64(2)) == lm.beam_complete([1], 3, 2)


@pytest.mark.parametrize(
    "call, said",
    [
        (lambda lm: lm.sample("ab" * 50_000, 3), "got 'abab"),  # the text itself, not encoded
        (lambda lm: lm.log_probs([1.0] * 100_000, [1]), "(100,000 items), whose item 0 is 1.0; encode"),
        # one float, at the end: named (the list's start shows only ints)
        (lambda lm: lm.sample([1] * 99_999 + [1.5], 3), "(100,000 items), whose item 99,999 is 1.5; encode"),
        (lambda lm: lm.beam_complete([[1, 2]] * 50_000, 3), "(50,000 items), whose item 0 is [1, 2]; encode"),
        (lambda lm: lm.step([[1, 2]] * 50_000), "step takes a character index or a (B,) tensor"),
        (
            lambda lm: score_text(lm, list("abcdef\n"), [1] * 100_000),
            "score_text scores a str, got list [1, 1",
        ),
    ],
)
def test_a_long_text_or_list_given_as_indices_is_quoted_short(call, said):
    """Text (or floats) given where character indices go: the error quoted all of it, a 100,000-character line for
    sample("ab" * 50_000, 3) (500,000 for 100,000 floats). It quotes its start, says how long it is and names the
    first item that is no int."""
    with pytest.raises(RnnkitError) as e:
        call(model())
    message = str(e.value)
    assert len(message) < 300 and ("100,000" in message or "50,000" in message), message[:300]
    assert said in message, message


@pytest.mark.parametrize("generator", [0, np.random.default_rng(0)])
def test_a_generator_that_is_no_torch_generator_is_one_line_at_the_call(generator):
    """A seed (or numpy's generator) given as the generator passed iter_sample's checks, documented to be made at the
    call, and failed at the first character drawn, inside torch: "multinomial(): argument 'generator' must be
    torch.Generator, not int". It is one line at the call, naming the fix; greedy, which draws nothing, takes any."""
    lm = model("rnn_tanh")
    with pytest.raises(RnnkitError, match=r"^generator must be a torch.Generator \(or None\), got "
                       r"(int|numpy\.random\._generator\.Generator); for a seed give "
                       r"generator=torch.Generator\(\).manual_seed\(seed\)$"):  # fmt: skip
        lm.iter_sample([1], 3, generator=generator)
    assert lm.sample([1], 3, greedy=True, generator=generator) == lm.sample([1], 3, greedy=True)


def test_a_numpy_generator_refused_as_the_generator_is_named_as_numpys():
    """numpy's Generator given as the generator was said 'generator must be a torch.Generator (or None), got
    Generator', as if it were one: the type is named with its module."""
    lm = model("rnn_tanh")
    with pytest.raises(RnnkitError, match=r", got numpy\.random\._generator\.Generator; for a seed"):
        lm.sample([1], 3, generator=np.random.default_rng(0))
    with pytest.raises(RnnkitError, match=r", got numpy\.random\.mtrand\.RandomState; for a seed"):
        lm.sample([1], 3, generator=np.random.RandomState(0))


@pytest.mark.parametrize("embedding_size", [0, 5])
def test_a_float64_model_runs_in_float64(embedding_size):
    """model.double() (or float64 as torch's default dtype): one-hot inputs were made float32 and met float64
    weights in a dtype error."""
    lm = model("gru", embedding_size=embedding_size).double()
    xs = torch.randint(0, V, (2, 6))
    logits, loss = lm(Window(xs, xs))
    assert logits.dtype == torch.float64 and loss.dtype == torch.float64
    assert len(lm.sample([1], 4, generator=torch.Generator().manual_seed(0))) == 4
    assert lm.step(1)[0].dtype == torch.float64  # log-probabilities were cut to float32
    logp = lm.log_probs([2, 3], [1])
    with torch.no_grad():
        want = torch.log_softmax(lm.run(torch.tensor([[1, 2]]))[0][0], -1)
    assert logp == pytest.approx([want[0, 2].item(), want[1, 3].item()], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("torch_rnn", [False, True])
def test_the_carried_state_follows_the_model_to_another_dtype(torch_rnn):
    """model.double() (or .to(device)) after a training window left the carried state where it was: the next window
    failed, "state h is torch.float32 ... convert one (h.to(x))" of a state the user never gave (torch.nn.LSTM: a
    dtype error in its matmul). The window runs on from that state, as the model moved."""
    m = model(torch_rnn=torch_rnn)
    xs = torch.randint(0, V, (2, 10))
    m(Window(xs[:, :5], xs[:, :5]))
    ref = model(torch_rnn=torch_rnn).double()
    ref(Window(xs[:, :5], xs[:, :5]))
    want, _ = ref(Window(xs[:, 5:], xs[:, 5:]))
    logits, _ = m.double()(Window(xs[:, 5:], xs[:, 5:]))
    assert logits.dtype == torch.float64 and all(s.dtype == torch.float64 for s in m.state)
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)


def test_indices_from_a_generator_are_read_once():
    """A generator of indices (`(chars.index(c) for c in text)`) was used up by the check that every item is an
    int, so sample, log_probs and beam_complete saw no characters: "needs at least one character of context", or
    log_probs gave [] for its ids. Any iterable of ints is taken as its list."""
    lm = model("gru")
    seeded = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert lm.sample(iter([1, 2]), 5, generator=seeded()) == lm.sample([1, 2], 5, generator=seeded())
    assert lm.log_probs((c for c in [3, 4]), (c for c in [1])) == lm.log_probs([3, 4], [1])
    assert lm.beam_complete((c for c in [1, 2]), 3, 2) == lm.beam_complete([1, 2], 3, 2)
    assert lm.prime(iter([1, 2]))[0].equal(lm.prime([1, 2])[0])


@pytest.mark.parametrize("torch_rnn", [False, True])
@pytest.mark.parametrize("embedding_size", [0, 5])
def test_one_character_calls_run_on_the_models_device(torch_rnn, embedding_size):
    """The characters fed to step, prime, sample, log_probs and beam_complete were made on the CPU: a model moved
    to a GPU (model.to("cuda")) failed in every one of them ("input is on cpu but the layer's weights are on
    cuda"). They are made on the model's device (here "meta", which runs anywhere)."""
    lm = model(torch_rnn=torch_rnn, embedding_size=embedding_size).to("meta")
    for logp, state in (lm.step(1), lm.step(torch.tensor([1, 2])), lm.prime([1, 2, 3])):
        assert logp.device.type == "meta" and logp.shape[1] == V
        assert all(s.device.type == "meta" for s in (state if isinstance(state, tuple) else (state,)))


def test_top_k_holds_at_an_infinite_temperature():
    """temperature=inf (uniform sampling) divided every log-probability to -0.0 before top_k picked its k: all
    tied, so top_k=1 drew from the whole vocabulary. The k most probable characters are picked first."""
    lm = model()
    seeded = torch.Generator().manual_seed(0)
    out = lm.sample([2], 60, temperature=math.inf, top_k=1, generator=seeded)
    assert out == lm.sample([2], 60, greedy=True)
    out = lm.sample([2], 50, temperature=math.inf, top_k=3, generator=seeded)
    logp, state = lm.prime([2])
    for c in out:  # each among the 3 most probable at its step
        assert c in logp[0].topk(3).indices.tolist()
        logp, state = lm.step(c, state)
    assert len(set(lm.sample([2], 200, temperature=math.inf, generator=seeded))) == V


def test_vocab_and_embedding_sizes_are_checked():
    """CharLM(CharLMConfig(cell="gru")), vocab_size left at its placeholder 0, was refused as "input_size must be a
    positive integer, got 0", an option CharLM has none of (with an embedding it built a model over no characters);
    a negative embedding_size built a one-hot model in silence. Each is one line naming the option."""
    from rnnkit.errors import RnnkitError

    for cfg, message in [
        (CharLMConfig(cell="gru"), "vocab_size must be an integer >= 1, got 0"),
        (CharLMConfig(embedding_size=4), "vocab_size must be an integer >= 1, got 0"),
        (CharLMConfig(vocab_size=5.0), "vocab_size must be an integer >= 1, got 5.0"),
        (CharLMConfig(vocab_size=V, embedding_size=-2), "embedding_size must be an integer >= 0, got -2"),
        (CharLMConfig(vocab_size=V, embedding_size=2.5), "embedding_size must be an integer >= 0, got 2.5"),
    ]:
        with pytest.raises(RnnkitError, match=message):
            CharLM(cfg)


def test_encode_takes_text():
    """encode(b"...", chars, ...) of bytes (a file read with "rb") failed deep in the error it meant to raise:
    "sequence item 0: expected str instance, int found"; None or a number gave "object is not iterable". Each
    is one line that says a str is wanted."""
    from rnnkit.errors import RnnkitError
    from rnnkit.models.charlm import encode

    chars = list("ab\n")
    with pytest.raises(RnnkitError, match=r"--prime must be text \(a str\), got bytes; decode it first"):
        encode(b"ab", chars, "--prime")
    for text in (None, 5):
        with pytest.raises(RnnkitError, match=rf"TEXT must be text \(a str\), got {type(text).__name__}$"):
            encode(text, chars, "TEXT")
    assert encode("ab\n", chars, "TEXT") == [0, 1, 2]


def test_a_text_of_thousands_of_unseen_characters_names_a_few_and_counts_the_rest():
    """A text in another script (3,000 distinct CJK characters scored or evaluated by an ASCII model) was refused
    with every one of them quoted: a 9,000-character error line. The first 40 are named, and how many more."""
    from rnnkit.models.charlm import encode

    text = "".join(chr(0x4E00 + i) for i in range(3000)) + "ab"
    with pytest.raises(RnnkitError) as e:
        encode(text, list("ab\n"), "file.txt")
    said = str(e.value)
    assert len(said) < 300, said[:300]
    want = (
        f"file.txt has characters the model never saw: {text[:40]!r} and 2,960 more; remove or replace them"
    )
    assert said.startswith(want), said
    # a few: all of them, as before
    with pytest.raises(RnnkitError, match=r"never saw: 'cd'; remove or replace them$"):
        encode("abcd", list("ab\n"), "TEXT")


def test_forward_of_a_tensor_says_what_it_takes():
    """model(xs) with a (B, T) tensor, as a torch.nn model is called, failed with "'Tensor' object has no attribute
    'xs'"; one line names the window it takes and model.run for logits alone."""
    from rnnkit.errors import RnnkitError

    lm, xs = model(), torch.randint(0, V, (2, 5))
    with pytest.raises(RnnkitError, match=r"takes a window .*Window\(xs, ys\).*model.run\(xs\)"):
        lm(xs)
    with pytest.raises(RnnkitError, match=r"got a tuple"):
        lm((xs, xs))
    torch.testing.assert_close(lm(Window(xs, xs))[0], lm.run(xs)[0])


@pytest.mark.parametrize("embedding_size", [0, 5])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_character_indices_of_any_integer_type_are_taken(embedding_size, dtype):
    """Indices were taken as int64 only: a corpus's own tokens (uint8, uint16 or int32, as torch.from_numpy gives
    them) failed inside torch, one-hot input with 'one_hot is only applicable to index tensor of type LongTensor',
    an embedding with uint8 or int16, and int16 targets in cross_entropy ('expected target dtype to be Long')."""
    lm, xs = model(embedding_size=embedding_size), torch.randint(0, V, (2, 5))
    torch.testing.assert_close(lm.run(xs.to(dtype))[0], lm.run(xs)[0])
    lm.reset_state()
    logits, loss = lm(Window(xs, xs))
    lm.reset_state()
    torch.testing.assert_close(lm(Window(xs.to(dtype), xs.to(dtype))), (logits, loss))


def test_inference_leaves_each_submodules_mode_as_it_was():
    """A model in train mode with a part of it in eval mode (model.rnn.eval(): its dropout between layers off,
    to train the head alone) came back from sample, log_probs or beam_complete with every module in train mode,
    that dropout on again in silence. Each module's mode is put back as it was."""
    m = model(dropout=0.5, embedding_size=5).train()
    m.rnn.eval()
    want = {name: mod.training for name, mod in m.named_modules()}
    m.sample([2], 3, generator=torch.Generator().manual_seed(0))
    m.log_probs([1, 2], [3])
    m.beam_complete([1], 2, 2)
    assert {name: mod.training for name, mod in m.named_modules()} == want


def test_beam_search_breaks_ties_as_greedy_does():
    """Tied log-probabilities (here a head of zeros: every character equally likely) were ranked in torch.topk's
    unspecified order: beam_complete(ids, n, beam=1) gave [2, 2, 2, 2] where sample(ids, n, greedy=True), argmax,
    gave [0, 0, 0, 0], and a wider beam's best was another arbitrary continuation. Ties go to the lower index (the
    earlier beam, then the lower character), as argmax breaks them."""
    for V_ in (3, 5, 40):
        torch.manual_seed(0)
        m = CharLM(CharLMConfig(vocab_size=V_, cell="gru", hidden_size=6, num_layers=1)).eval()
        with torch.no_grad():
            m.head.weight.zero_()
            m.head.bias.zero_()
        for beam in (1, 2, 7):
            assert m.beam_complete([1], 4, beam)[0] == m.sample([1], 4, greedy=True) == [0, 0, 0, 0]


def test_beam_search_sorts_its_candidates_not_every_beam_and_character(monkeypatch):
    """Each step sorted all K x V scores to keep the K best: at V = 10,000 and beam 5, 6.2 ms of a 10 ms step (complete
    ran at 90 chars/s, 200 without). It sorts those at or above the K-th largest only, in the same stable order: the
    same continuation and log p as a stable sort of all of them (written out here), ties included."""

    def reference(m, ids, n, beam):  # beam search with the full stable sort
        logp, state = m._prime(ids, least=torch.float64)
        scores, seqs = torch.zeros(1, dtype=torch.float64), [[]]
        for _ in range(n):
            total = scores[:, None] + logp
            values, indices = total.flatten().sort(descending=True, stable=True)
            rows, cols = indices[:beam] // total.shape[1], indices[:beam] % total.shape[1]
            scores, seqs = (
                values[:beam],
                [seqs[r] + [c] for r, c in zip(rows.tolist(), cols.tolist(), strict=True)],
            )
            logp, state = m._step(cols, tuple(s[:, rows] for s in state), torch.float64)
        return seqs[int(scores.argmax())], float(scores.max())

    sorted_sizes, sort = [], torch.Tensor.sort

    def counted_sort(t, *args, **kwargs):
        sorted_sizes.append(t.numel())
        return sort(t, *args, **kwargs)

    for ties in (False, True):
        torch.manual_seed(0)
        m = CharLM(CharLMConfig(vocab_size=3000, hidden_size=4, num_layers=1, embedding_size=4)).eval()
        if ties:  # every seventh character (429 of them) equally likely, the rest less
            with torch.no_grad():
                m.head.weight.zero_()
                m.head.bias.zero_()
                m.head.bias[::7] = 1.0
        with torch.no_grad():
            want = [reference(m, [1, 2], 4, beam) for beam in (1, 3)]
        sorted_sizes.clear()
        monkeypatch.setattr(torch.Tensor, "sort", counted_sort)
        assert [m.beam_complete([1, 2], 4, beam) for beam in (1, 3)] == want
        monkeypatch.undo()
        assert max(sorted_sizes) <= (3 * 429 if ties else 3), sorted_sizes


@pytest.mark.parametrize("greedy", ["False", None, 2, 0.5, float("nan")])
def test_sample_greedy_that_is_no_switch_is_refused(greedy):
    """greedy was taken for its truth value: greedy='False' (a config file's string) or nan gave the argmax text,
    None a sampled one, in silence."""
    with pytest.raises(RnnkitError, match="greedy must be True or False"):
        model().sample([1, 2], 3, greedy=greedy)
    assert model().sample([1, 2], 3, greedy=np.bool_(True)) == model().sample([1, 2], 3, greedy=1)


@pytest.mark.parametrize("forget_bias", [float("nan"), float("inf"), True, "1"])
def test_torch_rnn_forget_bias_is_checked_as_rnnkits(forget_bias):
    """With torch_rnn the forget bias went into torch.nn.LSTM's bias unchecked: nan made every output NaN, True
    was 1, and a string failed with "can't assign a str to a torch.FloatTensor"."""
    with pytest.raises(RnnkitError, match="forget_bias must be a finite number"):
        model(torch_rnn=True, forget_bias=forget_bias)


@pytest.mark.parametrize("torch_rnn", [False, True])
def test_a_forget_bias_past_float32_is_one_line(torch_rnn):
    """forget_bias 1e308 failed in the bias's assignment with torch's "value cannot be converted to type float without
    overflow" (rnnkit's LSTM and torch.nn.LSTM alike)."""
    with pytest.raises(
        ValueError, match=r"lstm forget_bias 1e\+308 is past the largest value of its bias's dtype"
    ):
        model(torch_rnn=torch_rnn, forget_bias=1e308)


def test_torch_rnn_forget_bias_none_keeps_torchs_draw():
    """forget_bias=None (rnnkit's layer: the forget bias drawn as the other biases) failed with torch_rnn: "can't
    assign a NoneType to a torch.FloatTensor"."""
    torch.manual_seed(0)
    ours = model(torch_rnn=True, forget_bias=None).rnn
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(V, ours.hidden_size, ours.num_layers, batch_first=True)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("torch_rnn", [False, True])
@pytest.mark.parametrize("option", [dict(num_layers=None), dict(num_layers="2"), dict(hidden_size=True)])
def test_sizes_that_are_no_whole_numbers_are_one_line(torch_rnn, option):
    """num_layers=None or "2" failed with "'>' not supported" (the dropout between layers asked num_layers > 1
    before the layer checked it); with torch_rnn, hidden_size=True built an LSTM of one unit (True is an int)."""
    with pytest.raises(RnnkitError, match=f"{next(iter(option))} must be an integer >= 1"):
        CharLM(CharLMConfig(vocab_size=V, torch_rnn=torch_rnn, **{"hidden_size": 12, **option}))


@pytest.mark.parametrize("n_context", [1, 6, 7, 8, 20])
def test_log_probs_read_in_chunks_equal_one_character_a_step(monkeypatch, n_context):
    """log_probs reads context + ids in chunks (a (1, n) call each): a context that ends inside, at or past a chunk's
    end (here chunks of 7) gives what stepping one character at a time gives, and prime the same state."""
    from rnnkit.models import charlm

    monkeypatch.setattr(charlm, "_CHUNK", 7)
    m = model()
    g = torch.Generator().manual_seed(n_context)
    context, ids = (
        torch.randint(0, V, (n_context,), generator=g).tolist(),
        torch.randint(0, V, (9,), generator=g).tolist(),
    )
    logp, state, want = None, None, []
    for c in context:
        logp, state = m.step(c, state)
    for c in ids:
        want.append(float(logp[0, c]))
        logp, state = m.step(c, state)
    assert m.log_probs(ids, context) == pytest.approx(want, abs=1e-5)
    got_logp, got_state = m.prime(context + ids)
    torch.testing.assert_close(got_logp, logp)
    torch.testing.assert_close(got_state, state)


@pytest.mark.parametrize("torch_rnn", [False, True])
@pytest.mark.parametrize("dropout", [True, math.nan, "0.1", -0.5, None])
def test_a_dropout_that_is_no_probability_is_refused_with_one_layer_too(dropout, torch_rnn):
    """With num_layers=1 only the dropout before the output layer read it, unchecked: dropout=True was p = 1 and
    zeroed every output in training, in silence; nan failed at the first step in torch's dropout, '0.1' or None
    with "'<' not supported". Each is now one line at CharLM(...), as two layers said it."""
    with pytest.raises(RnnkitError, match=r"^dropout must be a number in \[0, 1\]"):
        CharLM(CharLMConfig(vocab_size=V, hidden_size=8, num_layers=1, dropout=dropout, torch_rnn=torch_rnn))


@pytest.mark.parametrize("torch_rnn", ["False", None, 2])
def test_torch_rnn_that_is_no_switch_is_refused(torch_rnn):
    """torch_rnn was taken for its truth value: 'False' (a config file's string) built the model on torch.nn.LSTM
    and None on rnnkit's layer, in silence, as greedy once did."""
    with pytest.raises(RnnkitError, match=rf"^torch_rnn must be True or False, got {torch_rnn!r}"):
        CharLM(CharLMConfig(vocab_size=V, hidden_size=8, num_layers=1, torch_rnn=torch_rnn))


@pytest.mark.parametrize("backend", ["autograd", "python", "native"])
def test_a_state_overflowed_to_nan_is_one_line_in_sample_greedy_and_beam(backend):
    """An rnn_relu model of finite weights whose state grows to inf over a long prime has NaN log-probabilities:
    sample failed in torch.multinomial ('probability tensor contains either inf, nan or element < 0'), and greedy
    and beam_complete wrote character 0 again and again in silence (argmax of NaN). Each is now one line."""
    torch.manual_seed(0)
    m = CharLM(CharLMConfig(vocab_size=4, cell="rnn_relu", hidden_size=4, num_layers=1, backend=backend))
    with torch.no_grad():
        m.rnn.cells[0].W_hh.copy_(3 * torch.eye(4))
        m.rnn.cells[0].b_xh.fill_(1.0)
    assert m.sample([0] * 5, 3, greedy=True)  # finite at first: a short context samples
    assert m.prime([0] * 100)[0].isnan().all()
    for call in (lambda: m.sample([0] * 100, 3), lambda: m.sample([0] * 100, 3, greedy=True),
                 lambda: m.beam_complete([0] * 100, 3, beam=2)):  # fmt: skip
        with pytest.raises(
            RnnkitError, match=r"log-probabilities are NaN after 100 characters \(its state overflowed"
        ):
            call()
    with pytest.raises(RnnkitError, match=r"NaN after 8\d characters"):  # (its own characters overflow it)
        m.sample([0] * 78, 30, greedy=True)


def test_a_window_whose_targets_are_not_of_the_inputs_shape_is_refused():
    """model(Window(xs, ys)) with ys of another shape than xs's (B, T) and as many elements (ys.T, (3, 2) for (2, 3))
    was flattened to the same length and scored against the wrong characters in silence; 1-D xs (one stream given as
    (T,)) failed inside cross_entropy ('For 1D input, 1D target must have size 1'). Both are one line."""
    m = model()
    xs = torch.randint(0, V, (2, 3))
    with pytest.raises(RnnkitError, match=r"ys of shape \(3, 2\) .* xs of shape \(2, 3\)"):
        m(Window(xs, xs.T))
    with pytest.raises(RnnkitError, match=r"\(B, T\).*xs of shape \(3,\).*unsqueeze\(0\)"):
        m(Window(xs[0], xs[1]))
    assert m.state is None  # nothing was run
    logits, loss = m(Window(xs, xs))  # (B, T) both: as before
    assert torch.isclose(loss, F.cross_entropy(logits.reshape(-1, V), xs.reshape(-1)))


@pytest.mark.skipif(not hasattr(__import__("os"), "register_at_fork"), reason="no fork here")
def test_a_child_forked_while_another_thread_samples_samples_in_train_mode():
    """A fork while one thread was inside sample() left the child a lock held by a thread it doesn't have (its
    first sample waited forever) and a model put in eval mode by a call no thread of its own returns from (dropout
    off in its training for good). Sampling now changes no shared state: the child samples, its model in train mode."""
    import subprocess
    import sys

    code = (
        "import os, signal, threading\nfrom rnnkit.models import charlm\n"
        "m = charlm.CharLM(charlm.CharLMConfig(vocab_size=5, hidden_size=4, num_layers=2, dropout=0.5))\n"
        "parent, inside, release = os.getpid(), threading.Event(), threading.Event()\n"
        "def hook(module, args):\n    if os.getpid() == parent and not inside.is_set():\n"
        "        inside.set()\n        release.wait()\n"
        "m.head.register_forward_pre_hook(hook)\na = threading.Thread(target=m.sample, args=([1], 3))\na.start()\n"
        "inside.wait()\npid = os.fork()\nif pid == 0:\n    signal.alarm(30)\n    m.sample([1], 3)\n"
        "    os._exit(0 if all(mod.training for mod in m.modules()) else 3)\n"
        "release.set()\na.join()\nassert all(mod.training for mod in m.modules())\n"
        "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "0", out.stdout + out.stderr


def test_a_state_overflowed_to_nan_is_one_line_in_score_text():
    """score_text of a text over which an rnn_relu state grows to inf gave log_prob nan in silence (sample, greedy and
    beam_complete refuse it in one line), and `rnnkit score` ranked by it: sorted by -nan, the texts after it kept
    their order, 'ab' * 60 ranked between a text of -1.2 nats and one of -0.9. It is one line naming the text."""
    from rnnkit.models.charlm import score_text

    torch.manual_seed(0)
    m = CharLM(CharLMConfig(vocab_size=3, cell="rnn_relu", hidden_size=4, num_layers=1))
    with torch.no_grad():
        m.rnn.cells[0].W_hh.copy_(3 * torch.eye(4))
        m.rnn.cells[0].b_xh.fill_(1.0)
    chars = list("ab\n")
    assert math.isfinite(score_text(m, chars, "ab")["log_prob"])  # finite at first: a short text scores
    with pytest.raises(RnnkitError, match=r"^TEXT 2 of 2 \('abab.*: the model's log-probabilities are NaN from its "
                       r"character 8\d on \(its state overflowed"):  # fmt: skip
        score_text(m, chars, "ab" * 60, "TEXT 2 of 2 ('" + "ab" * 20 + "')")


def test_a_perplexity_a_float_holds_is_finite_and_one_past_it_infinite():
    """score_text cut the perplexity at 709 nats/char: a text whose character has log p = -709.5 (exp(709.5) =
    1.35e308, a float) read perplexity inf. It is exp(nats/char) up to log of the largest float, 709.78..., inf past
    it; rnnkit.text's LMScore alike."""
    from rnnkit.text.lmscore import LMScore

    m = CharLM(CharLMConfig(vocab_size=2, cell="rnn_tanh", hidden_size=2, num_layers=1)).double()
    for bias, want in [(-709.5, math.exp(709.5)), (-709.79, math.inf)]:
        with torch.no_grad():
            m.head.weight.zero_()
            m.head.bias.copy_(torch.tensor([0.0, bias], dtype=torch.float64))
        r = score_text(m, list("\na"), "a")
        assert r["perplexity"] == pytest.approx(
            math.exp(r["nats_per_char"]) if want < math.inf else want, rel=1e-12
        )
        assert LMScore(bias, 1).perplexity == want
    assert math.isinf(LMScore(math.nan, 1).perplexity)  # (as before)


def test_greedy_picks_the_most_probable_character_as_beam_1_does():
    """greedy took the argmax of float32 log-probabilities: logits 0 and 1e-8 (the second the more probable) round
    to one log-probability there, -0.95802009, and the tie went to the first; beam_complete (beam 1, documented as
    greedy) reads them in float64 and took the second, so `sample --greedy` and `complete --beam 1` wrote different
    texts. Greedy reads them in float64 too."""
    m = CharLM(CharLMConfig(vocab_size=3, cell="rnn_tanh", hidden_size=2, num_layers=1))
    with torch.no_grad():
        m.head.weight.zero_()
        m.head.bias.copy_(torch.tensor([0.0, 1e-8, -0.5]))
    assert m.sample([0], 3, greedy=True) == m.beam_complete([0], 3, 1)[0] == [1, 1, 1]


def test_top_k_one_and_a_vanishing_temperature_draw_what_greedy_picks():
    """Sampling drew from float32 log-probabilities, where logits 0 and 1e-8 round to one value: top_k=1 kept both
    (drawing [1, 1, 0, 0, 0, 1, 0, 1, ...] with a seeded generator) and temperature 1e-12, where softmax(y / T)
    puts all but e^-10000 on the second, drew the first 6 times in 16; greedy and beam 1, which read them in
    float64, write [1, 1, ...]. Sampling reads them in float64 too."""
    m = CharLM(CharLMConfig(vocab_size=3, cell="rnn_tanh", hidden_size=2, num_layers=1))
    with torch.no_grad():
        m.head.weight.zero_()
        m.head.bias.copy_(torch.tensor([0.0, 1e-8, -0.5]))
    g = torch.Generator().manual_seed(0)
    assert m.sample([0], 16, top_k=1, generator=g) == [1] * 16
    assert m.sample([0], 16, temperature=1e-12, generator=g) == [1] * 16


def test_iter_sample_draws_lazily_as_sample_does_and_leaves_the_callers_modes_between_draws():
    # `rnnkit sample` prints each character as it is drawn (a huge --length printed nothing until its end)
    m = model().train()
    first = m.sample([1, 2], 30, generator=torch.Generator().manual_seed(3))
    it = m.iter_sample([1, 2], 10**20, generator=torch.Generator().manual_seed(3))
    drawn = []
    for c in it:
        assert (
            torch.is_grad_enabled() and m.training
        )  # a generator holds no no_grad or eval mode across yields
        drawn.append(c)
        if len(drawn) == 30:
            break
    assert drawn == first and m.training
    greedy = m.sample([1, 2], 12, greedy=True)
    assert list(m.iter_sample([1, 2], 12, greedy=True)) == greedy
    with pytest.raises(
        RnnkitError, match="temperature must be > 0"
    ):  # checked at the call, not at the first next()
        m.iter_sample([1, 2], 5, temperature=0)


def test_targets_of_cross_entropys_ignore_index_are_left_out_of_the_loss_not_refused():
    """The range check on a window's ys refused -100 ('character index -100 lies outside the vocabulary'), which
    F.cross_entropy, the model's loss, leaves out as its ignore_index: targets padded so, which trained before the
    check, failed. They are the loss of the other targets again; any other negative target is still refused."""
    lm, xs = model("gru"), torch.tensor([[1, 2, 3, 0]])
    ys = torch.tensor([[2, 3, -100, -100]])
    logits, loss = lm(Window(xs, ys))
    torch.testing.assert_close(loss, F.cross_entropy(logits[0, :2], ys[0, :2]))
    with pytest.raises(ValueError, match=r"^CharLM\(batch\)'s ys: character index -1 lies outside"):
        lm(Window(xs, torch.tensor([[2, -100, -1, 0]])))
    with pytest.raises(ValueError, match=r"^CharLM\(batch\)'s xs: character index -100 lies outside"):
        lm(Window(torch.tensor([[1, -100, 3, 0]]), xs))


def test_the_range_check_of_a_window_reads_its_ids_in_one_op():
    """The range check, run on a window's xs and ys at every training step, read the ids through detach, a flattening
    view and .long() before torch.aminmax: 2 of its 7 µs. The ids are read as they are (a narrower integer type
    widened as before), and the ids outside the vocabulary are refused as before."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from rnnkit.models.charlm import _check_range

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.append(func.__name__)
            return func(*args, **(kwargs or {}))

    ops, xs = [], torch.tensor([[1, 2], [3, 0]])
    with Ops():
        _check_range(xs, 4, "xs")
    assert ops == ["aminmax.default", "_local_scalar_dense.default", "_local_scalar_dense.default"]
    for ids in (torch.tensor([[1, 2], [3, 0]], dtype=torch.uint8).t(), torch.tensor(3, dtype=torch.int32)):
        _check_range(ids, 4, "xs")
        with pytest.raises(
            ValueError, match=r"^xs: character index 3 lies outside the vocabulary of 3 characters"
        ):
            _check_range(ids, 3, "xs")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: a GPU model, a CPU generator")
def test_a_model_on_the_gpu_samples_with_a_cpu_generator():
    """A model on the GPU sampled with a CPU generator (torch.Generator(), as the CLI's --seed makes) failed at the
    first draw inside torch ("Expected a 'cuda' device type for generator"); the draw runs where the generator is."""
    lm = model().to("cuda")
    drawn = [lm.sample([1, 2], 20, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert drawn[0] == drawn[1] and len(drawn[0]) == 20
    assert len(lm.sample([1], 5, generator=torch.Generator("cuda").manual_seed(3))) == 5


@pytest.mark.parametrize("cell", ["lstm", "rnn_tanh"])
def test_a_window_asks_once_whether_its_ids_can_be_read_and_keeps_a_state_already_in_place(cell, monkeypatch):
    """At every training window CharLM(batch) asked twice (for xs and ys) whether it ran under a tracer or a transform,
    an import and four calls each, and moved the carried state to the head's dtype and device with Tensor.to even where
    it was there (1.5-2 µs a window, to get the same tensor back). Now once, and a state in place is kept as it is;
    one of another dtype is still moved, and ids outside the vocabulary are refused as before."""
    import sys

    from torch.overrides import TorchFunctionMode

    import rnnkit.cells._base as base

    asked, moved = [], []

    def plain_ops_only(f=base.plain_ops_only):
        asked.append(sys._getframe(1).f_globals["__name__"])
        return f()

    monkeypatch.setattr(base, "plain_ops_only", plain_ops_only)

    class Moves(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.Tensor.to and isinstance(args[1] if len(args) > 1 else None, torch.Tensor):
                moved.append(args[0].dtype)
            return func(*args, **(kwargs or {}))

    lm, xs = model(cell), torch.tensor([[1, 2, 3], [3, 0, 1]])
    lm(Window(xs, xs))
    asked.clear()
    with Moves():
        lm(Window(xs, xs))
    assert (asked.count("rnnkit.models.charlm"), moved) == (1, [])
    lm.state = tuple(s.double() for s in lm.state) if isinstance(lm.state, tuple) else lm.state.double()
    with Moves():
        lm(Window(xs, xs))
    assert moved == [torch.float64] * (2 if cell == "lstm" else 1)
    for bad in (Window(xs + V - 3, xs), Window(xs, xs + V - 3)):
        with pytest.raises(RnnkitError, match=rf"index {V} lies outside the vocabulary of {V} characters"):
            lm(bad)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_a_torch_rnn_model_and_an_rnnkit_one_load_each_others_state_dict(cell):
    """CharLM(torch_rnn=True) refused an rnnkit CharLM's state_dict ("Missing key(s): rnn.weight_ih_l0, ...",
    "Unexpected key(s): rnn.cells.0.W_xh, ..."), though the reverse loaded. Both directions load (through
    torch.save/torch.load(weights_only=True) too) and give the same logits; a model of another cell is refused in
    one line either way."""
    import io

    xs = torch.randint(0, V, (2, 6))
    for torch_rnn in (False, True):
        src, dst = model(cell, torch_rnn=torch_rnn), model(cell, torch_rnn=not torch_rnn)
        buf = io.BytesIO()
        torch.save(src.state_dict(), buf)
        buf.seek(0)
        dst.load_state_dict(torch.load(buf, weights_only=True))
        torch.testing.assert_close(dst.run(xs)[0], src.run(xs)[0], rtol=1e-5, atol=1e-6)
    other = "rnn_relu" if cell == "rnn_tanh" else "rnn_tanh"
    for src_torch, dst_torch in ((True, False), (False, True), (True, True)):
        with pytest.raises(RuntimeError, match=rf"\n\tthis state_dict is a '{other}' model's, where this model's "
                           rf"cell is '{cell}'; build it with cell='{other}' to load it"):  # fmt: skip
            model(cell, torch_rnn=dst_torch).load_state_dict(
                model(other, torch_rnn=src_torch).state_dict(), strict=False
            )


@pytest.mark.parametrize("torch_rnn", [False, True])
def test_a_state_of_another_number_of_streams_is_said_in_one_line(torch_rnn):
    """prime's state (one stream) given to step with two characters failed in the layer, advising batch_first=False,
    which a CharLM does not take (torch.nn: torch's RuntimeError 'Expected hidden size ...'). run, step and prime
    say the state's shape and the model's in one line (run of one unbatched stream too: torch.nn's 'hx and cx should
    also be 2-D'); a state of the right shape runs as before."""
    lm = model("gru", torch_rnn=torch_rnn)
    _, one = lm.prime([1, 2, 3])
    _, two = lm.step(torch.tensor([1, 2]))
    for call in (lambda: lm.step(torch.tensor([1, 2]), one), lambda: lm.prime([1, 2], two),
                 lambda: lm.run(torch.tensor([[1, 2]]), two)):  # fmt: skip
        with pytest.raises(
            RnnkitError, match=r"the state given has shape \(2, \d, 12\), where this model's"
        ) as e:
            call()
        assert "batch_first" not in str(e.value) and "\n" not in str(e.value)
    logp, _ = lm.step(torch.tensor([4, 5]), two)
    with torch.no_grad():
        logits, _ = lm.run(torch.tensor([[4], [5]]), two)
    torch.testing.assert_close(logp, F.log_softmax(logits[:, -1], -1))
    x = torch.tensor([1, 2])  # one stream unbatched: its state (num_layers, H)
    _, flat = lm.run(x)
    with pytest.raises(RnnkitError, match=r"shape \(2, 1, 12\), where this model's for one unbatched stream"):
        lm.run(x, two[:, :1])
    torch.testing.assert_close(lm.run(x, flat)[0], lm.run(x[None], flat[:, None])[0][0])


@pytest.mark.parametrize("embedding_size", [0, 5])
def test_a_window_or_run_of_lists_or_numpy_arrays_is_said_in_one_line(embedding_size):
    """Window(xs, ys) of a list of lists said "got xs of shape ()" (a list has no shape) and advised xs.unsqueeze(0);
    of numpy arrays (a user's own reshape of a corpus's tokens) it failed deep in one_hot or the embedding with
    torch's TypeError ('must be Tensor, not numpy.ndarray'), and so did run(xs). One line names the type and the
    conversion; tensors run as before."""
    xs = np.array([[1, 2, 3], [4, 5, 6]])
    lm = model(embedding_size=embedding_size)
    for call, what in ((lambda: lm(Window(xs, xs)), r"CharLM\(batch\)'s xs"),
                       (lambda: lm(Window(torch.from_numpy(xs), xs)), r"CharLM\(batch\)'s ys"),
                       (lambda: lm(Window(xs.tolist(), xs.tolist())), r"CharLM\(batch\)'s xs"),
                       (lambda: lm.run(xs), "run's xs"), (lambda: lm.run(xs.tolist()), "run's xs")):  # fmt: skip
        with pytest.raises(RnnkitError, match=what + r" must be a \(B, T\) tensor .*torch.as_tensor"):
            call()
    lm.reset_state()
    logits, loss = lm(Window(torch.as_tensor(xs), torch.as_tensor(xs)))
    torch.testing.assert_close(logits, lm.run(torch.as_tensor(xs))[0])


def test_a_torch_rnn_model_takes_numpy_sizes_as_rnnkits_does():
    """CharLMConfig(hidden_size=np.int64(12), num_layers=np.int64(2)) (sizes from np.arange or a parameter grid) built
    an rnnkit model, its sizes checked as counts, while torch_rnn=True failed in torch.nn's TypeError ('hidden_size
    should be of type int, got: int64'). Both build, and the same weights give the same logits."""
    sizes = dict(
        vocab_size=np.int64(V), hidden_size=np.int64(12), num_layers=np.int64(2), embedding_size=np.int64(3)
    )
    torch.manual_seed(0)
    ours = CharLM(CharLMConfig(cell="gru", **sizes)).eval()
    theirs = CharLM(CharLMConfig(cell="gru", torch_rnn=True, **sizes)).eval()
    theirs.load_state_dict(ours.state_dict())
    xs = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(theirs.run(xs)[0], ours.run(xs)[0])


def test_a_number_past_floats_range_is_refused_in_one_line_by_sample_and_clipping():
    """A Python int is a Real: CharLM.sample(temperature=10**400) failed in float() and clip_gradients(clip_norm=
    10**400) in math.isnan, each with a bare "OverflowError: int too large to convert to float"; both are one line
    now, and inf (uniform sampling; no limit) is taken as before."""
    from rnnkit.train.optim import clip_gradients

    lm = model()
    with pytest.raises(RnnkitError, match="temperature .* is past float's range"):
        lm.sample([2], 3, temperature=10**400)
    assert len(lm.sample([2], 3, temperature=math.inf)) == 3
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 5.0)
    for name in ("clip_norm", "clip_value"):
        kw = {"clip_norm": 0.0, "clip_value": 0.0, name: 10**400}
        with pytest.raises(RnnkitError, match=f"{name} must be a number >= 0"):
            clip_gradients([p], **kw)
    assert clip_gradients([p], math.inf, math.inf) == pytest.approx(75**0.5) and p.grad.tolist() == [5.0] * 3


@pytest.mark.parametrize("big", [2**63, np.uint64(2**63), 10**400])
def test_sizes_past_a_64_bit_integer_are_refused_in_one_line(big):
    """vocab_size, embedding_size or hidden_size of 2**63 or more failed in torch's empty() ("Overflow when unpacking
    long long"); hidden_size or num_layers 10**400 in check_layers_fit's GiB ("integer division result too large")."""
    for name in ("vocab_size", "embedding_size", "hidden_size"):
        for torch_rnn in (False, True):
            cfg = {"vocab_size": 5, "embedding_size": 4, "hidden_size": 4, name: big, "torch_rnn": torch_rnn}
            with pytest.raises(RnnkitError, match=name + r" \S+.* is too large \(past a 64-bit integer"):
                CharLM(CharLMConfig(**cfg))
    if isinstance(big, int):
        with pytest.raises(RnnkitError, match=r"need at least .* GiB of weights"):
            CharLM(CharLMConfig(vocab_size=5, hidden_size=4, num_layers=big))


@pytest.mark.parametrize("sign", [1, -1])
def test_a_number_past_strs_4300_digits_is_said_by_its_bits_in_each_check(sign):
    """An int of more than 4,300 digits (10**5000) or a Fraction of one, given where a one-line check refuses it,
    failed while that line was formatted: Python's "ValueError: Exceeds the limit (4300 digits) for integer string
    conversion; use sys.set_int_max_str_digits()", the wrong fix. Each line says it by its bits now (errors.said),
    the rest of its words as before."""
    from fractions import Fraction

    from rnnkit import CELLS, Recurrent
    from rnnkit.energy._checks import positive_float
    from rnnkit.energy.boltzmann import BoltzmannMachine
    from rnnkit.errors import check_seed, fits_int64, switch
    from rnnkit.text.markov import MarkovChain
    from rnnkit.text.ngram import NGramLM
    from rnnkit.text.word2vec import Word2Vec
    from rnnkit.train.config import RunConfig, validate
    from rnnkit.train.optim import clip_gradients

    def lr(v):
        cfg = RunConfig()
        cfg.train.lr = v
        validate(cfg)

    def clip(v):
        p = torch.nn.Parameter(torch.ones(2))
        p.grad = torch.ones(2)
        clip_gradients([p], v, 0.0)

    sites = {
        "lstm forget_bias must be a finite number": lambda v: CELLS["lstm"](3, 4, forget_bias=v),
        "hidden_size must be an integer >= 1": lambda v: CELLS["gru"](3, -abs(v)),
        "dropout must be a number in [0, 1]": lambda v: Recurrent("gru", 3, 4, dropout=v),
        "cond_size must be an integer >= 0": lambda v: Recurrent("gru", 3, 4, cond_size=-abs(v)),
        "num_layers must be an integer >= 1": lambda v: CharLM(
            CharLMConfig(vocab_size=5, num_layers=-abs(v))
        ),
        "--lr must be a finite number": lr,
        "--alpha (the learning rate) must be a number > 0": lambda v: Word2Vec(alpha=-abs(v)),
        "n (the n-gram order) must be an integer >= 1": lambda v: NGramLM(-abs(v)),
        "alpha (the sharpening power) must be": lambda v: (
            NGramLM(2).fit("abcab").generate("a", 3, alpha=-abs(v))
        ),
        "number of hidden units must be an integer >= 0": lambda v: BoltzmannMachine(4, -abs(v)),
        "beta must be a positive number": lambda v: positive_float("beta", -abs(v)),
        "clip_norm must be a number >= 0": clip,
        "simulate steps must be an integer >= 0": lambda v: MarkovChain(["a", "b"], [[0.5] * 2] * 2).simulate(
            -abs(v)
        ),
        "--seed must": check_seed,
        "x must be True or False": lambda v: switch("x", v),
    }
    for big in (sign * 10**5000, Fraction(sign * 10**5000, 3)):
        for line, site in sites.items():
            with pytest.raises(ValueError) as e:
                site(big)
            assert str(e.value).startswith(line), (line, str(e.value)[:200])
            assert "16,610" in str(e.value) and "\n" not in str(e.value), str(e.value)[:200]
    with pytest.raises(RnnkitError, match=r"^x of 16,610 bits is too large \(past a 64-bit integer"):
        fits_int64("x", 10**5000)


def test_numpy_sizes_whose_weights_overflow_int64_are_refused_by_the_memory_check():
    """num_layers and hidden_size as numpy int64 (a parameter grid's): check_layers_fit's L·H·H·4 wrapped around in
    int64 (2 · 2^31 · 2^31 · 4 = 2^65 read as 0) and passed, and the layers were built until the memory ran out; as
    Python ints the product is exact, and the check says it in one line."""
    with pytest.raises(
        RnnkitError, match=r"num_layers 2 of hidden_size 2147483648 need at least .* GiB of weights"
    ):
        CharLM(CharLMConfig(vocab_size=5, hidden_size=np.int64(2**31), num_layers=np.int64(2)))
