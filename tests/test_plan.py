"""evalkit.planning.plan: suite × model → requests, their keys, the endpoint that follows the model.

Bodies against the OpenAI spec are tested in test_request_bodies.py and `endpoint_for` on a
hand-made `Rendered` in test_render.py; here: what a model's stream of the planner produces
from a whole suite, and the request key's stability and sensitivity (the planning pass itself,
shared by validation, the estimate, resume and the run: test_planner.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from evalkit.errors import Unsendable
from evalkit.models.targets import Target, resolve
from evalkit.planning.plan import Group, Request, check_columns, count_requests
from evalkit.planning.planner import Planner, plan
from evalkit.suite.endpoints import ModelSpec
from evalkit.suite.spec import Suite

CHAT = "openai/gpt-4o-mini"
INSTRUCT = "openai/gpt-3.5-turbo-instruct"
BASE = "https://api.example.test/v1"


def target(model: str = CHAT, base_url: str = BASE, **spec: Any) -> Target:
    return resolve(ModelSpec(id=model, **spec), {}, {"OPENAI_BASE_URL": base_url})


def suite(**fields: Any) -> Suite:
    data: dict[str, Any] = {
        "prompt": "Say {{ word }}",
        "cases": [{"id": "a", "vars": {"word": "x"}}],
    }
    return Suite.model_validate({**data, **fields})


def groups(s: Suite, t: Target, samples: int | None = None) -> list[Group]:
    return list(Planner(s, [t], samples).groups(t))


def keys(s: Suite, t: Target | None = None, samples: int | None = None) -> list[str]:
    return [r.key for r in plan(s, t or target(), samples)]


def test_keys_are_stable_across_plans_and_fresh_objects() -> None:
    first = keys(suite(samples=3))
    assert keys(suite(samples=3)) == first
    assert all(len(k) == 32 and int(k, 16) >= 0 for k in first)


def test_keys_differ_per_sample() -> None:
    requests = list(plan(suite(samples=4), target()))
    assert [r.sample for r in requests] == [0, 1, 2, 3]
    assert len({r.key for r in requests}) == 4
    assert len({r.wire for r in requests}) == 1  # same body: only the sample index differs


def test_keys_change_with_model_param_vars_and_base_url() -> None:
    (base,) = keys(suite())
    (other_model,) = keys(suite(), target("openai/gpt-4o"))
    (other_param,) = keys(suite(params={"temperature": 0.3}))
    (other_vars,) = keys(suite(cases=[{"id": "a", "vars": {"word": "y"}}]))
    (other_url,) = keys(suite(), target(base_url="https://other.example.test/v1"))
    assert len({base, other_model, other_param, other_vars, other_url}) == 5


def test_case_id_and_description_are_not_part_of_the_key() -> None:
    """The key is the request as sent: renaming a case does not invalidate its cache."""
    (renamed,) = keys(suite(cases=[{"id": "b", "description": "d", "vars": {"word": "x"}}]))
    assert [renamed] == keys(suite())


def test_variants_with_different_prompts_get_different_keys_and_names() -> None:
    s = suite(prompt=None, variants={"terse": {"prompt": "A {{ word }}"}, "long": {"prompt": "B"}})
    requests = list(plan(s, target()))
    assert [r.variant for r in requests] == ["terse", "long"]
    assert requests[0].key != requests[1].key


def test_grading_key_ignores_the_sample() -> None:
    (r,) = plan(suite(), target())
    a = Request.build(r.case, "", r.target, 3, "chat", r.body, key_sample=0)
    b = Request.build(r.case, "", r.target, 7, "chat", r.body, key_sample=0)
    c = Request.build(r.case, "", r.target, 3, "chat", r.body)
    assert a.key == b.key == r.key != c.key
    assert (a.sample, b.sample) == (3, 7)


def test_string_prompt_to_chat_model_is_one_user_message() -> None:
    (r,) = plan(suite(), target())
    assert r.endpoint == "chat"
    assert r.body["messages"] == [{"role": "user", "content": "Say x"}]
    assert "prompt" not in r.body and r.body["model"] == "gpt-4o-mini"


def test_same_suite_to_completions_model_sends_the_prompt_string() -> None:
    (r,) = plan(suite(), target(INSTRUCT))
    assert r.endpoint == "completions"
    assert r.body == {"model": "gpt-3.5-turbo-instruct", "prompt": "Say x"}


def test_messages_to_completions_only_model_are_unsendable() -> None:
    s = suite(prompt=[{"role": "user", "content": "hi"}])
    with pytest.raises(Unsendable, match="cannot take chat messages"):
        list(plan(s, target(INSTRUCT)))


def test_suffix_to_chat_model_is_unsendable() -> None:
    with pytest.raises(Unsendable, match="insert mode"):
        list(plan(suite(suffix="end"), target()))


@pytest.mark.parametrize(("samples", "override"), [(1, None), (3, None), (2, 5)])
def test_count_requests_matches_what_plan_produces(samples: int, override: int | None) -> None:
    s = suite(
        prompt=None,
        samples=samples,
        variants={"v1": {"prompt": "A"}, "v2": {"prompt": "B"}, "v3": {"prompt": "C"}},
        cases=[{"id": str(i)} for i in range(4)],
    )
    produced = list(plan(s, target(), override))
    assert len(produced) == count_requests(s, override) == 4 * 3 * (override or samples)
    assert sum(g.samples for g in groups(s, target(), override)) == len(produced)


def test_params_layer_suite_model_variant_case() -> None:
    s = suite(
        prompt=None,
        params={"temperature": 0.1, "max_tokens": 10, "seed": 1},
        variants={"v": {"prompt": "P", "params": {"max_tokens": 20, "top_p": 0.5}}},
        cases=[{"id": "a", "params": {"top_p": 0.9}}],
    )
    (r,) = plan(s, target(params={"temperature": 0.7, "seed": 2}))
    assert (r.body["temperature"], r.body["seed"]) == (0.7, 2)  # model over suite
    assert r.body["max_tokens"] == 20  # variant over model/suite
    assert r.body["top_p"] == 0.9  # case over variant


def test_resampled_requests_use_resample_temperature_and_new_max_tokens() -> None:
    s = suite(params={"temperature": 0.0, "max_tokens": 8}, samples=2, resample_temperature=0.9)
    (group,) = groups(s, target())
    assert group.max_tokens_cap == 32  # 4 × max_tokens when the suite sets no cap
    first = group.first_round()
    assert [r.body["temperature"] for r in first] == [0.0, 0.9]
    retry = group.request(1, 16)
    assert retry.body["max_tokens"] == 16 and retry.max_tokens == 16
    assert retry.key != first[1].key


def test_best_logprob_select_asks_for_logprobs() -> None:
    (r,) = plan(suite(select="best_logprob"), target())
    assert r.body["logprobs"] is True


def test_choices_follows_n() -> None:
    (r,) = plan(suite(params={"n": 3}), target())
    assert (r.choices, r.body["n"]) == (3, 3)
    (one,) = plan(suite(), target())
    assert one.choices == 1


def test_repeated_check_labels_are_numbered() -> None:
    s = suite(
        checks=[{"contains": "a"}, {"contains": "b"}],
        cases=[{"id": "a", "vars": {"word": "x"}, "expect": [{"contains": "c"}]}],
    )
    (group,) = groups(s, target())
    assert list(group.checks) == ["contains", "contains#2", "contains#3"]
    assert list(check_columns([*s.checks, *s.cases[0].expect])) == list(group.checks)
