"""Small pure pieces behind the provider fixes (issue 9, item 8); the wire tests drive them for real."""

from __future__ import annotations

from langchain_core.messages import HumanMessage

from budgetguard.estimate import configured_max_output_tokens, has_audio_input, max_output_tokens
from budgetguard.model_names import bare_model_name, served_model_name
from budgetguard.pricing import resolve_rates, unpriced_rates
from budgetguard.usage import TokenUsage, audio_unsplit, with_details


def test_bare_model_name_strips_only_a_leading_api_path() -> None:
    assert bare_model_name("models/gemini-2.5-flash") == "gemini-2.5-flash"
    assert bare_model_name("gemini-2.5-flash") == "gemini-2.5-flash"
    assert bare_model_name("models/") == "models/"
    assert bare_model_name("my/models/x") == "my/models/x"
    assert resolve_rates("models/gemini-2.5-flash", "google_genai").model == "gemini-2.5-flash"


def test_served_name_of_an_integration_that_reports_it_on_streams_only_is_ignored() -> None:
    assert served_model_name({"model_provider": "mistralai", "model_name": "mistral-large-2512"}) is None
    assert served_model_name({"model_provider": "openai", "model_name": "gpt-4o-mini"}) == "gpt-4o-mini"


def test_details_are_taken_only_from_a_reading_with_the_same_totals() -> None:
    plain = TokenUsage(300, 12)
    assert with_details(plain, TokenUsage(300, 12, cache_read=270)) == TokenUsage(300, 12, cache_read=270)
    assert with_details(plain, TokenUsage(600, 24, cache_read=540)) == plain
    assert with_details(plain, None) == plain


def test_audio_unsplit_charges_uncached_input_as_audio_and_flags_it() -> None:
    assert audio_unsplit(TokenUsage(1000, 10, cache_read=200)) == TokenUsage(
        1000, 10, cache_read=200, input_audio=800, estimated=True
    )
    reported = TokenUsage(1000, 10, input_audio=900)
    assert audio_unsplit(reported) is reported


def test_audio_prompts_are_recognised() -> None:
    audio = {"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"}
    media = {"type": "media", "data": "AAAA", "mime_type": "audio/mp3"}
    image = {"type": "image", "base64": "AAAA", "mime_type": "image/png"}
    assert has_audio_input([HumanMessage(content=[{"type": "text", "text": "x"}, audio])])
    assert has_audio_input([HumanMessage(content=[media])])
    assert not has_audio_input([HumanMessage(content=[image]), HumanMessage(content="hi")])
    assert not has_audio_input(None)


def test_output_caps_nested_in_options_and_on_the_model_object() -> None:
    assert max_output_tokens({"options": {"num_predict": 256}}, None, 4096) == 256
    assert max_output_tokens({"options": {"num_predict": -1}}, None, 4096) == 4096

    class Model:
        num_predict = 300

    assert configured_max_output_tokens(Model()) == 300
    assert configured_max_output_tokens(object()) is None


def test_unpriced_rates_cost_nothing() -> None:
    r = unpriced_rates("models/my-local", "ollama")
    assert (r.model, r.priced, r.nanos(TokenUsage(10, 10)), r.worst_nanos(10, 10)) == (
        "my-local",
        False,
        0,
        0,
    )
