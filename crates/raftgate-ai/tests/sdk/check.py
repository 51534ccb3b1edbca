"""The unified API driven by the official `openai` and `anthropic` SDKs, as a user would.

Run against `cargo run -p raftgate-ai --features mock --example mock_gateway -- 127.0.0.1:PORT`:
    python3 check.py http://127.0.0.1:PORT
or against a raftgate node's proxy with a consumer key (tests/ai_gateway.rs does this):
    python3 check.py http://127.0.0.1:PROXY_PORT CONSUMER_KEY
Prints one line per check and `N passed, N failed` last; exits non-zero when any failed.
"""

import json
import sys

import anthropic
import openai

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:18080"
KEY = sys.argv[2] if len(sys.argv) > 2 else "sk-consumer"
oa = openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0)
an = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)
results = []


def check(name):
    def run(fn):
        try:
            fn()
            results.append(True)
            print("ok  ", name)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            results.append(False)
            print("FAIL", name, "-", type(e).__name__, e)
    return run


TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}}}]


@check("models list hides what the consumer may not use")
def _():
    ids = sorted(m.id for m in oa.models.list())
    assert ids == ["broken", "claude", "command", "emb", "fallback", "gemini", "gpt",
                   "midstream"], ids


for model in ["gpt", "claude", "gemini", "command"]:
    @check(f"{model}: chat")
    def _(model=model):
        r = oa.chat.completions.create(model=model, messages=[
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}])
        assert r.choices[0].message.content == "echo: hello world", r
        assert r.choices[0].finish_reason == "stop"
        assert r.usage.completion_tokens == 3

    @check(f"{model}: stream with usage")
    def _(model=model):
        stream = oa.chat.completions.create(model=model, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "hello world"}])
        text, usage, finish = "", None, None
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                usage = chunk.usage
        assert text == "echo: hello world", text
        assert finish == "stop"
        assert usage.completion_tokens == 3 and usage.prompt_tokens == 11, usage

    @check(f"{model}: tools round trip")
    def _(model=model):
        ask = {"role": "user", "content": "weather in Paris?"}
        r = oa.chat.completions.create(model=model, messages=[ask], tools=TOOLS)
        call = r.choices[0].message.tool_calls[0]
        assert r.choices[0].finish_reason == "tool_calls"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        r = oa.chat.completions.create(model=model, tools=TOOLS, messages=[
            ask, r.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
        assert r.choices[0].message.content == "tool said: sunny", r

    @check(f"{model}: streamed tool call")
    def _(model=model):
        with oa.chat.completions.stream(model=model, tools=TOOLS,
                                        messages=[{"role": "user", "content": "weather?"}]) as s:
            final = s.get_final_completion()
        call = final.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}


@check("embeddings")
def _():
    r = oa.embeddings.create(model="emb", input=["a", "b"])
    assert len(r.data) == 2 and r.data[1].embedding == [0.1, 0.2, 0.3], r


@check("fallback from a failing provider")
def _():
    r = oa.chat.completions.create(model="fallback", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "echo: hi"


@check("unknown and forbidden models are NotFoundError")
def _():
    for model in ["nope", "secret"]:
        try:
            oa.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
            raise AssertionError("no error")
        except openai.NotFoundError as e:
            assert e.body["code"] == "model_not_found", e.body


@check("an overloaded provider is a 503 InternalServerError")
def _():
    try:
        oa.chat.completions.create(model="broken", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("no error")
    except openai.InternalServerError as e:
        assert e.status_code == 503, e.status_code


@check("a bad request is BadRequestError naming the field")
def _():
    try:
        oa.chat.completions.create(model="gpt", messages=[{"role": "robot", "content": "x"}])
        raise AssertionError("no error")
    except openai.BadRequestError as e:
        assert e.body["param"] == "messages[0].role", e.body


@check("a wrong consumer key is AuthenticationError")
def _():
    bad = openai.OpenAI(base_url=BASE + "/v1", api_key="wrong", max_retries=0)
    try:
        bad.models.list()
        raise AssertionError("no error")
    except openai.AuthenticationError:
        pass


for model in ["claude", "gpt", "gemini", "command"]:
    @check(f"anthropic sdk /v1/messages on {model}")
    def _(model=model):
        m = an.messages.create(model=model, max_tokens=50, system="Be brief.",
                               messages=[{"role": "user", "content": "hi there"}])
        assert m.content[0].text == "echo: hi there", m
        assert m.stop_reason == "end_turn" and m.usage.output_tokens == 3

    @check(f"anthropic sdk streaming on {model}")
    def _(model=model):
        with an.messages.stream(model=model, max_tokens=50,
                                messages=[{"role": "user", "content": "hi there"}]) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text == "echo: hi there", text
        assert final.usage.output_tokens == 3, final.usage

    @check(f"anthropic sdk tool use on {model}")
    def _(model=model):
        tools = [{"name": "get_weather", "description": "Weather",
                  "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
        ask = {"role": "user", "content": "weather?"}
        with an.messages.stream(model=model, max_tokens=50, tools=tools, messages=[ask]) as s:
            m = s.get_final_message()
        use = [b for b in m.content if b.type == "tool_use"][0]
        assert use.input == {"city": "Paris"} and m.stop_reason == "tool_use", m
        m = an.messages.create(model=model, max_tokens=50, tools=tools, messages=[
            ask, {"role": "assistant", "content": [b.model_dump() for b in m.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                          "content": "sunny"}]}])
        assert m.content[0].text == "tool said: sunny", m


@check("a provider failing in mid-stream raises APIError after the first chunks")
def _():
    text = ""
    try:
        for chunk in oa.chat.completions.create(model="midstream", stream=True,
                                                messages=[{"role": "user", "content": "a b c"}]):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        raise AssertionError("no error")
    except openai.APIError as e:
        assert "mid-stream" in e.message, e.message
    assert text == "echo:", text


@check("anthropic sdk: a failure in mid-stream raises")
def _():
    try:
        with an.messages.stream(model="midstream", max_tokens=9,
                                messages=[{"role": "user", "content": "a b c"}]) as s:
            "".join(s.text_stream)
        raise AssertionError("no error")
    except anthropic.APIStatusError as e:
        assert "mid-stream" in str(e), e


@check("anthropic sdk error shape")
def _():
    try:
        an.messages.create(model="broken", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        raise AssertionError("no error")
    except anthropic.APIStatusError as e:
        assert e.status_code == 503 and e.body["error"]["type"] == "overloaded_error", e.body


passed = sum(results)
print(f"{passed} passed, {len(results) - passed} failed")
sys.exit(0 if all(results) else 1)
